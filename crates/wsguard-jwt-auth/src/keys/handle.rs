//! A shared, swappable key set, for rotating keys without a restart.

use std::{fmt, sync::Arc};

use arc_swap::ArcSwap;

use super::set::KeySet;

/// A shared, swappable [`KeySet`]: rotate keys without a restart.
///
/// Clones share the set. Readers never wait: a request loads the current set without a lock,
/// and [`replace`](Self::replace) publishes a new one atomically; requests already being
/// verified finish with the set they loaded.
///
/// ```
/// use wsguard_jwt_auth::{Algorithm, VerifyingKey, KeySet, KeySetHandle};
///
/// let old = VerifyingKey::hmac(Algorithm::HS256, &[1; 32])?.with_kid("old");
/// let handle = KeySetHandle::new(KeySet::from_keys([old.clone()])?);
/// // let layer = JwtAuthLayer::<Claims>::new(handle.clone());
///
/// let new = VerifyingKey::hmac(Algorithm::HS256, &[2; 32])?.with_kid("new");
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
