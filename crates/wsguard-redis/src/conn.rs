//! Connection leases shared by a fleet: [`RedisConnectionStore`], a `ConnectionStore` of
//! `wsguard-conn-limit`, and the [`LeaseDriver`] that renews and releases its leases.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, LazyLock, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::future::{join_all, select, Either};
use redis::{aio::ConnectionLike, Script};
use tokio::sync::mpsc;
use wsguard_conn_limit::{ConnectionStore, InMemoryConnectionStore, InMemoryLease, Refusal, Slot};

use crate::{
    fleet::{ConfigError, Degraded, Failure, FailurePolicy, Fleet},
    keys::key_part,
};

/// The default lease TTL: 30 s. A lease that is neither renewed nor released (its instance
/// crashed, or lost Redis) frees its slot within this time.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// The default renewal interval: 10 s (a third of the default TTL, so one failed renewal
/// round loses nothing).
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(10);

/// Takes one slot: drops expired leases, counts, adds the lease if under the maximum and
/// keeps the key alive as long as its longest lease. Time is Redis's own (`TIME`).
///
/// KEYS[1]: the limited key's sorted set; ARGV: maximum, lease TTL (ms), member.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
",
    )
});

/// Renews the leases of one key: every member gets a new expiry (and is added again if the
/// key was lost, for example after a Redis restart without persistence).
///
/// KEYS[1]: the key; ARGV: lease TTL (ms), then the members.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return #ARGV - 1
",
    )
});

/// Configures a [`RedisConnectionStore`]; see the [crate docs](crate) for an example.
#[must_use]
pub struct RedisConnectionStoreBuilder<C> {
    fleet: Fleet<C>,
    ttl: Duration,
    renew_every: Duration,
    policy: FailurePolicy,
    fallback: InMemoryConnectionStore,
}

impl<C> fmt::Debug for RedisConnectionStoreBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnectionStoreBuilder")
            .field("fleet", &self.fleet)
            .field("ttl", &self.ttl)
            .field("renew_every", &self.renew_every)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<C> RedisConnectionStoreBuilder<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Replaces the lease TTL (default [`DEFAULT_LEASE_TTL`]).
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Replaces the renewal interval (default [`DEFAULT_RENEW_EVERY`]); it must be shorter
    /// than the TTL.
    pub fn with_renew_every(mut self, every: Duration) -> Self {
        self.renew_every = every;
        self
    }

    /// Replaces the failure policy (default [`FailurePolicy::Open`]; see the
    /// [crate docs](crate#failure-policy)).
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the in-memory store that answers under [`FailurePolicy::Open`] while Redis
    /// is unavailable (default `InMemoryConnectionStore::new()`).
    pub fn with_fallback(mut self, fallback: InMemoryConnectionStore) -> Self {
        self.fallback = fallback;
        self
    }

    /// The store and the driver that renews and releases its leases. Spawn the driver on
    /// the application's runtime (`tokio::spawn(driver)`); it ends by itself when the store
    /// and all of its leases are gone. Without it leases are never renewed and expire after
    /// their TTL while their connections live.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] for a zero TTL or interval,
    /// [`ConfigError::RenewalNotShorterThanTtl`] when the interval is not shorter than the
    /// TTL.
    pub fn build(self) -> Result<(RedisConnectionStore<C>, LeaseDriver), ConfigError> {
        if self.ttl < Duration::from_millis(1) {
            return Err(ConfigError::ZeroDuration("the lease TTL"));
        }
        if self.renew_every.is_zero() {
            return Err(ConfigError::ZeroDuration("the renewal interval"));
        }
        if self.renew_every >= self.ttl {
            return Err(ConfigError::RenewalNotShorterThanTtl);
        }
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Arc::new(Registry::default());
        let instance = RandomState::new().hash_one((std::process::id(), SystemTime::now()));
        let shared = Arc::new(Shared {
            fleet: self.fleet.clone(),
            ttl_ms,
            degraded: Degraded::new("conn_limit", self.policy),
            fallback: self.fallback,
            instance: format!("{instance:016x}"),
            counter: AtomicU64::new(0),
            registry: Arc::clone(&registry),
            releases: tx,
        });
        // The renewals' own deadline: they run in the background, where nobody waits, and
        // may carry every live lease of the instance.
        let renew_deadline = (self.renew_every / 2).max(self.fleet.deadline);
        let driver = LeaseDriver {
            inner: Box::pin(drive(
                self.fleet,
                registry,
                rx,
                ttl_ms,
                self.renew_every,
                renew_deadline,
            )),
        };
        Ok((RedisConnectionStore { shared }, driver))
    }

    /// [`build`](Self::build), and the driver spawned on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn build_and_spawn(self) -> Result<RedisConnectionStore<C>, ConfigError> {
        let (store, driver) = self.build()?;
        tokio::spawn(driver);
        Ok(store)
    }
}

