//! The configuration a layer and its services share, the budgets of one connection, the
//! check of each message against them, and the log and count of each refusal.
//!
//! Below the layer, the service and the future: this module imports none of them.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use governor::{
    clock::Clock, middleware::NoOpMiddleware, nanos::Nanos, state::InMemoryState, state::NotKeyed,
    Quota, RateLimiter,
};
use wsguard_core::{
    guard::{foreign_connection, record_rejection, record_rejection_as, ConnectionBinding, Mode},
    ConnectionInfo, ErrorFrame, Inbound, KeyError, KeyExtractor, Reason, Rejection, Verdict,
    WsMessage,
};

use crate::{
    clock::{read_once, PlaneClock},
    rate::Quotas,
    store::{Cost, Decision, KeyStore},
    telemetry::LAYER,
};

/// What to do with a message over budget.
///
/// Whatever the action, sustained excess closes the socket with 4429 (by default after
/// [`DEFAULT_CLOSE_AFTER`] refusals within [`DEFAULT_CLOSE_WINDOW`]; see
/// [`MessageRateLimitLayer::close_after`](crate::MessageRateLimitLayer::close_after) and
/// [`MessageRateLimitLayer::never_close`](crate::MessageRateLimitLayer::never_close)).
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnExcess {
    /// Drop the message and answer with an error frame (the default), made by the layer's
    /// [`ErrorFrame`] policy: `{"type":"error","code":"rate_limited"}` unless configured.
    /// The socket sends at most a few such frames per second (the message plane coalesces
    /// refusal frames), never one per refused message.
    #[default]
    Reply,
    /// Keep the message until the budget has room for it. Meanwhile the socket is not read,
    /// so TCP flow control slows the client down; nothing is dropped.
    Backpressure,
}

/// How many messages over budget a connection may send within [`DEFAULT_CLOSE_WINDOW`]
/// before it is closed with 4429, unless configured: 10.
pub const DEFAULT_CLOSE_AFTER: u32 = 10;

/// The window of [`DEFAULT_CLOSE_AFTER`]: 10 seconds (so the tolerance refills at one
/// refusal per second).
pub const DEFAULT_CLOSE_WINDOW: Duration = Duration::from_secs(10);

pub(crate) struct Config<K, F> {
    pub(crate) connection: Option<Quotas>,
    pub(crate) keyed: Option<Keyed<K>>,
    pub(crate) excess: OnExcess,
    pub(crate) abuse: Abuse,
    /// Dry-run mode: refusals are logged and counted, and every message goes through.
    pub(crate) dry_run: bool,
    pub(crate) frame: F,
}

pub(crate) struct Keyed<K> {
    pub(crate) extractor: Arc<dyn KeyExtractor>,
    pub(crate) store: K,
}

/// When excess becomes abuse.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Abuse {
    Tolerated,
    /// Close at the first message over budget.
    Immediately,
    /// Close when the refusals outrun this quota.
    After(Quota),
}

impl<K: Clone> Clone for Keyed<K> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            store: self.store.clone(),
        }
    }
}

impl<K: Clone, F: Clone> Clone for Config<K, F> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection,
            keyed: self.keyed.clone(),
            excess: self.excess,
            abuse: self.abuse,
            dry_run: self.dry_run,
            frame: self.frame.clone(),
        }
    }
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, PlaneClock, NoOpMiddleware<Nanos>>;

/// The budgets of one connection, and its key once known.
pub(crate) struct ConnState<K: KeyStore> {
    messages: Option<DirectLimiter>,
    bytes: Option<DirectLimiter>,
    refusals: Option<DirectLimiter>,
    /// The key, prepared by the store, and its class (for logs).
    key: OnceLock<Result<(K::Prepared, &'static str), KeyError>>,
    /// The connection these budgets (and the key) belong to.
    binding: ConnectionBinding,
}

impl<K: KeyStore> ConnState<K> {
    pub(crate) fn new<F>(config: &Config<K, F>) -> Self {
        let direct = |quota| RateLimiter::direct_with_clock(quota, PlaneClock);
        Self {
            messages: config.connection.and_then(|q| q.messages).map(direct),
            bytes: config.connection.and_then(|q| q.bytes).map(direct),
            refusals: match config.abuse {
                Abuse::After(quota) => Some(direct(quota)),
                Abuse::Tolerated | Abuse::Immediately => None,
            },
            key: OnceLock::new(),
            binding: ConnectionBinding::new(),
        }
    }
}

/// The next step of a message's check.
pub(crate) enum Next<SF, M> {
    /// Every budget had room: call the inner service.
    Pass,
    /// Answer without the inner service.
    Verdict(Verdict<M>),
    /// Backpressure: check again after this long.
    Wait(Duration),
    /// Ask the key store.
    Store(SF),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Messages,
    Bytes,
    Key,
    Done,
}

/// How far the check of one message got.
pub(crate) struct Progress {
    cost: Cost,
    stage: Stage,
    /// Whether this message was already counted as over budget.
    counted: bool,
}

impl Progress {
    /// Starts the check of `req`, a message of `conn`'s connection (refused with 1011 if
    /// it comes from another): how far it got, and what comes next.
    pub(crate) fn start<M, K, F>(
        config: &Config<K, F>,
        conn: &ConnState<K>,
        req: &Inbound<M>,
    ) -> (Self, Next<K::Future, M>)
    where
        M: WsMessage,
        K: KeyStore,
        F: ErrorFrame,
    {
        let mut progress = Self {
            cost: Cost::message(req.message().payload_len()),
            stage: Stage::Messages,
            counted: false,
        };
        if !conn.binding.check(req.connection()) {
            return (progress, Next::Verdict(foreign_connection(LAYER)));
        }
        let next = progress.advance(config, conn, req.connection());
        (progress, next)
    }

