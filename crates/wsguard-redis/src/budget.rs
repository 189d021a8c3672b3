//! Message budgets shared by a fleet: [`RedisKeyStore`], a `KeyStore` of `wsguard-msg-rate`.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock, PoisonError,
    },
    time::Duration,
};

use redis::aio::ConnectionLike;
use tokio::time::Instant;
use wsguard_core::Key;
use wsguard_msg_rate::{Budget, Cost, Decision, InMemoryKeyStore, KeyStore, PreparedKey};

use crate::{
    fleet::{ConfigError, Degraded, Failure, FailurePolicy, Fleet},
    gcra::{run, Part, RateArgs, Raw},
    keys::key_part,
};

/// The default cap of the local reservation: a Redis call may reserve up to 4096 messages'
/// worth of budget (the message and 4095 more). What it reserves below the cap follows the
/// connection's observed rate (see [`RedisKeyStore`]'s local batch), and is never more than a
/// quarter of what the key has left.
pub const DEFAULT_BATCH: u32 = 4096;

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
/// A message of a key far from its limit does not need its own round trip. Each connection
/// keeps a local reservation: budget already debited in Redis, spent in
/// [`check_now`](KeyStore::check_now) with atomic operations only (one compare-and-swap per
/// rate: no lock, no clock reading, no allocation, no Redis call).
///
/// - **Refilled ahead.** When a spend leaves the reservation at half of its last grant or
///   less, a refill is requested in the background (a task on the current tokio runtime: a
///   zero-cost script call that reserves more), so that a steady stream of messages finds
///   the next grant there before the reservation is empty and rarely waits for Redis. A
///   message that finds the reservation empty (or expired) makes the Redis call itself,
///   which spends its cost and reserves more.
/// - **Sized by the observed rate.** A call reserves what the connection is expected to send
///   in half the hold time, from its rate since the previous call: nothing for a key sending
///   fewer than 20 messages a second with the default hold (each of its messages is one
///   Redis call, so a slow key never leaves budget unspent in a reservation), at most twice
///   the previous reservation plus one (a sudden burst ramps up over a few calls), at most
///   `batch - 1` messages ([`with_batch`](Self::with_batch), default [`DEFAULT_BATCH`]), and
///   never more than a quarter of what the key has left (so nothing is reserved near the
///   limit: there every message is one Redis call).
/// - **Held for a short time.** A reservation may be spent for `hold` (default 100 ms) after
///   its latest grant; then a timer (tokio's, so within a millisecond or a busy runtime's
///   scheduling delay) drops what is left, and the next message asks Redis.
///
/// What it costs in accuracy:
///
/// - **Never more than Redis debited**: every locally admitted message spends a cell taken
///   from Redis before; the reservation only grows by Redis's grants (tested). Over any
///   window, the fleet admits at most the budget plus what was debited up to `hold` before
///   the window (a grant spent late shifts at most one hold's worth of a connection's rate).
/// - **Less than the budget when a reservation goes unspent**: a connection that stops or
///   slows down leaves its reservation (at most one and a half grants: the rest of the
///   previous one and the one requested ahead) unspent, lost to the fleet until the budget
///   refills. A grant is sized to last half the hold at the connection's rate, so this is
///   at most about one hold's worth of that connection's traffic.
///
/// Figures (`tests/batch.rs` and `benches/fleet.rs`) are in the [crate docs](crate#measured)
/// and BENCHMARKS.md. [`with_batch(1)`](Self::with_batch) turns reserving off: every message
/// is one Redis call.
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
    /// The origin of the reservations' times (ns since it; 0 means "never"): tokio's clock,
    /// whose timer drops expired reservations.
    epoch: Instant,
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
                epoch: Instant::now(),
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
                epoch: i.epoch,
            }),
        }
    }

    /// Replaces the failure policy (default [`FailurePolicy::Open`]; see the
    /// [crate docs](crate#failure-policy)). Configure the store before it is used.
    #[must_use]
    pub fn with_failure_policy(self, policy: FailurePolicy) -> Self {
        self.rebuild(policy, self.inner.batch, self.inner.hold)
    }

    /// Replaces the cap of the local reservation: a Redis call may reserve up to `batch`
    /// messages' worth, the message included (default [`DEFAULT_BATCH`]; below the cap the
    /// reservation follows the connection's rate); `1` (or `0`) turns reserving off, so that
    /// every message is one Redis call.
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
    reserve: Arc<Reserve>,
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

