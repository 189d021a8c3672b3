//! Verification keys, each bound to one algorithm, and the sets and handles that hold them.

use std::{collections::HashMap, fmt, sync::Arc};

use arc_swap::ArcSwap;
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
/// use wsguard_jwt_auth::{Algorithm, Key};
///
/// let key = Key::hmac(Algorithm::HS256, b"an HS256 secret of at least 32 bytes!")?.with_kid("2024-05");
/// assert_eq!(key.algorithm(), Algorithm::HS256);
/// assert_eq!(key.kid(), Some("2024-05"));
///
/// // Too short for HS256 (RFC 7518 section 3.2), and the wrong family for RS256:
/// assert!(Key::hmac(Algorithm::HS256, b"short").is_err());
/// assert!(Key::hmac(Algorithm::RS256, &[7; 64]).is_err());
/// # Ok::<(), wsguard_jwt_auth::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Key {
    algorithm: Algorithm,
    kid: Option<Arc<str>>,
    decoding: DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Key {
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
    /// As [`Key::rsa_pem`].
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
    /// As [`Key::ec_pem`].
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
    /// As [`Key::ed_pem`].
    pub fn ed_components(x: &str) -> Result<Self, ConfigError> {
        let key = DecodingKey::from_ed_components(x).map_err(|e| invalid(Algorithm::EdDSA, &e))?;
        Self::checked(Algorithm::EdDSA, key)
    }

    /// A key from a JWK that names its algorithm (`alg`). Its `kid`, if any, is kept.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnsupportedJwk`] for a JWK without `alg` (use
    /// [`Key::from_jwk_with_algorithm`]), with an encryption algorithm, or whose `use` or
    /// `key_ops` exclude verifying; otherwise as the constructor of its key type.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, ConfigError> {
        let algorithm = jwk_algorithm(jwk)?.ok_or_else(|| ConfigError::UnsupportedJwk {
            kid: jwk.common.key_id.clone(),
            reason: "the JWK has no `alg`: give one with `Key::from_jwk_with_algorithm`",
        })?;
        Self::from_jwk_checked(jwk, algorithm)
    }

    /// A key from a JWK, bound to `algorithm`, which must be of the key's family and equal
    /// the JWK's own `alg` if it has one.
    ///
    /// # Errors
    ///
    /// As [`Key::from_jwk`], and [`ConfigError::AlgorithmMismatch`] when `algorithm`
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

/// Keys selected by `kid`.
///
/// A token whose header has a `kid` is verified with the key of that `kid`; when no key has
/// it (and for tokens without a `kid`), with the keys that have no `kid`, in the order they
/// were added. Only keys bound to the token's `alg` are tried. Several keys without a `kid`
/// let HMAC secrets be rotated without `kid`s: old and new are both tried, in order.
///
/// A set always holds at least one key ([`from_keys`](Self::from_keys) refuses an empty
/// one), so a layer built from it can accept tokens: a configuration without keys is an
/// error when it is built, not a refusal of every token later.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone)]
pub struct KeySet {
    by_kid: HashMap<Arc<str>, Arc<Key>>,
    without_kid: Vec<Arc<Key>>,
}

impl KeySet {
    /// An empty set, for the crate's own caches (a JWKS before its first fetch).
    pub(crate) fn new() -> Self {
        Self {
            by_kid: HashMap::new(),
            without_kid: Vec::new(),
        }
    }

    /// A set of `keys`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoKeys`] when `keys` is empty, [`ConfigError::DuplicateKid`] when two
    /// keys have the same `kid`.
    pub fn from_keys(keys: impl IntoIterator<Item = Key>) -> Result<Self, ConfigError> {
        let set = keys.into_iter().try_fold(Self::new(), Self::add_key)?;
        if set.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        Ok(set)
    }

    /// Adds `key`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::DuplicateKid`] when a key with the same `kid` is in the set already.
    pub fn add_key(mut self, key: Key) -> Result<Self, ConfigError> {
        self.insert(key)?;
        Ok(self)
    }

