//! Shared per-key budgets: the [`KeyStore`] trait and the bounded [`InMemoryKeyStore`].

use std::{
    fmt,
    future::{ready, Future, Ready},
    hash::{BuildHasher, Hash, Hasher, RandomState},
    num::{NonZeroU32, NonZeroU64},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, PoisonError,
    },
    time::Duration,
};

use governor::{
    clock::Clock, middleware::NoOpMiddleware, nanos::Nanos, state::StateStore, RateLimiter,
};
use hashbrown::HashTable;
use wsguard_core::Key;

use crate::{
    clock::{read_once, PlaneClock},
    rate::{Budget, ConfigError, Quotas},
    telemetry::KEY_STORE,
};

/// What one message costs: one message and its payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    bytes: usize,
}

impl Cost {
    /// The cost of a message of `bytes` payload bytes.
    pub const fn message(bytes: usize) -> Self {
        Self { bytes }
    }

    /// Messages: always one.
    pub const fn messages(&self) -> u32 {
        1
    }

    /// Payload bytes.
    pub const fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bytes as governor cells: `Ok(None)` for an empty message, `Err(())` for more
    /// than `u32::MAX` bytes, which no budget can hold.
    pub(crate) fn byte_cells(&self) -> Result<Option<NonZeroU32>, ()> {
        match u32::try_from(self.bytes) {
            Ok(n) => Ok(NonZeroU32::new(n)),
            Err(_) => Err(()),
        }
    }
}

/// A [`KeyStore`]'s answer for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The key's budget had room; it was spent.
    Allow,
    /// The key's budget is spent; a message of this cost fits again after `retry_after`.
    Deny {
        /// When to try again.
        retry_after: Duration,
    },
    /// The message is larger than the key's byte burst: it can never fit.
    TooLarge,
    /// The store could not answer (a shared store's backend is unreachable) and fails
    /// closed: the socket is closed with 1013 ("try again later", [`Reason::AtCapacity`](wsguard_core::Reason::AtCapacity)).
    Unavailable,
}

/// Where the shared per-key budgets live.
///
/// The layer asks the store once per message that its connection's own budget allowed.
/// [`InMemoryKeyStore`] keeps the budgets in this process; an implementation over a shared
/// database (Redis, ...) lets several server instances share them. Such a store decides
/// itself what to answer when its backend is unreachable: fail open (answer from an
/// in-memory store), or closed with [`Decision::Unavailable`], which closes the socket with
/// 1013.
///
/// A connection's key is [prepared](Self::prepare) once, at its first message, and every
/// message of the connection is checked with the prepared key: whatever the key alone
/// determines (its hash in a map, its name in a database) is computed once per connection,
/// not once per message.
pub trait KeyStore: Clone + Send + Sync + 'static {
    /// A key made ready for the checks of one connection's messages.
    type Prepared: Send + Sync + 'static;

    /// The future of a decision.
    type Future: Future<Output = Decision> + Send + 'static;

    /// Prepares `key` for [`check`](Self::check) and [`check_now`](Self::check_now).
    fn prepare(&self, key: Key) -> Self::Prepared;

    /// Spends `cost` from `key`'s budgets if they all have room.
    fn check(&self, key: &Self::Prepared, cost: Cost) -> Self::Future;

    /// The same decision, made at once if the store can (an in-process store can), which
    /// spares the layer the asynchronous step. The default says it cannot: `None`, and the
    /// layer calls [`check`](Self::check).
    fn check_now(&self, key: &Self::Prepared, cost: Cost) -> Option<Decision> {
        let _ = (key, cost);
        None
    }
}

/// A key prepared by an [`InMemoryKeyStore`]: the key, its hash, and a handle on the key's
/// budgets in that store, so that checks go straight to them (no lock, no lookup).
///
/// While a prepared key lives, its key is never evicted from the store that prepared it.
/// Used with another store, it is looked up there on each check (correct, but slower).
/// Its `Debug` output shows the key's [class](Key::class), never its value.
#[derive(Clone)]
pub struct PreparedKey {
    key: Key,
    hash: u64,
    cell: Arc<Cell>,
    table: Arc<Table>,
}

impl PartialEq for PreparedKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PreparedKey {}

impl PreparedKey {
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }
}

impl fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedKey")
            .field("class", &self.key.class())
            .finish_non_exhaustive()
    }
}

impl Hash for PreparedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hasher of every in-memory store: randomly seeded once per process, so that clients
/// cannot choose keys that collide.
fn hasher() -> &'static RandomState {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    HASHER.get_or_init(RandomState::new)
}

