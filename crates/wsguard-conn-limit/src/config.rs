//! The configuration a layer and its services share, the decision on each request (its
//! keys, and the rejection for a refusal), and the log and count of each refusal.
//!
//! Below the layer, the service and the future: this module imports none of them.

use std::{
    borrow::Cow,
    fmt,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use http::{Request, Response};
use wsguard_core::{
    guard::{respond, Mode, PendingRejection},
    ClientIpKey, GlobalKey, KeyError, KeyExtractor, OnRejection, PrincipalKey, Reason, Rejection,
    RequestHead, ScopedBody,
};

use crate::{
    store::{Refusal, Slot},
    telemetry::{self, ActiveGauge},
};

/// The most limits one layer holds.
pub const MAX_LIMITS: usize = 64;

/// The default `Retry-After` of a refusal.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// One limit: a name (for logs and metrics), a key extractor and a maximum per key.
///
/// ```
/// use wsguard_conn_limit::Limit;
/// use wsguard_core::{HeaderKey, Key, KeyError};
///
/// // At most 3 sockets per user, 20 per address, and 50 per dialog (a path parameter).
/// let per_user = Limit::per_principal(3);
/// let per_ip = Limit::per_ip(20);
/// let per_dialog = Limit::new("dialog", |head: &wsguard_core::RequestHead<'_>| {
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
    /// already refused in close mode (a [`PendingRejection`](wsguard_core::guard::PendingRejection)
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

/// An invalid configuration, reported by
/// [`ConnLimitBuilder::build`](crate::ConnLimitBuilder::build).
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
    /// Its `wsguard_connections_active` gauge.
    pub(crate) gauge: ActiveGauge,
}

pub(crate) struct Config<St, P> {
    pub(crate) limits: Box<[ActiveLimit]>,
    pub(crate) store: St,
    pub(crate) policy: P,
    pub(crate) close_mode: bool,
    pub(crate) retry_after: Duration,
    /// Dry-run mode: refusals are logged and counted, and the connection goes through
    /// without holding a slot.
    pub(crate) dry_run: bool,
}

impl<St: fmt::Debug, P: fmt::Debug> fmt::Debug for Config<St, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limits: Vec<_> = self
            .limits
            .iter()
            .map(|l| (l.name.as_ref(), l.max))
            .collect();
        f.debug_struct("Config")
            .field("limits", &limits)
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("close_mode", &self.close_mode)
            .field("retry_after", &self.retry_after)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

impl<St, P> Config<St, P> {
    /// Checks `limits` and makes them the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when there is no limit, more than [`MAX_LIMITS`], a zero maximum or
    /// two limits with one name.
    pub(crate) fn new(
        limits: Vec<Limit>,
        store: St,
        policy: P,
        close_mode: bool,
        retry_after: Duration,
        dry_run: bool,
    ) -> Result<Self, ConfigError> {
        if limits.is_empty() {
            return Err(ConfigError::NoLimits);
        }
        if limits.len() > MAX_LIMITS {
            return Err(ConfigError::TooManyLimits);
        }
        let mut active = Vec::with_capacity(limits.len());
        for limit in limits {
            if active.iter().any(|l: &ActiveLimit| l.name == limit.name) {
                return Err(ConfigError::DuplicateName {
                    limit: limit.name.into_owned(),
                });
            }
            let Some(max) = NonZeroU32::new(limit.max) else {
                return Err(ConfigError::ZeroMaximum {
                    limit: limit.name.into_owned(),
                });
            };
            active.push(ActiveLimit {
                gauge: ActiveGauge::new(limit.name.clone()),
                name: limit.name,
                extractor: limit.extractor,
                max,
                reason: limit.reason,
                optional: limit.optional,
                active: AtomicU64::new(0),
            });
        }
        for limit in &active {
            telemetry::register_limit(limit.name.clone(), &[limit.reason, Reason::AtCapacity]);
        }
        Ok(Self {
            limits: active.into_boxed_slice(),
            store,
            policy,
            close_mode,
            retry_after,
            dry_run,
        })
    }

