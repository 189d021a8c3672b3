//! The layer and its builder.

use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;
use wsguard_core::HttpRejection;

use crate::{
    config::{Config, ConfigError, Limit, DEFAULT_RETRY_AFTER},
    service::ConnLimit,
    store::InMemoryConnectionStore,
};

/// Limits concurrent connections for their whole life; see the [crate docs](crate).
///
/// Built with [`ConnLimitLayer::builder`]. Cloning is cheap: the configuration is shared.
pub struct ConnLimitLayer<St = InMemoryConnectionStore, P = HttpRejection> {
    config: Arc<Config<St, P>>,
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
            .field("dry_run", &self.config.dry_run)
            .finish()
    }
}

impl ConnLimitLayer {
    /// A builder with the in-memory store and HTTP answers.
    pub fn builder() -> ConnLimitBuilder {
        ConnLimitBuilder {
            limits: Vec::new(),
            store: InMemoryConnectionStore::new(),
            policy: HttpRejection,
            close_mode: false,
            retry_after: DEFAULT_RETRY_AFTER,
            dry_run: false,
        }
    }
}

impl<St, P> ConnLimitLayer<St, P> {
    /// How many connections are counted now under the limit named `name` (`None` if there is
    /// no such limit). The same figure as the `wsguard_connections_active` gauge.
    pub fn active(&self, name: &str) -> Option<u64> {
        self.config.active(name)
    }

    /// The store behind the counts.
    pub fn store(&self) -> &St {
        &self.config.store
    }
}

impl<S, St, P> Layer<S> for ConnLimitLayer<St, P> {
    type Service = ConnLimit<S, St, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnLimit::new(inner, Arc::clone(&self.config))
    }
}

/// Builds a [`ConnLimitLayer`].
#[must_use]
pub struct ConnLimitBuilder<St = InMemoryConnectionStore, P = HttpRejection> {
    limits: Vec<Limit>,
    store: St,
    policy: P,
    close_mode: bool,
    retry_after: Duration,
    dry_run: bool,
}

impl<St: fmt::Debug, P: fmt::Debug> fmt::Debug for ConnLimitBuilder<St, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnLimitBuilder")
            .field("limits", &self.limits)
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("close_mode", &self.close_mode)
            .field("retry_after", &self.retry_after)
            .field("dry_run", &self.dry_run)
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

    /// Dry-run mode (default `false`): a connection the layer would refuse (a limit full,
    /// the store tracking as many keys as it may or unavailable, a limit without a usable
    /// key) is let through **without holding a slot**, and logged (`INFO`, with the limit,
    /// the reason and `mode = "dry_run"`, never a key, user or address) and counted in
    /// `wsguard_conn_limit_refusals_total{mode="dry_run"}` and
    /// `wsguard_rejections_total{layer="conn_limit",mode="dry_run"}`.
    ///
    /// Since it holds no slot, a connection let through is in no count and in no
    /// `wsguard_connections_active` gauge: the limits count exactly the connections enforce
    /// mode would have admitted, dry run never leaks a slot, and the connections over a
    /// limit never keep anyone else out. Each handshake that finds its limit full while
    /// the admitted connections stay open is counted again, so the counter says how many
    /// handshakes enforce mode would refuse, not how many sockets would be missing.
    /// [`close_mode`](Self::close_mode) plays no part: nothing is refused. See
    /// [Dry run](crate#dry-run).
    pub fn dry_run(mut self, enabled: bool) -> Self {
        self.dry_run = enabled;
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
            dry_run: self.dry_run,
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
            dry_run: self.dry_run,
        }
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when there is no limit, more than [`MAX_LIMITS`](crate::MAX_LIMITS), a zero maximum or
    /// two limits with one name.
    pub fn build(self) -> Result<ConnLimitLayer<St, P>, ConfigError> {
        let config = Config::new(
            self.limits,
            self.store,
            self.policy,
            self.close_mode,
            self.retry_after,
            self.dry_run,
        )?;
        Ok(ConnLimitLayer {
            config: Arc::new(config),
        })
    }
}

#[cfg(test)]
mod tests {
    use wsguard_core::GlobalKey;

    use super::*;
    use crate::config::MAX_LIMITS;

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
