//! The layer and its builder methods.

use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;
use wsguard_core::{ErrorFrame, JsonErrorFrame, KeyExtractor};

use crate::{
    config::{
        Abuse, Config, ConnState, Keyed, OnExcess, DEFAULT_CLOSE_AFTER, DEFAULT_CLOSE_WINDOW,
    },
    rate::{rate, Budget, ConfigError},
    service::MessageRateLimit,
    store::{InMemoryKeyStore, KeyStore},
};

/// Applies per-message budgets to the message plane: per connection, and per shared key.
///
/// Every message counts, the ping and pong control frames included (the plane passes them
/// to its service), against the message budget and, by its payload, the byte budget.
///
/// See the [crate docs](crate) for an example.
pub struct MessageRateLimitLayer<K = InMemoryKeyStore, F = JsonErrorFrame> {
    config: Arc<Config<K, F>>,
}

impl<K, F> Clone for MessageRateLimitLayer<K, F> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl<K: fmt::Debug, F> fmt::Debug for MessageRateLimitLayer<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &*self.config;
        f.debug_struct("MessageRateLimitLayer")
            .field("connection", &config.connection)
            .field("store", &config.keyed.as_ref().map(|k| &k.store))
            .field("excess", &config.excess)
            .field("abuse", &config.abuse)
            .finish_non_exhaustive()
    }
}

impl Default for MessageRateLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageRateLimitLayer {
    /// A layer that limits nothing yet: add [`per_connection`](Self::per_connection) and
    /// [`per_key`](Self::per_key) budgets.
    ///
    /// Excess is answered with [`OnExcess::Reply`], and sustained excess (more than
    /// [`DEFAULT_CLOSE_AFTER`] refusals within [`DEFAULT_CLOSE_WINDOW`]) closes with 4429:
    /// a flood is cut, not answered.
    #[must_use]
    pub fn new() -> Self {
        let tolerance = rate(DEFAULT_CLOSE_AFTER)
            .per(DEFAULT_CLOSE_WINDOW)
            .quota("refusal")
            .map_or(Abuse::Immediately, Abuse::After);
        Self {
            config: Arc::new(Config {
                connection: None,
                keyed: None,
                excess: OnExcess::Reply,
                abuse: tolerance,
                dry_run: false,
                frame: JsonErrorFrame,
            }),
        }
    }
}