/// The default largest number of keys an [`InMemoryKeyStore`] tracks.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The default interval of an [`InMemoryKeyStore`]'s sweeps.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// A shard of at most this many keys is one shard; larger stores use up to [`SHARDS`].
const KEYS_PER_SHARD_MIN: usize = 1024;
const SHARDS: usize = 16;

type KeyedLimiter = RateLimiter<PreparedKey, Slot, PlaneClock, NoOpMiddleware<Nanos>>;

/// Per-key budgets in this process, in a map with a hard cap on its size.
///
/// A connection [prepares](KeyStore::prepare) its key once: the store finds (or makes) the
/// key's budgets and hands the connection a handle on them. Each message is then checked
/// against the handle: atomic updates of the GCRA state, shared only by the connections of
/// that key, with no lock, no lookup and no hashing.
///
/// Each key costs one hash-map entry (the key, 40 bytes inline, and a pointer) and one small
/// allocation holding the GCRA state of both of its rates, plus the key's own heap (a
/// principal id). Measured with 100,000 keys (`tests/memory.rs`, bytes requested from the
/// allocator): **96 bytes per IP key, 128 bytes per key of a 16-byte principal id**; the
/// allocator's own overhead adds about 16 bytes per key. The default cap of 100,000 keys
/// thus bounds the store near 12 MB, plus the keys of live connections.
///
/// # Eviction
///
/// - **Sweeps.** A key whose budgets are full again, and that no live connection holds, is
///   indistinguishable from an unknown key, so it is removed without changing any decision.
///   The store sweeps such keys itself: once a sweep interval (default 30 s) has passed, the
///   next connection to prepare its key sweeps the whole store, a pass over at most
///   `max_keys` entries. No background task is needed, and an idle store costs nothing.
/// - **The cap.** When a new key arrives at a full shard, the shard is swept first; if it is
///   still full, the eighth of its keys that no connection holds and that are closest to a
///   full budget are dropped. They lose at most the debt they still had (their next
///   connection finds a full burst), and no key can ever spend more than its burst at once.
/// - **Keys in use are never evicted**: evicting one would let the next connection of that
///   key start a second, full budget beside the one its live connections still spend. The
///   keys that no connection holds never number more than `max_keys`; the keys in use are
///   at most one per live connection (bound those with `wsguard-conn-limit`), so the store
///   holds at most `max_keys` plus the number of live connections, whatever keys clients
///   make up.
///
/// Keys are hashed with a randomly keyed SipHash, so clients cannot aim at one shard.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct InMemoryKeyStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    messages: Option<KeyedLimiter>,
    bytes: Option<KeyedLimiter>,
    table: Arc<Table>,
    budget: Budget,
}

impl fmt::Debug for InMemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKeyStore")
            .field("budget", &self.inner.budget)
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .field("sweep_interval", &self.sweep_interval())
            .finish()
    }
}

impl InMemoryKeyStore {
    /// A store giving every key `budget`, tracking at most [`DEFAULT_MAX_KEYS`] keys and
    /// sweeping every [`DEFAULT_SWEEP_INTERVAL`].
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `budget` cannot work (empty, zero rate or burst, ...).
    pub fn new(budget: Budget) -> Result<Self, ConfigError> {
        Self::build(budget, DEFAULT_MAX_KEYS, DEFAULT_SWEEP_INTERVAL)
    }

    /// Caps the number of tracked keys (see [Eviction](Self#eviction)). Configure the store
    /// before it is used: this makes a new, empty one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroMaxKeys`] when `max_keys` is zero.
    pub fn with_max_keys(self, max_keys: usize) -> Result<Self, ConfigError> {
        Self::build(self.inner.budget, max_keys, self.sweep_interval())
    }

    /// How often each shard drops the keys whose budgets are full again. Configure the
    /// store before it is used: this makes a new, empty one.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroSweepInterval`] when `every` is zero.
    pub fn with_sweep_interval(self, every: Duration) -> Result<Self, ConfigError> {
        Self::build(self.inner.budget, self.max_keys(), every)
    }