    pub(crate) fn insert(&mut self, key: Key) -> Result<(), ConfigError> {
        match key.kid.clone() {
            Some(kid) => {
                if self.by_kid.contains_key(&kid) {
                    return Err(ConfigError::DuplicateKid {
                        kid: kid.to_string(),
                    });
                }
                self.by_kid.insert(kid, Arc::new(key));
            }
            None => self.without_kid.push(Arc::new(key)),
        }
        Ok(())
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key with `kid`, if any.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.by_kid.get(kid).map(|key| &**key)
    }

    /// The keys to try for a token with `kid`.
    pub(crate) fn candidates(&self, kid: Option<&str>) -> &[Arc<Key>] {
        if let Some(key) = kid.and_then(|kid| self.by_kid.get(kid)) {
            return std::slice::from_ref(key);
        }
        &self.without_kid
    }
}

/// A shared, swappable [`KeySet`]: rotate keys without a restart.
///
/// Clones share the set. Readers never wait: a request loads the current set without a lock,
/// and [`replace`](Self::replace) publishes a new one atomically; requests already being
/// verified finish with the set they loaded.
///
/// ```
/// use wsguard_jwt_auth::{Algorithm, Key, KeySet, KeySetHandle};
///
/// let old = Key::hmac(Algorithm::HS256, &[1; 32])?.with_kid("old");
/// let handle = KeySetHandle::new(KeySet::from_keys([old.clone()])?);
/// // let layer = JwtAuthLayer::<Claims>::new(handle.clone());
///
/// let new = Key::hmac(Algorithm::HS256, &[2; 32])?.with_kid("new");
/// handle.replace(KeySet::from_keys([old, new])?);
/// assert_eq!(handle.current().len(), 2);
/// # Ok::<(), wsguard_jwt_auth::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct KeySetHandle {
    inner: Arc<ArcSwap<KeySet>>,
}

impl KeySetHandle {
    /// A handle holding `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self {
            inner: Arc::new(ArcSwap::from_pointee(keys)),
        }
    }

    /// Replaces the key set; requests that start afterwards use the new one.
    pub fn replace(&self, keys: KeySet) {
        self.inner.store(Arc::new(keys));
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        self.inner.load_full()
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.inner.load()
    }
}

impl fmt::Debug for KeySetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySetHandle")
            .field("keys", &self.inner.load().len())
            .finish()
    }
}

/// Where a layer gets its keys: a [`KeySet`], a [`KeySetHandle`] for rotation, or (with the
/// `jwks` feature) a [`Jwks`](crate::jwks::Jwks) cache. A layer can have several sources;
/// each keeps its own keys, so a `kid` of one never shadows the key of another: a token is
/// tried against the matching keys of every source.
#[derive(Clone, Debug)]
pub struct KeySource {
    kind: SourceKind,
}

#[derive(Clone, Debug)]
enum SourceKind {
    Static(Arc<KeySet>),
    Handle(KeySetHandle),
    #[cfg(feature = "jwks")]
    Jwks(crate::jwks::Jwks),
}

impl From<KeySet> for KeySource {
    fn from(keys: KeySet) -> Self {
        Self {
            kind: SourceKind::Static(Arc::new(keys)),
        }
    }
}

impl From<Key> for KeySource {
    fn from(key: Key) -> Self {
        let mut set = KeySet::new();
        // A single key cannot collide with another.
        let _ = set.insert(key);
        set.into()
    }
}

impl From<KeySetHandle> for KeySource {
    fn from(handle: KeySetHandle) -> Self {
        Self {
            kind: SourceKind::Handle(handle),
        }
    }
}

#[cfg(feature = "jwks")]
impl From<crate::jwks::Jwks> for KeySource {
    fn from(jwks: crate::jwks::Jwks) -> Self {
        Self {
            kind: SourceKind::Jwks(jwks),
        }
    }
}

/// A loaded key set: borrowed, or held by an `arc-swap` guard (no lock is taken).
pub(crate) enum Loaded<'a> {
    Borrowed(&'a KeySet),
    Guard(arc_swap::Guard<Arc<KeySet>>),
}

impl std::ops::Deref for Loaded<'_> {
    type Target = KeySet;

    fn deref(&self) -> &KeySet {
        match self {
            Self::Borrowed(keys) => keys,
            Self::Guard(guard) => guard,
        }
    }
}