/// Budget taken from Redis and not spent yet: spent with atomics only. Only grants (Redis's
/// answers) add to it.
#[derive(Debug, Default)]
struct Reserve {
    messages: AtomicU64,
    bytes: AtomicU64,
    /// Until when (ns after the store's epoch) the reserve may be spent; 0: never granted,
    /// or expired (set by the expiry timer, so that a spend reads no clock).
    until: AtomicU64,
    /// The expiry timer of this reserve is running (changed under `stats`).
    expiring: AtomicBool,
    /// At or below these levels a spend requests a refill.
    low_messages: AtomicU64,
    low_bytes: AtomicU64,
    /// A background refill is on its way.
    refilling: AtomicBool,
    /// The bookkeeping of the observed rate, touched only by Redis calls and grants.
    stats: Mutex<Stats>,
}

/// Message counts since the key was prepared, and the rate's last sample.
#[derive(Debug, Default)]
struct Stats {
    /// Messages granted into the reserve.
    granted: u64,
    /// Messages dropped from the reserve unspent (expired).
    discarded: u64,
    /// Messages that went to Redis themselves.
    direct: u64,
    /// The count of messages and the time (ns) of the last sample, and the rate it gave
    /// (messages per second).
    mark_total: u64,
    mark_at: u64,
    per_second: u64,
    /// The extra messages the last call asked for.
    last_extra: u64,
}

/// The shortest window over which a connection's rate is sampled: 1 ms.
const RATE_WINDOW_NS: u64 = 1_000_000;

