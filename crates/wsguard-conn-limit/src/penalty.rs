//! A penalty for failed attempts: an address whose handshakes keep failing is refused before
//! any signature is checked, for a back-off that grows while the failures go on.
//!
//! A script trying tokens costs a signature check per attempt and is answered 401 each time,
//! at whatever pace it likes. [`FailurePenaltyLayer`] sits outside the layers that refuse
//! (authentication, Origin, the handshake checks) and watches their answers: a refusal with
//! a counted status (by default 400, 401 and 403) is one failure for the request's key (the
//! client IP, IPv6 grouped by /64, unless configured). After [`max_failures`] failures within
//! [`window`] (a fixed window, starting at the first failure after the last one ended), the
//! key is *penalised*: its requests are refused at once with
//! [`Reason::RateExceeded`] (`429` with `Retry-After`, 4429 in close mode, never reaching
//! the layers inside) for a back-off that starts at [`backoff`] and doubles each time the key
//! is penalised again while its failures continue (at most [`max_backoff`]). The penalty
//! ends by itself; a key with no failure and no penalty for a whole window is forgotten
//! (its next penalty starts from the first back-off again).
//!
//! A success does not reset a record: an attacker who also holds a valid token cannot wipe
//! the count of its failures by using it now and then.
//!
//! [`max_failures`]: FailurePenaltyLayer::max_failures
//! [`window`]: FailurePenaltyLayer::max_failures
//! [`backoff`]: FailurePenaltyLayer::backoff
//! [`max_backoff`]: FailurePenaltyLayer::backoff
//!
//! # Memory
//!
//! Records live in one map with a hard cap ([`DEFAULT_MAX_KEYS`] = 100,000 unless set).
//! Each record is a key (40 bytes inline, plus a principal's heap if keyed on one), two
//! instants, two counters and the map's overhead: **159 bytes per IP key**, measured with a
//! counting allocator over 20,000 keys (`tests/penalty_memory.rs`, the map's spare capacity
//! included), so the default cap bounds the records near 16 MB. Records whose
//! window and penalty are over are removed by a sweep that runs at most once a second,
//! when a request arrives; the same sweep ends the penalties that are over (their event and
//! the gauge follow within a second while requests arrive). When a new key arrives at a full map, the map is swept; if
//! it is still full, the eighth of the records that are not penalised with the fewest
//! failures are dropped. Penalised keys are never dropped (at most `max_keys` of them), so
//! a flood of addresses cannot wash a penalised address out.
//!
//! # What is logged and measured
//!
//! Each penalty's start (`warn`, with the mode: `enforce` or `dry_run`) and end (`info`) is
//! one `tracing` event with the key's class (`ip`, `principal`, ...), never the key itself. With the `metrics` feature, the gauge
//! `wsguard_store_keys_over_limit{store="penalties"}` counts the keys under a penalty (the
//! seeds' "currently rate limited IPs", as a number, never the addresses),
//! `wsguard_store_keys{store="penalties"}` the failure records, and refusals count in
//! `wsguard_rejections_total{layer="failure_penalty"}` (see the [crate's
//! metrics](crate#metrics)).
//!
//! # Dry run
//!
//! [`FailurePenaltyLayer::dry_run`]`(true)` refuses no handshake: a request from a key under
//! a penalty (or without a usable key) goes on to the layers inside, and is logged (`INFO`,
//! the reason, the key's class and `mode = "dry_run"`, never the key) and counted in
//! `wsguard_rejections_total{layer="failure_penalty",mode="dry_run"}`. Failures are recorded
//! and penalties started and ended exactly as in enforce mode (the `penalty started` and
//! `penalty ended` events and the gauges follow them), so the operator sees which addresses
//! enforce mode would penalise and for how long. One difference follows from letting the
//! requests through: a penalised key's attempts reach the layers inside and their failures
//! count (enforce mode refuses them before they can fail), towards the key's next penalty,
//! which then starts as soon as the current one ends if its failures went on.
//!
//! # Close mode
//!
//! An inner layer in close mode answers a refused browser handshake with `101` and closes
//! the socket with the code; that `101` carries the [`Rejection`] in its extensions, and it
//! counts by the rejection's HTTP status (401 for a forged token), like a refusal answered
//! over HTTP.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use wsguard_conn_limit::penalty::FailurePenaltyLayer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 20 failures within a minute: refused for 30 s, then 60 s, ... at most 15 minutes.
//! let penalty = FailurePenaltyLayer::per_ip()
//!     .max_failures(20, Duration::from_secs(60))?
//!     .backoff(Duration::from_secs(30), Duration::from_secs(900))?;
//! let stack = ServiceBuilder::new()
//!     .layer(penalty)
//!     // .layer(origin).layer(jwt_auth)
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! # let _ = stack;
//! # Ok(())
//! # }
//! ```

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{ready, Context, Poll},
    time::Duration,
};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;
use wsguard_core::{
    guard::{finish_deferred, record_rejection_as, respond, Mode, PendingRejection},
    is_websocket_upgrade, ClientIpKey, HttpRejection, Key, KeyError, KeyExtractor, OnRejection,
    Reason, Rejection, RequestHead,
};

