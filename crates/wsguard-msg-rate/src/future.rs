//! The response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{sleep, Sleep};
use tower_service::Service;
use wsguard_core::{ErrorFrame, Inbound, Verdict, WsMessage};

use crate::{
    config::{Config, ConnState, Next, Progress},
    store::{Decision, KeyStore},
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

/// What the check of a message needs after `call` returned.
struct Pending<S, M, K: KeyStore, F> {
    inner: S,
    req: Inbound<M>,
    config: Arc<Config<K, F>>,
    conn: Arc<ConnState<K>>,
    progress: Progress,
}

impl<S, M, K, F> Pending<S, M, K, F>
where
    M: WsMessage,
    K: KeyStore,
    F: ErrorFrame,
{
    fn advance(&mut self) -> Next<K::Future, M> {
        self.progress
            .advance(&self.config, &self.conn, self.req.connection())
    }

    fn decided(&mut self, decision: Decision) -> Next<K::Future, M> {
        self.progress
            .decided(decision, &self.config, &self.conn, self.req.connection())
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

    /// A check that needs time (the key store, or backpressure): the future takes the
    /// ready `inner` service and runs the rest of the check.
    pub(crate) fn pending(
        next: Next<K::Future, M>,
        inner: S,
        req: Inbound<M>,
        config: Arc<Config<K, F>>,
        conn: Arc<ConnState<K>>,
        progress: Progress,
    ) -> Self {
        let pending = Pending {
            inner,
            req,
            config,
            conn,
            progress,
        };
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
        const DONE: &str = "ResponseFuture polled after completion";
        let mut this = self.project();
        loop {
            let next = match this.kind.as_mut().project() {
                KindProj::Done { verdict } => {
                    return Poll::Ready(Ok(verdict.take().expect(DONE)));
                }
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Store { future } => {
                    let decision = ready!(future.poll(cx));
                    this.pending.as_mut().expect(DONE).decided(decision)
                }
                KindProj::Wait { sleep } => {
                    ready!(sleep.poll(cx));
                    this.pending.as_mut().expect(DONE).advance()
                }
            };
            match next {
                Next::Pass => {
                    let Pending { mut inner, req, .. } = this.pending.take().expect(DONE);
                    this.kind.set(Kind::Inner {
                        future: inner.call(req),
                    });
                }
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
