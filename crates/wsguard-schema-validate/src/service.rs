//! The per-connection service.

use std::{
    fmt,
    marker::PhantomData,
    mem,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use serde::de::DeserializeOwned;
use tower_service::Service;
use wsguard_core::{ErrorFrame, Inbound, Verdict, WsMessage};

use crate::{
    authorize::{AllowAll, Authorize},
    config::{Check, Config, ConnState},
    future::ResponseFuture,
};

/// The message-plane service of [`ValidateMessageLayer`](crate::ValidateMessageLayer), for
/// one connection.
///
/// Clones share the connection's count of invalid messages, and serve that connection only:
/// a message from another connection is refused with 1011 and an `error` event (see
/// [`ConnectionBinding`](wsguard_core::guard::ConnectionBinding)). See the [crate docs](crate)
/// for an example.
pub struct ValidateMessage<S, T = serde_json::Value, A = AllowAll, F = wsguard_core::JsonErrorFrame>
{
    inner: S,
    config: Arc<Config<A, F>>,
    conn: Arc<ConnState>,
    _type: PhantomData<fn() -> T>,
}

impl<S, T, A, F> ValidateMessage<S, T, A, F> {
    pub(crate) fn new(inner: S, config: Arc<Config<A, F>>, conn: Arc<ConnState>) -> Self {
        Self {
            inner,
            config,
            conn,
            _type: PhantomData,
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

impl<S: Clone, T, A, F> Clone for ValidateMessage<S, T, A, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            conn: self.conn.clone(),
            _type: PhantomData,
        }
    }
}

impl<S: fmt::Debug, T, A, F> fmt::Debug for ValidateMessage<S, T, A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateMessage")
            .field("inner", &self.inner)
            .field("type", &std::any::type_name::<T>())
            .field(
                "invalid_in_a_row",
                &self.conn.invalid.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl<S, M, T, A, F> Service<Inbound<M>> for ValidateMessage<S, T, A, F>
where
    S: Service<Inbound<M>, Response = Verdict<M>> + Clone,
    M: WsMessage,
    T: DeserializeOwned + Send + Sync + 'static,
    A: Authorize<T>,
    F: ErrorFrame,
{
    type Response = Verdict<M>;
    type Error = S::Error;
    type Future = ResponseFuture<S, M, T, A, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Inbound<M>) -> Self::Future {
        let parsed = match self.config.check::<T, M>(&self.conn, &req) {
            Check::Pass => return ResponseFuture::inner(self.inner.call(req)),
            Check::Refuse(verdict) => return ResponseFuture::done(verdict),
            Check::Parsed(parsed) => parsed,
        };
        if self.config.authorize.allows_all() {
            req.set_parsed(parsed);
            return ResponseFuture::inner(self.inner.call(req));
        }
        let asking = self.config.authorize.authorize(req.connection(), &parsed);
        // The answer takes time: the future takes the ready service, a clone stays here.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture::authorizing(asking, inner, req, parsed, self.config.clone())
    }
}