use crate::telemetry::{self, PENALTIES_STORE};

const LAYER: &str = telemetry::PENALTY;

/// The default cap on tracked keys.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The default number of failures within [`DEFAULT_WINDOW`] that start a penalty: 20.
pub const DEFAULT_MAX_FAILURES: u32 = 20;

/// The default window in which [`DEFAULT_MAX_FAILURES`] failures start a penalty: 1 minute.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The default first back-off: 30 seconds.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);

/// The default longest back-off: 15 minutes.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(900);

/// The statuses counted as failures unless configured: 400, 401, 403.
pub const DEFAULT_COUNTED: [StatusCode; 3] = [
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
];

/// A configuration of [`FailurePenaltyLayer`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PenaltyConfigError {
    /// `max_failures` or a duration was zero, or the cap on keys was zero.
    Zero(&'static str),
    /// The longest back-off is shorter than the first.
    BackoffOrder,
}

impl fmt::Display for PenaltyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zero(what) => write!(f, "{what} must be greater than zero"),
            Self::BackoffOrder => f.write_str("the longest back-off is shorter than the first"),
        }
    }
}

impl std::error::Error for PenaltyConfigError {}

/// Refuses keys whose handshakes keep failing; see the [module docs](self).
///
/// Cheap to clone: clones share the records.
#[must_use]
pub struct FailurePenaltyLayer<P = HttpRejection> {
    config: Arc<Config<P>>,
}

struct Config<P> {
    extractor: Arc<dyn KeyExtractor>,
    max_failures: u32,
    window: Duration,
    backoff: Duration,
    max_backoff: Duration,
    counted: Vec<StatusCode>,
    policy: P,
    close_mode: bool,
    dry_run: bool,
    records: Arc<Records>,
}

impl<P> Config<P> {
    const fn mode(&self) -> Mode {
        Mode::from_dry_run(self.dry_run)
    }
}

impl<P> Clone for FailurePenaltyLayer<P> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for FailurePenaltyLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        f.debug_struct("FailurePenaltyLayer")
            .field("max_failures", &c.max_failures)
            .field("window", &c.window)
            .field("backoff", &c.backoff)
            .field("max_backoff", &c.max_backoff)
            .field("counted", &c.counted)
            .field("policy", &c.policy)
            .field("close_mode", &c.close_mode)
            .field("dry_run", &c.dry_run)
            .field("penalized", &self.penalized())
            .finish_non_exhaustive()
    }
}

impl FailurePenaltyLayer {
    /// Penalties per client IP (IPv6 grouped by /64), with the defaults: 20 failures within a
    /// minute, a back-off of 30 s doubling up to 15 minutes, 400/401/403 counted, at most
    /// 100,000 keys tracked.
    pub fn per_ip() -> Self {
        let key = ClientIpKey::new()
            .ipv6_prefix(64)
            .unwrap_or_else(|_| ClientIpKey::new());
        Self::new(key)
    }

