//! A verification key, bound to one algorithm, and the crypto backend that checks it.

use std::{fmt, sync::Arc};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{
    crypto::CryptoProvider,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse},
    Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind,
};

use crate::ConfigError;

#[cfg(not(any(feature = "rust-crypto", feature = "aws-lc-rs")))]
compile_error!(
    "wsguard-jwt-auth needs a crypto backend: enable `rust-crypto` (the default) or `aws-lc-rs`"
);

/// The crypto backend: aws-lc-rs when its feature is on, else RustCrypto.
///
/// Used directly rather than through jsonwebtoken's process-wide default, which panics when
/// both backends are compiled in and nobody installed one.
#[cfg(feature = "aws-lc-rs")]
pub(crate) static PROVIDER: &CryptoProvider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
#[cfg(all(feature = "rust-crypto", not(feature = "aws-lc-rs")))]
pub(crate) static PROVIDER: &CryptoProvider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;

/// A verification key bound to exactly one algorithm.
///
/// A token is verified with a key only if its header's `alg` is the key's algorithm, so the
/// algorithm is never taken from the token: an RS256 public key can never be used as an HMAC
/// secret (the "algorithm confusion" of RFC 8725 section 2.1), and `none` does not exist.
///
/// ```
/// use wsguard_jwt_auth::{Algorithm, VerifyingKey};
///
/// let key = VerifyingKey::hmac(Algorithm::HS256, b"an HS256 secret of at least 32 bytes!")?.with_kid("2024-05");
/// assert_eq!(key.algorithm(), Algorithm::HS256);
/// assert_eq!(key.kid(), Some("2024-05"));
///
/// // Too short for HS256 (RFC 7518 section 3.2), and the wrong family for RS256:
/// assert!(VerifyingKey::hmac(Algorithm::HS256, b"short").is_err());
/// assert!(VerifyingKey::hmac(Algorithm::RS256, &[7; 64]).is_err());
/// # Ok::<(), wsguard_jwt_auth::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct VerifyingKey {
    algorithm: Algorithm,
    kid: Option<Arc<str>>,
    decoding: DecodingKey,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// An HMAC secret for `HS256`, `HS384` or `HS512`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::AlgorithmMismatch`] for a non-HMAC algorithm;
    /// [`ConfigError::HmacSecretTooShort`] for a secret shorter than the algorithm's output
    /// (32, 48 or 64 bytes).
    pub fn hmac(algorithm: Algorithm, secret: &[u8]) -> Result<Self, ConfigError> {
        let min_len = match algorithm {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => {
                return Err(mismatch(
                    algorithm,
                    "an HMAC secret needs HS256, HS384 or HS512",
                ))
            }
        };
        if secret.len() < min_len {
            return Err(ConfigError::HmacSecretTooShort {
                algorithm,
                min_len,
                len: secret.len(),
            });
        }
        Self::checked(algorithm, DecodingKey::from_secret(secret))
    }

    /// An RSA public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`) for `RS*` or `PS*`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::AlgorithmMismatch`] for a non-RSA algorithm,
    /// [`ConfigError::InvalidKey`] for a PEM that is not an RSA public key,
    /// [`ConfigError::RsaKeyTooSmall`] below 2048 bits.
    pub fn rsa_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, ConfigError> {
        require_family(algorithm, AlgorithmFamily::Rsa)?;
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| invalid(algorithm, &e))?;
        Self::checked(algorithm, key)
    }

    /// An RSA public key from its base64url `n` and `e` (as in a JWK), for `RS*` or `PS*`.
    ///
    /// # Errors
    ///
    /// As [`VerifyingKey::rsa_pem`].
    pub fn rsa_components(algorithm: Algorithm, n: &str, e: &str) -> Result<Self, ConfigError> {
        require_family(algorithm, AlgorithmFamily::Rsa)?;
        let key = DecodingKey::from_rsa_components(n, e).map_err(|e| invalid(algorithm, &e))?;
        Self::checked(algorithm, key)
    }

    /// An elliptic-curve public key in PEM: P-256 for `ES256`, P-384 for `ES384`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::AlgorithmMismatch`] for another algorithm or another curve,
    /// [`ConfigError::InvalidKey`] for a PEM that is not an EC public key.
    pub fn ec_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, ConfigError> {
        require_family(algorithm, AlgorithmFamily::Ec)?;
        let key = DecodingKey::from_ec_pem(pem).map_err(|e| invalid(algorithm, &e))?;
        Self::checked(algorithm, key)
    }

    /// An elliptic-curve public key from its base64url `x` and `y` (as in a JWK).
    ///
    /// # Errors
    ///
    /// As [`VerifyingKey::ec_pem`].
    pub fn ec_components(algorithm: Algorithm, x: &str, y: &str) -> Result<Self, ConfigError> {
        require_family(algorithm, AlgorithmFamily::Ec)?;
        let key = DecodingKey::from_ec_components(x, y).map_err(|e| invalid(algorithm, &e))?;
        Self::checked(algorithm, key)
    }

    /// An Ed25519 public key in PEM, for `EdDSA`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] for a PEM that is not an Ed25519 public key.
    pub fn ed_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|e| invalid(Algorithm::EdDSA, &e))?;
        Self::checked(Algorithm::EdDSA, key)
    }

    /// An Ed25519 public key from its base64url `x` (as in a JWK), for `EdDSA`.
    ///
    /// # Errors
    ///
    /// As [`VerifyingKey::ed_pem`].
    pub fn ed_components(x: &str) -> Result<Self, ConfigError> {
        let key = DecodingKey::from_ed_components(x).map_err(|e| invalid(Algorithm::EdDSA, &e))?;
        Self::checked(Algorithm::EdDSA, key)
    }

    /// A key from a JWK that names its algorithm (`alg`). Its `kid`, if any, is kept.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnsupportedJwk`] for a JWK without `alg` (use
    /// [`VerifyingKey::from_jwk_with_algorithm`]), with an encryption algorithm, or whose `use` or
    /// `key_ops` exclude verifying; otherwise as the constructor of its key type.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, ConfigError> {
        let algorithm = jwk_algorithm(jwk)?.ok_or_else(|| ConfigError::UnsupportedJwk {
            kid: jwk.common.key_id.clone(),
            reason: "the JWK has no `alg`: give one with `VerifyingKey::from_jwk_with_algorithm`",
        })?;
        Self::from_jwk_checked(jwk, algorithm)
    }

    /// A key from a JWK, bound to `algorithm`, which must be of the key's family and equal
    /// the JWK's own `alg` if it has one.
    ///
    /// # Errors
    ///
    /// As [`VerifyingKey::from_jwk`], and [`ConfigError::AlgorithmMismatch`] when `algorithm`
    /// differs from the JWK's `alg` or does not fit its key type.
    pub fn from_jwk_with_algorithm(jwk: &Jwk, algorithm: Algorithm) -> Result<Self, ConfigError> {
        if let Some(own) = jwk_algorithm(jwk)? {
            if own != algorithm {
                return Err(mismatch(algorithm, "the JWK names another `alg`"));
            }
        }
        Self::from_jwk_checked(jwk, algorithm)
    }

    fn from_jwk_checked(jwk: &Jwk, algorithm: Algorithm) -> Result<Self, ConfigError> {
        let unsupported = |reason| ConfigError::UnsupportedJwk {
            kid: jwk.common.key_id.clone(),
            reason,
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            return Err(unsupported("its `use` is not `sig`"));
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.contains(&KeyOperations::Verify) {
                return Err(unsupported("its `key_ops` do not include `verify`"));
            }
        }
        let key = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => Self::rsa_components(algorithm, &rsa.n, &rsa.e)?,
            AlgorithmParameters::EllipticCurve(ec) => {
                let fits = matches!(
                    (&ec.curve, algorithm),
                    (EllipticCurve::P256, Algorithm::ES256)
                        | (EllipticCurve::P384, Algorithm::ES384)
                );
                if !fits {
                    return Err(mismatch(algorithm, "the JWK's curve does not fit"));
                }
                Self::ec_components(algorithm, &ec.x, &ec.y)?
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                if okp.curve != EllipticCurve::Ed25519 || algorithm != Algorithm::EdDSA {
                    return Err(mismatch(algorithm, "an OKP JWK needs Ed25519 and EdDSA"));
                }
                Self::ed_components(&okp.x)?
            }
            AlgorithmParameters::OctetKey(oct) => {
                let secret = URL_SAFE_NO_PAD
                    .decode(oct.value.trim_end_matches('='))
                    .map_err(|e| invalid(algorithm, &e))?;
                Self::hmac(algorithm, &secret)?
            }
            _ => return Err(unsupported("unsupported key type")),
        };
        Ok(match &jwk.common.key_id {
            Some(kid) => key.with_kid(kid.as_str()),
            None => key,
        })
    }

    /// Checks the key against its algorithm: family, size, and that the backend accepts it.
    fn checked(algorithm: Algorithm, decoding: DecodingKey) -> Result<Self, ConfigError> {
        if decoding.family() != algorithm.family() {
            return Err(mismatch(
                algorithm,
                "the key belongs to another algorithm family",
            ));
        }
        match (algorithm.family(), decoding.kind()) {
            (AlgorithmFamily::Rsa, kind) => {
                let bits = match kind {
                    DecodingKeyKind::RsaModulusExponent { n, .. } => big_endian_bits(n),
                    DecodingKeyKind::SecretOrDer(der) => der_rsa_modulus_bits(der)
                        .ok_or_else(|| invalid(algorithm, &"not a PKCS#1 RSA public key"))?,
                };
                if bits < 2048 {
                    return Err(ConfigError::RsaKeyTooSmall { bits });
                }
            }
            (AlgorithmFamily::Ec, DecodingKeyKind::SecretOrDer(point)) => {
                let expected = if algorithm == Algorithm::ES256 {
                    65
                } else {
                    97
                };
                if point.len() != expected || point.first() != Some(&4) {
                    return Err(mismatch(algorithm, "the key is on another curve"));
                }
            }
            _ => {}
        }
        // Let the backend parse the key now, so that a bad key fails at start-up.
        (PROVIDER.verifier_factory)(&algorithm, &decoding).map_err(|e| invalid(algorithm, &e))?;
        Ok(Self {
            algorithm,
            kid: None,
            decoding,
        })
    }

    /// Gives the key a `kid`: tokens whose header names this `kid` are verified with it.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<Arc<str>>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The one algorithm this key verifies.
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key's `kid`, shared (for indexing a set without a copy).
    pub(crate) fn shared_kid(&self) -> Option<&Arc<str>> {
        self.kid.as_ref()
    }

    /// Whether `signature` (base64url) is a valid signature of `message` with this key.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        match (PROVIDER.verifier_factory)(&self.algorithm, &self.decoding) {
            Ok(verifier) => verifier.verify(message, &signature).is_ok(),
            Err(_) => false,
        }
    }
}