    fn build(budget: Budget, max_keys: usize, sweep: Duration) -> Result<Self, ConfigError> {
        let Quotas { messages, bytes } = budget.quotas()?;
        if max_keys == 0 {
            return Err(ConfigError::ZeroMaxKeys);
        }
        if sweep.is_zero() {
            return Err(ConfigError::ZeroSweepInterval);
        }
        let shards = (max_keys / KEYS_PER_SHARD_MIN).clamp(1, SHARDS);
        let table = Arc::new(Table {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            shard_cap: (max_keys / shards).max(1),
            max_keys,
            sweep_every: u64::try_from(sweep.as_nanos()).unwrap_or(u64::MAX),
            sweep_interval: sweep,
            start_bound: AtomicU64::new(0),
            last_sweep: AtomicU64::new(PlaneClock.nanos()),
        });
        let limiter = |quota, slot| {
            RateLimiter::new(
                quota,
                Slot {
                    table: table.clone(),
                    slot,
                },
                PlaneClock,
            )
        };
        let messages = messages.map(|q| limiter(q, 0));
        let bytes = bytes.map(|q| limiter(q, 1));
        // Read after both limiters took their start: a time no earlier than either start.
        table
            .start_bound
            .store(PlaneClock.nanos(), Ordering::Relaxed);
        Ok(Self {
            inner: Arc::new(StoreInner {
                messages,
                bytes,
                table,
                budget,
            }),
        })
    }

    /// The budget of every key.
    pub fn budget(&self) -> Budget {
        self.inner.budget
    }

    /// The cap on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.inner.table.max_keys
    }

    /// The sweep interval.
    pub fn sweep_interval(&self) -> Duration {
        self.inner.table.sweep_interval
    }

    /// How many keys are tracked now.
    pub fn len(&self) -> usize {
        self.inner.table.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key whose budgets are full again and that no [`PreparedKey`] holds, in
    /// every shard, now.
    pub fn sweep(&self) {
        self.inner.table.sweep_all();
    }

    /// Prepares `key` for [`decide`](Self::decide): hashes it, and finds its budgets (or
    /// makes them, full). The key is not evicted while the prepared key lives.
    pub fn prepare(&self, key: Key) -> PreparedKey {
        let table = &self.inner.table;
        table.sweep_if_due();
        let hash = hasher().hash_one(&key);
        let cell = table.cell(&key, hash);
        PreparedKey {
            key,
            hash,
            cell,
            table: table.clone(),
        }
    }

    /// Spends `cost` from `key`'s budgets: the message budget first, then the byte budget
    /// (a message the byte budget refuses has still spent its message cell).
    pub fn decide(&self, key: &PreparedKey, cost: Cost) -> Decision {
        read_once(|| self.decide_now(key, cost))
    }

    fn decide_now(&self, key: &PreparedKey, cost: Cost) -> Decision {
        let inner = &*self.inner;
        if let Some(limiter) = &inner.messages {
            if let Err(not_until) = limiter.check_key(key) {
                return Decision::Deny {
                    retry_after: not_until.wait_time_from(PlaneClock.now()),
                };
            }
        }
        if let Some(limiter) = &inner.bytes {
            let Ok(cells) = cost.byte_cells() else {
                return Decision::TooLarge;
            };
            if let Some(cells) = cells {
                match limiter.check_key_n(key, cells) {
                    Ok(Ok(())) => {}
                    Ok(Err(not_until)) => {
                        return Decision::Deny {
                            retry_after: not_until.wait_time_from(PlaneClock.now()),
                        }
                    }
                    Err(_) => return Decision::TooLarge,
                }
            }
        }
        Decision::Allow
    }
}

impl KeyStore for InMemoryKeyStore {
    type Prepared = PreparedKey;
    type Future = Ready<Decision>;

    fn prepare(&self, key: Key) -> PreparedKey {
        InMemoryKeyStore::prepare(self, key)
    }

    fn check(&self, key: &PreparedKey, cost: Cost) -> Self::Future {
        ready(self.decide(key, cost))
    }

    fn check_now(&self, key: &PreparedKey, cost: Cost) -> Option<Decision> {
        Some(self.decide(key, cost))
    }
}

/// The shared table: per key, the GCRA "theoretical arrival time" of each rate (0: none).
struct Table {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    max_keys: usize,
    sweep_every: u64,
    sweep_interval: Duration,
    /// A clock reading no earlier than the limiters' start: times in the table are
    /// relative to their start.
    start_bound: AtomicU64,
    last_sweep: AtomicU64,
}

#[derive(Default)]
struct Shard {
    map: HashTable<Entry>,
}

/// One tracked key and its budgets.
struct Entry {
    key: Key,
    cell: Arc<Cell>,
}

