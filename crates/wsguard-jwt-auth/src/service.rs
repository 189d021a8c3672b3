//! The service: authenticates each request.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use serde::de::DeserializeOwned;
use tower_service::Service;
use wsguard_core::{HttpRejection, OnRejection};

use crate::{config::Config, future::ResponseFuture};

/// Authenticates requests with a JWT before they reach `S`; see the [crate docs](crate).
///
/// Built by [`JwtAuthLayer`](crate::JwtAuthLayer).
pub struct JwtAuth<S, C, P = HttpRejection> {
    inner: S,
    config: Arc<Config<C, P>>,
}

impl<S, C, P> JwtAuth<S, C, P> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<C, P>>) -> Self {
        Self { inner, config }
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

impl<S: Clone, C, P> Clone for JwtAuth<S, C, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for JwtAuth<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C, P, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S, C, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    P: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, C, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let decision = self.config.decide(&mut req);
        ResponseFuture::new(&mut self.inner, req, &self.config, decision)
    }
}
