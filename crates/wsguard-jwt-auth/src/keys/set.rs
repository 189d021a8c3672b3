//! A set of verification keys, chosen by `kid`.

use std::{collections::HashMap, sync::Arc};

use super::key::VerifyingKey;
use crate::ConfigError;

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
    by_kid: HashMap<Arc<str>, Arc<VerifyingKey>>,
    without_kid: Vec<Arc<VerifyingKey>>,
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
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<Self, ConfigError> {
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
    pub fn add_key(mut self, key: VerifyingKey) -> Result<Self, ConfigError> {
        self.insert(key)?;
        Ok(self)
    }

    pub(crate) fn insert(&mut self, key: VerifyingKey) -> Result<(), ConfigError> {
        match key.shared_kid().cloned() {
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
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.by_kid.get(kid).map(|key| &**key)
    }

    /// The keys to try for a token with `kid`.
    pub(crate) fn candidates(&self, kid: Option<&str>) -> &[Arc<VerifyingKey>] {
        if let Some(key) = kid.and_then(|kid| self.by_kid.get(kid)) {
            return std::slice::from_ref(key);
        }
        &self.without_kid
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm;

    use super::*;

    #[test]
    fn a_key_set_without_keys_is_a_configuration_error() {
        assert_eq!(
            KeySet::from_keys(Vec::new()).unwrap_err(),
            ConfigError::NoKeys
        );
        let one = VerifyingKey::hmac(Algorithm::HS256, &[1; 32]).unwrap();
        assert_eq!(KeySet::from_keys([one]).unwrap().len(), 1);
    }

    #[test]
    fn candidates_fall_back_to_keys_without_kid() {
        let a = VerifyingKey::hmac(Algorithm::HS256, &[1; 32])
            .unwrap()
            .with_kid("a");
        let plain = VerifyingKey::hmac(Algorithm::HS384, &[2; 48]).unwrap();
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
