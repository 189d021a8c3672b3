//! [`ResponseFuture`] and what a connection holds while it lives.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{ready, Context, Poll},
};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;
use wsguard_core::{
    is_websocket_upgrade, reject::respond, scope::finish_deferred, ConnectionScope, OnRejection,
    PendingRejection, Reason, Rejection, ScopedBody,
};

use crate::{
    layer::{Config, ConnLimitLayer},
    store::{ConnectionStore, Refusal, Slot},
    telemetry,
};

pin_project! {
    /// The response future of [`ConnLimit`](crate::ConnLimit).
    pub struct ResponseFuture<S, St, P, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        St: ConnectionStore,
    {
        #[pin]
        state: State<S, St, ReqBody>,
        layer: ConnLimitLayer<St, P>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, St, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        St: ConnectionStore,
    {
        Acquiring {
            #[pin]
            acquire: St::Future,
            inner: Option<S>,
            req: Option<Request<ReqBody>>,
            slots: Vec<Slot>,
            counted: u64,
        },
        Calling {
            #[pin]
            future: S::Future,
            scope: Option<ConnectionScope>,
        },
        Deferred {
            #[pin]
            future: S::Future,
            pending: PendingRejection,
        },
        Rejected {
            rejection: Rejection,
        },
    }
}

impl<S, St, P, ReqBody> ResponseFuture<S, St, P, ReqBody>
where
    S: Service<Request<ReqBody>>,
    St: ConnectionStore,
{
    pub(crate) fn acquiring(
        acquire: St::Future,
        inner: S,
        req: Request<ReqBody>,
        slots: Vec<Slot>,
        counted: u64,
        layer: ConnLimitLayer<St, P>,
    ) -> Self {
        Self {
            state: State::Acquiring {
                acquire,
                inner: Some(inner),
                req: Some(req),
                slots,
                counted,
            },
            layer,
        }
    }

    /// The store decided at once: no acquiring step, and `inner` (ready) is called now.
    pub(crate) fn decided(
        acquired: Result<St::Lease, Refusal>,
        inner: &mut S,
        req: Request<ReqBody>,
        slots: &[Slot],
        counted: u64,
        layer: ConnLimitLayer<St, P>,
    ) -> Self
    where
        P: Send + Sync + 'static,
    {
        Self {
            state: start(acquired, inner, req, slots, counted, &layer.config),
            layer,
        }
    }

    pub(crate) const fn rejected(rejection: Rejection, layer: ConnLimitLayer<St, P>) -> Self {
        Self {
            state: State::Rejected { rejection },
            layer,
        }
    }
}

impl<S, St, P, ReqBody> fmt::Debug for ResponseFuture<S, St, P, ReqBody>
where
    S: Service<Request<ReqBody>>,
    St: ConnectionStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "acquiring",
            State::Calling { .. } => "calling",
            State::Deferred { .. } => "deferred",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, St, P, ReqBody, ResBody> Future for ResponseFuture<S, St, P, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: ConnectionStore,
    P: OnRejection<ResBody>,
{
    type Output = Result<Response<ScopedBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let config = &this.layer.config;
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring {
                    acquire,
                    inner,
                    req,
                    slots,
                    counted,
                } => {
                    let acquired = ready!(acquire.poll(cx));
                    let (Some(mut inner), Some(req)) = (inner.take(), req.take()) else {
                        // Only reachable if polled after a panic inside `poll`.
                        return Poll::Ready(Ok(reject(config, Rejection::new(Reason::Internal))));
                    };
                    let next = start(acquired, &mut inner, req, slots, *counted, config);
                    this.state.set(next);
                }
                StateProj::Calling { future, scope } => {
                    let res = ready!(future.poll(cx))?;
                    let scope = scope.take();
                    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                        let claimed = scope.as_ref().is_none_or(ConnectionScope::is_claimed);
                        if !claimed {
                            // The socket would outlive its slots: refuse it rather than let
                            // the limit leak.
                            tracing::error!(
                                "a WebSocket upgrade did not go through a wsguard hand-off \
                                 (wsguard_core::axum::GuardedUpgrade or \
                                 wsguard_core::tungstenite::GuardedUpgrade): the connection \
                                 limit could not follow the socket, so the upgrade is refused"
                            );
                            telemetry::unclaimed_upgrade();
                            return Poll::Ready(Ok(reject(
                                config,
                                Rejection::new(Reason::Internal),
                            )));
                        }
                        // The hand-off holds the scope for the socket's life.
                        return Poll::Ready(Ok(ScopedBody::wrap(res, None)));
                    }
                    return Poll::Ready(Ok(ScopedBody::wrap(res, scope)));
                }
                StateProj::Deferred { future, pending } => {
                    let res = ready!(future.poll(cx))?;
                    let res = finish_deferred(res, pending, &config.policy);
                    return Poll::Ready(Ok(ScopedBody::wrap(res, None)));
                }
                StateProj::Rejected { rejection } => {
                    return Poll::Ready(Ok(reject(config, *rejection)));
                }
            }
        }
    }
}