    /// How many connections are counted now under the limit named `name`.
    pub(crate) fn active(&self, name: &str) -> Option<u64> {
        self.limits
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.active.load(Ordering::Acquire))
    }

    /// Whether refusals are enforced or only logged and counted.
    pub(crate) const fn mode(&self) -> Mode {
        Mode::from_dry_run(self.dry_run)
    }

    /// What happens to a connection a limit refuses, for the logs: `refused`, or in dry-run
    /// mode `let through in dry-run mode`.
    const fn outcome(&self) -> &'static str {
        if self.dry_run {
            "let through in dry-run mode"
        } else {
            "refused"
        }
    }

    /// The slots `req` takes, one per limit with a key, and the bit set of the limits it is
    /// counted under; or, when a limit has no usable key (logged and counted), the
    /// rejection, or in dry-run mode `None`: the request goes through holding no slot.
    pub(crate) fn slots<B>(&self, req: &Request<B>) -> Result<(Vec<Slot>, u64), Option<Rejection>> {
        let head = RequestHead::from_request(req);
        // An outer layer already refused this handshake in close mode (for example the
        // authentication layer, so there is no principal): the socket will only be closed.
        // Limits whose key is missing do not apply to it; the others still count it for the
        // short time it is open.
        let refused_already = req.extensions().get::<PendingRejection>().is_some();
        let mut slots = Vec::with_capacity(self.limits.len());
        let mut counted = 0u64;
        for (index, limit) in self.limits.iter().enumerate() {
            match limit.extractor.extract(&head) {
                Ok(key) => {
                    // `MAX_LIMITS` (64) is checked at build time: the index fits both.
                    slots.push(Slot::new(index as u16, key, limit.max));
                    counted |= 1 << index;
                }
                Err(KeyError::Missing(_)) if limit.optional || refused_already => {}
                Err(error) => {
                    let reason = match error {
                        KeyError::Invalid(what) => {
                            tracing::debug!(
                                limit = %limit.name,
                                unusable = what,
                                "connection {}: no usable key",
                                self.outcome()
                            );
                            Reason::BadRequest
                        }
                        _ => {
                            tracing::error!(
                                limit = %limit.name,
                                missing = what_of(&error),
                                "connection {}: the request has no key for this limit; is the \
                                 layer that provides it (client-ip, jwt-auth) in front of the \
                                 connection limit?",
                                self.outcome()
                            );
                            Reason::Internal
                        }
                    };
                    wsguard_core::guard::record_rejection_as(
                        telemetry::CONN_LIMIT,
                        reason,
                        self.mode(),
                    );
                    if self.dry_run {
                        tracing::info!(
                            limit = %limit.name,
                            reason = reason.as_str(),
                            mode = Mode::DryRun.as_str(),
                            "dry run: connection let through, holding no slot, that would be refused"
                        );
                        return Err(None);
                    }
                    return Err(Some(Rejection::new(reason)));
                }
            }
        }
        Ok((slots, counted))
    }

    /// The answer to `rejection`, by the policy.
    pub(crate) fn reject<B>(&self, rejection: Rejection) -> Response<ScopedBody<B>>
    where
        P: OnRejection<B>,
    {
        ScopedBody::wrap(respond(&self.policy, rejection), None)
    }

    /// The rejection for a store's refusal; logs and counts it (in dry-run mode as a
    /// refusal that was not made).
    pub(crate) fn refused(&self, refusal: Refusal, slots: &[Slot]) -> Rejection {
        let slot = match refusal {
            Refusal::Full { slot } | Refusal::TooManyKeys { slot } => slots.get(slot),
            _ => None,
        };
        let limit = slot.and_then(|s| self.limits.get(usize::from(s.limit())));
        let name = limit.map_or(Cow::Borrowed(""), |l| l.name.clone());
        let class = slot.map_or("", |s| s.key().class());
        let reason = match refusal {
            Refusal::Full { .. } => {
                tracing::debug!(
                    limit = &*name,
                    key_class = class,
                    "connection {}: limit reached",
                    self.outcome()
                );
                limit.map_or(Reason::TooManyConnections, |l| l.reason)
            }
            Refusal::TooManyKeys { .. } => {
                tracing::warn!(
                    limit = &*name,
                    key_class = class,
                    "connection {}: the store tracks as many keys as it may",
                    self.outcome()
                );
                Reason::AtCapacity
            }
            _ => {
                tracing::error!(
                    "connection {}: the connection store is unavailable",
                    self.outcome()
                );
                Reason::AtCapacity
            }
        };
        if self.dry_run {
            tracing::info!(
                limit = &*name,
                key_class = class,
                reason = reason.as_str(),
                mode = Mode::DryRun.as_str(),
                "dry run: connection let through, holding no slot, that would be refused"
            );
        }
        telemetry::refused(name, reason, self.mode());
        Rejection::new(reason).with_retry_after(self.retry_after)
    }
}

fn what_of(error: &KeyError) -> &'static str {
    match error {
        KeyError::Missing(what) | KeyError::Invalid(what) => what,
        _ => "key",
    }
}
