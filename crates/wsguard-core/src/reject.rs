// One rejection type for every wsguard layer.

use std::{fmt, time::Duration};

use http::{header, HeaderValue, Response, StatusCode};

/// Why a request or a socket was refused.
///
///
/// One rejection type for every wsguard layer.
///
/// A [`Rejection`] names *why* a request or a socket was refused ([`Reason`]) and maps that
/// reason to the answer a client gets: an HTTP response before the upgrade, a WebSocket close
/// code after it, or the gRPC form for tonic stacks. Every wsguard crate answers through this
/// type, so an application that wants its own bodies changes them in one place, with an
/// [`OnRejection`] policy.
///
/// | reason | before upgrade | after upgrade | gRPC |
/// |---|---|---|---|
/// | [`OriginNotAllowed`](Reason::OriginNotAllowed) | 403 | never accepted | `PERMISSION_DENIED` |
/// | [`CredentialsMissing`](Reason::CredentialsMissing) | 401, `WWW-Authenticate: Bearer` | 4401 | `UNAUTHENTICATED` |
/// | [`TokenInvalid`](Reason::TokenInvalid) | 401, `WWW-Authenticate: Bearer error="invalid_token"` | 4401 | `UNAUTHENTICATED` |
/// | [`TokenExpired`](Reason::TokenExpired) | 401, the same with `error_description="token expired"` | 4440 | `UNAUTHENTICATED` |
/// | [`Forbidden`](Reason::Forbidden) | 403 | 4403 | `PERMISSION_DENIED` |
/// | [`TooManyConnections`](Reason::TooManyConnections) | 429 + `Retry-After` | 4429 | `RESOURCE_EXHAUSTED` |
/// | [`AtCapacity`](Reason::AtCapacity) | 503 + `Retry-After` | 1013 | `UNAVAILABLE` |
/// | [`RateExceeded`](Reason::RateExceeded) | n/a (429) | 4429 | `RESOURCE_EXHAUSTED` |
/// | [`MessageTooLarge`](Reason::MessageTooLarge) | n/a (413) | 1009 | `RESOURCE_EXHAUSTED` |
/// | [`InvalidMessage`](Reason::InvalidMessage) | n/a (400) | 1007 | `INVALID_ARGUMENT` |
/// | [`UnsupportedData`](Reason::UnsupportedData) | n/a (415) | 1003 | `INVALID_ARGUMENT` |
/// | [`IdleTimeout`](Reason::IdleTimeout) | n/a (408) | 4408 | `DEADLINE_EXCEEDED` |
/// | [`LifetimeExceeded`](Reason::LifetimeExceeded) | n/a (408) | 4410 | `DEADLINE_EXCEEDED` |
/// | [`HeartbeatTimeout`](Reason::HeartbeatTimeout) | n/a (408) | 4504 | `UNAVAILABLE` |
/// | [`ShuttingDown`](Reason::ShuttingDown) | 503 + `Retry-After` | 1001 | `UNAVAILABLE` |
/// | [`ProtocolError`](Reason::ProtocolError) | n/a (400) | 1002 | `INVALID_ARGUMENT` |
/// | [`BadRequest`](Reason::BadRequest) | 400 | 1008 | `INVALID_ARGUMENT` |
/// | [`Internal`](Reason::Internal) | 500 | 1011 | `INTERNAL` |
///
/// "n/a" marks reasons that only occur after an upgrade; should one be answered over HTTP
/// anyway, the status in brackets is used. Bodies and close reasons are short and generic:
/// they never reveal a limit, a count, a key or a parser's message. The [`Rejection`] itself
/// is put into the response's extensions, so outer middleware can tell a wsguard rejection
/// from the application's own responses and rewrite it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The `Origin` of a handshake is not allowed (cross-site WebSocket hijacking).
    OriginNotAllowed,
    /// No credentials were presented.
    CredentialsMissing,
    /// Credentials were presented but are not valid (bad signature, wrong audience, ...).
    TokenInvalid,
    /// Credentials were valid but have expired.
    TokenExpired,
    /// Authenticated, but not allowed (claims, revoked, not the owner).
    Forbidden,
    /// Too many concurrent connections for one key (user, IP, ...).
    TooManyConnections,
    /// The server as a whole is at its connection limit.
    AtCapacity,
    /// The message rate was exceeded in a sustained way.
    RateExceeded,
    /// A frame or message was larger than allowed.
    MessageTooLarge,
    /// A message failed validation (repeatedly).
    InvalidMessage,
    /// A frame of an unsupported type (text where binary is expected, or the reverse).
    UnsupportedData,
    /// No data frame arrived within the idle timeout.
    IdleTimeout,
    /// The connection reached its maximum lifetime.
    LifetimeExceeded,
    /// The peer did not answer a heartbeat ping in time.
    HeartbeatTimeout,
    /// The server is shutting down.
    ShuttingDown,
    /// The peer broke the WebSocket framing rules (RFC 6455 section 5: an unmasked client
    /// frame, a fragmented or oversized control frame, reserved bits or opcodes, ...).
    ProtocolError,
    /// The request is malformed in a way that a guard cannot evaluate.
    BadRequest,
    /// The server is misconfigured (for example no peer address is known).
    Internal,
}

