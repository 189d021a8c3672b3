//! The response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tower_service::Service;
use wsguard_core::{ErrorFrame, Inbound, Verdict, WsMessage};

use crate::{
    authorize::{Access, Authorize},
    config::{denied, Config},
};

pin_project! {
    /// The response future of [`ValidateMessage`](crate::ValidateMessage).
    pub struct ResponseFuture<S, M, T, A, F>
    where
        S: Service<Inbound<M>>,
        A: Authorize<T>,
    {
        #[pin]
        kind: Kind<S::Future, A::Future, M>,
        pending: Option<Pending<S, M, T, A, F>>,
    }
}

struct Pending<S, M, T, A, F> {
    inner: S,
    req: Inbound<M>,
    parsed: T,
    config: Arc<Config<A, F>>,
}

pin_project! {
    #[project = KindProj]
    enum Kind<SF, AF, M> {
        Done { verdict: Option<Verdict<M>> },
        Inner { #[pin] future: SF },
        Authorizing { #[pin] future: AF },
    }
}

impl<S, M, T, A, F> ResponseFuture<S, M, T, A, F>
where
    S: Service<Inbound<M>>,
    A: Authorize<T>,
{
    pub(crate) fn done(verdict: Verdict<M>) -> Self {
        Self {
            kind: Kind::Done {
                verdict: Some(verdict),
            },
            pending: None,
        }
    }

    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            kind: Kind::Inner { future },
            pending: None,
        }
    }

    pub(crate) fn authorizing(
        future: A::Future,
        inner: S,
        req: Inbound<M>,
        parsed: T,
        config: Arc<Config<A, F>>,
    ) -> Self {
        Self {
            kind: Kind::Authorizing { future },
            pending: Some(Pending {
                inner,
                req,
                parsed,
                config,
            }),
        }
    }
}

impl<S, M, T, A, F> fmt::Debug for ResponseFuture<S, M, T, A, F>
where
    S: Service<Inbound<M>>,
    A: Authorize<T>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Done { .. } => "done",
            Kind::Inner { .. } => "inner",
            Kind::Authorizing { .. } => "authorizing",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, M, T, A, F> Future for ResponseFuture<S, M, T, A, F>
where
    S: Service<Inbound<M>, Response = Verdict<M>>,
    M: WsMessage,
    T: Send + Sync + 'static,
    A: Authorize<T>,
    F: ErrorFrame,
{
    type Output = Result<Verdict<M>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Done { verdict } => {
                    let verdict = verdict
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(verdict));
                }
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Authorizing { future } => {
                    let access = ready!(future.poll(cx));
                    let Pending {
                        mut inner,
                        mut req,
                        parsed,
                        config,
                    } = this
                        .pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match access {
                        Access::Allow => {
                            req.set_parsed(parsed);
                            this.kind.set(Kind::Inner {
                                future: inner.call(req),
                            });
                        }
                        Access::Deny => match denied(&config, req.connection()) {
                            Some(verdict) => this.kind.set(Kind::Done {
                                verdict: Some(verdict),
                            }),
                            // Dry run: the raw message goes on, without its parsed value.
                            None => this.kind.set(Kind::Inner {
                                future: inner.call(req),
                            }),
                        },
                    }
                }
            }
        }
    }
}
