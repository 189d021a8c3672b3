use std::{
    borrow::Cow,
    fmt,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tower_layer::Layer;
use wsguard_core::{
    key::{ClientIpKey, GlobalKey, PrincipalKey},
    HttpRejection, KeyExtractor, Reason,
};

use crate::{service::ConnLimit, store::InMemoryStore};

/// The most limits one layer holds.
pub const MAX_LIMITS: usize = 64;

/// The default `Retry-After` of a refusal.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One limit: a name (for logs and metrics), a key extractor and a maximum per key.
///
/// ```
/// use wsguard_conn_limit::Limit;
/// use wsguard_core::{key::HeaderKey, Key, KeyError};
///
/// // At most 3 sockets per user, 20 per address, and 50 per dialog (a path parameter).
/// let per_user = Limit::per_principal(3);
/// let per_ip = Limit::per_ip(20);
/// let per_dialog = Limit::new("dialog", |head: &wsguard_core::key::RequestHead<'_>| {
///     head.uri()
///         .path()
///         .strip_prefix("/dialogs/")
///         .filter(|id| !id.is_empty() && id.len() <= 64)
///         .map(Key::custom)
///         .ok_or(KeyError::Missing("dialog id"))
/// }, 50);
/// ```
pub struct Limit {
    pub(crate) name: Cow<'static, str>,
    pub(crate) extractor: Box<dyn KeyExtractor>,
    pub(crate) max: u32,
    pub(crate) reason: Reason,
    pub(crate) optional: bool,
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("name", &self.name)
            .field("max", &self.max)
            .field("reason", &self.reason)
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

impl Limit {
    /// At most `max` concurrent connections per key computed by `extractor`, refused with
    /// 429 / close 4429 ([`Reason::TooManyConnections`]).
    ///
    /// A request whose key cannot be computed is refused (500 when the key is missing,
    /// which means the layer that provides it is not in front; 400 when it is invalid),
    /// unless the limit is [`optional`](Self::optional). A handshake that an outer layer
    /// already refused in close mode (a [`PendingRejection`](wsguard_core::PendingRejection)
    /// in its extensions, for example a bad token, hence no principal) is not refused for a
    /// missing key: that limit does not apply to it, and the others count it for the short
    /// time its socket is open before the hand-off closes it with the outer rejection.
    pub fn new(name: impl Into<Cow<'static, str>>, extractor: impl KeyExtractor, max: u32) -> Self {
        Self {
            name: name.into(),
            extractor: Box::new(extractor),
            max,
            reason: Reason::TooManyConnections,
            optional: false,
        }
    }

    /// At most `max` connections in total, refused with 503 / close 1013
    /// ([`Reason::AtCapacity`]). Named `global`.
    pub fn global(max: u32) -> Self {
        Self::new("global", GlobalKey::default(), max).at_capacity()
    }

    /// At most `max` connections per client address, as resolved by `wsguard-client-ip`
    /// ([`ClientIp`](wsguard_core::ClientIp)). IPv6 clients are counted per /64 network,
    /// which one subscriber usually owns whole. Named `ip`.
    pub fn per_ip(max: u32) -> Self {
        let key = match ClientIpKey::new().ipv6_prefix(64) {
            Ok(key) => key,
            Err(_) => ClientIpKey::new(),
        };
        Self::new("ip", key, max)
    }

    /// At most `max` connections per authenticated [`Principal`](wsguard_core::Principal)
    /// (set by `wsguard-jwt-auth` or your own authentication). Named `principal`.
    pub fn per_principal(max: u32) -> Self {
        Self::new("principal", PrincipalKey::default(), max)
    }

    /// Skips this limit for requests without a key (for example a per-principal limit on a
    /// route that also serves anonymous clients), instead of refusing them.
    #[must_use]
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Refuses with 503 / close 1013 ([`Reason::AtCapacity`]) rather than 429 / 4429: the
    /// server is full, not the client greedy.
    #[must_use]
    pub fn at_capacity(mut self) -> Self {
        self.reason = Reason::AtCapacity;
        self
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most connections per key.
    pub const fn max(&self) -> u32 {
        self.max
    }
}

/// An invalid configuration, reported by [`ConnLimitBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The layer has no limit.
    NoLimits,
    /// A limit's maximum is zero (every connection would be refused).
    ZeroMaximum {
        /// The limit's name.
        limit: String,
    },
    /// Two limits share a name, so their logs and metrics could not be told apart.
    DuplicateName {
        /// The name.
        limit: String,
    },
    /// More than [`MAX_LIMITS`] limits.
    TooManyLimits,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLimits => f.write_str("a connection limit layer needs at least one limit"),
            Self::ZeroMaximum { limit } => write!(f, "the maximum of limit `{limit}` is zero"),
            Self::DuplicateName { limit } => write!(f, "two limits are named `{limit}`"),
            Self::TooManyLimits => write!(f, "more than {MAX_LIMITS} limits"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A limit as the service uses it.
pub(crate) struct ActiveLimit {
    pub(crate) name: Cow<'static, str>,
    pub(crate) extractor: Box<dyn KeyExtractor>,
    pub(crate) max: NonZeroU32,
    pub(crate) reason: Reason,
    pub(crate) optional: bool,
    /// Connections currently counted under this limit.
    pub(crate) active: AtomicU64,
}

pub(crate) struct Config<St, P> {
    pub(crate) limits: Box<[ActiveLimit]>,
    pub(crate) store: St,
    pub(crate) policy: P,
    pub(crate) close_mode: bool,
    pub(crate) retry_after: Duration,
}

/// Limits concurrent connections for their whole life; see the [crate docs](crate).
///
/// Built with [`ConnLimitLayer::builder`]. Cloning is cheap: the configuration is shared.
pub struct ConnLimitLayer<St = InMemoryStore, P = HttpRejection> {
    pub(crate) config: Arc<Config<St, P>>,
}

impl<St, P> Clone for ConnLimitLayer<St, P> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<St: fmt::Debug, P: fmt::Debug> fmt::Debug for ConnLimitLayer<St, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limits: Vec<_> = self
            .config
            .limits
            .iter()
            .map(|l| (l.name.as_ref(), l.max))
            .collect();
        f.debug_struct("ConnLimitLayer")
            .field("limits", &limits)
            .field("store", &self.config.store)
            .field("policy", &self.config.policy)
            .field("close_mode", &self.config.close_mode)
            .field("retry_after", &self.config.retry_after)
            .finish()
    }
}

impl ConnLimitLayer {
    /// A builder with the in-memory store and HTTP answers.
    pub fn builder() -> ConnLimitBuilder {
        ConnLimitBuilder {
            limits: Vec::new(),
            store: InMemoryStore::new(),
            policy: HttpRejection,
            close_mode: false,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }
}

impl<St, P> ConnLimitLayer<St, P> {
    /// How many connections are counted now under the limit named `name` (`None` if there is
    /// no such limit). The same figure as the `wsguard_connections_active` gauge.
    pub fn active(&self, name: &str) -> Option<u64> {
        self.config
            .limits
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.active.load(Ordering::Acquire))
    }

    /// The store behind the counts.
    pub fn store(&self) -> &St {
        &self.config.store
    }
}

impl<S, St, P> Layer<S> for ConnLimitLayer<St, P> {
    type Service = ConnLimit<S, St, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnLimit::new(inner, self.clone())
    }
}

/// Builds a [`ConnLimitLayer`].
#[must_use]
pub struct ConnLimitBuilder<St = InMemoryStore, P = HttpRejection> {
    limits: Vec<Limit>,
    store: St,
    policy: P,
    close_mode: bool,
    retry_after: Duration,
}

impl<St: fmt::Debug, P: fmt::Debug> fmt::Debug for ConnLimitBuilder<St, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnLimitBuilder")
            .field("limits", &self.limits)
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("close_mode", &self.close_mode)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl<St, P> ConnLimitBuilder<St, P> {
    /// Adds a limit. Limits are acquired in the order they are added, all or nothing.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Adds [`Limit::global`].
    pub fn global(self, max: u32) -> Self {
        self.limit(Limit::global(max))
    }

    /// Adds [`Limit::per_ip`].
    pub fn per_ip(self, max: u32) -> Self {
        self.limit(Limit::per_ip(max))
    }

    /// Adds [`Limit::per_principal`].
    pub fn per_principal(self, max: u32) -> Self {
        self.limit(Limit::per_principal(max))
    }

    /// The `Retry-After` sent with refusals (default 5 s; rounded up to whole seconds, never 0).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Browser mode: a refused WebSocket handshake is accepted and closed at once with the
    /// close code (4429, or 1013 for capacity) instead of answered 429/503, because browsers
    /// cannot read a refused handshake's status.
    ///
    /// The cost: every refused client completes an upgrade (one more round trip and a task
    /// on the server) before it is closed, and the application's handler runs (its socket
    /// callback does not: the wsguard hand-off delivers the close instead). The handler has
    /// to run: it selects the subprotocol, and Chromium fails a handshake that offered
    /// subprotocols (the token's `bearer` pair) and got none selected. The refused
    /// connection holds no slot. An application that upgrades without a wsguard hand-off
    /// gets the HTTP answer, never an unguarded socket. Requests that are not WebSocket
    /// handshakes always get the HTTP answer.
    pub fn close_mode(mut self, enabled: bool) -> Self {
        self.close_mode = enabled;
        self
    }

    /// Keeps the counts in `store` instead of this process's memory.
    pub fn store<St2>(self, store: St2) -> ConnLimitBuilder<St2, P> {
        ConnLimitBuilder {
            limits: self.limits,
            store,
            policy: self.policy,
            close_mode: self.close_mode,
            retry_after: self.retry_after,
        }
    }

    /// How refusals are answered: [`HttpRejection`] (default),
    /// [`GrpcRejection`](wsguard_core::GrpcRejection) for tonic, or a closure.
    pub fn on_rejection<P2>(self, policy: P2) -> ConnLimitBuilder<St, P2> {
        ConnLimitBuilder {
            limits: self.limits,
            store: self.store,
            policy,
            close_mode: self.close_mode,
            retry_after: self.retry_after,
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when there is no limit, more than [`MAX_LIMITS`], a zero maximum or
    /// two limits with one name.
    pub fn build(self) -> Result<ConnLimitLayer<St, P>, ConfigError> {
        if self.limits.is_empty() {
            return Err(ConfigError::NoLimits);
        }
        if self.limits.len() > MAX_LIMITS {
            return Err(ConfigError::TooManyLimits);
        }
        let mut limits = Vec::with_capacity(self.limits.len());
        for limit in self.limits {
            if limits.iter().any(|l: &ActiveLimit| l.name == limit.name) {
                return Err(ConfigError::DuplicateName {
                    limit: limit.name.into_owned(),
                });
            }
            let Some(max) = NonZeroU32::new(limit.max) else {
                return Err(ConfigError::ZeroMaximum {
                    limit: limit.name.into_owned(),
                });
            };
            limits.push(ActiveLimit {
                name: limit.name,
                extractor: limit.extractor,
                max,
                reason: limit.reason,
                optional: limit.optional,
                active: AtomicU64::new(0),
            });
        }
        Ok(ConnLimitLayer {
            config: Arc::new(Config {
                limits: limits.into_boxed_slice(),
                store: self.store,
                policy: self.policy,
                close_mode: self.close_mode,
                retry_after: self.retry_after,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_at_build_time() {
        assert_eq!(
            ConnLimitLayer::builder().build().err(),
            Some(ConfigError::NoLimits)
        );
        assert_eq!(
            ConnLimitLayer::builder().per_ip(0).build().err(),
            Some(ConfigError::ZeroMaximum { limit: "ip".into() })
        );
        assert_eq!(
            ConnLimitLayer::builder().per_ip(1).per_ip(2).build().err(),
            Some(ConfigError::DuplicateName { limit: "ip".into() })
        );
        let many = (0..=MAX_LIMITS).fold(ConnLimitLayer::builder(), |b, i| {
            b.limit(Limit::new(format!("l{i}"), GlobalKey::default(), 1))
        });
        assert_eq!(many.build().err(), Some(ConfigError::TooManyLimits));
        let layer = ConnLimitLayer::builder()
            .global(10)
            .per_principal(3)
            .build()
            .unwrap();
        assert_eq!(layer.active("global"), Some(0));
        assert_eq!(layer.active("nope"), None);
    }
}