/// Takes `n` from `cell` if it holds that much; what is left.
fn take(cell: &AtomicU64, n: u64) -> Option<u64> {
    let mut have = cell.load(Ordering::Acquire);
    loop {
        let left = have.checked_sub(n)?;
        match cell.compare_exchange_weak(have, left, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(left),
            Err(now) => have = now,
        }
    }
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

    /// Nanoseconds since the store's epoch, never 0.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn hold_ns(&self) -> u64 {
        u64::try_from(self.hold.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Spends `cost` from the local reservation if it covers it (atomics only). Requests a
    /// refill in the background when the reservation runs low.
    fn spend_local(self: &Arc<Self>, key: &RedisPreparedKey, cost: Cost, bytes: u64) -> bool {
        if self.batch <= 1 {
            return false;
        }
        let reserve = &*key.reserve;
        // Expired reservations are zeroed by their timer: no clock reading here.
        if reserve.until.load(Ordering::Acquire) == 0 {
            return false;
        }
        let messages = u64::from(cost.messages());
        let need_messages = self.messages.is_some() && messages > 0;
        let need_bytes = self.bytes.is_some() && bytes > 0;
        let mut left_messages = u64::MAX;
        if need_messages {
            match take(&reserve.messages, messages) {
                Some(left) => left_messages = left,
                None => return false,
            }
        }
        let mut left_bytes = u64::MAX;
        if need_bytes {
            match take(&reserve.bytes, bytes) {
                Some(left) => left_bytes = left,
                None => {
                    if need_messages {
                        // Give back what this message took: nothing was admitted.
                        reserve.messages.fetch_add(messages, Ordering::AcqRel);
                    }
                    return false;
                }
            }
        }
        if (left_messages <= reserve.low_messages.load(Ordering::Relaxed)
            || left_bytes <= reserve.low_bytes.load(Ordering::Relaxed))
            && !reserve.refilling.load(Ordering::Relaxed)
            && !reserve.refilling.swap(true, Ordering::AcqRel)
        {
            self.refill_ahead(key, bytes);
        }
        true
    }

    /// Starts a background refill on the current tokio runtime (none: the next message
    /// that finds the reservation empty asks Redis itself).
    fn refill_ahead(self: &Arc<Self>, key: &RedisPreparedKey, bytes_per_message: u64) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(runtime.spawn(refill(Arc::clone(self), key.clone(), bytes_per_message)));
            }
            Err(_) => key.reserve.refilling.store(false, Ordering::Release),
        }
    }

    /// How many extra messages a Redis call for this connection should reserve now: what it
    /// is expected to send in half the hold time at its observed rate, at most twice the
    /// last request plus one, at most `batch - 1`. The rate is sampled over windows of at
    /// least 1 ms (shorter ones keep the last sample, so that two calls close
    /// together do not read a burst or a pause into a few microseconds).
    fn extra(&self, reserve: &Reserve, direct: u64) -> u64 {
        let now = self.now_ns();
        let level = reserve.messages.load(Ordering::Acquire);
        let mut stats = reserve.stats.lock().unwrap_or_else(PoisonError::into_inner);
        stats.direct = stats.direct.saturating_add(direct);
        let total = (stats.granted.saturating_add(stats.direct))
            .saturating_sub(stats.discarded)
            .saturating_sub(level);
        let elapsed = now.saturating_sub(stats.mark_at);
        if elapsed >= RATE_WINDOW_NS {
            let sent = total.saturating_sub(stats.mark_total);
            let per_second = u128::from(sent) * 1_000_000_000 / u128::from(elapsed);
            stats.per_second = u64::try_from(per_second).unwrap_or(u64::MAX);
            stats.mark_total = total;
            stats.mark_at = now;
        }
        let expected =
            u128::from(stats.per_second) * u128::from(self.hold_ns() / 2) / 1_000_000_000;
        let extra = u64::try_from(expected)
            .unwrap_or(u64::MAX)
            .min(stats.last_extra.saturating_mul(2).saturating_add(1))
            .min(u64::from(self.batch - 1));
        stats.last_extra = extra;
        extra
    }

    /// Adds a grant from Redis to the reservation (replacing an expired rest), and makes
    /// sure its expiry timer runs.
    fn grant(&self, reserve: &Arc<Reserve>, messages: u64, bytes: u64) {
        if messages == 0 && bytes == 0 {
            return;
        }
        let now = self.now_ns();
        let mut stats = reserve.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let until = reserve.until.load(Ordering::Acquire);
        if until == 0 || now >= until {
            // Spends have stopped taking from it (they check `until` first): what is left is
            // dropped, and the grant replaces it.
            let rest = reserve.messages.swap(messages, Ordering::AcqRel);
            reserve.bytes.swap(bytes, Ordering::AcqRel);
            stats.discarded = stats.discarded.saturating_add(rest);
        } else {
            reserve.messages.fetch_add(messages, Ordering::AcqRel);
            reserve.bytes.fetch_add(bytes, Ordering::AcqRel);
        }
        stats.granted = stats.granted.saturating_add(messages);
        reserve.low_messages.store(messages / 2, Ordering::Relaxed);
        reserve.low_bytes.store(bytes / 2, Ordering::Relaxed);
        let until = now.saturating_add(self.hold_ns());
        if reserve.expiring.load(Ordering::Acquire) {
            reserve.until.store(until, Ordering::Release);
        } else if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            reserve.until.store(until, Ordering::Release);
            reserve.expiring.store(true, Ordering::Release);
            drop(runtime.spawn(expire(Arc::clone(reserve), self.epoch)));
        }
        // Without a runtime (no timer to drop it), the grant is not spendable locally.
    }

    /// The script's arguments: spend `messages` and `bytes`, and reserve `extra` messages
    /// of `bytes_each` bytes more.
    fn parts(&self, messages: u64, bytes: u64, extra: u64, bytes_each: u64) -> Vec<Part<'static>> {
        let mut parts = Vec::with_capacity(2);
        if let Some(rate) = self.messages {
            parts.push(Part {
                field: "m",
                rate,
                cost: messages,
                extra,
            });
        }
        if let Some(rate) = self.bytes {
            parts.push(Part {
                field: "b",
                rate,
                cost: bytes,
                extra: bytes_each.saturating_mul(extra),
            });
        }
        parts
    }

    /// The messages and bytes granted by a script's answer.
    fn granted(&self, raw: &Raw) -> (u64, u64) {
        match (self.messages.is_some(), self.bytes.is_some()) {
            (true, true) => (raw.granted[0], raw.granted[1]),
            (true, false) => (raw.granted[0], 0),
            _ => (0, raw.granted[0]),
        }
    }
}

