//! Where a layer gets its keys: one small trait, [`KeyProvider`], implemented by each kind of
//! source (a fixed [`KeySet`], a [`KeySetHandle`], a JWKS cache in `jwks.rs`), and the
//! public [`KeySource`] a layer is given.

use std::{fmt, future::Future, ops::Deref, pin::Pin, sync::Arc, time::Duration};

use arc_swap::Guard;
use jsonwebtoken::Algorithm;

use super::{handle::KeySetHandle, key::VerifyingKey, set::KeySet};

/// A wait for a key source to fetch fresh keys.
pub(crate) type KeyWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source of verification keys, as verification sees it.
///
/// Crate-private on purpose: its methods are the verifier's internals (a lock-free load, the
/// refresh on an unknown `kid` with its cooldown, the pinned issuer, the `Retry-After` of a
/// 503), and freezing them as public API would buy nothing a [`KeySetHandle`] does not
/// already give: keys from anywhere else are loaded by the application and published with
/// [`KeySetHandle::replace`].
///
/// The defaults describe a source that holds its keys and never fetches any.
pub(crate) trait KeyProvider: fmt::Debug + Send + Sync + 'static {
    /// The keys now; no lock is taken.
    fn load(&self) -> Loaded<'_>;

    /// Whether the source has its keys (see [`KeySource::is_ready`]).
    fn is_ready(&self) -> bool;

    /// Whether this source fetches its keys and could hold a key for `algorithm`: only such
    /// sources are refreshed for an unknown `kid`, and only their missing keys make a token
    /// wait or get 503.
    fn fetches_keys_for(&self, algorithm: Algorithm) -> bool {
        let _ = algorithm;
        false
    }

    /// For a token no loaded key verifies: a wait for fresh keys, if this source can fetch
    /// some now (at most one fetch per cooldown).
    fn refresh_for_unknown_kid(&self) -> Option<KeyWait> {
        None
    }

    /// The issuer a token verified with this source's keys must name, if pinned (an OpenID
    /// Connect source).
    fn pinned_issuer(&self) -> Option<Arc<str>> {
        None
    }

    /// The `Retry-After` hint for a token refused while this source has no keys yet.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// A loaded key set: borrowed, or held by an `arc-swap` guard (no lock is taken).
pub(crate) enum Loaded<'a> {
    Borrowed(&'a KeySet),
    Guard(Guard<Arc<KeySet>>),
}

impl Deref for Loaded<'_> {
    type Target = KeySet;

    fn deref(&self) -> &KeySet {
        match self {
            Self::Borrowed(keys) => keys,
            Self::Guard(guard) => guard,
        }
    }
}

/// A fixed set: always its keys.
impl KeyProvider for KeySet {
    fn load(&self) -> Loaded<'_> {
        Loaded::Borrowed(self)
    }

    fn is_ready(&self) -> bool {
        !self.is_empty()
    }
}

/// A shared handle: whatever set was published last.
impl KeyProvider for KeySetHandle {
    fn load(&self) -> Loaded<'_> {
        Loaded::Guard(self.load())
    }

    fn is_ready(&self) -> bool {
        !self.load().is_empty()
    }
}

/// Where a layer gets its keys: a [`VerifyingKey`], a [`KeySet`], a [`KeySetHandle`] for rotation, or
/// (with the `jwks` feature) a [`Jwks`](crate::jwks::Jwks) cache. A layer can have several
/// sources; each keeps its own keys, so a `kid` of one never shadows the key of another: a
/// token is tried against the matching keys of every source.
#[derive(Clone, Debug)]
pub struct KeySource {
    provider: Arc<dyn KeyProvider>,
}

impl KeySource {
    /// A source of the keys `provider` holds.
    pub(crate) fn new(provider: impl KeyProvider) -> Self {
        Self {
            provider: Arc::new(provider),
        }
    }

    /// The source's keys, as verification sees them.
    pub(crate) fn provider(&self) -> &dyn KeyProvider {
        &*self.provider
    }

    /// Whether the source has its keys: a static set or a handle that holds at least one
    /// key, a JWKS cache whose first fetch succeeded. A readiness probe
    /// ([`JwtAuthLayer::keys_ready`](crate::JwtAuthLayer::keys_ready)) asks every source.
    pub fn is_ready(&self) -> bool {
        self.provider.is_ready()
    }
}

impl From<KeySet> for KeySource {
    fn from(keys: KeySet) -> Self {
        Self::new(keys)
    }
}

impl From<VerifyingKey> for KeySource {
    fn from(key: VerifyingKey) -> Self {
        let mut set = KeySet::new();
        // A single key cannot collide with another.
        let _ = set.insert(key);
        set.into()
    }
}

impl From<KeySetHandle> for KeySource {
    fn from(handle: KeySetHandle) -> Self {
        Self::new(handle)
    }
}
