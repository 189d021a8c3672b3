//! Message budgets shared by a fleet: [`RedisKeyStore`], a `KeyStore` of `wsguard-msg-rate`.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use redis::aio::ConnectionLike;
use wsguard_core::Key;
use wsguard_msg_rate::{Budget, Cost, Decision, InMemoryKeyStore, KeyStore, PreparedKey};

use crate::{
    fleet::{ConfigError, Degraded, Failure, FailurePolicy, Fleet},
    gcra::{run, Part, RateArgs},
    keys::key_part,
};

/// The default local batch: a Redis call may reserve up to 64 messages' worth of budget
/// (the message and 63 more), never more than a quarter of what the key has left.
pub const DEFAULT_BATCH: u32 = 64;

/// The default time a reserved batch may be spent locally: 100 ms.
pub const DEFAULT_BATCH_HOLD: Duration = Duration::from_millis(100);

/// Per-key message budgets shared by every instance of a fleet: GCRA in one Lua script on
/// Redis's clock, one key per budget key (a hash holding the message and byte rates).
///
/// The same budget answers as [`InMemoryKeyStore`] does: a message is allowed while both
/// rates have room, refused with the time until it fits, and a message larger than the byte
/// burst can never fit (`Decision::TooLarge`). One difference: the message and byte rates
/// are spent all or nothing (the in-memory store spends the message cell of a message the
/// byte rate refuses).
///
/// # The local batch
///
/// A message of a key far from its limit does not need its own round trip: a Redis call
/// spends the message's cost and reserves up to `batch - 1` more messages' worth (at most a
/// quarter of what the key has left, so nothing is reserved near the limit), and the next
/// messages of the connection spend the reservation at once, in
/// [`check_now`](KeyStore::check_now), without a Redis call, for at most the hold time
/// (default 100 ms). What it costs in accuracy:
///
/// - **Never more than the budget over time**: every reserved cell was taken from Redis.
///   A reservation spent up to `hold` after it was taken can shift at most one hold's worth
///   of the rate into a later window.
/// - **Less than the budget for bursty keys near their limit**: a reservation not spent
///   within the hold is lost, at most a quarter of what the key had left when it was made.
///
/// Figures (measured by `tests/redis.rs`, `local_batch_cost_and_accuracy`) are in the
/// [crate docs](crate#measured). [`with_batch(1)`](Self::with_batch) turns it off.
///
/// See the [crate docs](crate) for an example.
pub struct RedisKeyStore<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for RedisKeyStore<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C> {
    fleet: Fleet<C>,
    budget: Budget,
    messages: Option<RateArgs>,
    bytes: Option<RateArgs>,
    degraded: Degraded,
    fallback: InMemoryKeyStore,
    batch: u32,
    hold: Duration,
}

impl<C> fmt::Debug for RedisKeyStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("fleet", &self.inner.fleet)
            .field("budget", &self.inner.budget)
            .field("policy", &self.inner.degraded.policy())
            .field("batch", &self.inner.batch)
            .field("hold", &self.inner.hold)
            .finish_non_exhaustive()
    }
}

impl<C> RedisKeyStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store giving every key `budget`, failing open to an [`InMemoryKeyStore`] of the
    /// same budget, with the local batch [`DEFAULT_BATCH`] held [`DEFAULT_BATCH_HOLD`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::Budget`] when `budget` cannot work.
    pub fn new(fleet: Fleet<C>, budget: Budget) -> Result<Self, ConfigError> {
        let fallback = InMemoryKeyStore::new(budget)?;
        Self::build(
            fleet,
            budget,
            FailurePolicy::Open,
            fallback,
            DEFAULT_BATCH,
            DEFAULT_BATCH_HOLD,
        )
    }

    fn build(
        fleet: Fleet<C>,
        budget: Budget,
        policy: FailurePolicy,
        fallback: InMemoryKeyStore,
        batch: u32,
        hold: Duration,
    ) -> Result<Self, ConfigError> {
        let messages = budget.message_rate().map(RateArgs::new).transpose()?;
        let bytes = budget.byte_rate().map(RateArgs::new).transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                fleet,
                budget,
                messages,
                bytes,
                degraded: Degraded::new("msg_rate", policy),
                fallback,
                batch: batch.max(1),
                hold,
            }),
        })
    }

    fn rebuild(&self, policy: FailurePolicy, batch: u32, hold: Duration) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                fleet: i.fleet.clone(),
                budget: i.budget,
                messages: i.messages,
                bytes: i.bytes,
                degraded: Degraded::new("msg_rate", policy),
                fallback: i.fallback.clone(),
                batch: batch.max(1),
                hold,
            }),
        }
    }

    /// Replaces the failure policy (default [`FailurePolicy::Open`]; see the
    /// [crate docs](crate#failure-policy)). Configure the store before it is used.
    #[must_use]
    pub fn with_failure_policy(self, policy: FailurePolicy) -> Self {
        self.rebuild(policy, self.inner.batch, self.inner.hold)
    }

    /// Replaces the local batch: a Redis call may reserve up to `batch` messages' worth
    /// (default [`DEFAULT_BATCH`]); `1` (or `0`) turns reserving off, so that every message
    /// is one Redis call.
    #[must_use]
    pub fn with_batch(self, batch: u32) -> Self {
        self.rebuild(self.inner.degraded.policy(), batch, self.inner.hold)
    }

    /// Replaces how long a reservation may be spent locally (default
    /// [`DEFAULT_BATCH_HOLD`]).
    #[must_use]
    pub fn with_batch_hold(self, hold: Duration) -> Self {
        self.rebuild(self.inner.degraded.policy(), self.inner.batch, hold)
    }

    /// The budget of every key.
    pub fn budget(&self) -> Budget {
        self.inner.budget
    }

    /// The in-memory store that answers under [`FailurePolicy::Open`] while Redis is
    /// unavailable.
    pub fn fallback(&self) -> &InMemoryKeyStore {
        &self.inner.fallback
    }
}