/// The algorithm a JWK names, if any.
pub(crate) fn jwk_algorithm(jwk: &Jwk) -> Result<Option<Algorithm>, ConfigError> {
    let Some(alg) = jwk.common.key_algorithm else {
        return Ok(None);
    };
    let algorithm = match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => {
            return Err(ConfigError::UnsupportedJwk {
                kid: jwk.common.key_id.clone(),
                reason: "its `alg` is not a signature algorithm",
            })
        }
    };
    Ok(Some(algorithm))
}

fn require_family(algorithm: Algorithm, family: AlgorithmFamily) -> Result<(), ConfigError> {
    if algorithm.family() == family {
        Ok(())
    } else {
        Err(mismatch(
            algorithm,
            "the key belongs to another algorithm family",
        ))
    }
}

fn mismatch(algorithm: Algorithm, reason: &'static str) -> ConfigError {
    ConfigError::AlgorithmMismatch { algorithm, reason }
}

fn invalid(algorithm: Algorithm, error: &dyn fmt::Display) -> ConfigError {
    ConfigError::InvalidKey {
        algorithm,
        reason: error.to_string(),
    }
}

/// The number of significant bits of a big-endian unsigned integer.
fn big_endian_bits(bytes: &[u8]) -> usize {
    let mut significant = bytes.iter().skip_while(|&&b| b == 0);
    match significant.next() {
        None => 0,
        Some(&first) => {
            let rest = significant.count();
            rest * 8 + (8 - first.leading_zeros() as usize)
        }
    }
}

