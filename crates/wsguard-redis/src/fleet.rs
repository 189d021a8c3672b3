//! What every store shares: the connection, the key prefix, the deadline of each Redis call,
//! the circuit breaker, the failure policy and the configuration errors.

use std::{
    fmt,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use redis::{aio::ConnectionLike, RedisError};

use crate::telemetry;

/// The default deadline of one Redis call: 50 ms.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);

/// The default key prefix: `wsguard:`.
pub const DEFAULT_PREFIX: &str = "wsguard:";

/// The default number of consecutive failures that opens the circuit: 3.
pub const DEFAULT_CIRCUIT_FAILURES: u32 = 3;

/// The default time the circuit stays open before one probe call: 1 s.
pub const DEFAULT_CIRCUIT_OPEN_FOR: Duration = Duration::from_secs(1);

/// What a store does when Redis cannot answer (down, frozen, slower than the deadline, or
/// the circuit is open).
///
/// See the [crate docs](crate#failure-policy) for each store's default and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailurePolicy {
    /// Answer from the in-memory store of the same crate, in this process only: limits hold
    /// per instance instead of fleet-wide. Counted in `wsguard_redis_fallbacks_total` and
    /// logged once when the store starts and stops falling back.
    Open,
    /// Refuse: 503 with `Retry-After` before the upgrade, close 1013 after it, and a
    /// `RevocationError` (which `wsguard-jwt-auth` answers as configured) for revocation.
    Closed,
}

impl FailurePolicy {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive is zero (the deadline, a TTL, an interval).
    ZeroDuration(&'static str),
    /// A count that must be positive is zero.
    ZeroCount(&'static str),
    /// The lease renewal interval is not shorter than the lease TTL: leases would expire
    /// between renewals.
    RenewalNotShorterThanTtl,
    /// The budget of a [`RedisKeyStore`](crate::RedisKeyStore) cannot work.
    Budget(wsguard_msg_rate::ConfigError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroDuration(what) => write!(f, "{what} must be longer than zero"),
            Self::ZeroCount(what) => write!(f, "{what} must be at least 1"),
            Self::RenewalNotShorterThanTtl => {
                f.write_str("the lease renewal interval must be shorter than the lease TTL")
            }
            Self::Budget(error) => write!(f, "budget: {error}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Budget(error) => Some(error),
            _ => None,
        }
    }
}

impl From<wsguard_msg_rate::ConfigError> for ConfigError {
    fn from(error: wsguard_msg_rate::ConfigError) -> Self {
        Self::Budget(error)
    }
}

/// The Redis connection and the settings every store built from it shares: the key prefix,
/// the deadline of each call and one circuit breaker.
///
/// `C` is the connection the application already has: `redis::aio::ConnectionManager`,
/// `redis::aio::MultiplexedConnection`, a cluster connection, or anything else that
/// implements `redis::aio::ConnectionLike` and is cheap to clone. Stores built from clones
/// of one `Fleet` share its circuit: when Redis is down, every store learns it at once.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Fleet<C> {
    pub(crate) conn: C,
    pub(crate) prefix: Arc<str>,
    pub(crate) deadline: Duration,
    pub(crate) circuit: Arc<Circuit>,
}

impl<C> fmt::Debug for Fleet<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("prefix", &self.prefix)
            .field("deadline", &self.deadline)
            .field("circuit", &self.circuit.state())
            .finish_non_exhaustive()
    }
}

impl<C> Fleet<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Stores on `conn`, with the prefix [`DEFAULT_PREFIX`], the deadline
    /// [`DEFAULT_DEADLINE`] and a circuit that opens after [`DEFAULT_CIRCUIT_FAILURES`]
    /// consecutive failures for [`DEFAULT_CIRCUIT_OPEN_FOR`].
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_PREFIX),
            deadline: DEFAULT_DEADLINE,
            circuit: Arc::new(Circuit::new(
                DEFAULT_CIRCUIT_FAILURES,
                DEFAULT_CIRCUIT_OPEN_FOR,
            )),
        }
    }

    /// Replaces the prefix of every key the stores write (default `wsguard:`). Give each
    /// application sharing a Redis its own.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<Arc<str>>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Replaces the deadline of each Redis call (default 50 ms). A call that has not
    /// answered by then counts as a failure and the store answers by its failure policy.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroDuration`] for a zero deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Result<Self, ConfigError> {
        if deadline.is_zero() {
            return Err(ConfigError::ZeroDuration("the deadline"));
        }
        self.deadline = deadline;
        Ok(self)
    }

    /// Replaces the circuit breaker: it opens after `failures` consecutive failed calls and
    /// then makes no call for `open_for`, after which one call probes Redis; the circuit
    /// closes when a call succeeds. The new circuit is shared by the stores built from this
    /// `Fleet` and its clones made after this call.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroCount`] for zero failures, [`ConfigError::ZeroDuration`] for a
    /// zero `open_for`.
    pub fn with_circuit(mut self, failures: u32, open_for: Duration) -> Result<Self, ConfigError> {
        if failures == 0 {
            return Err(ConfigError::ZeroCount("the circuit's failures"));
        }
        if open_for.is_zero() {
            return Err(ConfigError::ZeroDuration("the circuit's open time"));
        }
        self.circuit = Arc::new(Circuit::new(failures, open_for));
        Ok(self)
    }

    /// The connection.
    pub fn connection(&self) -> &C {
        &self.conn
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The deadline of each call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The circuit's state now.
    pub fn circuit_state(&self) -> CircuitState {
        self.circuit.state()
    }

    /// Runs one Redis call under the circuit and the deadline.
    pub(crate) async fn call<T, F>(&self, call: F) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        if !self.circuit.admit() {
            return Err(Failure::CircuitOpen);
        }
        let outcome = match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Failure::Redis(error)),
            Err(_elapsed) => Err(Failure::Deadline),
        };
        match &outcome {
            Ok(_) => self.circuit.succeeded(),
            Err(_) => self.circuit.failed(),
        }
        outcome
    }

    /// A key name: the prefix, then `parts`.
    pub(crate) fn key(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut key = Vec::with_capacity(
            self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>(),
        );
        key.extend_from_slice(self.prefix.as_bytes());
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(b':');
            }
            key.extend_from_slice(part);
        }
        key
    }
}