impl KeySource {
    pub(crate) fn load(&self) -> Loaded<'_> {
        match &self.kind {
            SourceKind::Static(keys) => Loaded::Borrowed(keys),
            SourceKind::Handle(handle) => Loaded::Guard(handle.load()),
            #[cfg(feature = "jwks")]
            SourceKind::Jwks(jwks) => Loaded::Guard(jwks.load()),
        }
    }

    /// For a token no loaded key verifies: a wait for fresh keys, if this source can fetch
    /// some now (at most one fetch per cooldown).
    pub(crate) fn refresh_for_unknown_kid(&self) -> Option<crate::verify::KeyWait> {
        match &self.kind {
            #[cfg(feature = "jwks")]
            SourceKind::Jwks(jwks) => jwks.refresh_for_unknown_kid(),
            _ => None,
        }
    }

    /// Whether this source fetches its keys (a JWKS cache) and could hold a key for
    /// `algorithm`: only such sources are refreshed for an unknown `kid`, and only their
    /// missing keys make a token wait or get 503.
    pub(crate) fn fetches_keys_for(&self, algorithm: Algorithm) -> bool {
        match &self.kind {
            #[cfg(feature = "jwks")]
            SourceKind::Jwks(jwks) => jwks.could_hold(algorithm),
            _ => {
                let _ = algorithm;
                false
            }
        }
    }

    /// The issuer a token verified with this source's keys must name, if pinned (an OpenID
    /// Connect source).
    pub(crate) fn pinned_issuer(&self) -> Option<Arc<str>> {
        match &self.kind {
            #[cfg(feature = "jwks")]
            SourceKind::Jwks(jwks) => jwks.pinned_issuer(),
            _ => None,
        }
    }

    /// The `Retry-After` hint for a token refused while this source has no keys yet.
    pub(crate) fn retry_after(&self) -> Option<std::time::Duration> {
        match &self.kind {
            #[cfg(feature = "jwks")]
            SourceKind::Jwks(jwks) if !jwks.is_ready() => Some(jwks.retry_after()),
            _ => None,
        }
    }

    /// Whether the source has its keys: a static set or a handle that holds at least one
    /// key, a JWKS cache whose first fetch succeeded. A readiness probe
    /// ([`JwtAuthLayer::keys_ready`](crate::JwtAuthLayer::keys_ready)) asks every source.
    pub fn is_ready(&self) -> bool {
        match &self.kind {
            SourceKind::Static(keys) => !keys.is_empty(),
            SourceKind::Handle(handle) => !handle.load().is_empty(),
            #[cfg(feature = "jwks")]
            SourceKind::Jwks(jwks) => jwks.is_ready(),
        }
    }
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
                Key::hmac(alg, &vec![1; min - 1]).unwrap_err(),
                ConfigError::HmacSecretTooShort {
                    algorithm: alg,
                    min_len: min,
                    len: min - 1
                }
            );
            assert!(Key::hmac(alg, &vec![1; min]).is_ok());
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

    #[test]
    fn a_key_set_without_keys_is_a_configuration_error() {
        assert_eq!(
            KeySet::from_keys(Vec::new()).unwrap_err(),
            ConfigError::NoKeys
        );
        let one = Key::hmac(Algorithm::HS256, &[1; 32]).unwrap();
        assert_eq!(KeySet::from_keys([one]).unwrap().len(), 1);
    }

    #[test]
    fn candidates_fall_back_to_keys_without_kid() {
        let a = Key::hmac(Algorithm::HS256, &[1; 32]).unwrap().with_kid("a");
        let plain = Key::hmac(Algorithm::HS384, &[2; 48]).unwrap();
        let set = KeySet::from_keys([a.clone(), plain]).unwrap();
        assert_eq!(set.candidates(Some("a")).len(), 1);
        assert_eq!(set.candidates(Some("a"))[0].algorithm(), Algorithm::HS256);
        assert_eq!(set.candidates(Some("b"))[0].algorithm(), Algorithm::HS384);
        assert_eq!(set.candidates(None)[0].algorithm(), Algorithm::HS384);
        assert!(matches!(
            KeySet::from_keys([a.clone(), a]),
            Err(ConfigError::DuplicateKid { .. })
        ));
    }
}