impl Reason {
    /// Every reason, in the order of the documented table of answers (and of declaration):
    /// for tests and documentation that must cover each answer.
    pub const ALL: &'static [Self] = &[
        Self::OriginNotAllowed,
        Self::CredentialsMissing,
        Self::TokenInvalid,
        Self::TokenExpired,
        Self::Forbidden,
        Self::TooManyConnections,
        Self::AtCapacity,
        Self::RateExceeded,
        Self::MessageTooLarge,
        Self::InvalidMessage,
        Self::UnsupportedData,
        Self::IdleTimeout,
        Self::LifetimeExceeded,
        Self::HeartbeatTimeout,
        Self::ShuttingDown,
        Self::ProtocolError,
        Self::BadRequest,
        Self::Internal,
    ];

    /// A stable `snake_case` name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::CredentialsMissing => "credentials_missing",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::Forbidden => "forbidden",
            Self::TooManyConnections => "too_many_connections",
            Self::AtCapacity => "at_capacity",
            Self::RateExceeded => "rate_exceeded",
            Self::MessageTooLarge => "message_too_large",
            Self::InvalidMessage => "invalid_message",
            Self::UnsupportedData => "unsupported_data",
            Self::IdleTimeout => "idle_timeout",
            Self::LifetimeExceeded => "lifetime_exceeded",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::ProtocolError => "protocol_error",
            Self::BadRequest => "bad_request",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status answered before an upgrade.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::OriginNotAllowed | Self::Forbidden => StatusCode::FORBIDDEN,
            Self::CredentialsMissing | Self::TokenInvalid | Self::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            Self::TooManyConnections | Self::RateExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::AtCapacity | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidMessage | Self::ProtocolError | Self::BadRequest => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedData => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::IdleTimeout | Self::LifetimeExceeded | Self::HeartbeatTimeout => {
                StatusCode::REQUEST_TIMEOUT
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The WebSocket close code sent after an upgrade, or `None` where the reason must never
    /// be answered by accepting the upgrade first ([`Reason::OriginNotAllowed`]).
    pub const fn close_code(self) -> Option<u16> {
        Some(match self {
            Self::OriginNotAllowed => return None,
            Self::CredentialsMissing | Self::TokenInvalid => 4401,
            Self::TokenExpired => 4440,
            Self::Forbidden => 4403,
            Self::TooManyConnections | Self::RateExceeded => 4429,
            Self::AtCapacity => 1013,
            Self::MessageTooLarge => 1009,
            Self::InvalidMessage => 1007,
            Self::UnsupportedData => 1003,
            Self::IdleTimeout => 4408,
            Self::LifetimeExceeded => 4410,
            Self::HeartbeatTimeout => 4504,
            Self::ShuttingDown => 1001,
            Self::ProtocolError => 1002,
            Self::BadRequest => 1008,
            Self::Internal => 1011,
        })
    }

    /// The short, generic text used as HTTP body and as WebSocket close reason.
    ///
    /// Always ASCII and far below the 123 bytes a close reason may hold.
    pub const fn message(self) -> &'static str {
        match self {
            Self::OriginNotAllowed => "origin not allowed",
            Self::CredentialsMissing => "authentication required",
            Self::TokenInvalid => "invalid token",
            Self::TokenExpired => "token expired",
            Self::Forbidden => "forbidden",
            Self::TooManyConnections => "too many connections",
            Self::AtCapacity => "server at capacity",
            Self::RateExceeded => "rate limit exceeded",
            Self::MessageTooLarge => "message too large",
            Self::InvalidMessage => "invalid message",
            Self::UnsupportedData => "unsupported data",
            Self::IdleTimeout => "idle timeout",
            Self::LifetimeExceeded => "connection lifetime reached",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::ShuttingDown => "server shutting down",
            Self::ProtocolError => "protocol error",
            Self::BadRequest => "bad request",
            Self::Internal => "internal error",
        }
    }

    /// The gRPC status code of the gRPC form.
    pub const fn grpc_code(self) -> GrpcCode {
        match self {
            Self::OriginNotAllowed | Self::Forbidden => GrpcCode::PermissionDenied,
            Self::CredentialsMissing | Self::TokenInvalid | Self::TokenExpired => {
                GrpcCode::Unauthenticated
            }
            Self::TooManyConnections | Self::RateExceeded | Self::MessageTooLarge => {
                GrpcCode::ResourceExhausted
            }
            Self::AtCapacity | Self::ShuttingDown | Self::HeartbeatTimeout => GrpcCode::Unavailable,
            Self::InvalidMessage
            | Self::UnsupportedData
            | Self::ProtocolError
            | Self::BadRequest => GrpcCode::InvalidArgument,
            Self::IdleTimeout | Self::LifetimeExceeded => GrpcCode::DeadlineExceeded,
            Self::Internal => GrpcCode::Internal,
        }
    }

    /// The `WWW-Authenticate` challenge for the authentication reasons (RFC 6750 section 3).
    pub const fn www_authenticate(self) -> Option<&'static str> {
        match self {
            Self::CredentialsMissing => Some("Bearer"),
            Self::TokenInvalid => Some("Bearer error=\"invalid_token\""),
            Self::TokenExpired => {
                Some("Bearer error=\"invalid_token\", error_description=\"token expired\"")
            }
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gRPC status codes wsguard answers with (a subset of the gRPC code list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// `INVALID_ARGUMENT` (3).
    InvalidArgument,
    /// `DEADLINE_EXCEEDED` (4).
    DeadlineExceeded,
    /// `PERMISSION_DENIED` (7).
    PermissionDenied,
    /// `RESOURCE_EXHAUSTED` (8).
    ResourceExhausted,
    /// `INTERNAL` (13).
    Internal,
    /// `UNAVAILABLE` (14).
    Unavailable,
    /// `UNAUTHENTICATED` (16).
    Unauthenticated,
}

impl GrpcCode {
    /// The numeric code sent in `grpc-status`.
    pub const fn as_i32(self) -> i32 {
        match self {
            Self::InvalidArgument => 3,
            Self::DeadlineExceeded => 4,
            Self::PermissionDenied => 7,
            Self::ResourceExhausted => 8,
            Self::Internal => 13,
            Self::Unavailable => 14,
            Self::Unauthenticated => 16,
        }
    }

    const fn header_value(self) -> &'static str {
        match self {
            Self::InvalidArgument => "3",
            Self::DeadlineExceeded => "4",
            Self::PermissionDenied => "7",
            Self::ResourceExhausted => "8",
            Self::Internal => "13",
            Self::Unavailable => "14",
            Self::Unauthenticated => "16",
        }
    }
}