/// A key prepared by a [`RedisKeyStore`]: its Redis key name, and the connection's local
/// reservation. Its `Debug` output never shows the key's value.
#[derive(Clone)]
pub struct RedisPreparedKey {
    key: Key,
    name: Arc<[u8]>,
    reserve: Arc<Mutex<Reserve>>,
    fallback: Arc<OnceLock<PreparedKey>>,
}

impl fmt::Debug for RedisPreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPreparedKey")
            .field("class", &self.key.class())
            .finish_non_exhaustive()
    }
}

impl RedisPreparedKey {
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }
}

/// Budget taken from Redis and not spent yet.
#[derive(Debug, Clone, Copy)]
struct Reserve {
    messages: u64,
    bytes: u64,
    until: Option<Instant>,
}

impl Reserve {
    const EMPTY: Self = Self {
        messages: 0,
        bytes: 0,
        until: None,
    };
}

/// The answer of [`RedisKeyStore`]'s `check`.
pub type CheckFuture = Pin<Box<dyn Future<Output = Decision> + Send>>;

impl<C> Inner<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn unavailable(&self, key: &RedisPreparedKey, cost: Cost, failure: &Failure) -> Decision {
        self.degraded.failed(failure);
        match self.degraded.policy() {
            FailurePolicy::Open => {
                let prepared = key
                    .fallback
                    .get_or_init(|| self.fallback.prepare(key.key.clone()));
                self.fallback.decide(prepared, cost)
            }
            FailurePolicy::Closed => Decision::Unavailable,
        }
    }

    /// Spends from the local reservation if it covers `cost`.
    fn spend_local(&self, key: &RedisPreparedKey, cost: Cost, bytes: u64) -> bool {
        if self.batch <= 1 {
            return false;
        }
        let mut reserve = key.reserve.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(until) = reserve.until else {
            return false;
        };
        let messages = u64::from(cost.messages());
        let need_messages = self.messages.is_some();
        let need_bytes = self.bytes.is_some() && bytes > 0;
        if Instant::now() >= until {
            *reserve = Reserve::EMPTY;
            return false;
        }
        if (need_messages && reserve.messages < messages) || (need_bytes && reserve.bytes < bytes) {
            return false;
        }
        if need_messages {
            reserve.messages -= messages;
        }
        if need_bytes {
            reserve.bytes -= bytes;
        }
        true
    }
}

async fn check<C>(inner: Arc<Inner<C>>, key: RedisPreparedKey, cost: Cost) -> Decision
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let Ok(bytes) = u64::try_from(cost.bytes()) else {
        return Decision::TooLarge;
    };
    let extra = u64::from(inner.batch - 1);
    let mut parts = Vec::with_capacity(2);
    if let Some(rate) = inner.messages {
        parts.push(Part {
            field: "m",
            rate,
            cost: u64::from(cost.messages()),
            extra,
        });
    }
    if let Some(rate) = inner.bytes {
        parts.push(Part {
            field: "b",
            rate,
            cost: bytes,
            extra: bytes.saturating_mul(extra),
        });
    }
    let mut conn = inner.fleet.conn.clone();
    let raw = inner.fleet.call(run(&mut conn, &key.name, &parts)).await;
    match raw {
        Ok(raw) => {
            inner.degraded.answered();
            if raw.allowed {
                let granted = |i: usize| raw.granted.get(i).copied().unwrap_or(0);
                let (messages, bytes) = match (inner.messages.is_some(), inner.bytes.is_some()) {
                    (true, true) => (granted(0), granted(1)),
                    (true, false) => (granted(0), 0),
                    _ => (0, granted(0)),
                };
                if messages > 0 || bytes > 0 {
                    let mut reserve = key.reserve.lock().unwrap_or_else(PoisonError::into_inner);
                    let now = Instant::now();
                    if reserve.until.is_none_or(|until| until <= now) {
                        *reserve = Reserve::EMPTY;
                    }
                    reserve.messages += messages;
                    reserve.bytes += bytes;
                    reserve.until = Some(now + inner.hold);
                }
                Decision::Allow
            } else if raw.too_large {
                Decision::TooLarge
            } else {
                Decision::Deny {
                    retry_after: Duration::from_micros(raw.retry_us.unwrap_or(0)),
                }
            }
        }
        Err(failure) => inner.unavailable(&key, cost, &failure),
    }
}

impl<C> KeyStore for RedisKeyStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type Prepared = RedisPreparedKey;
    type Future = CheckFuture;

    fn prepare(&self, key: Key) -> RedisPreparedKey {
        let name = self.inner.fleet.key(&[b"mr", &key_part(&key)]);
        RedisPreparedKey {
            key,
            name: Arc::from(name),
            reserve: Arc::new(Mutex::new(Reserve::EMPTY)),
            fallback: Arc::new(OnceLock::new()),
        }
    }

    fn check(&self, key: &RedisPreparedKey, cost: Cost) -> CheckFuture {
        Box::pin(check(Arc::clone(&self.inner), key.clone(), cost))
    }

    fn check_now(&self, key: &RedisPreparedKey, cost: Cost) -> Option<Decision> {
        let inner = &*self.inner;
        let bytes = u64::try_from(cost.bytes()).unwrap_or(u64::MAX);
        if inner.spend_local(key, cost, bytes) {
            return Some(Decision::Allow);
        }
        inner
            .fleet
            .circuit
            .is_open()
            .then(|| inner.unavailable(key, cost, &Failure::CircuitOpen))
    }
}