    /// Penalties per key of `extractor`, with the defaults of [`per_ip`](Self::per_ip).
    pub fn new<E: KeyExtractor>(extractor: E) -> Self {
        Self {
            config: Arc::new(Config {
                extractor: Arc::new(extractor),
                max_failures: DEFAULT_MAX_FAILURES,
                window: DEFAULT_WINDOW,
                backoff: DEFAULT_BACKOFF,
                max_backoff: DEFAULT_MAX_BACKOFF,
                counted: DEFAULT_COUNTED.to_vec(),
                policy: HttpRejection,
                close_mode: false,
                dry_run: false,
                records: Arc::new(Records::new(DEFAULT_MAX_KEYS)),
            }),
        }
    }
}

impl<P: Clone> FailurePenaltyLayer<P> {
    fn map<P2>(self, f: impl FnOnce(Config<P>) -> Config<P2>) -> FailurePenaltyLayer<P2> {
        FailurePenaltyLayer {
            config: Arc::new(f(Arc::unwrap_or_clone(self.config))),
        }
    }

    /// Starts a penalty after `failures` failures within `window` (default 20 within a
    /// minute).
    ///
    /// # Errors
    ///
    /// [`PenaltyConfigError::Zero`] for zero failures or a zero window.
    pub fn max_failures(self, failures: u32, window: Duration) -> Result<Self, PenaltyConfigError> {
        if failures == 0 {
            return Err(PenaltyConfigError::Zero("max_failures"));
        }
        if window.is_zero() {
            return Err(PenaltyConfigError::Zero("window"));
        }
        Ok(self.map(|c| Config {
            max_failures: failures,
            window,
            ..c
        }))
    }

    /// The first back-off and the longest (default 30 s and 15 minutes); each penalty of a
    /// key whose failures continued after the last one doubles it.
    ///
    /// # Errors
    ///
    /// [`PenaltyConfigError`] for a zero back-off or a longest one shorter than the first.
    pub fn backoff(self, first: Duration, max: Duration) -> Result<Self, PenaltyConfigError> {
        if first.is_zero() {
            return Err(PenaltyConfigError::Zero("backoff"));
        }
        if max < first {
            return Err(PenaltyConfigError::BackoffOrder);
        }
        Ok(self.map(|c| Config {
            backoff: first,
            max_backoff: max,
            ..c
        }))
    }

    /// The statuses counted as failures (default 400, 401, 403).
    pub fn count_statuses<I: IntoIterator<Item = StatusCode>>(self, statuses: I) -> Self {
        let counted = statuses.into_iter().collect();
        self.map(|c| Config { counted, ..c })
    }

    /// Caps the tracked keys (default [`DEFAULT_MAX_KEYS`]); see the [module docs](self).
    /// This makes a new, empty set of records.
    ///
    /// # Errors
    ///
    /// [`PenaltyConfigError::Zero`] for a cap of zero.
    pub fn max_keys(self, max_keys: usize) -> Result<Self, PenaltyConfigError> {
        if max_keys == 0 {
            return Err(PenaltyConfigError::Zero("max_keys"));
        }
        Ok(self.map(|c| Config {
            records: Arc::new(Records::new(max_keys)),
            ..c
        }))
    }

    /// How refusals are answered (default [`HttpRejection`]; `GrpcRejection` for tonic).
    pub fn on_rejection<P2: Clone>(self, policy: P2) -> FailurePenaltyLayer<P2> {
        self.map(|c| Config {
            extractor: c.extractor,
            max_failures: c.max_failures,
            window: c.window,
            backoff: c.backoff,
            max_backoff: c.max_backoff,
            counted: c.counted,
            policy,
            close_mode: c.close_mode,
            dry_run: c.dry_run,
            records: c.records,
        })
    }

    /// Close mode (default off): a penalised WebSocket handshake is upgraded and closed at
    /// once with 4429, for browsers. Needs a wsguard hand-off in the application.
    pub fn close_mode(self, enabled: bool) -> Self {
        self.map(|c| Config {
            close_mode: enabled,
            ..c
        })
    }