/// Connection counts shared by every instance of a fleet, as leases in Redis.
///
/// Each limited key is a sorted set: one member per connection holding a slot (this
/// instance's random id and a counter, never a timestamp), scored with the lease's expiry
/// computed from Redis's own clock. [`acquire`](ConnectionStore::acquire) takes the slots
/// with one Lua script per key, the scripts of a stack of limits sent together (one round
/// trip on a multiplexed connection), and gives back what it took when a key is full. While a lease lives, the [`LeaseDriver`] renews it with the instance's other
/// leases, one round per renewal interval; dropping the lease hands its release to the
/// driver and never blocks. A lease nobody renews (a crashed instance) expires within the
/// TTL.
///
/// Cloning is cheap and shares the store. See the [crate docs](crate) for an example.
pub struct RedisConnectionStore<C> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for RedisConnectionStore<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C> fmt::Debug for RedisConnectionStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnectionStore")
            .field("fleet", &self.shared.fleet)
            .field("ttl_ms", &self.shared.ttl_ms)
            .field("policy", &self.shared.degraded.policy())
            .finish_non_exhaustive()
    }
}

struct Shared<C> {
    fleet: Fleet<C>,
    ttl_ms: u64,
    degraded: Degraded,
    fallback: InMemoryConnectionStore,
    instance: String,
    counter: AtomicU64,
    registry: Arc<Registry>,
    releases: mpsc::UnboundedSender<Release>,
}

/// A Redis key name.
type KeyName = Arc<[u8]>;

/// The members (lease ids) of this instance under each key.
type Members = HashMap<KeyName, HashSet<Arc<str>>>;

/// The live leases of this instance, by key: what the driver renews.
#[derive(Default)]
struct Registry {
    keys: Mutex<Members>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, member: &Arc<str>, keys: &[Arc<[u8]>]) {
        let mut map = self.lock();
        for key in keys {
            map.entry(Arc::clone(key))
                .or_default()
                .insert(Arc::clone(member));
        }
    }

    fn remove(&self, member: &str, keys: &[Arc<[u8]>]) {
        let mut map = self.lock();
        for key in keys {
            if let Some(members) = map.get_mut(key) {
                members.remove(member);
                if members.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<(KeyName, Vec<Arc<str>>)> {
        self.lock()
            .iter()
            .map(|(key, members)| (Arc::clone(key), members.iter().cloned().collect()))
            .collect()
    }
}

/// A release handed to the driver: remove `member` from `keys`.
struct Release {
    member: Arc<str>,
    keys: Vec<Arc<[u8]>>,
}

impl<C> RedisConnectionStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A builder with the lease TTL [`DEFAULT_LEASE_TTL`], the renewal interval
    /// [`DEFAULT_RENEW_EVERY`] and [`FailurePolicy::Open`].
    pub fn builder(fleet: Fleet<C>) -> RedisConnectionStoreBuilder<C> {
        RedisConnectionStoreBuilder {
            fleet,
            ttl: DEFAULT_LEASE_TTL,
            renew_every: DEFAULT_RENEW_EVERY,
            policy: FailurePolicy::Open,
            fallback: InMemoryConnectionStore::new(),
        }
    }

    /// The in-memory store that answers under [`FailurePolicy::Open`] while Redis is
    /// unavailable.
    pub fn fallback(&self) -> &InMemoryConnectionStore {
        &self.shared.fallback
    }

    /// How many leases of this instance the driver renews now.
    pub fn live_leases(&self) -> usize {
        let map = self.shared.registry.lock();
        let mut members: HashSet<&Arc<str>> = HashSet::new();
        for set in map.values() {
            members.extend(set.iter());
        }
        members.len()
    }
}

impl<C> Shared<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn unavailable(&self, slots: &[Slot], failure: &Failure) -> Result<RedisLease, Refusal> {
        self.degraded.failed(failure);
        match self.degraded.policy() {
            FailurePolicy::Open => self.fallback.try_acquire(slots).map(RedisLease::local),
            FailurePolicy::Closed => Err(Refusal::Unavailable),
        }
    }

    fn release(&self, member: Arc<str>, keys: Vec<Arc<[u8]>>) {
        if !keys.is_empty() {
            // The driver may be gone (not spawned, or shut down): the lease then expires.
            let _ = self.releases.send(Release { member, keys });
        }
    }
}

