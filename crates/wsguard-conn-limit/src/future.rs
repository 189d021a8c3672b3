//! [`ResponseFuture`] and what a connection holds while it lives.

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{ready, Context, Poll},
};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;
use wsguard_core::{
    guard::{finish_deferred, PendingRejection},
    is_websocket_upgrade, ConnectionScope, OnRejection, Reason, Rejection, ScopedBody,
};

use crate::{
    config::{ActiveLimit, Config},
    store::{ConnectionStore, Refusal, Slot},
    telemetry,
};

const DONE: &str = "ResponseFuture polled after completion";

pin_project! {
    /// The response future of [`ConnLimit`](crate::ConnLimit).
    pub struct ResponseFuture<S, ReqBody, St, P>
    where
        S: Service<Request<ReqBody>>,
        St: ConnectionStore,
    {
        #[pin]
        state: State<S, St, ReqBody>,
        config: Arc<Config<St, P>>,
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
            waiting: Option<Box<Waiting<S, ReqBody>>>,
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
            rejection: Option<Rejection>,
        },
    }
}

/// What waits for a store that answers later. Boxed: only such a store (one across the
/// network) needs it, and it would make the future, which the server moves, as large as
/// the request for every connection.
struct Waiting<S, ReqBody> {
    inner: S,
    req: Request<ReqBody>,
    slots: Vec<Slot>,
    counted: u64,
}

impl<S, ReqBody, St, P> ResponseFuture<S, ReqBody, St, P>
where
    S: Service<Request<ReqBody>>,
    St: ConnectionStore,
{
    /// Asks the store for `slots`. When it answers at once, `inner` (ready) is called now;
    /// otherwise the future takes the ready service, a fresh clone stays in `inner` for the
    /// next call, and the store's answer is awaited.
    pub(crate) fn new(
        inner: &mut S,
        req: Request<ReqBody>,
        slots: Vec<Slot>,
        counted: u64,
        config: Arc<Config<St, P>>,
    ) -> Self
    where
        S: Clone,
        P: Send + Sync + 'static,
    {
        if let Some(acquired) = config.store.acquire_now(&slots) {
            return Self {
                state: start(acquired, inner, req, &slots, counted, &config),
                config,
            };
        }
        let acquire = config.store.acquire(&slots);
        let clone = inner.clone();
        let inner = mem::replace(inner, clone);
        Self {
            state: State::Acquiring {
                acquire,
                waiting: Some(Box::new(Waiting {
                    inner,
                    req,
                    slots,
                    counted,
                })),
            },
            config,
        }
    }

    /// Dry run: the inner service's `future`, for a request let through that holds no slot.
    pub(crate) const fn uncounted(future: S::Future, config: Arc<Config<St, P>>) -> Self {
        Self {
            state: State::Calling {
                future,
                scope: None,
            },
            config,
        }
    }

    pub(crate) const fn rejected(rejection: Rejection, config: Arc<Config<St, P>>) -> Self {
        Self {
            state: State::Rejected {
                rejection: Some(rejection),
            },
            config,
        }
    }
}

impl<S, ReqBody, St, P> fmt::Debug for ResponseFuture<S, ReqBody, St, P>
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

impl<S, ReqBody, ResBody, St, P> Future for ResponseFuture<S, ReqBody, St, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    St: ConnectionStore,
    P: OnRejection<ResBody>,
{
    type Output = Result<Response<ScopedBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let config = &**this.config;
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring { acquire, waiting } => {
                    let acquired = ready!(acquire.poll(cx));
                    let Waiting {
                        mut inner,
                        req,
                        slots,
                        counted,
                    } = *waiting.take().expect(DONE);
                    let next = start(acquired, &mut inner, req, &slots, counted, this.config);
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
                            return Poll::Ready(
                                Ok(config.reject(Rejection::new(Reason::Internal))),
                            );
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
                    let rejection = rejection.take().expect(DONE);
                    return Poll::Ready(Ok(config.reject(rejection)));
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
        Err(refusal) if config.dry_run => {
            // Logged and counted as a refusal not made; no lease, so nothing to give back
            // and nothing held against anyone else.
            config.refused(refusal, slots);
            State::Calling {
                future: inner.call(req),
                scope: None,
            }
        }
        Err(refusal) => {
            let rejection = config.refused(refusal, slots);
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
                None => State::Rejected {
                    rejection: Some(rejection),
                },
            }
        }
    }
}

/// What a counted connection keeps in its scope: the store's lease and the gauges.
struct Held<L, St, P> {
    lease: Option<L>,
    config: Arc<Config<St, P>>,
    counted: u64,
}

impl<L, St, P> Held<L, St, P> {
    fn new(lease: L, config: Arc<Config<St, P>>, counted: u64) -> Self {
        for limit in limits(&config, counted) {
            limit.active.fetch_add(1, Ordering::AcqRel);
        }
        telemetry::connections_moved(limits(&config, counted).map(|limit| &limit.gauge), 1.0);
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
        for limit in limits(&self.config, self.counted) {
            limit.active.fetch_sub(1, Ordering::AcqRel);
        }
        telemetry::connections_moved(
            limits(&self.config, self.counted).map(|limit| &limit.gauge),
            -1.0,
        );
    }
}

/// The limits of `config` whose bits are set in `counted`.
fn limits<St, P>(config: &Config<St, P>, mut counted: u64) -> impl Iterator<Item = &ActiveLimit> {
    std::iter::from_fn(move || {
        while counted != 0 {
            let index = counted.trailing_zeros() as usize;
            counted &= counted - 1;
            if let Some(limit) = config.limits.get(index) {
                return Some(limit);
            }
        }
        None
    })
}
