//! The per-connection service.

use std::{
    fmt, mem,
    sync::Arc,
    task::{Context, Poll},
};

use tower_service::Service;
use wsguard_core::{ErrorFrame, Inbound, Verdict, WsMessage};

use crate::{
    config::{Config, ConnState, Next, Progress},
    future::ResponseFuture,
    store::{InMemoryKeyStore, KeyStore},
};

/// The message-plane service of [`MessageRateLimitLayer`](crate::MessageRateLimitLayer),
/// for one connection.
///
/// Clones share the connection's budget, and serve that connection only: a message from
/// another connection (a plane built once and shared by several sockets) is refused with
/// 1011 and an `error` event, never charged to this one's budget (see
/// [`ConnectionBinding`](wsguard_core::guard::ConnectionBinding)). See the [crate docs](crate) for an example.
pub struct MessageRateLimit<S, K: KeyStore = InMemoryKeyStore, F = wsguard_core::JsonErrorFrame> {
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

    /// Consumes `self`, returning the inner service.
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
        let (progress, next) = Progress::start(&self.config, &self.conn, &req);
        match next {
            Next::Pass => ResponseFuture::inner(self.inner.call(req)),
            Next::Verdict(verdict) => ResponseFuture::done(verdict),
            next => {
                // The decision needs time: the future takes the ready service, a clone
                // stays here.
                let clone = self.inner.clone();
                let inner = mem::replace(&mut self.inner, clone);
                ResponseFuture::pending(
                    next,
                    inner,
                    req,
                    self.config.clone(),
                    self.conn.clone(),
                    progress,
                )
            }
        }
    }
}
