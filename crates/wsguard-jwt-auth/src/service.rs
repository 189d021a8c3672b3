//! The service: authenticates each request.

use std::{
    fmt,
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use serde::de::DeserializeOwned;
use tower_service::Service;
use wsguard_core::{
    is_websocket_upgrade, reject::respond, telemetry, ClientIp, HttpRejection, OnRejection,
    PeerAddr, PendingRejection, Principal, Rejection, TokenExpiry,
};

use crate::{
    future::{Kind, Pending, ResponseFuture, Stage},
    layer::Config,
    source::{self, Extracted},
    verify::{KeyWait, Outcome, Verified},
    Claims, ClaimsPredicate, Failure, HeaderParameter, NoPredicate, NoRevocation, Revocation,
    VerifiedToken,
};

/// Authenticates requests with a JWT before they reach `S`; see the [crate docs](crate).
///
/// Built by [`JwtAuthLayer`](crate::JwtAuthLayer).
pub struct JwtAuth<S, C, P = HttpRejection, R = NoRevocation, A = NoPredicate> {
    inner: S,
    config: Arc<Config<C, P, R, A>>,
}

impl<S, C, P, R, A> JwtAuth<S, C, P, R, A> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<C, P, R, A>>) -> Self {
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

impl<S: Clone, C, P, R, A> Clone for JwtAuth<S, C, P, R, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, C, P, R, A> fmt::Debug for JwtAuth<S, C, P, R, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C, P, R, A, ReqBody, ResBody> Service<Request<ReqBody>> for JwtAuth<S, C, P, R, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: DeserializeOwned + Clone + Send + Sync + 'static,
    P: OnRejection<ResBody>,
    R: Revocation,
    A: ClaimsPredicate<C>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, C, P, R, A>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let kind = match config.decide(&mut req) {
            Decision::Admit(verified) => {
                admit(&mut req, verified);
                if config.revocation.is_none() && config.async_predicate.is_none() {
                    return ResponseFuture::new(Kind::Inner {
                        future: self.inner.call(req),
                    });
                }
                // Keep the service that was driven to readiness for after the async steps.
                let inner = take_ready(&mut self.inner);
                Kind::advance(Pending::new(inner, req, config), Stage::Verified)
            }
            Decision::Refuse(failure, source) => {
                refuse(&mut self.inner, req, config, failure, source)
            }
            Decision::Wait(wait, extracted) => Kind::Keys {
                wait,
                state: Some((
                    Pending::new(take_ready(&mut self.inner), req, config),
                    extracted,
                )),
            },
        };
        ResponseFuture::new(kind)
    }
}

/// The ready service out of `slot`, leaving a clone in its place.
fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

/// What the synchronous part of authentication concluded.
pub(crate) enum Decision<C> {
    Admit(Verified<C>),
    Refuse(Failure, Option<&'static str>),
    Wait(KeyWait, Extracted),
}

impl<C, P, R, A> Config<C, P, R, A>
where
    C: DeserializeOwned,
{
    /// Extracts (and removes) the token, and verifies it.
    pub(crate) fn decide<B>(&self, req: &mut Request<B>) -> Decision<C> {
        match source::extract(req, &self.sources, self.max_len) {
            Ok(extracted) => self.verify_extracted(req, extracted, true),
            Err((failure, source)) => Decision::Refuse(failure, source),
        }
    }

    pub(crate) fn verify_extracted<B>(
        &self,
        req: &Request<B>,
        extracted: Extracted,
        may_refresh: bool,
    ) -> Decision<C> {
        let outcome = self.verifier.verify(
            &extracted.token,
            extracted.source,
            req.headers(),
            self.now(),
            may_refresh,
        );
        match outcome {
            Outcome::Verified(verified) => Decision::Admit(verified),
            Outcome::Failed(failure) => Decision::Refuse(failure, Some(extracted.source)),
            Outcome::WaitForKeys(wait) => Decision::Wait(wait, extracted),
        }
    }
}

impl<C, P, R, A> Config<C, P, R, A> {
    /// The response of a refusal: the policy's answer with the `Rejection` and the `Failure`
    /// in its extensions.
    pub(crate) fn reject<B>(&self, failure: Failure) -> Response<B>
    where
        P: OnRejection<B>,
    {
        let mut res = respond(&self.policy, self.rejection(failure));
        res.extensions_mut().insert(failure);
        res
    }

    /// The rejection of `failure`: its reason, and for keys not loaded yet, when to retry.
    pub(crate) fn rejection(&self, failure: Failure) -> Rejection {
        let rejection = Rejection::new(failure.reason());
        match failure {
            Failure::KeysUnavailable => {
                rejection.with_retry_after(self.verifier.keys_retry_after())
            }
            _ => rejection,
        }
    }
}

/// Puts what the token proved into the request's extensions.
pub(crate) fn admit<B, C>(req: &mut Request<B>, verified: Verified<C>)
where
    C: Clone + Send + Sync + 'static,
{
    tracing::debug!(
        target: "wsguard_jwt_auth",
        source = verified.token.source,
        algorithm = ?verified.token.algorithm,
        "token accepted"
    );
    let extensions = req.extensions_mut();
    if let Some(expiry) = verified.token.expires_at {
        extensions.insert(TokenExpiry(expiry));
    }
    extensions.insert(verified.token.principal.clone());
    extensions.insert(verified.token);
    extensions.insert(Claims(verified.claims));
}

/// Takes back what [`admit`] inserted, before a refused request goes on in close mode.
pub(crate) fn unadmit<B, C>(req: &mut Request<B>)
where
    C: Clone + Send + Sync + 'static,
{
    let extensions = req.extensions_mut();
    extensions.remove::<Claims<C>>();
    extensions.remove::<VerifiedToken>();
    extensions.remove::<Principal>();
    extensions.remove::<TokenExpiry>();
}

/// Refuses `req`: the HTTP (or gRPC) answer, or in close mode for a WebSocket handshake,
/// the request goes on to `inner` with a deferred rejection for the hand-off.
pub(crate) fn refuse<S, ReqBody, ResBody, C, P, R, A>(
    inner: &mut S,
    mut req: Request<ReqBody>,
    config: &Arc<Config<C, P, R, A>>,
    failure: Failure,
    source: Option<&'static str>,
) -> Kind<S, ReqBody, C, P, R, A>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: OnRejection<ResBody>,
    R: Revocation,
    A: ClaimsPredicate<C>,
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

/// Logs and counts one refusal: the reason, the precise cause, the token's source and the
/// client address; never the token, a claim or a key.
pub(crate) fn log_rejection(failure: Failure, source: Option<&'static str>, peer: Option<IpAddr>) {
    tracing::info!(
        target: "wsguard_jwt_auth",
        reason = failure.reason().as_str(),
        cause = failure.as_str(),
        header_parameter = failure.header_parameter().map(HeaderParameter::as_str),
        source,
        peer = peer.map(tracing::field::display),
        "request rejected: authentication failed"
    );
    telemetry::record_rejection("jwt_auth", failure.reason());
}

/// The client address for the log: the resolved [`ClientIp`], else the direct peer.
pub(crate) fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
    let extensions = req.extensions();
    extensions
        .get::<ClientIp>()
        .map(|ip| ip.0)
        .or_else(|| extensions.get::<PeerAddr>().map(|peer| peer.0.ip()))
}
