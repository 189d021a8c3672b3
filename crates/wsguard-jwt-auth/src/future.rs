//! The response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use serde::de::DeserializeOwned;
use tower_service::Service;
use wsguard_core::{
    guard::{finish_deferred, PendingRejection},
    is_websocket_upgrade, OnRejection, RequestHead,
};

use crate::{
    config::{admit, log_rejection, peer, unadmit, Config, Decision},
    keys::KeyWait,
    predicate::PredicateFuture,
    revocation::RevocationFuture,
    source::Extracted,
    Claims, Failure, RevocationQuery, RevocationStatus, VerifiedToken,
};

pin_project! {
    /// Response future of [`JwtAuth`](crate::JwtAuth).
    pub struct ResponseFuture<S, ReqBody, C, P>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        kind: Kind<S, ReqBody, C, P>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, C, P>
    where
        S: Service<Request<ReqBody>>,
    {
        // Authenticated: the inner service's response.
        Inner {
            #[pin]
            future: S::Future,
        },
        // Refused in close mode: the inner service's response, if a hand-off delivered the
        // rejection; the plain rejection otherwise.
        Deferred {
            #[pin]
            future: S::Future,
            pending: PendingRejection,
            config: Arc<Config<C, P>>,
            failure: Failure,
        },
        // Refused.
        Rejected {
            response: Option<S::Response>,
        },
        // Unknown `kid`: waiting for a key source to fetch keys.
        Keys {
            wait: KeyWait,
            state: Option<(Pending<S, ReqBody, C, P>, Extracted)>,
        },
        // Verified: asking the revocation store.
        Revocation {
            check: RevocationFuture,
            state: Option<Pending<S, ReqBody, C, P>>,
        },
        // Verified and not revoked: asking the asynchronous predicate.
        Predicate {
            check: PredicateFuture,
            state: Option<Pending<S, ReqBody, C, P>>,
        },
    }
}

/// The asynchronous steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Verified,
    Revocation,
    Predicate,
}

/// What an asynchronous step needs to go on.
struct Pending<S, ReqBody, C, P> {
    inner: S,
    req: Request<ReqBody>,
    config: Arc<Config<C, P>>,
}

impl<S, ReqBody, C, P> Pending<S, ReqBody, C, P> {
    fn new(inner: S, req: Request<ReqBody>, config: &Arc<Config<C, P>>) -> Self {
        Self {
            inner,
            req,
            config: Arc::clone(config),
        }
    }
}

impl<S, ReqBody, ResBody, C, P> ResponseFuture<S, ReqBody, C, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    P: OnRejection<ResBody>,
{
    /// The future of a request the configuration decided on: the inner service's future
    /// for an admitted request without asynchronous steps, else the first step.
    pub(crate) fn new(
        inner: &mut S,
        mut req: Request<ReqBody>,
        config: &Arc<Config<C, P>>,
        decision: Decision<C>,
    ) -> Self {
        let kind = match decision {
            Decision::Admit(verified) => {
                admit(&mut req, verified, config.sessions.as_ref());
                if config.revocation.is_none() && config.async_predicate.is_none() {
                    Kind::Inner {
                        future: inner.call(req),
                    }
                } else {
                    // Keep the service that was driven to readiness for after the async steps.
                    let inner = take_ready(inner);
                    Kind::advance(Pending::new(inner, req, config), Stage::Verified)
                }
            }
            Decision::Refuse(failure, source) => refuse(inner, req, config, failure, source),
            Decision::Wait(wait, extracted) => Kind::Keys {
                wait,
                state: Some((Pending::new(take_ready(inner), req, config), extracted)),
            },
        };
        Self { kind }
    }
}

/// The ready service out of `slot`, leaving a clone in its place.
fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

/// Refuses `req`: the HTTP (or gRPC) answer, or in close mode for a WebSocket handshake,
/// the request goes on to `inner` with a deferred rejection for the hand-off.
fn refuse<S, ReqBody, ResBody, C, P>(
    inner: &mut S,
    mut req: Request<ReqBody>,
    config: &Arc<Config<C, P>>,
    failure: Failure,
    source: Option<&'static str>,
) -> Kind<S, ReqBody, C, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: OnRejection<ResBody>,
{
    log_rejection(failure, source, peer(&req));
    if config.close_mode && is_websocket_upgrade(&req) {
        if let Some(pending) =
            PendingRejection::defer(req.extensions_mut(), config.rejection(failure))
        {
            return Kind::Deferred {
                future: inner.call(req),
                pending,
                config: Arc::clone(config),
                failure,
            };
        }
    }
    Kind::Rejected {
        response: Some(config.reject(failure)),
    }
}