/// A refusal by a wsguard layer: a [`Reason`] and, for limits, when to retry.
///
/// See [`Reason`] for how it maps to HTTP, WebSocket and gRPC answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    reason: Reason,
    retry_after: Option<Duration>,
}

impl Rejection {
    /// A rejection for `reason`.
    pub const fn new(reason: Reason) -> Self {
        Self {
            reason,
            retry_after: None,
        }
    }

    /// Adds a retry hint, sent as `Retry-After` (whole seconds, rounded up, at least 1).
    #[must_use]
    pub const fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Why the request was refused.
    pub const fn reason(&self) -> Reason {
        self.reason
    }

    /// The retry hint, if any.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The retry hint in whole seconds as sent in `Retry-After`: rounded up, never 0.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| {
            let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
            secs.max(1)
        })
    }

    /// The HTTP status answered before an upgrade.
    pub const fn status(&self) -> StatusCode {
        self.reason.status()
    }

    /// The WebSocket close code answered after an upgrade, see [`Reason::close_code`].
    pub const fn close_code(&self) -> Option<u16> {
        self.reason.close_code()
    }

    /// The close reason sent with [`Rejection::close_code`]: short, generic, at most 123 bytes.
    pub const fn close_reason(&self) -> &'static str {
        self.reason.message()
    }

    /// The HTTP form: status, challenge and `Retry-After` headers, a short `text/plain` body,
    /// and `self` in the response extensions.
    pub fn to_http_response<B>(&self) -> Response<B>
    where
        B: From<&'static str>,
    {
        let mut res = Response::new(B::from(self.reason.message()));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(challenge) = self.reason.www_authenticate() {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res.extensions_mut().insert(*self);
        res
    }

    /// The gRPC form: HTTP 200, `content-type: application/grpc`, `grpc-status` and
    /// `grpc-message` (a trailers-only response), an empty body, and `self` in the extensions.
    ///
    /// A retry hint is sent as `grpc-retry-pushback-ms`, the server pushback of gRPC's retry
    /// design.
    pub fn to_grpc_response<B>(&self) -> Response<B>
    where
        B: Default,
    {
        let mut res = Response::new(B::default());
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from_static(self.reason.grpc_code().header_value()),
        );
        // The messages are plain ASCII without '%', so they need no percent-encoding.
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(self.reason.message()),
        );
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(
                "grpc-retry-pushback-ms",
                HeaderValue::from(secs.saturating_mul(1000)),
            );
        }
        res.extensions_mut().insert(*self);
        res
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.as_str())
    }
}

