//! Token revocation shared by a fleet: [`RedisRevocations`], a `Revocation` store of
//! `wsguard-jwt-auth`.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::future::join;
use redis::{aio::ConnectionLike, Script};
use wsguard_jwt_auth::{
    InMemoryRevocations, Revocation, RevocationError, RevocationQuery, RevocationStatus,
};

use crate::{
    fleet::{Degraded, Failure, FailurePolicy, Fleet},
    keys::jti_part,
};

/// The default time a Redis answer is reused by this instance: 1 s.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);

/// The default number of answers cached at once: 10,000.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Raises a subject's cutoff (never lowers it) and keeps it until the later of the stored
/// and the given expiry. KEYS[1]: the subject's key; ARGV: cutoff (ms since the epoch),
/// keep until (ms since the epoch).
static CUT_OFF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local stored = redis.call('GET', KEYS[1])
local cutoff = tonumber(ARGV[1])
if stored and tonumber(stored) > cutoff then cutoff = tonumber(stored) end
local keep = tonumber(ARGV[2])
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now + pttl > keep then keep = now + pttl end
end
redis.call('SET', KEYS[1], string.format('%d', cutoff), 'PXAT', string.format('%d', keep))
return 1
",
    )
});

/// Revoked tokens shared by every instance of a fleet: by `jti`, and per subject
/// ("every token of this subject issued before T": log out everywhere).
///
/// - A revoked `jti` is one key, named by a hash of the `jti` (never the value: it may be
///   long, and it is the issuer's choice), kept until the token's expiry plus a grace
///   period (default 60 s, the default leeway of `wsguard-jwt-auth`).
/// - A subject's cutoff is one key holding the cutoff, named by the subject.
/// - Answers are cached by this instance for a short time (default 1 s, at most 10,000
///   answers), so that a subject's handshakes do not each pay a round trip: a revocation
///   made on another instance is seen within that time; one made through this store is
///   seen at once here.
///
/// Revocations made through this store are also kept in an [`InMemoryRevocations`], which
/// answers under [`FailurePolicy::Open`] while Redis is unavailable.
///
/// Closing the live sockets of a revoked token or subject across the fleet (Redis pub/sub)
/// is not part of this store yet: it will plug in at [`revoke_token`](Self::revoke_token)
/// and [`revoke_subject_before`](Self::revoke_subject_before), which are the only places a
/// revocation enters the fleet.
///
/// See the [crate docs](crate) for an example.
pub struct RedisRevocations<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for RedisRevocations<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C> {
    fleet: Fleet<C>,
    degraded: Degraded,
    fallback: InMemoryRevocations,
    grace: Duration,
    cache_ttl: Duration,
    cache_capacity: usize,
    cache: Mutex<Cache>,
}

/// Cached answers by key name: the value (`None`: no such key) and when it goes stale.
type Cache = HashMap<Vec<u8>, (Option<u64>, Instant)>;