    /// Runs the checks from where they stopped: the connection's message budget, its byte
    /// budget, then the key's budgets (in the store).
    pub(crate) fn advance<M, K, F>(
        &mut self,
        config: &Config<K, F>,
        conn: &ConnState<K>,
        info: &ConnectionInfo,
    ) -> Next<K::Future, M>
    where
        M: WsMessage,
        K: KeyStore,
        F: ErrorFrame,
    {
        // One clock reading for every budget the message is checked against.
        read_once(|| self.advance_now(config, conn, info))
    }

    fn advance_now<M, K, F>(
        &mut self,
        config: &Config<K, F>,
        conn: &ConnState<K>,
        info: &ConnectionInfo,
    ) -> Next<K::Future, M>
    where
        M: WsMessage,
        K: KeyStore,
        F: ErrorFrame,
    {
        loop {
            match self.stage {
                Stage::Messages => {
                    if let Some(limiter) = &conn.messages {
                        if let Err(not_until) = limiter.check() {
                            if config.dry_run {
                                self.would_refuse(Reason::RateExceeded, "connection");
                            } else {
                                let wait = not_until.wait_time_from(PlaneClock.now());
                                return self.excess(config, conn, info, "connection", wait);
                            }
                        }
                    }
                    self.stage = Stage::Bytes;
                }
                Stage::Bytes => {
                    if let Some(limiter) = &conn.bytes {
                        match self.cost.byte_cells() {
                            Ok(None) => {}
                            Ok(Some(cells)) => match limiter.check_n(cells) {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) if config.dry_run => {
                                    self.would_refuse(Reason::RateExceeded, "connection");
                                }
                                Ok(Err(not_until)) => {
                                    let wait = not_until.wait_time_from(PlaneClock.now());
                                    return self.excess(config, conn, info, "connection", wait);
                                }
                                Err(_) if config.dry_run => {
                                    self.would_refuse(Reason::MessageTooLarge, "connection");
                                }
                                Err(_) => return too_large(info, "connection"),
                            },
                            Err(()) if config.dry_run => {
                                self.would_refuse(Reason::MessageTooLarge, "connection");
                            }
                            Err(()) => return too_large(info, "connection"),
                        }
                    }
                    self.stage = Stage::Key;
                }
                Stage::Key => {
                    let Some(keyed) = &config.keyed else {
                        self.stage = Stage::Done;
                        continue;
                    };
                    let key = conn.key.get_or_init(|| {
                        let key = keyed.extractor.extract(&info.head())?;
                        let class = key.class();
                        Ok((keyed.store.prepare(key), class))
                    });
                    let key = match key {
                        Ok((key, _)) => key,
                        Err(err) if config.dry_run => {
                            self.would_refuse(key_reason(*err), "key");
                            self.stage = Stage::Done;
                            continue;
                        }
                        Err(err) => return key_error(*err),
                    };
                    return match keyed.store.check_now(key, self.cost) {
                        Some(decision) => self.decided(decision, config, conn, info),
                        None => Next::Store(keyed.store.check(key, self.cost)),
                    };
                }
                Stage::Done => return Next::Pass,
            }
        }
    }

