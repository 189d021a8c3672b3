//! Token revocation shared by a fleet: [`RedisRevocations`], a `Revocation` store of
//! `wsguard-jwt-auth`.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, LazyLock, Mutex, MutexGuard, PoisonError,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::future::join;
use redis::{aio::ConnectionLike, Script};
use tokio::sync::watch;
use wsguard_jwt_auth::{
    InMemoryRevocations, LiveSessions, Revocation, RevocationError, RevocationQuery,
    RevocationStatus, TokenId,
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
/// **Live sockets, on every instance.** [`revoke_token`](Self::revoke_token) and
/// [`revoke_subject_before`](Self::revoke_subject_before) also publish the revocation on
/// the fleet's channel, and each instance's [`RevocationSubscriber`](crate::RevocationSubscriber)
/// closes the matching sockets it has open (registered in its [`LiveSessions`], see
/// [`with_sessions`](Self::with_sessions)) and drops the cached answers the revocation
/// changed. See the [crate docs](crate#revocation-that-reaches-live-sockets).
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

pub(crate) struct Inner<C> {
    pub(crate) fleet: Fleet<C>,
    degraded: Degraded,
    fallback: InMemoryRevocations,
    grace: Duration,
    cache: AnswerCache,
    pub(crate) sessions: Option<LiveSessions>,
    /// The channel revocations are published on.
    pub(crate) channel: Vec<u8>,
    /// Dropped with the store: tells its subscribers to end.
    alive: watch::Sender<()>,
}

/// A revocation as published on the fleet's channel: `t:<token id>` (32 hex digits) or
/// `s:<cutoff, ms since the epoch>:<subject>`. Never a token, never a raw `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Published {
    Token(TokenId),
    Subject { cutoff_ms: u64, subject: String },
}