impl<C> fmt::Debug for RedisRevocations<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("fleet", &self.inner.fleet)
            .field("policy", &self.inner.degraded.policy())
            .field("grace", &self.inner.grace)
            .field("cache_ttl", &self.inner.cache_ttl)
            .field("cache_capacity", &self.inner.cache_capacity)
            .finish_non_exhaustive()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<C> RedisRevocations<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store failing closed ([`FailurePolicy::Closed`]), with a grace of 60 s, a cache of
    /// [`DEFAULT_CACHE_CAPACITY`] answers for [`DEFAULT_CACHE_TTL`], and an in-memory copy
    /// of up to 100,000 revocations made here.
    pub fn new(fleet: Fleet<C>) -> Self {
        Self::build(
            fleet,
            FailurePolicy::Closed,
            InMemoryRevocations::new(100_000),
            Duration::from_secs(60),
            DEFAULT_CACHE_TTL,
            DEFAULT_CACHE_CAPACITY,
        )
    }

    fn build(
        fleet: Fleet<C>,
        policy: FailurePolicy,
        fallback: InMemoryRevocations,
        grace: Duration,
        cache_ttl: Duration,
        cache_capacity: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                fleet,
                degraded: Degraded::new("revocation", policy),
                fallback: fallback.with_grace(grace),
                grace,
                cache_ttl,
                cache_capacity,
                cache: Mutex::default(),
            }),
        }
    }

    fn rebuild(&self, policy: FailurePolicy, grace: Duration, ttl: Duration, cap: usize) -> Self {
        let i = &self.inner;
        Self::build(i.fleet.clone(), policy, i.fallback.clone(), grace, ttl, cap)
    }

    /// Replaces the failure policy (default [`FailurePolicy::Closed`]; see the
    /// [crate docs](crate#failure-policy)). Configure the store before it is used.
    #[must_use]
    pub fn with_failure_policy(self, policy: FailurePolicy) -> Self {
        let i = &self.inner;
        self.rebuild(policy, i.grace, i.cache_ttl, i.cache_capacity)
    }

    /// Replaces how long a revoked `jti` is kept after the token's expiry (default 60 s);
    /// set it to at least the layer's leeway.
    #[must_use]
    pub fn with_grace(self, grace: Duration) -> Self {
        let i = &self.inner;
        self.rebuild(i.degraded.policy(), grace, i.cache_ttl, i.cache_capacity)
    }

    /// Replaces the cache: answers reused for `ttl`, at most `capacity` of them. A zero
    /// `ttl` or `capacity` turns the cache off (every check asks Redis).
    #[must_use]
    pub fn with_cache(self, ttl: Duration, capacity: usize) -> Self {
        let i = &self.inner;
        self.rebuild(i.degraded.policy(), i.grace, ttl, capacity)
    }

    /// Replaces the in-memory store that keeps this instance's revocations and answers
    /// under [`FailurePolicy::Open`] (default `InMemoryRevocations::new(100_000)`); its
    /// grace becomes this store's.
    #[must_use]
    pub fn with_fallback(self, fallback: InMemoryRevocations) -> Self {
        let i = &self.inner;
        Self::build(
            i.fleet.clone(),
            i.degraded.policy(),
            fallback,
            i.grace,
            i.cache_ttl,
            i.cache_capacity,
        )
    }

    fn jti_key(&self, jti: &str) -> Vec<u8> {
        self.inner.fleet.key(&[b"rv", b"jti", &jti_part(jti)])
    }

    fn subject_key(&self, subject: &str) -> Vec<u8> {
        self.inner.fleet.key(&[b"rv", b"sub", subject.as_bytes()])
    }

    /// Revokes the token with `jti`, whose expiry is `expires_at`, on every instance (each
    /// sees it within its cache TTL; this one at once).
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when Redis did not store it (the in-memory copy of this instance
    /// has it all the same).
    pub async fn revoke_token(
        &self,
        jti: &str,
        expires_at: SystemTime,
    ) -> Result<(), RevocationError> {
        let inner = &*self.inner;
        let until = expires_at.checked_add(inner.grace).unwrap_or(expires_at);
        if let Err(full) = inner.fallback.revoke_token(jti, expires_at) {
            tracing::debug!(target: "wsguard_redis", error = %full, "local copy of a revocation not kept");
        }
        let key = self.jti_key(jti);
        self.forget(&key);
        if until <= SystemTime::now() {
            return Ok(());
        }
        let mut conn = inner.fleet.conn.clone();
        let stored = inner
            .fleet
            .call(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PXAT")
                    .arg(millis(until))
                    .query_async::<()>(&mut conn),
            )
            .await;
        stored.map_err(RevocationError::new)
    }

    /// Revokes every token of `subject` issued before `issued_before` (and every token of
    /// it without `iat`), until `until` (for example now plus the longest token lifetime),
    /// on every instance. A later cutoff replaces an earlier one, never the reverse.
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when Redis did not store it (the in-memory copy of this instance
    /// has it all the same).
    pub async fn revoke_subject_before(
        &self,
        subject: &str,
        issued_before: SystemTime,
        until: SystemTime,
    ) -> Result<(), RevocationError> {
        let inner = &*self.inner;
        if let Err(full) = inner
            .fallback
            .revoke_subject_before(subject, issued_before, until)
        {
            tracing::debug!(target: "wsguard_redis", error = %full, "local copy of a revocation not kept");
        }
        let key = self.subject_key(subject);
        self.forget(&key);
        if until <= SystemTime::now() {
            return Ok(());
        }
        let mut conn = inner.fleet.conn.clone();
        let stored = inner
            .fleet
            .call(
                CUT_OFF
                    .key(&key)
                    .arg(millis(issued_before))
                    .arg(millis(until))
                    .invoke_async::<i64>(&mut conn),
            )
            .await;
        stored.map(|_| ()).map_err(RevocationError::new)
    }

    fn forget(&self, key: &[u8]) {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// The answer for `query`, from the cache when it is fresh, else from Redis.
    async fn status(&self, query: RevocationQuery) -> Result<RevocationStatus, RevocationError> {
        let inner = &*self.inner;
        let jti_key = query.jti().map(|jti| self.jti_key(jti));
        let subject_key = self.subject_key(query.subject().as_str());
        let cached = |key: &[u8]| inner.cached(key);
        let jti_cached = jti_key.as_deref().map(cached);
        let subject_cached = cached(&subject_key);
        let (jti_value, subject_value) = match (jti_cached, subject_cached) {
            (None | Some(Some(_)), Some(subject)) => (jti_cached.flatten().flatten(), subject),
            _ => {
                let get = |key: Vec<u8>| {
                    let mut conn = inner.fleet.conn.clone();
                    let mut cmd = redis::cmd("GET");
                    cmd.arg(key);
                    async move { cmd.query_async::<Option<u64>>(&mut conn).await }
                };
                let subject_get = get(subject_key.clone());
                let answered = match &jti_key {
                    Some(key) => {
                        let jti_get = get(key.clone());
                        inner
                            .fleet
                            .call(async {
                                let (jti, subject) = join(jti_get, subject_get).await;
                                Ok((jti?, subject?))
                            })
                            .await
                    }
                    None => {
                        inner
                            .fleet
                            .call(async { Ok((None, subject_get.await?)) })
                            .await
                    }
                };
                match answered {
                    Ok((jti, subject)) => {
                        inner.degraded.answered();
                        if let Some(key) = jti_key {
                            inner.remember(key, jti);
                        }
                        inner.remember(subject_key, subject);
                        (jti, subject)
                    }
                    Err(failure) => return inner.unavailable(&query, &failure),
                }
            }
        };
        let revoked = jti_value.is_some()
            || subject_value
                .is_some_and(|cutoff| query.issued_at().is_none_or(|iat| millis(iat) < cutoff));
        Ok(if revoked {
            RevocationStatus::Revoked
        } else {
            RevocationStatus::Active
        })
    }
}

impl<C> Inner<C> {
    /// A fresh cached answer: `Some(value)` (a value of `None`: no such key in Redis).
    fn cached(&self, key: &[u8]) -> Option<Option<u64>> {
        if self.cache_ttl.is_zero() || self.cache_capacity == 0 {
            return None;
        }
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(value, _)| *value)
    }

    fn remember(&self, key: Vec<u8>, value: Option<u64>) {
        if self.cache_ttl.is_zero() || self.cache_capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= self.cache_capacity {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= self.cache_capacity {
                cache.clear();
            }
        }
        cache.insert(key, (value, now + self.cache_ttl));
    }

    fn unavailable(
        &self,
        query: &RevocationQuery,
        failure: &Failure,
    ) -> Result<RevocationStatus, RevocationError> {
        self.degraded.failed(failure);
        match self.degraded.policy() {
            FailurePolicy::Open => Ok(self.fallback.status(query)),
            FailurePolicy::Closed => Err(RevocationError::new(failure.to_string())),
        }
    }
}

/// The answer of [`RedisRevocations`]'s `check`.
pub type RevocationFuture =
    Pin<Box<dyn Future<Output = Result<RevocationStatus, RevocationError>> + Send>>;

impl<C> Revocation for RedisRevocations<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type Future = RevocationFuture;

    fn check(&self, query: &RevocationQuery) -> Self::Future {
        let store = self.clone();
        let query = query.clone();
        Box::pin(async move { store.status(query).await })
    }
}
