//! The service: asks the configuration for a decision and builds the future from it.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;
use wsguard_core::{HttpRejection, OnRejection};

use crate::{
    config::{Config, Decision},
    future::ResponseFuture,
};

/// Rejects requests whose `Origin` is not allowed with 403, before they reach `S`.
///
/// Built by [`OriginGuardLayer`](crate::OriginGuardLayer).
/// See the [crate docs](crate) for an example.
pub struct OriginGuard<S, P = HttpRejection> {
    inner: S,
    config: Arc<Config<P>>,
}

impl<S, P> OriginGuard<S, P> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<P>>) -> Self {
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

impl<S: Clone, P> Clone for OriginGuard<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for OriginGuard<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginGuard")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for OriginGuard<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    P: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.config.decide(&req) {
            Decision::Pass => ResponseFuture::inner(self.inner.call(req)),
            Decision::Reject => ResponseFuture::rejected(self.config.reject()),
            Decision::Check {
                check,
                origin,
                peer,
            } => {
                // Keep the service that was driven to readiness for when the check passes.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::check(check, inner, req, Arc::clone(&self.config), origin, peer)
            }
        }
    }
}