impl Entry {
    /// Whether a [`PreparedKey`] holds the entry's budgets.
    fn is_held(&self) -> bool {
        Arc::strong_count(&self.cell) > 1
    }
}

/// The GCRA state of one key's two rates: each rate's theoretical arrival time, in
/// nanoseconds since its limiter's start (0: none yet), updated atomically.
#[derive(Default)]
struct Cell {
    tats: [AtomicU64; 2],
}

impl Cell {
    /// The latest arrival time of both rates.
    fn latest(&self) -> u64 {
        self.tats
            .iter()
            .map(|tat| tat.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }

    /// Governor's state-store contract for one rate: `f` decides from the current state,
    /// and the new state is stored only if nobody changed it meanwhile (else `f` decides
    /// again from the newer state).
    fn measure_and_replace<T, E, F>(&self, slot: usize, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let Some(tat) = self.tats.get(slot) else {
            return f(None).map(|(t, _)| t);
        };
        let mut prev = tat.load(Ordering::Acquire);
        loop {
            let (t, next) = f(NonZeroU64::new(prev).map(|n| Nanos::from(n.get())))?;
            match tat.compare_exchange_weak(prev, next.into(), Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return Ok(t),
                Err(current) => prev = current,
            }
        }
    }
}

/// Rehashes an entry when its shard's table grows or shrinks (lookups bring their hash).
fn rehash(entry: &Entry) -> u64 {
    hasher().hash_one(&entry.key)
}

impl Table {
    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // The shard's table uses the hash's low bits for buckets and its top seven as tags;
        // the shard is chosen with bits of neither.
        let index = usize::try_from((hash >> 32) % self.shards.len() as u64).unwrap_or(0);
        // `index < len`, and a table has at least one shard.
        self.shards.get(index).unwrap_or(&self.shards[0])
    }

    fn now(&self) -> u64 {
        PlaneClock.nanos()
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    fn sweep_all(&self) {
        self.sweep_all_at(self.now());
    }

    fn sweep_all_at(&self, now: u64) {
        let start = self.start_bound.load(Ordering::Relaxed);
        for shard in &*self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sweep(now, start);
        }
    }

    /// Sweeps the whole table if a sweep interval passed since the last sweep.
    fn sweep_if_due(&self) {
        let now = self.now();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.sweep_every
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep_all_at(now);
        }
    }

    /// The budgets of `key`, found or made (full) under the shard's lock.
    fn cell(&self, key: &Key, hash: u64) -> Arc<Cell> {
        let mut shard = self
            .shard(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = shard.map.find(hash, |e| e.key == *key) {
            return entry.cell.clone();
        }
        if shard.map.len() >= self.shard_cap {
            let start = self.start_bound.load(Ordering::Relaxed);
            shard.make_room(self.now(), start, self.shard_cap);
        }
        let cell = Arc::new(Cell::default());
        let entry = Entry {
            key: key.clone(),
            cell: cell.clone(),
        };
        shard.map.insert_unique(hash, entry, rehash);
        KEY_STORE.keys(1);
        cell
    }
}

impl Drop for Table {
    /// The keys leave the gauge with the store.
    fn drop(&mut self) {
        let keys: usize = self
            .shards
            .iter_mut()
            .map(|s| {
                s.get_mut()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map
                    .len()
            })
            .sum();
        KEY_STORE.keys(-(keys as i64));
    }
}

impl Shard {
    /// Drops the keys whose budgets are all full again: their stored arrival times are in
    /// the past, so they would decide exactly like a key never seen.
    fn sweep(&mut self, now: u64, start: u64) {
        let horizon = now.saturating_sub(start);
        let before = self.map.len();
        self.map
            .retain(|e| e.is_held() || e.cell.latest() > horizon);
        let len = self.map.len();
        KEY_STORE.keys(len as i64 - before as i64);
        if self.map.capacity() > 4 * len.max(64) {
            self.map.shrink_to(2 * len, rehash);
        }
    }