impl std::error::Error for Rejection {}

/// Turns a [`Rejection`] into the response a client gets.
///
/// Implemented by [`HttpRejection`] (the default of every wsguard layer), [`GrpcRejection`]
/// (for tonic stacks) and by any `Fn(&Rejection) -> Response<B> + Clone`. Whatever the
/// policy returns, the layer adds the [`Rejection`] to the response's extensions.
///
/// See [`Reason`] for an example.
pub trait OnRejection<B>: Clone + Send + Sync + 'static {
    /// Builds the response for `rejection`.
    fn on_rejection(&self, rejection: &Rejection) -> Response<B>;
}

/// The HTTP form of a rejection: see [`Rejection::to_http_response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRejection;

impl<B> OnRejection<B> for HttpRejection
where
    B: From<&'static str>,
{
    fn on_rejection(&self, rejection: &Rejection) -> Response<B> {
        rejection.to_http_response()
    }
}

/// The gRPC form of a rejection, for tonic stacks: see [`Rejection::to_grpc_response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRejection;

impl<B> OnRejection<B> for GrpcRejection
where
    B: Default,
{
    fn on_rejection(&self, rejection: &Rejection) -> Response<B> {
        rejection.to_grpc_response()
    }
}

impl<B, F> OnRejection<B> for F
where
    F: Fn(&Rejection) -> Response<B> + Clone + Send + Sync + 'static,
{
    fn on_rejection(&self, rejection: &Rejection) -> Response<B> {
        self(rejection)
    }
}