impl<K, F> MessageRateLimitLayer<K, F>
where
    K: Clone,
    F: Clone,
{
    fn map<K2, F2>(
        self,
        f: impl FnOnce(Config<K, F>) -> Config<K2, F2>,
    ) -> MessageRateLimitLayer<K2, F2> {
        MessageRateLimitLayer {
            config: Arc::new(f(Arc::unwrap_or_clone(self.config))),
        }
    }

    /// Gives every connection its own `budget`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `budget` cannot work (empty, zero rate or burst, ...).
    pub fn per_connection(self, budget: Budget) -> Result<Self, ConfigError> {
        let quotas = budget.quotas()?;
        Ok(self.map(|c| Config {
            connection: Some(quotas),
            ..c
        }))
    }

    /// Shares `budget` between all connections with the same key (for example
    /// `wsguard_core::PrincipalKey`: one user, however many sockets they open), kept
    /// in an [`InMemoryKeyStore`] with the default cap and sweeps.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `budget` cannot work.
    pub fn per_key<E>(
        self,
        extractor: E,
        budget: Budget,
    ) -> Result<MessageRateLimitLayer<InMemoryKeyStore, F>, ConfigError>
    where
        E: KeyExtractor,
    {
        let store = InMemoryKeyStore::new(budget)?;
        Ok(self.per_key_store(extractor, store))
    }

    /// Shares per-key budgets kept in `store` (an [`InMemoryKeyStore`] with its own cap, or
    /// another [`KeyStore`]) between the connections with the same key.
    #[must_use]
    pub fn per_key_store<E, K2>(self, extractor: E, store: K2) -> MessageRateLimitLayer<K2, F>
    where
        E: KeyExtractor,
        K2: KeyStore,
    {
        self.map(|c| Config {
            connection: c.connection,
            keyed: Some(Keyed {
                extractor: Arc::new(extractor),
                store,
            }),
            excess: c.excess,
            abuse: c.abuse,
            dry_run: c.dry_run,
            frame: c.frame,
        })
    }

    /// What to do with a message over budget (default [`OnExcess::Reply`]).
    #[must_use]
    pub fn on_excess(self, excess: OnExcess) -> Self {
        self.map(|c| Config { excess, ..c })
    }

    /// Closes the socket with 4429 ([`Reason::RateExceeded`](wsguard_core::Reason)) when
    /// more than `refusals` messages went over budget within `window` (default
    /// [`DEFAULT_CLOSE_AFTER`] within [`DEFAULT_CLOSE_WINDOW`]).
    ///
    /// The tolerance is itself a GCRA budget of `refusals` refusals refilling at
    /// `refusals` per `window`: a burst of `refusals` excess messages is forgiven, a
    /// sustained excess is not. With [`OnExcess::Backpressure`], a message that had to wait
    /// counts as one refusal. `refusals == 0` closes at the first excess message.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a zero `window` with `refusals > 0`.
    pub fn close_after(self, refusals: u32, window: Duration) -> Result<Self, ConfigError> {
        let abuse = if refusals == 0 {
            Abuse::Immediately
        } else {
            Abuse::After(rate(refusals).per(window).quota("refusal")?)
        };
        Ok(self.map(|c| Config { abuse, ..c }))
    }

    /// Dry-run mode (default `false`): every message goes through, and what the layer would
    /// refuse or close for (over a budget, too large, no key, a store failing closed) is
    /// logged (`INFO`, target `wsguard_msg_rate`, with the scope and `mode = "dry_run"`, never
    /// the key) and counted once per message in `wsguard_rejections_total{layer="msg_rate",
    /// mode="dry_run"}`. A message let through is not charged to the budget it exceeded
    /// (a GCRA check that fails changes nothing), so the budgets measure what enforce mode
    /// would have admitted. See [Dry run](crate#dry-run).
    #[must_use]
    pub fn dry_run(self, enabled: bool) -> Self {
        self.map(|c| Config {
            dry_run: enabled,
            ..c
        })
    }

    /// Never closes for excess: every message over budget is answered by [`OnExcess`] alone.
    ///
    /// Only for clients you trust: a flooding client then keeps its socket, and costs a
    /// budget check per message for as long as it floods.
    #[must_use]
    pub fn never_close(self) -> Self {
        self.map(|c| Config {
            abuse: Abuse::Tolerated,
            ..c
        })
    }

    /// Sets the error frame answering refused messages (default [`JsonErrorFrame`]); any
    /// `Fn(&Rejection) -> Option<String>` works, `None` drops without an answer.
    #[must_use]
    pub fn error_frame<F2>(self, frame: F2) -> MessageRateLimitLayer<K, F2>
    where
        F2: ErrorFrame,
    {
        self.map(|c| Config {
            connection: c.connection,
            keyed: c.keyed,
            excess: c.excess,
            abuse: c.abuse,
            dry_run: c.dry_run,
            frame,
        })
    }

    /// The per-key store, if a per-key budget is set.
    pub fn store(&self) -> Option<&K> {
        self.config.keyed.as_ref().map(|k| &k.store)
    }
}

impl<S, K: KeyStore, F> Layer<S> for MessageRateLimitLayer<K, F> {
    type Service = MessageRateLimit<S, K, F>;

    /// Builds the service of one connection, with that connection's own budget.
    fn layer(&self, inner: S) -> Self::Service {
        MessageRateLimit::new(
            inner,
            self.config.clone(),
            Arc::new(ConnState::new(&self.config)),
        )
    }
}