impl Published {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Token(id) => format!("t:{id}").into_bytes(),
            Self::Subject { cutoff_ms, subject } => format!("s:{cutoff_ms}:{subject}").into_bytes(),
        }
    }

    /// The message of `payload`, or `None` for anything else (ignored).
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        match text.split_once(':')? {
            ("t", id) => id.parse().ok().map(Self::Token),
            ("s", rest) => {
                let (cutoff, subject) = rest.split_once(':')?;
                Some(Self::Subject {
                    cutoff_ms: cutoff.parse().ok()?,
                    subject: subject.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// Cached answers by key name: the value (`None`: no such key) and when it goes stale.
type Cache = HashMap<Vec<u8>, (Option<u64>, Instant)>;

/// The answers this instance reuses, and a generation counted up by every forget: an
/// answer asked for before a forget (possibly older than the revocation that caused it)
/// is not cached.
struct AnswerCache {
    ttl: Duration,
    capacity: usize,
    answers: Mutex<Cache>,
    generation: AtomicU64,
}

impl AnswerCache {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            answers: Mutex::default(),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn off(&self) -> bool {
        self.ttl.is_zero() || self.capacity == 0
    }

    /// The generation to give [`remember`](Self::remember): read before asking Redis.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn forget(&self, key: &[u8]) {
        let mut answers = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        answers.remove(key);
    }

    fn forget_all(&self) {
        let mut answers = self.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        answers.clear();
    }

    /// A fresh cached answer: `Some(value)` (a value of `None`: no such key in Redis).
    fn get(&self, key: &[u8]) -> Option<Option<u64>> {
        if self.off() {
            return None;
        }
        self.lock()
            .get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(value, _)| *value)
    }

    /// Caches `value`, asked for at `generation`, unless something was forgotten since.
    fn remember(&self, key: Vec<u8>, value: Option<u64>, generation: u64) {
        if self.off() {
            return;
        }
        let now = Instant::now();
        let mut answers = self.lock();
        if self.generation() != generation {
            return;
        }
        if answers.len() >= self.capacity {
            answers.retain(|_, (_, until)| *until > now);
            if answers.len() >= self.capacity {
                answers.clear();
            }
        }
        answers.insert(key, (value, now + self.ttl));
    }
}

impl<C> fmt::Debug for RedisRevocations<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("fleet", &self.inner.fleet)
            .field("policy", &self.inner.degraded.policy())
            .field("grace", &self.inner.grace)
            .field("cache_ttl", &self.inner.cache.ttl)
            .field("cache_capacity", &self.inner.cache.capacity)
            .field("sessions", &self.inner.sessions.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) fn millis(t: SystemTime) -> u64 {
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
            None,
        )
    }

    fn build(
        fleet: Fleet<C>,
        policy: FailurePolicy,
        fallback: InMemoryRevocations,
        grace: Duration,
        cache_ttl: Duration,
        cache_capacity: usize,
        sessions: Option<LiveSessions>,
    ) -> Self {
        let channel = fleet.key(&[b"rv", b"closed"]);
        Self {
            inner: Arc::new(Inner {
                fleet,
                degraded: Degraded::new("revocation", policy),
                fallback: fallback.with_grace(grace),
                grace,
                cache: AnswerCache::new(cache_ttl, cache_capacity),
                sessions,
                channel,
                alive: watch::Sender::new(()),
            }),
        }
    }

    fn rebuild(&self, policy: FailurePolicy, grace: Duration, ttl: Duration, cap: usize) -> Self {
        let i = &self.inner;
        let (fleet, fallback, sessions) = (i.fleet.clone(), i.fallback.clone(), i.sessions.clone());
        Self::build(fleet, policy, fallback, grace, ttl, cap, sessions)
    }

    /// Replaces the failure policy (default [`FailurePolicy::Closed`]; see the
    /// [crate docs](crate#failure-policy)). Configure the store before it is used.
    #[must_use]
    pub fn with_failure_policy(self, policy: FailurePolicy) -> Self {
        let i = &self.inner;
        self.rebuild(policy, i.grace, i.cache.ttl, i.cache.capacity)
    }

    /// Replaces how long a revoked `jti` is kept after the token's expiry (default 60 s);
    /// set it to at least the layer's leeway.
    #[must_use]
    pub fn with_grace(self, grace: Duration) -> Self {
        let i = &self.inner;
        self.rebuild(i.degraded.policy(), grace, i.cache.ttl, i.cache.capacity)
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
            i.cache.ttl,
            i.cache.capacity,
            i.sessions.clone(),
        )
    }

    /// Closes the live sockets of what is revoked, on every instance: this instance's
    /// revocations close the matching connections of `sessions` at once, and the
    /// [`RevocationSubscriber`](crate::RevocationSubscriber) of each instance (started with
    /// [`subscriber`](Self::subscriber) or [`spawn_subscriber`](Self::spawn_subscriber))
    /// closes those of its own registry when the revocation is published. Give the same
    /// registry to `JwtAuthLayer::with_sessions`. Configure the store before it is used.
    #[must_use]
    pub fn with_sessions(self, sessions: LiveSessions) -> Self {
        let i = &self.inner;
        Self::build(
            i.fleet.clone(),
            i.degraded.policy(),
            i.fallback.clone(),
            i.grace,
            i.cache.ttl,
            i.cache.capacity,
            Some(sessions),
        )
    }

    /// The Pub/Sub channel revocations are published on: the fleet's prefix, then
    /// `rv:closed` (`wsguard:rv:closed` by default).
    pub fn channel(&self) -> &[u8] {
        &self.inner.channel
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner<C>> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn alive(&self) -> watch::Receiver<()> {
        self.inner.alive.subscribe()
    }

    fn jti_key(&self, jti: &str) -> Vec<u8> {
        self.inner.fleet.key(&[b"rv", b"jti", &jti_part(jti)])
    }

    fn subject_key(&self, subject: &str) -> Vec<u8> {
        self.inner.fleet.key(&[b"rv", b"sub", subject.as_bytes()])
    }

    /// Revokes the token with `jti`, whose expiry is `expires_at`, on every instance (each
    /// sees it within its cache TTL, or at once with a subscriber; this one at once), and
    /// closes its live sockets: this instance's at once, the others' when they receive the
    /// publication (with [`with_sessions`](Self::with_sessions) and a subscriber).
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when Redis did not store or publish it (the in-memory copy of this
    /// instance has it all the same, and this instance's sockets are closed).
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
        if let Some(sessions) = &inner.sessions {
            sessions.close_token(jti);
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
        stored.map_err(RevocationError::new)?;
        // Again: a check whose GET was answered before the SET may have cached "active".
        self.forget(&key);
        self.publish(&Published::Token(TokenId::of(jti))).await
    }

    /// Publishes a revocation on the fleet's channel (after it is stored: an instance that
    /// receives it and asks Redis finds it).
    async fn publish(&self, message: &Published) -> Result<(), RevocationError> {
        let inner = &*self.inner;
        let mut conn = inner.fleet.conn.clone();
        inner
            .fleet
            .call(
                redis::cmd("PUBLISH")
                    .arg(&inner.channel)
                    .arg(message.encode())
                    .query_async::<i64>(&mut conn),
            )
            .await
            .map(|_receivers| ())
            .map_err(RevocationError::new)
    }

    /// Revokes every token of `subject` issued before `issued_before` (and every token of
    /// it without `iat`), until `until` (for example now plus the longest token lifetime),
    /// on every instance, and closes the live sockets of those tokens (as
    /// [`revoke_token`](Self::revoke_token) does). A later cutoff replaces an earlier one,
    /// never the reverse.
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when Redis did not store or publish it (the in-memory copy of this
    /// instance has it all the same, and this instance's sockets are closed).
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
        if let Some(sessions) = &inner.sessions {
            sessions.close_subject_before(subject, issued_before);
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
        stored.map_err(RevocationError::new)?;
        // Again: a check whose GET was answered before the cutoff may have cached it.
        self.forget(&key);
        self.publish(&Published::Subject {
            cutoff_ms: millis(issued_before),
            subject: subject.to_owned(),
        })
        .await
    }

    fn forget(&self, key: &[u8]) {
        self.inner.forget(key);
    }

    /// The answer for `query`, from the cache when it is fresh, else from Redis.
    async fn status(&self, query: RevocationQuery) -> Result<RevocationStatus, RevocationError> {
        let inner = &*self.inner;
        let jti_key = query.jti().map(|jti| self.jti_key(jti));
        let subject_key = self.subject_key(query.subject().as_str());
        let cached = |key: &[u8]| inner.cache.get(key);
        let jti_cached = jti_key.as_deref().map(cached);
        let subject_cached = cached(&subject_key);
        let (jti_value, subject_value) = match (jti_cached, subject_cached) {
            (None | Some(Some(_)), Some(subject)) => (jti_cached.flatten().flatten(), subject),
            _ => {
                // Read before asking: answers are cached only if nothing was forgotten
                // meanwhile (a revocation while the GET was in flight).
                let generation = inner.cache.generation();
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
                            inner.cache.remember(key, jti, generation);
                        }
                        inner.cache.remember(subject_key, subject, generation);
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
    pub(crate) fn forget(&self, key: &[u8]) {
        self.cache.forget(key);
    }

    /// Drops every cached answer (after revocations may have been missed).
    pub(crate) fn forget_all(&self) {
        self.cache.forget_all();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_asked_for_before_a_forget_is_not_cached() {
        let cache = AnswerCache::new(Duration::from_secs(60), 10);
        // A check reads the generation and sends its GET; the revocation forgets the key
        // before the answer ("not revoked", read before the SET) comes back.
        let asked = cache.generation();
        cache.forget(b"k");
        cache.remember(b"k".to_vec(), None, asked);
        assert_eq!(cache.get(b"k"), None, "a stale 'active' was cached");
        // Same with the subscriber's forget_all.
        let asked = cache.generation();
        cache.forget_all();
        cache.remember(b"k".to_vec(), None, asked);
        assert_eq!(cache.get(b"k"), None);
        // With nothing forgotten meanwhile the answer is cached.
        let asked = cache.generation();
        cache.remember(b"k".to_vec(), Some(7), asked);
        assert_eq!(cache.get(b"k"), Some(Some(7)));
    }

    #[test]
    fn a_forget_drops_the_cached_answer() {
        let cache = AnswerCache::new(Duration::from_secs(60), 10);
        cache.remember(b"k".to_vec(), None, cache.generation());
        assert_eq!(cache.get(b"k"), Some(None));
        cache.forget(b"k");
        assert_eq!(cache.get(b"k"), None);
    }
}