    /// Dry-run mode (default `false`): a request the layer would refuse (its key under a
    /// penalty, or no usable key) goes on to the layers inside, and is logged (`INFO`, with
    /// the reason, the key's class and `mode = "dry_run"`, never the key) and counted in
    /// `wsguard_rejections_total{layer="failure_penalty",mode="dry_run"}`.
    ///
    /// Failures are still recorded and penalties still start and end (their events and the
    /// gauges with them), so the records show what enforce mode would do; the attempts of a
    /// penalised key, let through, count as failures too when they fail. See
    /// [Dry run](self#dry-run). [`close_mode`](Self::close_mode) plays no part: nothing is
    /// refused.
    pub fn dry_run(self, enabled: bool) -> Self {
        self.map(|c| Config {
            dry_run: enabled,
            ..c
        })
    }
}

impl<P> FailurePenaltyLayer<P> {
    /// How many keys are under a penalty now (a penalty that ended is counted until the
    /// next request, at most a second later while requests arrive).
    pub fn penalized(&self) -> usize {
        self.config.records.penalized()
    }

    /// How many keys are tracked.
    pub fn tracked(&self) -> usize {
        self.config.records.len()
    }
}

impl<P: Clone> Clone for Config<P> {
    fn clone(&self) -> Self {
        Self {
            extractor: Arc::clone(&self.extractor),
            max_failures: self.max_failures,
            window: self.window,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
            counted: self.counted.clone(),
            policy: self.policy.clone(),
            close_mode: self.close_mode,
            dry_run: self.dry_run,
            records: Arc::clone(&self.records),
        }
    }
}

/// One key's failures and penalty.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// The start of the current counting window (fixed, from its first failure).
    window_start: Instant,
    /// The last failure, or the end of the last penalty: the record is forgotten a window
    /// after it.
    active_until: Instant,
    failures: u32,
    /// The end of the current penalty, if one runs (or ran and was not noticed yet).
    penalized_until: Option<Instant>,
    /// The next penalty's length.
    next_backoff: Duration,
}

/// The records, bounded.
struct Records {
    map: Mutex<RecordMap>,
    max_keys: usize,
}

struct RecordMap {
    map: HashMap<Key, Record>,
    penalized: usize,
    last_sweep: Option<Instant>,
}

impl Drop for RecordMap {
    /// The records leave the gauges with the layer.
    fn drop(&mut self) {
        keys_changed(self.map.len(), 0);
        PENALTIES_STORE.over_limit(-(self.penalized as i64));
    }
}

