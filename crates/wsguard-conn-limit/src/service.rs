//! The service: asks the configuration for the request's slots and builds the future.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;
use wsguard_core::{HttpRejection, OnRejection, ScopedBody};

use crate::{
    config::Config,
    future::ResponseFuture,
    store::{ConnectionStore, InMemoryConnectionStore},
};

/// Counts connections under every configured limit for their whole life; see the
/// [crate docs](crate).
///
/// Its responses carry the body in a [`ScopedBody`], which keeps a streamed response's
/// slots until the stream ends.
pub struct ConnLimit<S, St = InMemoryConnectionStore, P = HttpRejection> {
    inner: S,
    config: Arc<Config<St, P>>,
}

impl<S, St, P> ConnLimit<S, St, P> {
    pub(crate) const fn new(inner: S, config: Arc<Config<St, P>>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
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

impl<S: Clone, St, P> Clone for ConnLimit<S, St, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, P: fmt::Debug> fmt::Debug for ConnLimit<S, St, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, St, P, ReqBody, ResBody> Service<Request<ReqBody>> for ConnLimit<S, St, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: ConnectionStore,
    P: OnRejection<ResBody>,
{
    type Response = Response<ScopedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, St, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = Arc::clone(&self.config);
        match self.config.slots(&req) {
            Ok((slots, counted)) => {
                ResponseFuture::new(&mut self.inner, req, slots, counted, config)
            }
            Err(Some(rejection)) => ResponseFuture::rejected(rejection, config),
            // Dry run: through, holding no slot.
            Err(None) => ResponseFuture::uncounted(self.inner.call(req), config),
        }
    }
}
