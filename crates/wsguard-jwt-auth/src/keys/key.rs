//! A verification key, bound to one algorithm, and the crypto backend that checks it.

use std::{fmt, sync::Arc};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{digest::OutputSizeUser, Hmac, Mac};
use jsonwebtoken::{
    crypto::CryptoProvider,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse},
    Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind,
};
use sha2::{Sha256, Sha384, Sha512};

use crate::ConfigError;

#[cfg(not(any(feature = "rust-crypto", feature = "aws-lc-rs")))]
compile_error!(
    "wsguard-jwt-auth needs a crypto backend: enable `rust-crypto` (the default) or `aws-lc-rs`"
);

/// The crypto backend of every algorithm but HMAC: aws-lc-rs when its feature is on, else
/// RustCrypto. (HMAC keys are checked with the RustCrypto `hmac` crate in every build: see
/// [`HmacState`].)
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
    check: Check,
}

/// How a key checks a signature. Neither variant is ever printed: the secret or its keyed
/// state stays out of every `Debug` output and log.
#[derive(Clone)]
enum Check {
    /// An HMAC secret, keyed once (boxed: the two keyed hash states and a block buffer are
    /// hundreds of bytes).
    Hmac(Box<HmacState>),
    /// A public key, checked by jsonwebtoken's backend ([`PROVIDER`]).
    Backend(DecodingKey),
}

/// An HMAC state keyed once, when the key is built, and cloned for each token.
///
/// jsonwebtoken keys a new HMAC for every token it verifies (two compressions of the padded
/// secret, about a quarter of an HS256 verification); the state after the key is the same for
/// every token, so it is computed once here. The tag is compared in constant time, and only
/// at the algorithm's full length (`verify_slice`): a truncated MAC does not verify.
#[derive(Clone)]
enum HmacState {
    Sha256(Hmac<Sha256>),
    Sha384(Hmac<Sha384>),
    Sha512(Hmac<Sha512>),
}

impl HmacState {
    /// The keyed state for `algorithm`, `None` for a non-HMAC algorithm. Any secret length is
    /// accepted here (HMAC hashes a secret longer than the block); the minimum is checked by
    /// [`VerifyingKey::hmac`].
    fn new(algorithm: Algorithm, secret: &[u8]) -> Option<Self> {
        match algorithm {
            Algorithm::HS256 => Hmac::new_from_slice(secret).ok().map(Self::Sha256),
            Algorithm::HS384 => Hmac::new_from_slice(secret).ok().map(Self::Sha384),
            Algorithm::HS512 => Hmac::new_from_slice(secret).ok().map(Self::Sha512),
            _ => None,
        }
    }

    /// The length of the MAC in bytes (32, 48 or 64), which is also the shortest secret
    /// RFC 7518 §3.2 allows.
    fn output_len(&self) -> usize {
        match self {
            Self::Sha256(_) => Hmac::<Sha256>::output_size(),
            Self::Sha384(_) => Hmac::<Sha384>::output_size(),
            Self::Sha512(_) => Hmac::<Sha512>::output_size(),
        }
    }