/// Why a Redis call gave no answer. Its `Display` never holds a key name.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The circuit is open: no call was made.
    CircuitOpen,
    /// The call did not answer within the deadline.
    Deadline,
    /// Redis or the connection answered with an error.
    Redis(RedisError),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CircuitOpen => f.write_str("circuit open"),
            Self::Deadline => f.write_str("deadline exceeded"),
            // The kind and the server's code only: a message could quote arguments.
            Self::Redis(error) => match error.code() {
                Some(code) => write!(f, "redis error {code}"),
                None => write!(f, "redis error ({:?})", error.kind()),
            },
        }
    }
}

impl std::error::Error for Failure {}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls go to Redis.
    Closed,
    /// Redis failed repeatedly: no call is made until the back-off has passed.
    Open,
    /// One probe call is on its way; the others fall back meanwhile.
    HalfOpen,
}

/// The circuit breaker shared by a fleet's stores.
pub(crate) struct Circuit {
    failures_to_open: u32,
    open_for: Duration,
    state: Mutex<CircuitInner>,
}

struct CircuitInner {
    failures: u32,
    phase: Phase,
}

#[derive(Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    Probing { since: Instant },
}

impl Circuit {
    fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Self {
            failures_to_open,
            open_for,
            state: Mutex::new(CircuitInner {
                failures: 0,
                phase: Phase::Closed,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CircuitInner> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn state(&self) -> CircuitState {
        match self.lock().phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::Probing { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether Redis is known to be down now: the circuit is open and its back-off has not
    /// passed (a caller that would be the probe gets `false`).
    pub(crate) fn is_open(&self) -> bool {
        let now = Instant::now();
        match self.lock().phase {
            Phase::Closed => false,
            Phase::Open { until } => now < until,
            Phase::Probing { since } => now < since + self.open_for,
        }
    }

    /// Whether a call may go to Redis now; the caller that turns an expired back-off into a
    /// probe is admitted.
    fn admit(&self) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { until } if now >= until => {
                inner.phase = Phase::Probing { since: now };
                tracing::debug!(target: "wsguard_redis", "circuit half-open: probing redis");
                true
            }
            // A probe whose caller went away (its future dropped) never reports: after a
            // back-off period another caller probes.
            Phase::Probing { since } if now >= since + self.open_for => {
                inner.phase = Phase::Probing { since: now };
                true
            }
            _ => false,
        }
    }

    fn succeeded(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        if !matches!(inner.phase, Phase::Closed) {
            inner.phase = Phase::Closed;
            drop(inner);
            tracing::info!(target: "wsguard_redis", "redis answers again: circuit closed");
            telemetry::circuit("closed");
        }
    }

    fn failed(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        match inner.phase {
            Phase::Closed if inner.failures >= self.failures_to_open => {
                inner.phase = Phase::Open {
                    until: now + self.open_for,
                };
                let failures = inner.failures;
                drop(inner);
                tracing::warn!(
                    target: "wsguard_redis",
                    failures,
                    open_for = ?self.open_for,
                    "redis failing: circuit open, stores answer by their failure policy"
                );
                telemetry::circuit("open");
            }
            Phase::Probing { .. } => {
                inner.phase = Phase::Open {
                    until: now + self.open_for,
                };
                tracing::debug!(target: "wsguard_redis", "probe failed: circuit open again");
            }
            _ => {}
        }
    }
}

/// Logs a store's transitions between Redis and its failure policy, once each.
pub(crate) struct Degraded {
    store: &'static str,
    policy: FailurePolicy,
    on: std::sync::atomic::AtomicBool,
}

impl Degraded {
    pub(crate) const fn new(store: &'static str, policy: FailurePolicy) -> Self {
        Self {
            store,
            policy,
            on: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn policy(&self) -> FailurePolicy {
        self.policy
    }

    /// Redis did not answer: counts the fallback, logs the first.
    pub(crate) fn failed(&self, failure: &Failure) {
        use std::sync::atomic::Ordering;
        telemetry::fallback(self.store, self.policy.as_str());
        if !self.on.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                target: "wsguard_redis",
                store = self.store,
                policy = self.policy.as_str(),
                error = %failure,
                "redis unavailable: answering by the failure policy"
            );
        }
    }

    /// Redis answered: logs the return once.
    pub(crate) fn answered(&self) {
        use std::sync::atomic::Ordering;
        if self.on.load(Ordering::Relaxed) && self.on.swap(false, Ordering::AcqRel) {
            tracing::info!(
                target: "wsguard_redis",
                store = self.store,
                "redis answers again: the store is shared again"
            );
        }
    }
}
