//! The service: decides on each request.

use std::{
    fmt,
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, Request, Response};
use tower_service::Service;
use wsguard_core::{
    is_websocket_upgrade, key::RequestHead, telemetry, ClientIp, HttpRejection, OnRejection,
    PeerAddr, Reason, Rejection,
};

use crate::{
    future::ResponseFuture,
    layer::Config,
    origin::{header_origin, parse_origin, HeaderOrigin},
    NoPredicate, Origin, OriginPredicate, ParseOriginError,
};

/// Rejects requests whose `Origin` is not allowed with 403, before they reach `S`.
///
/// Built by [`OriginGuardLayer`](crate::OriginGuardLayer).
/// See the [crate docs](crate) for an example.
pub struct OriginGuard<S, P = HttpRejection, C = NoPredicate> {
    inner: S,
    config: Arc<Config<P, C>>,
}

impl<S, P, C> OriginGuard<S, P, C> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<P, C>>) -> Self {
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

impl<S: Clone, P, C> Clone for OriginGuard<S, P, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, P, C> fmt::Debug for OriginGuard<S, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginGuard")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, P, C, ReqBody, ResBody> Service<Request<ReqBody>> for OriginGuard<S, P, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    P: OnRejection<ResBody>,
    C: OriginPredicate,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, P, C>;

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

/// What [`Config::decide`] concluded.
pub(crate) enum Decision<F> {
    Pass,
    Reject,
    Check {
        check: F,
        origin: Origin,
        peer: Option<IpAddr>,
    },
}

impl<P, C> Config<P, C>
where
    C: OriginPredicate,
{
    pub(crate) fn decide<B>(&self, req: &Request<B>) -> Decision<C::Future> {
        if !self.every_request && !is_websocket_upgrade(req) {
            return Decision::Pass;
        }
        let value = match header_origin(req.headers()) {
            HeaderOrigin::Absent if self.allow_missing => return Decision::Pass,
            HeaderOrigin::Absent => {
                log_rejection(peer(req), Cause::Missing, None, None);
                return Decision::Reject;
            }
            HeaderOrigin::Null if self.allow.allows_null() => return Decision::Pass,
            HeaderOrigin::Null => {
                log_rejection(peer(req), Cause::Null, None, None);
                return Decision::Reject;
            }
            HeaderOrigin::Invalid(error) => {
                log_rejection(peer(req), Cause::Malformed, None, Some(error));
                return Decision::Reject;
            }
            HeaderOrigin::Value(value) => value,
        };
        let origin = match parse_origin(value) {
            Ok(origin) => origin,
            Err(error) => {
                log_rejection(peer(req), Cause::Malformed, None, Some(error));
                return Decision::Reject;
            }
        };
        let same_host = || {
            self.allow.allows_same_host()
                && request_authority(req)
                    .is_some_and(|authority| self.allow.allows_for_authority(&origin, authority))
        };
        if self.allow.allows_ref(&origin) || same_host() {
            return Decision::Pass;
        }
        match &self.predicate {
            Some(predicate) => {
                let origin = origin.into_owned();
                let check = predicate.check(&origin, &RequestHead::from_request(req));
                Decision::Check {
                    check,
                    origin,
                    peer: peer(req),
                }
            }
            None => {
                log_rejection(peer(req), Cause::NotAllowed, Some(&origin), None);
                Decision::Reject
            }
        }
    }
}

impl<P, C> Config<P, C> {
    pub(crate) fn reject<B>(&self) -> Response<B>
    where
        P: OnRejection<B>,
    {
        wsguard_core::reject::respond(&self.policy, Rejection::new(Reason::OriginNotAllowed))
    }
}

/// Why a request was rejected, for the log.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cause {
    Missing,
    Null,
    Malformed,
    NotAllowed,
    Predicate,
}

impl Cause {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Null => "null",
            Self::Malformed => "malformed",
            Self::NotAllowed => "not_allowed",
            Self::Predicate => "predicate",
        }
    }
}

/// Logs and counts one rejection.
///
/// The `Origin` value is attacker-controlled: it is logged only once it parsed, in its
/// normalised form, which holds nothing but lowercase letters, digits and `.-_:[]/+` and is
/// at most [`MAX_ORIGIN_LEN`](crate::MAX_ORIGIN_LEN) bytes long. A malformed value is never
/// logged, only the kind of error.
pub(crate) fn log_rejection(
    peer: Option<IpAddr>,
    cause: Cause,
    origin: Option<&dyn fmt::Display>,
    error: Option<ParseOriginError>,
) {
    tracing::info!(
        target: "wsguard_origin",
        reason = Reason::OriginNotAllowed.as_str(),
        cause = cause.as_str(),
        peer = peer.map(tracing::field::display),
        origin = origin.map(tracing::field::display),
        error = error.map(ParseOriginError::as_str),
        "request rejected: origin not allowed"
    );
    telemetry::record_rejection("origin", Reason::OriginNotAllowed);
}

/// The client address for the log: the resolved [`ClientIp`], else the direct peer.
fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
    let extensions = req.extensions();
    extensions
        .get::<ClientIp>()
        .map(|ip| ip.0)
        .or_else(|| extensions.get::<PeerAddr>().map(|peer| peer.0.ip()))
}

/// The authority the request was sent to: the request target's (HTTP/2 `:authority`,
/// absolute-form HTTP/1.1) or, failing that, the one `Host` header.
fn request_authority<B>(req: &Request<B>) -> Option<&str> {
    if let Some(authority) = req.uri().authority() {
        return Some(authority.as_str());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    host.to_str().ok()
}
