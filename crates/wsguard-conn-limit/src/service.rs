use std::{
    fmt, mem,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;
use wsguard_core::{
    key::RequestHead, HttpRejection, KeyError, OnRejection, PendingRejection, Reason, Rejection,
    ScopedBody,
};

use crate::{
    future::ResponseFuture,
    layer::ConnLimitLayer,
    store::{ConnectionStore, InMemoryStore, Slot},
};

/// Counts connections under every configured limit for their whole life; see the
/// [crate docs](crate).
///
/// Its responses carry the body in a [`ScopedBody`], which keeps a streamed response's
/// slots until the stream ends.
pub struct ConnLimit<S, St = InMemoryStore, P = HttpRejection> {
    inner: S,
    layer: ConnLimitLayer<St, P>,
}

impl<S, St, P> ConnLimit<S, St, P> {
    pub(crate) const fn new(inner: S, layer: ConnLimitLayer<St, P>) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St, P> Clone for ConnLimit<S, St, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, P: fmt::Debug> fmt::Debug for ConnLimit<S, St, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnLimit")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
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
    type Future = ResponseFuture<S, St, P, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &self.layer.config;
        let head = RequestHead::from_request(&req);
        // An outer layer already refused this handshake in close mode (for example the
        // authentication layer, so there is no principal): the socket will only be closed.
        // Limits whose key is missing do not apply to it; the others still count it for the
        // short time it is open.
        let refused_already = req.extensions().get::<PendingRejection>().is_some();
        let mut slots = Vec::with_capacity(config.limits.len());
        let mut counted = 0u64;
        for (index, limit) in config.limits.iter().enumerate() {
            match limit.extractor.extract(&head) {
                Ok(key) => {
                    // `MAX_LIMITS` (64) is checked at build time: the index fits both.
                    slots.push(Slot::new(index as u16, key, limit.max));
                    counted |= 1 << index;
                }
                Err(KeyError::Missing(_)) if limit.optional || refused_already => {}
                Err(error) => {
                    let reason = match error {
                        KeyError::Invalid(what) => {
                            tracing::debug!(limit = %limit.name, unusable = what, "connection refused: no usable key");
                            Reason::BadRequest
                        }
                        _ => {
                            tracing::error!(
                                limit = %limit.name,
                                missing = what_of(&error),
                                "connection refused: the request has no key for this limit; is the layer that provides it (client-ip, jwt-auth) in front of the connection limit?"
                            );
                            Reason::Internal
                        }
                    };
                    wsguard_core::telemetry::record_rejection("conn_limit", reason);
                    return ResponseFuture::rejected(Rejection::new(reason), self.layer.clone());
                }
            }
        }
        if let Some(acquired) = config.store.acquire_now(&slots) {
            return ResponseFuture::decided(
                acquired,
                &mut self.inner,
                req,
                &slots,
                counted,
                self.layer.clone(),
            );
        }
        let acquire = config.store.acquire(&slots);
        // The ready service goes into the future; a fresh clone waits for the next call.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture::acquiring(acquire, inner, req, slots, counted, self.layer.clone())
    }
}

fn what_of(error: &KeyError) -> &'static str {
    match error {
        KeyError::Missing(what) | KeyError::Invalid(what) => what,
        _ => "key",
    }
}