    /// Whether `signature` (base64url, unpadded) is the MAC of `message`.
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        // Longer than the longest MAC: refused by the decoding (the buffer is too small);
        // shorter or longer than this one's: refused by `verify_slice`.
        let mut tag = [0u8; 64];
        let Ok(len) = URL_SAFE_NO_PAD.decode_slice(signature, &mut tag) else {
            return false;
        };
        let tag = tag.get(..len).unwrap_or_default();
        match self {
            Self::Sha256(mac) => mac.clone().chain_update(message).verify_slice(tag).is_ok(),
            Self::Sha384(mac) => mac.clone().chain_update(message).verify_slice(tag).is_ok(),
            Self::Sha512(mac) => mac.clone().chain_update(message).verify_slice(tag).is_ok(),
        }
    }
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
        let state = HmacState::new(algorithm, secret)
            .ok_or_else(|| mismatch(algorithm, "an HMAC secret needs HS256, HS384 or HS512"))?;
        let min_len = state.output_len();
        if secret.len() < min_len {
            return Err(ConfigError::HmacSecretTooShort {
                algorithm,
                min_len,
                len: secret.len(),
            });
        }
        Ok(Self {
            algorithm,
            kid: None,
            check: Check::Hmac(Box::new(state)),
        })
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

    /// Checks a public key against its algorithm: family, size, and that the backend
    /// accepts it.
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
            check: Check::Backend(decoding),
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
        match &self.check {
            Check::Hmac(state) => state.verify(message, signature),
            Check::Backend(decoding) => {
                let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
                    return false;
                };
                match (PROVIDER.verifier_factory)(&self.algorithm, decoding) {
                    Ok(verifier) => verifier.verify(message, &signature).is_ok(),
                    Err(_) => false,
                }
            }
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
    use jsonwebtoken::EncodingKey;
    use proptest::prelude::*;

    const HMAC_ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An HMAC key of any length (the RFC 4231 keys are shorter than
    /// [`VerifyingKey::hmac`] accepts), checked on the same path as every HMAC key.
    fn any_length_hmac(algorithm: Algorithm, secret: &[u8]) -> VerifyingKey {
        VerifyingKey {
            algorithm,
            kid: None,
            check: Check::Hmac(Box::new(HmacState::new(algorithm, secret).unwrap())),
        }
    }

    /// What the key did before its HMAC state was cached: jsonwebtoken's own verifier
    /// (what `jsonwebtoken::crypto::verify` runs, with the layer's provider rather than the
    /// process-wide default, which panics when both backends are compiled in).
    fn jsonwebtoken_verify(
        algorithm: Algorithm,
        secret: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let key = DecodingKey::from_secret(secret);
        (PROVIDER.verifier_factory)(&algorithm, &key)
            .unwrap()
            .verify(message, &signature)
            .is_ok()
    }

    /// jsonwebtoken's signature of `message`.
    fn jsonwebtoken_sign(algorithm: Algorithm, secret: &[u8], message: &[u8]) -> Vec<u8> {
        (PROVIDER.signer_factory)(&algorithm, &EncodingKey::from_secret(secret))
            .unwrap()
            .try_sign(message)
            .unwrap()
    }

    /// RFC 7515 appendix A.1: the HS256 example, its key a JWK.
    #[test]
    fn rfc7515_a1_hs256() {
        let jwk: Jwk = serde_json::from_str(
            r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#,
        )
        .unwrap();
        let key = VerifyingKey::from_jwk_with_algorithm(&jwk, Algorithm::HS256).unwrap();
        let message = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
            .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(key.verify(message.as_bytes(), signature.as_bytes()));
        // One character changed, one dropped, one added, the signature of another message.
        assert!(!key.verify(
            message.as_bytes(),
            b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl"
        ));
        assert!(!key.verify(
            message.as_bytes(),
            b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX"
        ));
        assert!(!key.verify(
            message.as_bytes(),
            b"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkA"
        ));
        assert!(!key.verify(&message.as_bytes()[1..], signature.as_bytes()));
        // The same secret bound to HS512 does not take the HS256 signature.
        let hs512 = VerifyingKey::from_jwk_with_algorithm(&jwk, Algorithm::HS512).unwrap();
        assert!(!hs512.verify(message.as_bytes(), signature.as_bytes()));
    }

    /// RFC 4231 section 4: the HMAC-SHA-256, -384 and -512 test cases (key, data, the three
    /// MACs in hex). Test case 5, truncated to 128 bits, is below.
    #[test]
    fn rfc4231_vectors() {
        let big_key = [0xaa; 131];
        let cases: [(&[u8], &[u8], [&str; 3]); 6] = [
            // 4.2. Test Case 1
            (
                &[0x0b; 20],
                b"Hi There",
                [
                    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
                    "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c\
                     faea9ea9076ede7f4af152e8b2fa9cb6",
                    "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde\
                     daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
                ],
            ),
            // 4.3. Test Case 2: a key shorter than the output.
            (
                b"Jefe",
                b"what do ya want for nothing?",
                [
                    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                    "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
                     8e2240ca5e69e2c78b3239ecfab21649",
                    "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
                     9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
                ],
            ),
            // 4.4. Test Case 3
            (
                &[0xaa; 20],
                &[0xdd; 50],
                [
                    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
                    "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b\
                     2a5ab39dc13814b94e3ab6e101a34f27",
                    "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39\
                     bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
                ],
            ),
            // 4.5. Test Case 4
            (
                &[
                    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                    23, 24, 25,
                ],
                &[0xcd; 50],
                [
                    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
                    "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e\
                     6801dd23c4a7d679ccf8a386c674cffb",
                    "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db\
                     a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
                ],
            ),
            // 4.7. Test Case 6: a key longer than the block, hashed first.
            (
                &big_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                [
                    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
                    "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6\
                     0c2ef6ab4030fe8296248df163f44952",
                    "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352\
                     6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
                ],
            ),
            // 4.8. Test Case 7: key and data longer than the block.
            (
                &big_key,
                b"This is a test using a larger than block-size key and a larger than \
                  block-size data. The key needs to be hashed before being used by the HMAC \
                  algorithm.",
                [
                    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
                    "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5\
                     a678cc31e799176d3860e6110c46523e",
                    "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944\
                     b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
                ],
            ),
        ];
        for (key, data, macs) in cases {
            for (algorithm, mac) in HMAC_ALGORITHMS.into_iter().zip(macs) {
                let mac = b64(&hex(mac));
                let case = format!("{algorithm:?}, key of {} bytes", key.len());
                assert!(
                    any_length_hmac(algorithm, key).verify(data, mac.as_bytes()),
                    "{case}"
                );
                // Test cases 6 and 7 have keys long enough for `VerifyingKey::hmac`.
                if let Ok(key) = VerifyingKey::hmac(algorithm, key) {
                    assert!(key.verify(data, mac.as_bytes()), "{case}");
                    assert!(!key.verify(b"other data", mac.as_bytes()), "{case}");
                }
            }
        }
    }

    /// RFC 4231 section 4.6, Test Case 5: the MACs truncated to 128 bits are correct
    /// prefixes, and none of them verifies: a tag is checked at the algorithm's full length.
    #[test]
    fn rfc4231_truncated_tags_do_not_verify() {
        let truncated = [
            "a3b6167473100ee06e0c796c2955552b",
            "3abf34c3503b2a23a46efc619baef897",
            "415fad6271580a531d4179bc891d87a6",
        ];
        let data = b"Test With Truncation";
        for (algorithm, prefix) in HMAC_ALGORITHMS.into_iter().zip(truncated) {
            let full = jsonwebtoken_sign(algorithm, &[0x0c; 20], data);
            assert_eq!(&full[..16], hex(prefix), "{algorithm:?}");
            let key = any_length_hmac(algorithm, &[0x0c; 20]);
            assert!(key.verify(data, b64(&full).as_bytes()), "{algorithm:?}");
            assert!(
                !key.verify(data, b64(&hex(prefix)).as_bytes()),
                "{algorithm:?}"
            );
            assert!(!key.verify(data, b64(&full[..full.len() - 1]).as_bytes()));
            assert!(!key.verify(data, b""), "{algorithm:?}");
        }
    }

    /// A signature, valid or altered: how the proptest below changes a valid one.
    #[derive(Debug, Clone)]
    enum Alteration {
        None,
        /// One bit flipped, at a position taken modulo the tag's length in bits.
        FlipBit(usize),
        /// Shortened by 1 to the whole tag, modulo its length.
        Truncate(usize),
        /// One byte appended.
        Extend(u8),
        /// The encoding's last character replaced (non-canonical trailing bits included).
        LastChar(u8),
        /// Random bytes, base64url-encoded.
        Random(Vec<u8>),
        /// A random string, most often not base64url at all.
        Raw(Vec<u8>),
    }

    fn alteration() -> impl Strategy<Value = Alteration> {
        prop_oneof![
            Just(Alteration::None),
            any::<usize>().prop_map(Alteration::FlipBit),
            any::<usize>().prop_map(Alteration::Truncate),
            any::<u8>().prop_map(Alteration::Extend),
            any::<u8>().prop_map(Alteration::LastChar),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(Alteration::Random),
            proptest::collection::vec(any::<u8>(), 0..100).prop_map(Alteration::Raw),
        ]
    }

    const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    proptest! {
        /// The cached HMAC state agrees with jsonwebtoken's verifier on random secrets,
        /// messages and signatures, valid or altered; a valid one verifies and an altered
        /// one does not.
        #[test]
        fn hmac_agrees_with_jsonwebtoken(
            algorithm in proptest::sample::select(HMAC_ALGORITHMS.to_vec()),
            secret in proptest::collection::vec(any::<u8>(), 64..200),
            message in proptest::collection::vec(any::<u8>(), 0..300),
            alteration in alteration(),
        ) {
            let key = VerifyingKey::hmac(algorithm, &secret).unwrap();
            let mut tag = jsonwebtoken_sign(algorithm, &secret, &message);
            let valid = b64(&tag);
            let signature = match &alteration {
                Alteration::None => valid.clone().into_bytes(),
                Alteration::FlipBit(bit) => {
                    let bit = bit % (tag.len() * 8);
                    tag[bit / 8] ^= 1 << (bit % 8);
                    b64(&tag).into_bytes()
                }
                Alteration::Truncate(by) => {
                    let len = tag.len() - 1 - by % tag.len();
                    b64(&tag[..len]).into_bytes()
                }
                Alteration::Extend(byte) => {
                    tag.push(*byte);
                    b64(&tag).into_bytes()
                }
                Alteration::LastChar(pick) => {
                    let mut encoded = valid.clone().into_bytes();
                    if let Some(last) = encoded.last_mut() {
                        *last = B64URL[usize::from(*pick) % 64];
                    }
                    encoded
                }
                Alteration::Random(bytes) => b64(bytes).into_bytes(),
                Alteration::Raw(bytes) => bytes.clone(),
            };
            let ours = key.verify(&message, &signature);
            prop_assert_eq!(ours, jsonwebtoken_verify(algorithm, &secret, &message, &signature));
            match alteration {
                Alteration::None => prop_assert!(ours),
                Alteration::FlipBit(_) | Alteration::Truncate(_) | Alteration::Extend(_) => {
                    prop_assert!(!ours)
                }
                _ => prop_assert_eq!(ours, signature == valid.as_bytes()),
            }
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = VerifyingKey::hmac(Algorithm::HS256, b"an HS256 secret of at least 32 bytes!")
            .unwrap()
            .with_kid("k1");
        // The whole of it: the algorithm and the kid, nothing of the secret or its state.
        assert_eq!(
            format!("{key:?}"),
            r#"VerifyingKey { algorithm: HS256, kid: Some("k1"), .. }"#
        );
    }

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