    pub(crate) fn decided<M, K, F>(
        &mut self,
        decision: Decision,
        config: &Config<K, F>,
        conn: &ConnState<K>,
        info: &ConnectionInfo,
    ) -> Next<K::Future, M>
    where
        M: WsMessage,
        K: KeyStore,
        F: ErrorFrame,
    {
        let class = match conn.key.get() {
            Some(Ok((_, class))) => class,
            _ => "key",
        };
        if config.dry_run {
            match decision {
                Decision::Allow => {}
                Decision::Deny { .. } => self.would_refuse(Reason::RateExceeded, class),
                Decision::TooLarge => self.would_refuse(Reason::MessageTooLarge, class),
                _ => self.would_refuse(Reason::AtCapacity, class),
            }
            self.stage = Stage::Done;
            return Next::Pass;
        }
        match decision {
            Decision::Allow => {
                self.stage = Stage::Done;
                Next::Pass
            }
            Decision::Deny { retry_after } => self.excess(config, conn, info, class, retry_after),
            Decision::TooLarge => too_large(info, class),
            Decision::Unavailable => unavailable(info, class),
        }
    }

    /// Dry run: logs and counts (once per message) what enforce mode would do for `reason`
    /// in `scope`, and lets the message go on.
    fn would_refuse(&mut self, reason: Reason, scope: &'static str) {
        if self.counted {
            return;
        }
        self.counted = true;
        record_rejection_as(LAYER, reason, Mode::DryRun);
        tracing::info!(
            target: "wsguard_msg_rate",
            reason = reason.as_str(),
            scope,
            mode = Mode::DryRun.as_str(),
            "dry run: message let through that would be refused"
        );
    }

    /// A message over budget in `scope`: refuse it or wait, and close on sustained abuse.
    fn excess<M, K, F>(
        &mut self,
        config: &Config<K, F>,
        conn: &ConnState<K>,
        info: &ConnectionInfo,
        scope: &'static str,
        retry_after: Duration,
    ) -> Next<K::Future, M>
    where
        M: WsMessage,
        K: KeyStore,
        F: ErrorFrame,
    {
        if !self.counted {
            self.counted = true;
            record_rejection(LAYER, Reason::RateExceeded);
            let abusive = match (&config.abuse, &conn.refusals) {
                (Abuse::Immediately, _) => true,
                (Abuse::After(_), Some(refusals)) => refusals.check().is_err(),
                _ => false,
            };
            if abusive {
                tracing::warn!(
                    reason = Reason::RateExceeded.as_str(),
                    scope,
                    peer = info.client_ip().map(tracing::field::display),
                    "sustained excess over the message budget, closing the socket"
                );
                return Next::Verdict(Verdict::Close(Rejection::new(Reason::RateExceeded)));
            }
        }
        match config.excess {
            OnExcess::Reply => {
                tracing::debug!(
                    reason = Reason::RateExceeded.as_str(),
                    scope,
                    peer = info.client_ip().map(tracing::field::display),
                    "message over budget refused"
                );
                let rejection = Rejection::new(Reason::RateExceeded).with_retry_after(retry_after);
                Next::Verdict(match config.frame.error_frame(&rejection) {
                    Some(frame) => Verdict::Reply(M::text(frame)),
                    None => Verdict::Drop,
                })
            }
            OnExcess::Backpressure => {
                tracing::trace!(scope, ?retry_after, "message over budget waits");
                // tokio's timers count whole milliseconds; never spin on a zero wait.
                Next::Wait(retry_after.max(Duration::from_millis(1)))
            }
        }
    }
}

fn too_large<SF, M>(info: &ConnectionInfo, scope: &'static str) -> Next<SF, M> {
    tracing::debug!(
        reason = Reason::MessageTooLarge.as_str(),
        scope,
        peer = info.client_ip().map(tracing::field::display),
        "message larger than the byte burst, closing the socket"
    );
    record_rejection(LAYER, Reason::MessageTooLarge);
    Next::Verdict(Verdict::Close(Rejection::new(Reason::MessageTooLarge)))
}

fn unavailable<SF, M>(info: &ConnectionInfo, scope: &'static str) -> Next<SF, M> {
    // Logged once per transition by the store itself; here at debug level only.
    tracing::debug!(
        reason = Reason::AtCapacity.as_str(),
        scope,
        peer = info.client_ip().map(tracing::field::display),
        "the key store is unavailable and fails closed, closing the socket (1013)"
    );
    record_rejection(LAYER, Reason::AtCapacity);
    Next::Verdict(Verdict::Close(Rejection::new(Reason::AtCapacity)))
}

fn key_reason(err: KeyError) -> Reason {
    match err {
        KeyError::Missing(_) => Reason::Internal,
        _ => Reason::BadRequest,
    }
}

fn key_error<SF, M>(err: KeyError) -> Next<SF, M> {
    let reason = match err {
        KeyError::Missing(_) => {
            tracing::error!(error = %err, "per-key message budget without the identity it keys on");
            Reason::Internal
        }
        _ => {
            tracing::debug!(error = %err, "no usable key for the per-key message budget");
            Reason::BadRequest
        }
    };
    record_rejection(LAYER, reason);
    Next::Verdict(Verdict::Close(Rejection::new(reason)))
}
