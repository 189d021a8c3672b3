//! The response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{sleep, Sleep};
use tower_service::Service;
use wsguard_core::{
    plane::{ErrorFrame, Inbound, Verdict},
    WsMessage,
};

use crate::{
    service::{Next, Pending},
    store::KeyStore,
};

pin_project! {
    /// The response future of [`MessageRateLimit`](crate::MessageRateLimit).
    pub struct ResponseFuture<S, M, K, F>
    where
        S: Service<Inbound<M>>,
        K: KeyStore,
    {
        #[pin]
        kind: Kind<S::Future, K::Future, M>,
        pending: Option<Pending<S, M, K, F>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<SF, KF, M> {
        Done { verdict: Option<Verdict<M>> },
        Inner { #[pin] future: SF },
        Store { #[pin] future: KF },
        Wait { #[pin] sleep: Sleep },
    }
}

impl<S, M, K, F> ResponseFuture<S, M, K, F>
where
    S: Service<Inbound<M>>,
    K: KeyStore,
{
    pub(crate) fn inner(future: S::Future) -> Self {
        Self {
            kind: Kind::Inner { future },
            pending: None,
        }
    }

    pub(crate) fn done(verdict: Verdict<M>) -> Self {
        Self {
            kind: Kind::Done {
                verdict: Some(verdict),
            },
            pending: None,
        }
    }

    pub(crate) fn pending(next: Next<K::Future, M>, pending: Pending<S, M, K, F>) -> Self {
        let kind = match next {
            Next::Verdict(verdict) => {
                return Self::done(verdict);
            }
            Next::Wait(wait) => Kind::Wait { sleep: sleep(wait) },
            Next::Store(future) => Kind::Store { future },
            Next::Pass => {
                let Pending { mut inner, req, .. } = pending;
                return Self::inner(inner.call(req));
            }
        };
        Self {
            kind,
            pending: Some(pending),
        }
    }
}

impl<S, M, K, F> fmt::Debug for ResponseFuture<S, M, K, F>
where
    S: Service<Inbound<M>>,
    K: KeyStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Done { .. } => "done",
            Kind::Inner { .. } => "inner",
            Kind::Store { .. } => "store",
            Kind::Wait { .. } => "waiting",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, M, K, F> Future for ResponseFuture<S, M, K, F>
where
    S: Service<Inbound<M>, Response = Verdict<M>>,
    M: WsMessage,
    K: KeyStore,
    F: ErrorFrame,
{
    type Output = Result<Verdict<M>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.kind.as_mut().project() {
                KindProj::Done { verdict } => {
                    // Polled again after completion: nothing left to hand on.
                    return Poll::Ready(Ok(verdict.take().unwrap_or(Verdict::Drop)));
                }
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Store { future } => {
                    let decision = ready!(future.poll(cx));
                    match this.pending.as_mut() {
                        Some(pending) => pending.decided(decision),
                        None => Next::Verdict(Verdict::Drop),
                    }
                }
                KindProj::Wait { sleep } => {
                    ready!(sleep.poll(cx));
                    match this.pending.as_mut() {
                        Some(pending) => pending.advance(),
                        None => Next::Verdict(Verdict::Drop),
                    }
                }
            };
            match next {
                Next::Pass => match this.pending.take() {
                    Some(Pending { mut inner, req, .. }) => {
                        this.kind.set(Kind::Inner {
                            future: inner.call(req),
                        });
                    }
                    None => this.kind.set(Kind::Done {
                        verdict: Some(Verdict::Drop),
                    }),
                },
                Next::Verdict(verdict) => {
                    *this.pending = None;
                    this.kind.set(Kind::Done {
                        verdict: Some(verdict),
                    });
                }
                Next::Wait(wait) => this.kind.set(Kind::Wait { sleep: sleep(wait) }),
                Next::Store(future) => this.kind.set(Kind::Store { future }),
            }
        }
    }
}