async fn acquire<C>(shared: Arc<Shared<C>>, slots: Vec<Slot>) -> Result<RedisLease, Refusal>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let n = shared.counter.fetch_add(1, Ordering::Relaxed);
    let member: Arc<str> = Arc::from(format!("{}:{n}", shared.instance));
    let keys: Vec<Arc<[u8]>> = slots
        .iter()
        .map(|slot| {
            let limit = slot.limit().to_string();
            Arc::from(
                shared
                    .fleet
                    .key(&[b"cl", limit.as_bytes(), &key_part(slot.key())]),
            )
        })
        .collect();
    // Gives the slots back if this future is dropped once the scripts may have been sent
    // (client gone, an outer timeout): otherwise they would be held for the whole TTL.
    let pending = Unreleased {
        member,
        keys,
        releases: shared.releases.clone(),
    };
    // The keys' scripts are sent together (a multiplexed connection pipelines them): one
    // round trip for a stack of limits, not one per limit. All or nothing as before: when a
    // key is full, every slot taken is given back.
    let ttl_ms = shared.ttl_ms;
    let outcome = shared
        .fleet
        .call(async {
            let calls = slots.iter().zip(&pending.keys).map(|(slot, key)| {
                let mut conn = shared.fleet.conn.clone();
                let member = &*pending.member;
                async move {
                    ACQUIRE
                        .key(&**key)
                        .arg(slot.max().get())
                        .arg(ttl_ms)
                        .arg(member)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            });
            let taken = join_all(calls)
                .await
                .into_iter()
                .collect::<Result<Vec<i64>, _>>()?;
            Ok(taken.iter().position(|&taken| taken != 1))
        })
        .await;
    match outcome {
        Ok(None) => {
            shared.degraded.answered();
            let (member, keys) = pending.disarm();
            shared.registry.add(&member, &keys);
            Ok(RedisLease {
                kind: LeaseKind::Redis {
                    member,
                    keys,
                    shared: Arc::clone(&shared) as Arc<dyn Releaser>,
                },
            })
        }
        Ok(Some(index)) => {
            shared.degraded.answered();
            // All or nothing: give back the slots taken (removing a lease from the full
            // key, which did not take it, is harmless).
            drop(pending);
            Err(Refusal::Full { slot: index })
        }
        Err(failure) => {
            // Some slots may have been taken before the failure: give every one back
            // (removing a lease that is not there is harmless).
            drop(pending);
            shared.unavailable(&slots, &failure)
        }
    }
}

/// The slots of an acquire not (yet) handed over as a [`RedisLease`]: dropped armed, it
/// sends their release to the driver.
struct Unreleased {
    member: Arc<str>,
    keys: Vec<Arc<[u8]>>,
    releases: mpsc::UnboundedSender<Release>,
}

impl Unreleased {
    /// The member and keys, now the lease's to release.
    fn disarm(mut self) -> (Arc<str>, Vec<Arc<[u8]>>) {
        (Arc::clone(&self.member), std::mem::take(&mut self.keys))
    }
}

impl Drop for Unreleased {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            // The driver may be gone (not spawned, or shut down): the leases then expire.
            let _ = self.releases.send(Release {
                member: Arc::clone(&self.member),
                keys: std::mem::take(&mut self.keys),
            });
        }
    }
}

/// The answer of [`RedisConnectionStore`]'s `acquire`.
pub type AcquireFuture = Pin<Box<dyn Future<Output = Result<RedisLease, Refusal>> + Send>>;

impl<C> ConnectionStore for RedisConnectionStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type Lease = RedisLease;
    type Future = AcquireFuture;

    fn acquire(&self, slots: &[Slot]) -> Self::Future {
        Box::pin(acquire(Arc::clone(&self.shared), slots.to_vec()))
    }

    fn acquire_now(&self, slots: &[Slot]) -> Option<Result<RedisLease, Refusal>> {
        // While the circuit is open the answer needs no Redis call.
        self.shared
            .fleet
            .circuit
            .is_open()
            .then(|| self.shared.unavailable(slots, &Failure::CircuitOpen))
    }
}

/// What a lease needs from its store when dropped.
trait Releaser: Send + Sync {
    fn unregister_and_release(&self, member: Arc<str>, keys: Vec<Arc<[u8]>>);
}

impl<C> Releaser for Shared<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn unregister_and_release(&self, member: Arc<str>, keys: Vec<Arc<[u8]>>) {
        self.registry.remove(&member, &keys);
        self.release(member, keys);
    }
}

