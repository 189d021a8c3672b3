//! The response future.

use std::{
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;
use wsguard_core::OnRejection;

use crate::{
    config::{log_rejection, Cause, Config},
    predicate::CheckFuture,
    Origin,
};

pin_project! {
    /// Response future of [`OriginGuard`](crate::OriginGuard).
    pub struct ResponseFuture<S, ReqBody, P>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody, P>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, P>
    where
        S: Service<Request<ReqBody>>,
    {
        Inner {
            #[pin]
            future: S::Future,
        },
        Check {
            check: CheckFuture,
            pending: Option<Pending<S, ReqBody, P>>,
        },
        Rejected {
            response: Option<S::Response>,
        },
    }
}

/// What an asynchronous check needs once it has answered.
struct Pending<S, ReqBody, P> {
    inner: S,
    req: Request<ReqBody>,
    config: Arc<Config<P>>,
    origin: Origin,
    peer: Option<IpAddr>,
}

impl<S, ReqBody, P> ResponseFuture<S, ReqBody, P>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn rejected(response: S::Response) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn check(
        check: CheckFuture,
        inner: S,
        req: Request<ReqBody>,
        config: Arc<Config<P>>,
        origin: Origin,
        peer: Option<IpAddr>,
    ) -> Self {
        Self {
            kind: Kind::Check {
                check,
                pending: Some(Pending {
                    inner,
                    req,
                    config,
                    origin,
                    peer,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody, P> Future for ResponseFuture<S, ReqBody, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.kind.as_mut().project() {
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
                KindProj::Check { check, pending } => {
                    let access = ready!(check.as_mut().poll(cx));
                    let Pending {
                        mut inner,
                        req,
                        config,
                        origin,
                        peer,
                    } = pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    if access.is_allowed() {
                        Kind::Inner {
                            future: inner.call(req),
                        }
                    } else {
                        log_rejection(config.mode(), peer, Cause::Predicate, Some(&origin), None);
                        if config.dry_run {
                            Kind::Inner {
                                future: inner.call(req),
                            }
                        } else {
                            Kind::Rejected {
                                response: Some(config.reject()),
                            }
                        }
                    }
                }
            };
            this.kind.set(next);
        }
    }
}

impl<S, ReqBody, P> fmt::Debug for ResponseFuture<S, ReqBody, P>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Check { .. } => "check",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