impl Records {
    fn new(max_keys: usize) -> Self {
        Self {
            map: Mutex::new(RecordMap {
                map: HashMap::new(),
                penalized: 0,
                last_sweep: None,
            }),
            max_keys,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordMap> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn penalized(&self) -> usize {
        self.lock().penalized
    }

    /// How long `key` is still penalised, ending a penalty that is over (and, at most once a
    /// second, every penalty that is over, so that the gauge and the end events follow the
    /// clock while requests arrive).
    fn penalty_left<P>(&self, key: &Key, now: Instant, config: &Config<P>) -> Option<Duration> {
        let mut map = self.lock();
        let before = map.map.len();
        sweep_if_due(&mut map, now, config.window);
        keys_changed(before, map.map.len());
        let record = map.map.get_mut(key)?;
        let until = record.penalized_until?;
        if now < until {
            return Some(until - now);
        }
        record.penalized_until = None;
        map.penalized -= 1;
        penalty_ended(key);
        None
    }

    /// Records a failure of `key`; starts a penalty when the window holds too many.
    fn failure<P>(&self, key: &Key, now: Instant, config: &Config<P>) {
        let mut guard = self.lock();
        let before = guard.map.len();
        self.failure_locked(&mut guard, key, now, config);
        keys_changed(before, guard.map.len());
    }

    fn failure_locked<P>(&self, map: &mut RecordMap, key: &Key, now: Instant, config: &Config<P>) {
        sweep_if_due(map, now, config.window);
        if !map.map.contains_key(key) && map.map.len() >= self.max_keys {
            sweep(map, now, config.window);
            if map.map.len() >= self.max_keys {
                evict(map, self.max_keys / 8 + 1);
            }
            if map.map.len() >= self.max_keys {
                // Every record is a running penalty: this key waits for room.
                tracing::warn!("failure records full of penalised keys; a failure is not recorded");
                return;
            }
        }
        let record = map.map.entry(key.clone()).or_insert(Record {
            window_start: now,
            active_until: now,
            failures: 0,
            penalized_until: None,
            next_backoff: config.backoff,
        });
        if now.duration_since(record.window_start) >= config.window {
            record.window_start = now;
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.active_until = record.active_until.max(now);
        if record.failures < config.max_failures || record.penalized_until.is_some() {
            return;
        }
        let backoff = record.next_backoff;
        record.penalized_until = Some(now + backoff);
        record.active_until = now + backoff;
        record.next_backoff = (backoff * 2).min(config.max_backoff);
        // The failures that caused it are spent; new ones within the penalty's window
        // count towards the next, longer one.
        record.failures = 0;
        record.window_start = now;
        map.penalized += 1;
        tracing::warn!(
            key = key.class(),
            backoff_seconds = backoff.as_secs_f64(),
            mode = config.mode().as_str(),
            "penalty started: too many failed handshakes"
        );
        PENALTIES_STORE.over_limit(1);
    }
}

/// Moves the gauge of tracked records by the change from `before` to `after`.
fn keys_changed(before: usize, after: usize) {
    if before != after {
        PENALTIES_STORE.keys(after as i64 - before as i64);
    }
}

/// Sweeps at most once a second.
fn sweep_if_due(map: &mut RecordMap, now: Instant, window: Duration) {
    if map
        .last_sweep
        .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
    {
        map.last_sweep = Some(now);
        sweep(map, now, window);
    }
}

/// Ends penalties that are over, and removes the records quiet for a window (no failure and
/// no penalty for a window: the next penalty of that key starts from the first back-off).
fn sweep(map: &mut RecordMap, now: Instant, window: Duration) {
    let mut ended = 0;
    map.map.retain(|key, record| {
        if let Some(until) = record.penalized_until {
            if now < until {
                return true;
            }
            record.penalized_until = None;
            ended += 1;
            penalty_ended(key);
        }
        now.saturating_duration_since(record.active_until) < window
    });
    map.penalized -= ended;
}

/// Drops about `n` records that are not penalised, those with the fewest failures first.
fn evict(map: &mut RecordMap, n: usize) {
    let mut candidates: Vec<(u32, Key)> = map
        .map
        .iter()
        .filter(|(_, r)| r.penalized_until.is_none())
        .map(|(k, r)| (r.failures, k.clone()))
        .collect();
    candidates.sort_unstable_by_key(|(failures, _)| *failures);
    for (_, key) in candidates.into_iter().take(n) {
        map.map.remove(&key);
    }
}

fn penalty_ended(key: &Key) {
    tracing::info!(key = key.class(), "penalty ended");
    PENALTIES_STORE.over_limit(-1);
}

impl<S, P> Layer<S> for FailurePenaltyLayer<P> {
    type Service = FailurePenalty<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        FailurePenalty {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service of [`FailurePenaltyLayer`]; see the [module docs](self).
pub struct FailurePenalty<S, P = HttpRejection> {
    inner: S,
    config: Arc<Config<P>>,
}

impl<S, P> FailurePenalty<S, P> {
    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, P> Clone for FailurePenalty<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for FailurePenalty<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailurePenalty")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for FailurePenalty<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let key = match config.extractor.extract(&RequestHead::from_request(&req)) {
            Ok(key) => key,
            Err(error) => {
                let reason = match error {
                    KeyError::Invalid(_) => Reason::BadRequest,
                    _ => {
                        tracing::error!(
                            "failure penalty without the key it counts on; is the client-ip layer \
                             in front of it?"
                        );
                        Reason::Internal
                    }
                };
                record_rejection_as(LAYER, reason, config.mode());
                if config.dry_run {
                    tracing::info!(
                        reason = reason.as_str(),
                        mode = Mode::DryRun.as_str(),
                        "dry run: handshake let through that would be refused: no usable key \
                         for the failure penalty"
                    );
                    return ResponseFuture {
                        state: State::Calling {
                            future: self.inner.call(req),
                            key: None,
                            pending: None,
                        },
                        config: Arc::clone(config),
                    };
                }
                return ResponseFuture::rejected(Rejection::new(reason), config);
            }
        };
        if let Some(left) = config.records.penalty_left(&key, Instant::now(), config) {
            record_rejection_as(LAYER, Reason::RateExceeded, config.mode());
            if config.dry_run {
                tracing::info!(
                    reason = Reason::RateExceeded.as_str(),
                    key = key.class(),
                    mode = Mode::DryRun.as_str(),
                    retry_after_seconds = left.as_secs_f64(),
                    "dry run: handshake let through that would be refused: its key is \
                     penalised for failed attempts"
                );
                // Its failure still counts, so the records show what enforce mode would do.
                return ResponseFuture {
                    state: State::Calling {
                        future: self.inner.call(req),
                        key: Some(key),
                        pending: None,
                    },
                    config: Arc::clone(config),
                };
            }
            tracing::debug!(
                reason = Reason::RateExceeded.as_str(),
                key = key.class(),
                "handshake refused: its key is penalised for failed attempts"
            );
            let rejection = Rejection::new(Reason::RateExceeded).with_retry_after(left);
            if config.close_mode && is_websocket_upgrade(&req) {
                if let Some(pending) = PendingRejection::defer(req.extensions_mut(), rejection) {
                    return ResponseFuture {
                        state: State::Calling {
                            future: self.inner.call(req),
                            key: None,
                            pending: Some(pending),
                        },
                        config: Arc::clone(config),
                    };
                }
            }
            return ResponseFuture::rejected(rejection, config);
        }
        ResponseFuture {
            state: State::Calling {
                future: self.inner.call(req),
                key: Some(key),
                pending: None,
            },
            config: Arc::clone(config),
        }
    }
}

pin_project! {
    /// The response future of [`FailurePenalty`].
    ///
    /// Polled again after it completed, it panics, as tower-http's futures do (see the
    /// contributor notes in the [crate docs](crate)).
    pub struct ResponseFuture<F, P> {
        #[pin]
        state: State<F>,
        config: Arc<Config<P>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling {
            #[pin]
            future: F,
            key: Option<Key>,
            pending: Option<PendingRejection>,
        },
        Rejected {
            rejection: Option<Rejection>,
        },
    }
}

impl<F, P> ResponseFuture<F, P> {
    fn rejected(rejection: Rejection, config: &Arc<Config<P>>) -> Self {
        Self {
            state: State::Rejected {
                rejection: Some(rejection),
            },
            config: Arc::clone(config),
        }
    }
}

impl<F, P> fmt::Debug for ResponseFuture<F, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, P, ResBody, E> Future for ResponseFuture<F, P>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    P: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Calling {
                future,
                key,
                pending,
            } => {
                let res = ready!(future.poll(cx))?;
                if let Some(pending) = pending {
                    return Poll::Ready(Ok(finish_deferred(res, pending, &this.config.policy)));
                }
                if let Some(key) = key.take() {
                    // A refusal answered over HTTP has its status; one answered in close mode
                    // is a `101` that carries the rejection (and its HTTP status).
                    let status = res
                        .extensions()
                        .get::<Rejection>()
                        .map_or(res.status(), |rejection| rejection.reason().status());
                    if this.config.counted.contains(&status) {
                        this.config
                            .records
                            .failure(&key, Instant::now(), this.config);
                    }
                }
                Poll::Ready(Ok(res))
            }
            StateProj::Rejected { rejection } => {
                let rejection = rejection
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Ok(respond(&this.config.policy, rejection)))
            }
        }
    }
}