/// What follows the store's answer: the inner service called with the lease in the
/// connection scope; or the refusal, answered, or deferred to the hand-off in close mode.
fn start<S, St, P, ReqBody>(
    acquired: Result<St::Lease, Refusal>,
    inner: &mut S,
    mut req: Request<ReqBody>,
    slots: &[Slot],
    counted: u64,
    config: &Arc<Config<St, P>>,
) -> State<S, St, ReqBody>
where
    S: Service<Request<ReqBody>>,
    St: ConnectionStore,
    P: Send + Sync + 'static,
{
    match acquired {
        Ok(lease) => {
            let held = Held::new(lease, Arc::clone(config), counted);
            let scope = ConnectionScope::of(&mut req);
            scope.hold(held);
            State::Calling {
                future: inner.call(req),
                scope: Some(scope),
            }
        }
        Err(refusal) => {
            let rejection = refused(config, refusal, slots);
            let pending = if config.close_mode && is_websocket_upgrade(&req) {
                PendingRejection::defer(req.extensions_mut(), rejection)
            } else {
                None
            };
            match pending {
                Some(pending) => State::Deferred {
                    future: inner.call(req),
                    pending,
                },
                None => State::Rejected { rejection },
            }
        }
    }
}

fn reject<St, P, B>(config: &Config<St, P>, rejection: Rejection) -> Response<ScopedBody<B>>
where
    P: OnRejection<B>,
{
    ScopedBody::wrap(respond(&config.policy, rejection), None)
}

/// The rejection for a store's refusal; logs and counts it.
fn refused<St, P>(config: &Config<St, P>, refusal: Refusal, slots: &[Slot]) -> Rejection {
    let slot = match refusal {
        Refusal::Full { slot } | Refusal::TooManyKeys { slot } => slots.get(slot),
        _ => None,
    };
    let limit = slot.and_then(|s| config.limits.get(usize::from(s.limit())));
    let name = limit.map_or("", |l| l.name.as_ref());
    let class = slot.map_or("", |s| s.key().class());
    let reason = match refusal {
        Refusal::Full { .. } => {
            tracing::debug!(
                limit = name,
                key_class = class,
                "connection refused: limit reached"
            );
            limit.map_or(Reason::TooManyConnections, |l| l.reason)
        }
        Refusal::TooManyKeys { .. } => {
            tracing::warn!(
                limit = name,
                key_class = class,
                "connection refused: the store tracks as many keys as it may"
            );
            Reason::AtCapacity
        }
        _ => {
            tracing::error!("connection refused: the connection store is unavailable");
            Reason::AtCapacity
        }
    };
    telemetry::refused(name, reason);
    Rejection::new(reason).with_retry_after(config.retry_after)
}

/// What a counted connection keeps in its scope: the store's lease and the gauges.
struct Held<L, St, P> {
    lease: Option<L>,
    config: Arc<Config<St, P>>,
    counted: u64,
}

impl<L, St, P> Held<L, St, P> {
    fn new(lease: L, config: Arc<Config<St, P>>, counted: u64) -> Self {
        for_each_bit(counted, |index| {
            if let Some(limit) = config.limits.get(index) {
                limit.active.fetch_add(1, Ordering::AcqRel);
                telemetry::opened(&limit.name);
            }
        });
        Self {
            lease: Some(lease),
            config,
            counted,
        }
    }
}

impl<L, St, P> Drop for Held<L, St, P> {
    fn drop(&mut self) {
        // Give the slots back first, then say so.
        drop(self.lease.take());
        for_each_bit(self.counted, |index| {
            if let Some(limit) = self.config.limits.get(index) {
                limit.active.fetch_sub(1, Ordering::AcqRel);
                telemetry::closed(&limit.name);
            }
        });
    }
}

fn for_each_bit(mut bits: u64, mut f: impl FnMut(usize)) {
    while bits != 0 {
        f(bits.trailing_zeros() as usize);
        bits &= bits - 1;
    }
}