    /// Makes room for one key in a full shard.
    fn make_room(&mut self, now: u64, start: u64, cap: usize) {
        // Sweeping is cheap next to the eviction below, and often enough.
        self.sweep(now, start);
        if self.map.len() < cap {
            return;
        }
        // Still full: drop the eighth of the keys no connection holds that are closest to a
        // full budget (the smallest latest arrival time), which forgives the least debt.
        let mut latest: Vec<u64> = self
            .map
            .iter()
            .filter(|e| !e.is_held())
            .map(|e| e.cell.latest())
            .collect();
        if latest.is_empty() {
            // Every key is in use: the new one goes in over the cap (see the eviction docs).
            return;
        }
        let evict = (self.map.len() / 8).clamp(1, latest.len());
        let (_, &mut threshold, _) = latest.select_nth_unstable(evict - 1);
        let mut left = evict;
        let before = self.map.len();
        self.map.retain(|e| {
            if e.is_held() {
                return true;
            }
            let tat = e.cell.latest();
            if left > 0 && tat <= threshold {
                left -= 1;
                false
            } else {
                true
            }
        });
        KEY_STORE.keys(self.map.len() as i64 - before as i64);
    }
}

/// One rate's view of the table, as governor's state store.
struct Slot {
    table: Arc<Table>,
    slot: usize,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("slot", &self.slot).finish()
    }
}

impl StateStore for Slot {
    type Key = PreparedKey;

