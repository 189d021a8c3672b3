//! The configuration a layer and its services share, the decision on each request, and the
//! log and count of each rejection.
//!
//! Below the layer, the service and the future: this module imports none of them.

use std::{fmt, net::IpAddr};

use http::{header, Request, Response};
use wsguard_core::{
    guard::Mode, is_websocket_upgrade, ClientIp, OnRejection, PeerAddr, Reason, Rejection,
    RequestHead,
};

use crate::{
    origin::{header_origin, parse_origin, HeaderOrigin},
    predicate::{CheckFuture, SharedPredicate},
    telemetry, AllowList, Origin, ParseOriginError,
};

/// Everything a layer and its services share.
#[derive(Clone)]
pub(crate) struct Config<P> {
    pub(crate) allow: AllowList,
    pub(crate) allow_missing: bool,
    pub(crate) every_request: bool,
    /// Dry-run mode: refusals are logged and counted, and the request goes through.
    pub(crate) dry_run: bool,
    pub(crate) policy: P,
    pub(crate) predicate: Option<SharedPredicate>,
}

impl<P> fmt::Debug for Config<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("allow", &self.allow)
            .field("allow_missing", &self.allow_missing)
            .field("every_request", &self.every_request)
            .field("dry_run", &self.dry_run)
            .field("policy", &std::any::type_name::<P>())
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

/// What [`Config::decide`] concluded.
pub(crate) enum Decision {
    Pass,
    Reject,
    Check {
        check: CheckFuture,
        origin: Origin,
        peer: Option<IpAddr>,
    },
}

impl<P> Config<P> {
    /// Whether refusals are enforced or only logged and counted.
    pub(crate) const fn mode(&self) -> Mode {
        Mode::from_dry_run(self.dry_run)
    }

    /// The decision on `req`; in dry-run mode a refusal (logged and counted) passes.
    pub(crate) fn decide<B>(&self, req: &Request<B>) -> Decision {
        match self.decide_enforced(req) {
            Decision::Reject if self.dry_run => Decision::Pass,
            decision => decision,
        }
    }

    fn decide_enforced<B>(&self, req: &Request<B>) -> Decision {
        if !self.every_request && !is_websocket_upgrade(req) {
            return Decision::Pass;
        }
        let value = match header_origin(req.headers()) {
            HeaderOrigin::Absent if self.allow_missing => return Decision::Pass,
            HeaderOrigin::Absent => {
                log_rejection(self.mode(), peer(req), Cause::Missing, None, None);
                return Decision::Reject;
            }
            HeaderOrigin::Null if self.allow.allows_null() => return Decision::Pass,
            HeaderOrigin::Null => {
                log_rejection(self.mode(), peer(req), Cause::Null, None, None);
                return Decision::Reject;
            }
            HeaderOrigin::Invalid(error) => {
                log_rejection(self.mode(), peer(req), Cause::Malformed, None, Some(error));
                return Decision::Reject;
            }
            HeaderOrigin::Value(value) => value,
        };
        let origin = match parse_origin(value) {
            Ok(origin) => origin,
            Err(error) => {
                log_rejection(self.mode(), peer(req), Cause::Malformed, None, Some(error));
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
                log_rejection(
                    self.mode(),
                    peer(req),
                    Cause::NotAllowed,
                    Some(&origin),
                    None,
                );
                Decision::Reject
            }
        }
    }
}

impl<P> Config<P> {
    pub(crate) fn reject<B>(&self) -> Response<B>
    where
        P: OnRejection<B>,
    {
        wsguard_core::guard::respond(&self.policy, Rejection::new(Reason::OriginNotAllowed))
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

/// Logs and counts one rejection (in dry-run mode, one request let through that would have
/// been rejected).
///
/// The `Origin` value is attacker-controlled: it is logged only once it parsed, in its
/// normalised form, which holds nothing but lowercase letters, digits and `.-_:[]/+` and is
/// at most [`MAX_ORIGIN_LEN`](crate::MAX_ORIGIN_LEN) bytes long. A malformed value is never
/// logged, only the kind of error.
pub(crate) fn log_rejection(
    mode: Mode,
    peer: Option<IpAddr>,
    cause: Cause,
    origin: Option<&dyn fmt::Display>,
    error: Option<ParseOriginError>,
) {
    if mode.is_dry_run() {
        tracing::info!(
            target: "wsguard_origin",
            reason = Reason::OriginNotAllowed.as_str(),
            mode = mode.as_str(),
            cause = cause.as_str(),
            peer = peer.map(tracing::field::display),
            origin = origin.map(tracing::field::display),
            error = error.map(ParseOriginError::as_str),
            "dry run: request let through that would be rejected: origin not allowed"
        );
    } else {
        tracing::info!(
            target: "wsguard_origin",
            reason = Reason::OriginNotAllowed.as_str(),
            cause = cause.as_str(),
            peer = peer.map(tracing::field::display),
            origin = origin.map(tracing::field::display),
            error = error.map(ParseOriginError::as_str),
            "request rejected: origin not allowed"
        );
    }
    telemetry::refused(mode);
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
