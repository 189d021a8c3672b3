//! Where connection counts live: the [`ConnectionStore`] trait and its bounded in-memory
//! implementation, [`InMemoryConnectionStore`].
//!
//! The layer asks a store for every slot a connection needs at once ([`ConnectionStore::acquire`])
//! and gets a lease back; the slots are given back when the lease is dropped. Acquisition is
//! all-or-nothing: a connection refused by one limit holds nothing of the others.
//!
//! # Stores for a fleet of instances
//!
//! A store shared by several instances (Redis, in a later release) keeps each slot as a lease
//! with an expiry: `acquire` takes the slots with one atomic script, the returned lease renews
//! them while it lives (from a background task) and releases them when dropped, and the slots
//! of an instance that crashed come back once their expiry passes. The trait is shaped for
//! that: acquisition is asynchronous and returns an owned lease whose `Drop` releases.

use std::{
    fmt,
    future::{ready, Future, Ready},
    hash::{BuildHasher, DefaultHasher, Hash, Hasher, RandomState},
    net::IpAddr,
    num::{NonZeroU32, NonZeroUsize},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use hashbrown::HashTable;
use wsguard_core::Key;

use crate::telemetry::CONNECTIONS_STORE;

/// One slot a connection asks for: a key counted under one limit, and that limit's maximum.
#[derive(Clone, PartialEq, Eq)]
pub struct Slot {
    limit: u16,
    key: Key,
    max: NonZeroU32,
}

impl Slot {
    /// A slot under the limit numbered `limit`, for `key`, with at most `max` holders.
    pub const fn new(limit: u16, key: Key, max: NonZeroU32) -> Self {
        Self { limit, key, max }
    }

    /// The limit's number (its position in the layer's configuration). Two limits never
    /// share counts, even for equal keys.
    pub const fn limit(&self) -> u16 {
        self.limit
    }

    /// The key counted.
    pub const fn key(&self) -> &Key {
        &self.key
    }

    /// The most holders the key may have under this limit.
    pub const fn max(&self) -> NonZeroU32 {
        self.max
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Key`'s Debug shows its class only: keys are often personal data.
        f.debug_struct("Slot")
            .field("limit", &self.limit)
            .field("key", &self.key)
            .field("max", &self.max)
            .finish()
    }
}

/// Why a store refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The slot at this index of the request was full.
    Full {
        /// Index of the refused slot in the slice given to [`ConnectionStore::acquire`].
        slot: usize,
    },
    /// The store tracks as many keys as it may and the slot at this index needed a new one.
    TooManyKeys {
        /// Index of the slot that needed a new key.
        slot: usize,
    },
    /// The store could not answer (a remote store is unreachable, ...).
    Unavailable,
}

/// A place to count connections; see the [module docs](self).
pub trait ConnectionStore: Send + Sync + 'static {
    /// Holds the acquired slots; dropping it releases them.
    type Lease: Send + 'static;
    /// The answer to [`acquire`](Self::acquire).
    type Future: Future<Output = Result<Self::Lease, Refusal>> + Send + 'static;

    /// Takes one unit of every slot in `slots`, or none of them.
    ///
    /// A slot is free while its key has fewer than [`Slot::max`] holders. On refusal nothing
    /// stays taken.
    fn acquire(&self, slots: &[Slot]) -> Self::Future;

    /// The same answer, given at once if the store can (an in-process store can), which
    /// spares the layer the asynchronous step. The default says it cannot: `None`, and the
    /// layer calls [`acquire`](Self::acquire).
    fn acquire_now(&self, slots: &[Slot]) -> Option<Result<Self::Lease, Refusal>> {
        let _ = slots;
        None
    }
}

/// The default bound on the keys an [`InMemoryConnectionStore`] tracks at once.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Connection counts in this process's memory: bounded, sharded, self-cleaning.
///
/// - A key is tracked only while it has at least one holder: its entry is removed when its
///   count falls to zero, so there is nothing to sweep and idle keys cost nothing.
/// - At most `max_keys` keys (all limits together, default [`DEFAULT_MAX_KEYS`]) are tracked
///   at once; a connection that needs a new key beyond that is refused
///   ([`Refusal::TooManyKeys`], answered 503) instead of memory growing. Keys already tracked
///   keep working.
/// - Counts are spread over shards, each behind its own short-held mutex, chosen by a
///   randomly seeded hash of the key, so connections of different keys rarely meet on a lock.
/// - One tracked key with one holder costs about 150 bytes of heap for an address or a
///   principal key (the table entry with its share of spare capacity, and the holder's
///   lease), measured by the crate's `memory` test; figures in `BENCHMARKS.md`.
///
/// Acquisition takes the slots one after the other and gives back the ones it took when a
/// later one is full, so a refused connection never holds anything; a concurrent connection
/// may, during those few nanoseconds, see a slot as taken and be refused.
///
/// Cloning is cheap and shares the counts.
#[derive(Clone)]
pub struct InMemoryConnectionStore {
    shared: Arc<Shared>,
}

/// One tracked key: its limit, the key, its hash (computed once per connection) and its
/// holders.
struct Count {
    hash: u64,
    limit: u16,
    key: Key,
    holders: u32,
}

/// The counts of one shard.
type Shard = Mutex<HashTable<Count>>;

struct Shared {
    shards: Box<[Shard]>,
    hasher: RandomState,
    tracked: AtomicUsize,
    max_keys: usize,
}

/// A slot a lease holds: enough to find its count again without hashing, and the limit's
/// maximum (for the gauge of keys at their limit).
struct Held {
    hash: u64,
    limit: u16,
    max: u32,
    key: Key,
}

impl Default for InMemoryConnectionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryConnectionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryConnectionStore")
            .field("tracked_keys", &self.tracked_keys())
            .field("max_keys", &self.shared.max_keys)
            .field("shards", &self.shared.shards.len())
            .finish()
    }
}

impl InMemoryConnectionStore {
    /// A store tracking at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new() -> Self {
        Self::with_max_keys(NonZeroUsize::new(DEFAULT_MAX_KEYS).unwrap_or(NonZeroUsize::MIN))
    }

    /// A store tracking at most `max_keys` keys at once.
    pub fn with_max_keys(max_keys: NonZeroUsize) -> Self {
        let cores = std::thread::available_parallelism().map_or(4, NonZeroUsize::get);
        let shards = (cores * 4).next_power_of_two().clamp(4, 256);
        Self {
            shared: Arc::new(Shared {
                shards: (0..shards).map(|_| Mutex::new(HashTable::new())).collect(),
                hasher: RandomState::new(),
                tracked: AtomicUsize::new(0),
                max_keys: max_keys.get(),
            }),
        }
    }

    /// How many keys are tracked now (keys with at least one holder).
    pub fn tracked_keys(&self) -> usize {
        self.shared.tracked.load(Ordering::Acquire)
    }

    /// The most keys tracked at once.
    pub fn max_keys(&self) -> usize {
        self.shared.max_keys
    }

    /// How many holders `key` has under the limit numbered `limit`.
    pub fn count(&self, limit: u16, key: &Key) -> u32 {
        let hash = self.shared.hash(limit, key);
        self.shared
            .shard(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .find(hash, |c| c.limit == limit && c.key == *key)
            .map_or(0, |c| c.holders)
    }

    /// Takes the slots synchronously; what [`ConnectionStore::acquire`] answers.
    pub fn try_acquire(&self, slots: &[Slot]) -> Result<InMemoryLease, Refusal> {
        let mut held = Vec::with_capacity(slots.len());
        // The gauges move once per connection, not once per slot.
        let mut changed = Changed::default();
        for (index, slot) in slots.iter().enumerate() {
            let hash = self.shared.hash(slot.limit, &slot.key);
            match self.shared.take(hash, slot, index) {
                Ok(taken) => changed.add(taken),
                Err(refusal) => {
                    // Give back what this connection took so far: all or nothing.
                    for held in held.drain(..).rev() {
                        changed.add(self.shared.give(&held));
                    }
                    changed.record();
                    return Err(refusal);
                }
            }
            held.push(Held {
                hash,
                limit: slot.limit,
                max: slot.max.get(),
                key: slot.key.clone(),
            });
        }
        changed.record();
        Ok(InMemoryLease {
            shared: Arc::clone(&self.shared),
            held,
        })
    }
}

/// How a store's gauges change: keys tracked, keys at their limit's maximum.
#[derive(Debug, Default, Clone, Copy)]
struct Changed {
    keys: i64,
    over_limit: i64,
}

impl Changed {
    fn add(&mut self, other: Self) {
        self.keys += other.keys;
        self.over_limit += other.over_limit;
    }

    /// Moves the gauges (a change of zero moves nothing).
    fn record(self) {
        CONNECTIONS_STORE.keys(self.keys);
        CONNECTIONS_STORE.over_limit(self.over_limit);
    }
}

impl Shared {
    fn hash(&self, limit: u16, key: &Key) -> u64 {
        hash_slot(&self.hasher, limit, key)
    }

    fn shard(&self, hash: u64) -> &Shard {
        // The table uses the hash's low bits for buckets and its top seven as tags; the
        // shard comes from bits in between, so that sharding takes nothing from either.
        let index = ((hash >> 32) as usize) & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Takes one unit of `slot`; what changed for the gauges.
    fn take(&self, hash: u64, slot: &Slot, index: usize) -> Result<Changed, Refusal> {
        let mut shard = self
            .shard(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = shard.find_mut(hash, |c| c.limit == slot.limit && c.key == slot.key) {
            if count.holders >= slot.max.get() {
                return Err(Refusal::Full { slot: index });
            }
            count.holders += 1;
            return Ok(Changed {
                keys: 0,
                over_limit: i64::from(count.holders == slot.max.get()),
            });
        }
        // A new key: reserve room for it under the global bound first.
        let reserved = self
            .tracked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            });
        if reserved.is_err() {
            return Err(Refusal::TooManyKeys { slot: index });
        }
        shard.insert_unique(
            hash,
            Count {
                hash,
                limit: slot.limit,
                key: slot.key.clone(),
                holders: 1,
            },
            |c| c.hash,
        );
        Ok(Changed {
            keys: 1,
            over_limit: i64::from(slot.max.get() == 1),
        })
    }

    /// Gives back one unit of `held`; what changed for the gauges.
    fn give(&self, held: &Held) -> Changed {
        let mut changed = Changed::default();
        let mut shard = self
            .shard(held.hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Ok(mut entry) =
            shard.find_entry(held.hash, |c| c.limit == held.limit && c.key == held.key)
        {
            if entry.get().holders == held.max {
                changed.over_limit = -1;
            }
            if entry.get().holders > 1 {
                entry.get_mut().holders -= 1;
            } else {
                entry.remove();
                self.tracked.fetch_sub(1, Ordering::AcqRel);
                changed.keys = -1;
            }
        }
        changed
    }
}

/// The bytes of [`hash_slot`]'s head: limit (2), tag (1), address family (1), an IPv6
/// address (16), prefix length (1).
const HEAD: usize = 21;

/// The hash of `key` under the limit numbered `limit`, with the store's randomly seeded
/// SipHash: the same for equal keys (what the table needs), computed with one `write` for a
/// key of fixed size and two for one of variable size, rather than the five or more of
/// `Key`'s derived `Hash` (a write for each discriminant, length and field), which cost a
/// handshake about a third of the store's time. Each encoding starts with the limit and a
/// tag for the kind of key, and a variable-size key's with its length, so keys of
/// different kinds or limits do not collide by construction.
fn hash_slot(hasher: &RandomState, limit: u16, key: &Key) -> u64 {
    let mut state = hasher.build_hasher();
    let mut head = [0u8; HEAD];
    head[..2].copy_from_slice(&limit.to_le_bytes());
    let len = match key {
        Key::Global => 3,
        Key::Ip(ip) => {
            head[2] = 1;
            3 + put_ip(&mut head, *ip)
        }
        Key::Net(net) => {
            head[2] = 2;
            let end = 3 + put_ip(&mut head, net.addr());
            head[end] = net.prefix_len();
            end + 1
        }
        Key::Principal(principal) => {
            return hash_bytes(state, head, 3, principal.as_str().as_bytes())
        }
        Key::Header(value) => return hash_bytes(state, head, 4, value.as_bytes()),
        Key::Custom(value) => return hash_bytes(state, head, 5, value.as_bytes()),
        // A kind of key this version does not know: its own `Hash`.
        other => {
            head[2] = u8::MAX;
            state.write(&head[..3]);
            other.hash(&mut state);
            return state.finish();
        }
    };
    state.write(&head[..len]);
    state.finish()
}

/// Writes `ip` into `head` after the limit and tag, with a byte telling its family; the
/// bytes written.
fn put_ip(head: &mut [u8; HEAD], ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(ip) => {
            head[3] = 4;
            head[4..8].copy_from_slice(&ip.octets());
            5
        }
        IpAddr::V6(ip) => {
            head[3] = 6;
            head[4..20].copy_from_slice(&ip.octets());
            17
        }
    }
}

/// A key of variable size: the head (limit, `tag`, the length), then the bytes.
fn hash_bytes(mut state: DefaultHasher, mut head: [u8; HEAD], tag: u8, bytes: &[u8]) -> u64 {
    head[2] = tag;
    head[3..11].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    state.write(&head[..11]);
    state.write(bytes);
    state.finish()
}

impl ConnectionStore for InMemoryConnectionStore {
    type Lease = InMemoryLease;
    type Future = Ready<Result<InMemoryLease, Refusal>>;

    fn acquire(&self, slots: &[Slot]) -> Self::Future {
        ready(self.try_acquire(slots))
    }

    fn acquire_now(&self, slots: &[Slot]) -> Option<Result<InMemoryLease, Refusal>> {
        Some(self.try_acquire(slots))
    }
}

/// The slots an [`InMemoryConnectionStore`] gave a connection; dropping it gives them back.
pub struct InMemoryLease {
    shared: Arc<Shared>,
    held: Vec<Held>,
}

impl fmt::Debug for InMemoryLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryLease")
            .field("slots", &self.held.len())
            .finish()
    }
}

impl Drop for InMemoryLease {
    fn drop(&mut self) {
        let mut changed = Changed::default();
        for held in self.held.drain(..).rev() {
            changed.add(self.shared.give(&held));
        }
        changed.record();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use http::HeaderValue;
    use wsguard_core::Principal;

    use super::*;

    /// One key of each kind, built twice (equal keys from separate allocations).
    fn keys() -> Vec<Key> {
        let net = |s: &str| {
            let ip = Key::Net(s.parse().unwrap());
            assert!(matches!(ip, Key::Net(_)));
            ip
        };
        vec![
            Key::Global,
            Key::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            Key::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))),
            Key::Ip(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
            net("192.0.2.0/24"),
            net("192.0.2.0/25"),
            net("2001:db8::/64"),
            net("2001:db8::/48"),
            Key::Principal(Principal::new(String::from("alice"))),
            Key::Principal(Principal::new(String::from("alicf"))),
            Key::Principal(Principal::new(String::new())),
            Key::Header(HeaderValue::from_static("alice")),
            Key::custom(String::from("alice")),
            Key::custom(String::from("192.0.2.1")),
        ]
    }

    #[test]
    fn equal_keys_hash_equal_and_these_distinct_ones_do_not() {
        let hasher = RandomState::new();
        let (a, b) = (keys(), keys());
        let mut seen = Vec::new();
        for limit in [0, 1, 63] {
            for (x, y) in a.iter().zip(&b) {
                assert!(x == y);
                let hash = hash_slot(&hasher, limit, x);
                assert_eq!(hash, hash_slot(&hasher, limit, y), "{x:?}");
                seen.push(hash);
            }
        }
        let mut distinct = seen.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // Keys of different kinds or limits, or with different values, all differ here
        // (a 64-bit collision among these 42 would be a fault of the encoding).
        assert_eq!(distinct.len(), seen.len());
    }

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn ip(last: u8) -> Key {
        Key::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn counts_up_to_the_maximum_and_removes_keys_at_zero() {
        let store = InMemoryConnectionStore::new();
        let leases: Vec<_> = (0..3)
            .map(|_| store.try_acquire(&[Slot::new(0, ip(1), n(3))]).unwrap())
            .collect();
        assert_eq!(store.count(0, &ip(1)), 3);
        assert_eq!(
            store.try_acquire(&[Slot::new(0, ip(1), n(3))]).err(),
            Some(Refusal::Full { slot: 0 })
        );
        assert_eq!(store.count(1, &ip(1)), 0, "limits never share counts");
        assert_eq!(store.tracked_keys(), 1);
        drop(leases);
        assert_eq!(store.count(0, &ip(1)), 0);
        assert_eq!(store.tracked_keys(), 0);
    }

    #[test]
    fn a_refused_connection_holds_nothing() {
        let store = InMemoryConnectionStore::new();
        let _full = store
            .try_acquire(&[Slot::new(2, Key::Global, n(1))])
            .unwrap();
        let slots = vec![
            Slot::new(0, ip(1), n(5)),
            Slot::new(1, ip(2), n(5)),
            Slot::new(2, Key::Global, n(1)),
        ];
        assert_eq!(
            store.try_acquire(&slots).err(),
            Some(Refusal::Full { slot: 2 })
        );
        assert_eq!(store.count(0, &ip(1)), 0);
        assert_eq!(store.count(1, &ip(2)), 0);
        assert_eq!(store.tracked_keys(), 1, "only the global key");
    }

    #[test]
    fn the_key_bound_refuses_new_keys_only() {
        let store = InMemoryConnectionStore::with_max_keys(NonZeroUsize::new(2).unwrap());
        let _a = store.try_acquire(&[Slot::new(0, ip(1), n(9))]).unwrap();
        let _b = store.try_acquire(&[Slot::new(0, ip(2), n(9))]).unwrap();
        assert_eq!(
            store.try_acquire(&[Slot::new(0, ip(3), n(9))]).err(),
            Some(Refusal::TooManyKeys { slot: 0 })
        );
        let again = store.try_acquire(&[Slot::new(0, ip(1), n(9))]);
        assert!(again.is_ok(), "a tracked key still works at the bound");
        assert_eq!(store.tracked_keys(), 2);
        drop(_b);
        assert!(store.try_acquire(&[Slot::new(0, ip(3), n(9))]).is_ok());
    }

    #[test]
    fn racing_threads_never_exceed_the_maximum() {
        use std::sync::Barrier;
        const THREADS: usize = 8;
        let store = InMemoryConnectionStore::new();
        let peak = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        for _round in 0..50 {
            let barrier = Arc::new(Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (store, barrier) = (store.clone(), Arc::clone(&barrier));
                    let (peak, live) = (Arc::clone(&peak), Arc::clone(&live));
                    std::thread::spawn(move || {
                        barrier.wait();
                        let slots =
                            vec![Slot::new(0, Key::Global, n(3)), Slot::new(1, ip(7), n(2))];
                        if let Ok(lease) = store.try_acquire(&slots) {
                            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            std::thread::yield_now();
                            live.fetch_sub(1, Ordering::SeqCst);
                            drop(lease);
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
        }
        assert!(peak.load(Ordering::SeqCst) <= 2, "the tighter limit holds");
        assert!(peak.load(Ordering::SeqCst) >= 1);
        assert_eq!(store.tracked_keys(), 0);
    }
}