/// The modulus size of a PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`).
fn der_rsa_modulus_bits(der: &[u8]) -> Option<usize> {
    let (0x30, sequence, _) = der_tlv(der)? else {
        return None;
    };
    let (0x02, modulus, _) = der_tlv(sequence)? else {
        return None;
    };
    Some(big_endian_bits(modulus))
}

/// One DER tag-length-value: the tag, the value, and what follows.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    let (value, rest) = rest.split_at_checked(len)?;
    Some((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_secrets_must_be_as_long_as_the_output() {
        for (alg, min) in [
            (Algorithm::HS256, 32),
            (Algorithm::HS384, 48),
            (Algorithm::HS512, 64),
        ] {
            assert_eq!(
                VerifyingKey::hmac(alg, &vec![1; min - 1]).unwrap_err(),
                ConfigError::HmacSecretTooShort {
                    algorithm: alg,
                    min_len: min,
                    len: min - 1
                }
            );
            assert!(VerifyingKey::hmac(alg, &vec![1; min]).is_ok());
        }
    }

    #[test]
    fn der_lengths_never_panic() {
        assert_eq!(der_tlv(&[]), None);
        assert_eq!(der_tlv(&[0x30]), None);
        assert_eq!(der_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_tlv(&[0x30, 0x82, 0xff, 0xff]), None);
        assert_eq!(
            der_rsa_modulus_bits(&[0x30, 0x03, 0x02, 0x01, 0x05]),
            Some(3)
        );
        assert_eq!(big_endian_bits(&[0, 0, 0x80, 0]), 16);
        assert_eq!(big_endian_bits(&[0, 0]), 0);
    }
}