/// The slots a [`RedisConnectionStore`] gave a connection: leases in Redis, or, while Redis
/// was unavailable under [`FailurePolicy::Open`], slots of the in-memory fallback. Dropping
/// it releases them without blocking.
pub struct RedisLease {
    kind: LeaseKind,
}

enum LeaseKind {
    Redis {
        member: Arc<str>,
        keys: Vec<Arc<[u8]>>,
        shared: Arc<dyn Releaser>,
    },
    Local(#[allow(dead_code)] InMemoryLease),
}

impl RedisLease {
    fn local(lease: InMemoryLease) -> Self {
        Self {
            kind: LeaseKind::Local(lease),
        }
    }

    /// Whether the slots are held in Redis (shared by the fleet), not in the in-memory
    /// fallback.
    pub fn is_shared(&self) -> bool {
        matches!(self.kind, LeaseKind::Redis { .. })
    }
}

impl fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            LeaseKind::Redis { keys, .. } => f
                .debug_struct("RedisLease")
                .field("slots", &keys.len())
                .finish(),
            LeaseKind::Local(lease) => f.debug_tuple("RedisLease").field(lease).finish(),
        }
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        if let LeaseKind::Redis {
            member,
            keys,
            shared,
        } = &mut self.kind
        {
            shared.unregister_and_release(Arc::clone(member), std::mem::take(keys));
        }
    }
}

/// Renews the leases of a [`RedisConnectionStore`] and releases the dropped ones: a future
/// to spawn on the application's runtime (it needs no particular one).
///
/// One renewal round per interval for the whole instance: the per-key renewal scripts are
/// sent together. Releases are sent as soon as leases are dropped, batched with the ones
/// dropped meanwhile. It ends when the store and every lease are gone.
#[must_use = "the driver renews and releases leases only while it is polled: spawn it"]
pub struct LeaseDriver {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for LeaseDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseDriver").finish_non_exhaustive()
    }
}

impl Future for LeaseDriver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

async fn drive<C>(
    fleet: Fleet<C>,
    registry: Arc<Registry>,
    mut releases: mpsc::UnboundedReceiver<Release>,
    ttl_ms: u64,
    renew_every: Duration,
    renew_deadline: Duration,
) where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut tick = pin!(tokio::time::sleep(renew_every));
    loop {
        let next = match select(pin!(releases.recv()), tick.as_mut()).await {
            Either::Left((release, _)) => Some(release),
            Either::Right(((), _)) => None,
        };
        match next {
            Some(Some(first)) => {
                let mut batch = vec![first];
                while let Ok(more) = releases.try_recv() {
                    batch.push(more);
                }
                release(&fleet, batch).await;
            }
            Some(None) => return,
            None => {
                renew(&fleet, &registry, ttl_ms, renew_deadline).await;
                tick.as_mut()
                    .reset(tokio::time::Instant::now() + renew_every);
            }
        }
    }
}

async fn release<C>(fleet: &Fleet<C>, batch: Vec<Release>)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut by_key: HashMap<Arc<[u8]>, Vec<Arc<str>>> = HashMap::new();
    for release in batch {
        for key in release.keys {
            by_key
                .entry(key)
                .or_default()
                .push(Arc::clone(&release.member));
        }
    }
    let calls = by_key.into_iter().map(|(key, members)| {
        let mut conn = fleet.conn.clone();
        async move {
            redis::cmd("ZREM")
                .arg(&*key)
                .arg(members.iter().map(|m| &**m).collect::<Vec<&str>>())
                .query_async::<i64>(&mut conn)
                .await
        }
    });
    let result = fleet
        .call(async {
            join_all(calls)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    if let Err(failure) = result {
        // The leases expire by themselves within the TTL.
        tracing::debug!(target: "wsguard_redis", error = %failure, "lease release failed");
    }
}

async fn renew<C>(fleet: &Fleet<C>, registry: &Registry, ttl_ms: u64, deadline: Duration)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let leases = registry.snapshot();
    if leases.is_empty() {
        return;
    }
    let calls = leases.into_iter().map(|(key, members)| {
        let mut conn = fleet.conn.clone();
        async move {
            let mut invocation = RENEW.key(&*key);
            invocation.arg(ttl_ms);
            for member in &members {
                invocation.arg(&**member);
            }
            invocation.invoke_async::<i64>(&mut conn).await
        }
    });
    let long = Fleet {
        deadline,
        ..fleet.clone()
    };
    let result = long
        .call(async {
            join_all(calls)
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
    if let Err(failure) = result {
        tracing::debug!(target: "wsguard_redis", error = %failure, "lease renewal failed");
    }
}