    fn measure_and_replace<T, F, E>(&self, key: &PreparedKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if Arc::ptr_eq(&key.table, &self.table) {
            key.cell.measure_and_replace(self.slot, f)
        } else {
            // Prepared by another store: this store's own budgets for the key.
            self.table
                .cell(&key.key, key.hash)
                .measure_and_replace(self.slot, f)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::rate;

    fn ip(n: u32) -> Key {
        Key::Ip(IpAddr::V4(Ipv4Addr::from(n)))
    }

    /// One message of `key`, as a connection that ends right after it.
    fn once(store: &InMemoryKeyStore, n: u32, cost: Cost) -> Decision {
        store.decide(&store.prepare(ip(n)), cost)
    }

    fn per_second(n: u32) -> Budget {
        Budget::new().messages(rate(n).per(Duration::from_secs(1)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_gets_its_burst_then_its_rate() {
        let store = InMemoryKeyStore::new(per_second(10)).unwrap();
        let cost = Cost::message(10);
        let one = store.prepare(ip(1));
        for _ in 0..10 {
            assert_eq!(store.decide(&one, cost), Decision::Allow);
        }
        assert_eq!(
            store.decide(&one, cost),
            Decision::Deny {
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(once(&store, 2, cost), Decision::Allow, "keys are apart");
        // Another connection of the same key shares its budget.
        assert!(matches!(once(&store, 1, cost), Decision::Deny { .. }));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(store.decide(&one, cost), Decision::Allow);
        assert!(matches!(store.decide(&one, cost), Decision::Deny { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn byte_budgets_count_bytes_and_refuse_what_never_fits() {
        let budget = Budget::new().bytes(rate(1000).per(Duration::from_secs(1)).burst(1500));
        let store = InMemoryKeyStore::new(budget).unwrap();
        let one = store.prepare(ip(1));
        assert_eq!(store.decide(&one, Cost::message(1000)), Decision::Allow);
        assert_eq!(store.decide(&one, Cost::message(500)), Decision::Allow);
        assert_eq!(
            store.decide(&one, Cost::message(100)),
            Decision::Deny {
                retry_after: Duration::from_millis(100)
            }
        );
        assert_eq!(store.decide(&one, Cost::message(0)), Decision::Allow);
        assert_eq!(once(&store, 2, Cost::message(1501)), Decision::TooLarge);
        store.sweep();
        assert_eq!(store.len(), 1, "a key that never spent anything is swept");
    }

    #[tokio::test(start_paused = true)]
    async fn full_budgets_are_swept_by_the_store_itself() {
        let store = InMemoryKeyStore::new(per_second(10))
            .unwrap()
            .with_sweep_interval(Duration::from_secs(30))
            .unwrap();
        for n in 0..100 {
            once(&store, n, Cost::message(1));
        }
        assert_eq!(store.len(), 100);
        // Every budget is full again after 1 s, but sweeps run every 30 s only.
        tokio::time::advance(Duration::from_secs(2)).await;
        once(&store, 1000, Cost::message(1));
        assert_eq!(store.len(), 101);
        tokio::time::advance(Duration::from_secs(30)).await;
        // The next key prepared sweeps: only the key just used is left.
        let busy = store.prepare(ip(1001));
        store.decide(&busy, Cost::message(1));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_key_is_not_swept() {
        let store = InMemoryKeyStore::new(per_second(1))
            .unwrap()
            .with_sweep_interval(Duration::from_secs(1))
            .unwrap();
        once(&store, 1, Cost::message(1));
        tokio::time::advance(Duration::from_millis(500)).await;
        store.sweep();
        assert_eq!(store.len(), 1, "its budget is not full yet");
        assert!(matches!(
            once(&store, 1, Cost::message(1)),
            Decision::Deny { .. }
        ));
        tokio::time::advance(Duration::from_millis(500)).await;
        store.sweep();
        assert_eq!(store.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_in_use_is_never_evicted() {
        let store = InMemoryKeyStore::new(per_second(1))
            .unwrap()
            .with_max_keys(2)
            .unwrap();
        let held = store.prepare(ip(1));
        assert_eq!(store.decide(&held, Cost::message(1)), Decision::Allow);
        // Its budget is full again, but a connection holds it: sweeps keep it.
        tokio::time::advance(Duration::from_secs(5)).await;
        store.sweep();
        assert_eq!(store.len(), 1);
        // Keys come and go around it; it keeps its state and is shared with new holders.
        assert_eq!(store.decide(&held, Cost::message(1)), Decision::Allow);
        for n in 100..200 {
            once(&store, n, Cost::message(1));
            assert!(store.len() <= 2);
        }
        assert!(matches!(
            once(&store, 1, Cost::message(1)),
            Decision::Deny { .. }
        ));
        // Only keys in use go over the cap: one per holder.
        let more: Vec<_> = (10..14).map(|n| store.prepare(ip(n))).collect();
        assert_eq!(store.len(), 5);
        drop(more);
        once(&store, 500, Cost::message(1));
        assert!(store.len() <= 5);
        drop(held);
        tokio::time::advance(Duration::from_secs(5)).await;
        store.sweep();
        assert_eq!(store.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_holds_and_evicts_the_keys_closest_to_a_full_budget() {
        let store = InMemoryKeyStore::new(per_second(1))
            .unwrap()
            .with_max_keys(8)
            .unwrap();
        // Eight keys, spent one after the other: key 0 is the closest to a full budget.
        for n in 0..8 {
            assert_eq!(once(&store, n, Cost::message(1)), Decision::Allow);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(store.len(), 8);
        assert_eq!(once(&store, 100, Cost::message(1)), Decision::Allow);
        assert_eq!(store.len(), 8, "never more than max_keys");
        // Key 0 was forgotten: it finds a full burst again. Key 7 was kept.
        assert_eq!(once(&store, 0, Cost::message(1)), Decision::Allow);
        assert!(matches!(
            once(&store, 7, Cost::message(1)),
            Decision::Deny { .. }
        ));
        // A flood of new keys never grows the store.
        for n in 1000..3000 {
            once(&store, n, Cost::message(1));
            assert!(store.len() <= 8);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_prepared_by_another_store_is_looked_up() {
        let a = InMemoryKeyStore::new(per_second(1)).unwrap();
        let b = InMemoryKeyStore::new(per_second(1)).unwrap();
        let from_a = a.prepare(ip(1));
        assert_eq!(b.decide(&from_a, Cost::message(1)), Decision::Allow);
        assert!(
            matches!(once(&b, 1, Cost::message(1)), Decision::Deny { .. }),
            "the same key, prepared by either store, is one key in b"
        );
        assert_eq!(
            a.decide(&from_a, Cost::message(1)),
            Decision::Allow,
            "and a's budget is its own"
        );
        assert!(!format!("{from_a:?}").contains("0.0.0.1"), "{from_a:?}");
    }

    #[test]
    fn connections_on_many_threads_never_spend_more_than_the_burst() {
        // One message an hour, a burst of 100: whatever the interleaving, 100 pass.
        let budget = Budget::new().messages(rate(1).per(Duration::from_secs(3600)).burst(100));
        let store = InMemoryKeyStore::new(budget).unwrap();
        let allowed = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let key = store.prepare(ip(1));
                    for _ in 0..1000 {
                        if store.decide(&key, Cost::message(1)) == Decision::Allow {
                            allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(Ordering::Relaxed), 100);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn bad_store_configurations_are_refused() {
        assert_eq!(
            InMemoryKeyStore::new(Budget::new()).unwrap_err(),
            ConfigError::EmptyBudget
        );
        let store = InMemoryKeyStore::new(per_second(1)).unwrap();
        assert_eq!(
            store.clone().with_max_keys(0).unwrap_err(),
            ConfigError::ZeroMaxKeys
        );
        assert_eq!(
            store.with_sweep_interval(Duration::ZERO).unwrap_err(),
            ConfigError::ZeroSweepInterval
        );
    }
}
