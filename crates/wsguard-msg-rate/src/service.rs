//! The per-connection service and the budget checks.

use std::{
    fmt, mem,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use governor::{
    clock::Clock, middleware::NoOpMiddleware, nanos::Nanos, state::InMemoryState, state::NotKeyed,
    RateLimiter,
};
use tower_service::Service;
use wsguard_core::{
    plane::{foreign_connection, ConnectionBinding, ConnectionInfo, ErrorFrame, Inbound, Verdict},
    telemetry, KeyError, Reason, Rejection, WsMessage,
};

use crate::{
    clock::{read_once, PlaneClock},
    future::ResponseFuture,
    layer::{Abuse, Config, OnExcess},
    store::{Cost, Decision, InMemoryStore, KeyStore},
};

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, PlaneClock, NoOpMiddleware<Nanos>>;

const LAYER: &str = "msg_rate";

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

/// The message-plane service of [`MessageRateLimitLayer`](crate::MessageRateLimitLayer),
/// for one connection.
///
/// Clones share the connection's budget, and serve that connection only: a message from
/// another connection (a plane built once and shared by several sockets) is refused with
/// 1011 and an `error` event, never charged to this one's budget (see
/// [`ConnectionBinding`]). See the [crate docs](crate) for an example.
pub struct MessageRateLimit<S, K: KeyStore = InMemoryStore, F = wsguard_core::plane::JsonErrorFrame>
{
    inner: S,
    config: Arc<Config<K, F>>,
    conn: Arc<ConnState<K>>,
}

impl<S, K: KeyStore, F> MessageRateLimit<S, K, F> {
    pub(crate) fn new(inner: S, config: Arc<Config<K, F>>, conn: Arc<ConnState<K>>) -> Self {
        Self {
            inner,
            config,
            conn,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, dropping this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K: KeyStore, F> Clone for MessageRateLimit<S, K, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            conn: self.conn.clone(),
        }
    }
}

impl<S: fmt::Debug, K: KeyStore, F> fmt::Debug for MessageRateLimit<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, M, K, F> Service<Inbound<M>> for MessageRateLimit<S, K, F>
where
    S: Service<Inbound<M>, Response = Verdict<M>> + Clone,
    M: WsMessage,
    K: KeyStore,
    F: ErrorFrame,
{
    type Response = Verdict<M>;
    type Error = S::Error;
    type Future = ResponseFuture<S, M, K, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Inbound<M>) -> Self::Future {
        if !self.conn.binding.check(req.connection()) {
            return ResponseFuture::done(foreign_connection(LAYER));
        }
        let mut progress = Progress::new(Cost::message(req.message().payload_len()));
        match progress.advance(&self.config, &self.conn, req.connection()) {
            Next::Pass => ResponseFuture::inner(self.inner.call(req)),
            Next::Verdict(verdict) => ResponseFuture::done(verdict),
            next => {
                // The decision needs time: the future takes the ready service, a clone
                // stays here.
                let clone = self.inner.clone();
                let inner = mem::replace(&mut self.inner, clone);
                ResponseFuture::pending(
                    next,
                    Pending {
                        inner,
                        req,
                        config: self.config.clone(),
                        conn: self.conn.clone(),
                        progress,
                    },
                )
            }
        }
    }
}

/// What the check of a message needs after `call` returned.
pub(crate) struct Pending<S, M, K: KeyStore, F> {
    pub(crate) inner: S,
    pub(crate) req: Inbound<M>,
    pub(crate) config: Arc<Config<K, F>>,
    pub(crate) conn: Arc<ConnState<K>>,
    pub(crate) progress: Progress,
}

impl<S, M, K, F> Pending<S, M, K, F>
where
    M: WsMessage,
    K: KeyStore,
    F: ErrorFrame,
{
    pub(crate) fn advance(&mut self) -> Next<K::Future, M> {
        self.progress
            .advance(&self.config, &self.conn, self.req.connection())
    }

    pub(crate) fn decided(&mut self, decision: Decision) -> Next<K::Future, M> {
        self.progress
            .decided(decision, &self.config, &self.conn, self.req.connection())
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
    fn new(cost: Cost) -> Self {
        Self {
            cost,
            stage: Stage::Messages,
            counted: false,
        }
    }

    /// Runs the checks from where they stopped: the connection's message budget, its byte
    /// budget, then the key's budgets (in the store).
    fn advance<M, K, F>(
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
                            let wait = not_until.wait_time_from(PlaneClock.now());
                            return self.excess(config, conn, info, "connection", wait);
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
                                Ok(Err(not_until)) => {
                                    let wait = not_until.wait_time_from(PlaneClock.now());
                                    return self.excess(config, conn, info, "connection", wait);
                                }
                                Err(_) => return too_large(info, "connection"),
                            },
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

    fn decided<M, K, F>(
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
        match decision {
            Decision::Allow => {
                self.stage = Stage::Done;
                Next::Pass
            }
            Decision::Deny { retry_after } => self.excess(config, conn, info, class, retry_after),
            Decision::TooLarge => too_large(info, class),
        }
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
            telemetry::record_rejection(LAYER, Reason::RateExceeded);
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
    telemetry::record_rejection(LAYER, Reason::MessageTooLarge);
    Next::Verdict(Verdict::Close(Rejection::new(Reason::MessageTooLarge)))
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
    telemetry::record_rejection(LAYER, reason);
    Next::Verdict(Verdict::Close(Rejection::new(reason)))
}