impl<S, ReqBody, ResBody, C, P> Kind<S, ReqBody, C, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    P: OnRejection<ResBody>,
{
    /// The next step after `done` for an admitted request.
    fn advance(pending: Pending<S, ReqBody, C, P>, done: Stage) -> Self {
        let config = &pending.config;
        if done < Stage::Revocation {
            if let Some(store) = &config.revocation {
                let Some(token) = pending.req.extensions().get::<VerifiedToken>() else {
                    return Self::fail(pending, Failure::Revoked);
                };
                let query = RevocationQuery {
                    jti: token.jti.clone(),
                    subject: token.principal.clone(),
                    issued_at: token.issued_at,
                    expires_at: token.expires_at,
                    now: config.now(),
                };
                let check = store.check(&query);
                return Self::Revocation {
                    check,
                    state: Some(pending),
                };
            }
        }
        if done < Stage::Predicate {
            if let Some(predicate) = &config.async_predicate {
                let Some(Claims(claims)) = pending.req.extensions().get::<Claims<C>>() else {
                    return Self::fail(pending, Failure::Denied);
                };
                let check = predicate.check(claims, &RequestHead::from_request(&pending.req));
                return Self::Predicate {
                    check,
                    state: Some(pending),
                };
            }
        }
        let Pending { mut inner, req, .. } = pending;
        Self::Inner {
            future: inner.call(req),
        }
    }

    /// Refuses an admitted request after an asynchronous step.
    fn fail(pending: Pending<S, ReqBody, C, P>, failure: Failure) -> Self {
        let Pending {
            mut inner,
            mut req,
            config,
        } = pending;
        unadmit::<_, C>(&mut req);
        refuse(&mut inner, req, &config, failure, None)
    }
}

impl<S, ReqBody, ResBody, C, P> Future for ResponseFuture<S, ReqBody, C, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    P: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.kind.as_mut().project() {
                KindProj::Inner { future } => return future.poll(cx),
                KindProj::Deferred {
                    future,
                    pending,
                    config,
                    failure,
                } => {
                    let res = ready!(future.poll(cx))?;
                    let mut res = finish_deferred(res, pending, &config.policy);
                    res.extensions_mut().insert(*failure);
                    return Poll::Ready(Ok(res));
                }
                KindProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
                KindProj::Keys { wait, state } => {
                    ready!(wait.as_mut().poll(cx));
                    let (pending, extracted) = state
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let Pending {
                        mut inner,
                        mut req,
                        config,
                    } = pending;
                    match config.verify_extracted(&req, extracted, false) {
                        Decision::Admit(verified) => {
                            admit(&mut req, verified, config.sessions.as_ref());
                            Kind::advance(Pending::new(inner, req, &config), Stage::Verified)
                        }
                        Decision::Refuse(failure, source) => {
                            refuse(&mut inner, req, &config, failure, source)
                        }
                        Decision::Wait(..) => {
                            refuse(&mut inner, req, &config, Failure::UnknownKey, None)
                        }
                    }
                }
                KindProj::Revocation { check, state } => {
                    let answer = ready!(check.as_mut().poll(cx));
                    let pending = state
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match answer {
                        Ok(RevocationStatus::Active) => Kind::advance(pending, Stage::Revocation),
                        Ok(RevocationStatus::Revoked) => Kind::fail(pending, Failure::Revoked),
                        Err(error) if pending.config.fail_open => {
                            tracing::warn!(
                                target: "wsguard_jwt_auth",
                                %error,
                                peer = peer(&pending.req).map(tracing::field::display),
                                "revocation store failed; letting the token through (fail open)"
                            );
                            Kind::advance(pending, Stage::Revocation)
                        }
                        Err(error) => {
                            tracing::error!(
                                target: "wsguard_jwt_auth",
                                %error,
                                "revocation store failed; refusing the token (fail closed)"
                            );
                            Kind::fail(pending, Failure::RevocationUnavailable)
                        }
                    }
                }
                KindProj::Predicate { check, state } => {
                    let access = ready!(check.as_mut().poll(cx));
                    let pending = state
                        .take()
                        .expect("ResponseFuture polled after completion");
                    if access.is_allowed() {
                        Kind::advance(pending, Stage::Predicate)
                    } else {
                        Kind::fail(pending, Failure::Denied)
                    }
                }
            };
            this.kind.set(next);
        }
    }
}

impl<S, ReqBody, C, P> fmt::Debug for ResponseFuture<S, ReqBody, C, P>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Deferred { .. } => "deferred",
            Kind::Rejected { .. } => "rejected",
            Kind::Keys { .. } => "keys",
            Kind::Revocation { .. } => "revocation",
            Kind::Predicate { .. } => "predicate",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