/// Answers `rejection` through `policy`, making sure the response carries the [`Rejection`]
/// in its extensions whatever the policy did.
pub fn respond<B, P>(policy: &P, rejection: Rejection) -> Response<B>
where
    P: OnRejection<B>,
{
    let mut res = policy.on_rejection(&rejection);
    res.extensions_mut().insert(rejection);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_once_in_declaration_order() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason}");
        }
        // The last variant: a reason declared after it must be added to `ALL` and here.
        assert_eq!(Reason::ALL.last(), Some(&Reason::Internal));
    }

    #[test]
    fn the_documented_table() {
        // (reason, status, close code) exactly as in the core table of the foundation issue.
        let table = [
            (Reason::OriginNotAllowed, 403, None),
            (Reason::CredentialsMissing, 401, Some(4401)),
            (Reason::TokenInvalid, 401, Some(4401)),
            (Reason::TokenExpired, 401, Some(4440)),
            (Reason::Forbidden, 403, Some(4403)),
            (Reason::TooManyConnections, 429, Some(4429)),
            (Reason::AtCapacity, 503, Some(1013)),
            (Reason::RateExceeded, 429, Some(4429)),
            (Reason::MessageTooLarge, 413, Some(1009)),
            (Reason::InvalidMessage, 400, Some(1007)),
            (Reason::UnsupportedData, 415, Some(1003)),
            (Reason::IdleTimeout, 408, Some(4408)),
            (Reason::LifetimeExceeded, 408, Some(4410)),
            (Reason::HeartbeatTimeout, 408, Some(4504)),
            (Reason::ShuttingDown, 503, Some(1001)),
            (Reason::ProtocolError, 400, Some(1002)),
            (Reason::BadRequest, 400, Some(1008)),
            (Reason::Internal, 500, Some(1011)),
        ];
        assert_eq!(
            table.map(|(reason, ..)| reason),
            Reason::ALL,
            "every reason is in the table"
        );
        for (reason, status, code) in table {
            assert_eq!(reason.status().as_u16(), status, "{reason}");
            assert_eq!(reason.close_code(), code, "{reason}");
        }
    }

    #[test]
    fn close_reasons_fit_a_close_frame_and_codes_are_sendable() {
        for &reason in Reason::ALL {
            let msg = reason.message();
            assert!(
                msg.len() <= 123 && msg.is_ascii() && !msg.contains('%'),
                "{reason}"
            );
            if let Some(code) = reason.close_code() {
                // RFC 6455 7.4: 1000-2999 (registered, excluding the reserved ones) or
                // 3000-4999 (registered / private); 1005, 1006 and 1015 must not be sent.
                assert!((1000..5000).contains(&code), "{reason}");
                assert!(![1004, 1005, 1006, 1015].contains(&code), "{reason}");
            }
        }
    }

    #[test]
    fn http_form_carries_challenges_and_retry_after() {
        let res: Response<String> = Rejection::new(Reason::CredentialsMissing).to_http_response();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");

        let res: Response<String> = Rejection::new(Reason::TokenInvalid).to_http_response();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );

        let res: Response<String> = Rejection::new(Reason::TokenExpired).to_http_response();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );

        let res: Response<String> = Rejection::new(Reason::TooManyConnections)
            .with_retry_after(Duration::from_millis(1200))
            .to_http_response();
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            res.extensions().get::<Rejection>().map(Rejection::reason),
            Some(Reason::TooManyConnections)
        );
        assert_eq!(res.body(), "too many connections");

        let res: Response<String> = Rejection::new(Reason::Forbidden).to_http_response();
        assert!(res.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn retry_after_is_rounded_up_and_never_zero() {
        let secs = |d| {
            Rejection::new(Reason::AtCapacity)
                .with_retry_after(d)
                .retry_after_secs()
        };
        assert_eq!(secs(Duration::ZERO), Some(1));
        assert_eq!(secs(Duration::from_nanos(1)), Some(1));
        assert_eq!(secs(Duration::from_secs(1)), Some(1));
        assert_eq!(secs(Duration::from_millis(1001)), Some(2));
        assert_eq!(secs(Duration::MAX), Some(u64::MAX));
        assert_eq!(Rejection::new(Reason::AtCapacity).retry_after_secs(), None);
    }

    #[test]
    fn grpc_form_is_a_trailers_only_response() {
        let res: Response<String> = Rejection::new(Reason::TokenExpired).to_grpc_response();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert_eq!(res.headers()["grpc-status"], "16");
        assert_eq!(res.headers()["grpc-message"], "token expired");
        assert!(res.body().is_empty());

        let res: Response<String> = Rejection::new(Reason::AtCapacity)
            .with_retry_after(Duration::from_secs(3))
            .to_grpc_response();
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()["grpc-retry-pushback-ms"], "3000");
        for &reason in Reason::ALL {
            let res: Response<String> = Rejection::new(reason).to_grpc_response();
            assert_eq!(
                res.headers()["grpc-status"],
                reason.grpc_code().as_i32().to_string().as_str()
            );
        }
    }

    #[test]
    fn custom_policies_still_carry_the_rejection() {
        let policy = |r: &Rejection| {
            let mut res = Response::new(format!("{{\"error\":\"{}\"}}", r.reason()));
            *res.status_mut() = r.status();
            res
        };
        let res = respond(&policy, Rejection::new(Reason::Forbidden));
        assert_eq!(res.body(), "{\"error\":\"forbidden\"}");
        assert!(res.extensions().get::<Rejection>().is_some());
    }
}