/// The expiry timer of a reservation: zeroes `until` once the hold after the latest grant
/// has passed, and ends.
async fn expire(reserve: Arc<Reserve>, epoch: Instant) {
    loop {
        let until = reserve.until.load(Ordering::Acquire);
        tokio::time::sleep_until(epoch + Duration::from_nanos(until)).await;
        let _stats = reserve.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if now >= reserve.until.load(Ordering::Acquire) {
            // Under the lock, so that a grant either sees the timer running or starts one.
            reserve.until.store(0, Ordering::Release);
            reserve.expiring.store(false, Ordering::Release);
            return;
        }
    }
}

/// A background refill: a zero-cost call that reserves what the connection's rate asks for.
async fn refill<C>(inner: Arc<Inner<C>>, key: RedisPreparedKey, bytes_per_message: u64)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let extra = inner.extra(&key.reserve, 0);
    if extra > 0 {
        let parts = inner.parts(0, 0, extra, bytes_per_message);
        let mut conn = inner.fleet.conn.clone();
        match inner.fleet.call(run(&mut conn, &key.name, &parts)).await {
            Ok(raw) => {
                inner.degraded.answered();
                if raw.allowed {
                    let (messages, bytes) = inner.granted(&raw);
                    inner.grant(&key.reserve, messages, bytes);
                }
            }
            // The circuit counted it; the next message that finds the reservation empty asks
            // Redis itself and answers by the failure policy.
            Err(failure) => {
                tracing::debug!(target: "wsguard_redis", error = %failure, "budget refill failed");
            }
        }
    }
    key.reserve.refilling.store(false, Ordering::Release);
}

async fn check<C>(inner: Arc<Inner<C>>, key: RedisPreparedKey, cost: Cost) -> Decision
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let Ok(bytes) = u64::try_from(cost.bytes()) else {
        return Decision::TooLarge;
    };
    let messages = u64::from(cost.messages());
    let extra = if inner.batch > 1 {
        inner.extra(&key.reserve, messages)
    } else {
        0
    };
    let parts = inner.parts(messages, bytes, extra, bytes);
    let mut conn = inner.fleet.conn.clone();
    let raw = inner.fleet.call(run(&mut conn, &key.name, &parts)).await;
    match raw {
        Ok(raw) => {
            inner.degraded.answered();
            if raw.allowed {
                let (messages, bytes) = inner.granted(&raw);
                inner.grant(&key.reserve, messages, bytes);
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
            reserve: Arc::new(Reserve {
                stats: Mutex::new(Stats {
                    mark_at: self.inner.now_ns(),
                    ..Stats::default()
                }),
                ..Reserve::default()
            }),
            fallback: Arc::new(OnceLock::new()),
        }
    }

    fn check(&self, key: &RedisPreparedKey, cost: Cost) -> CheckFuture {
        Box::pin(check(Arc::clone(&self.inner), key.clone(), cost))
    }

    fn check_now(&self, key: &RedisPreparedKey, cost: Cost) -> Option<Decision> {
        let inner = &self.inner;
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
