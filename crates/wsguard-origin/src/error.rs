//! Configuration errors.

use std::fmt;

use crate::ParseOriginError;

/// A pattern of an [`AllowList`](crate::AllowList) or an entry of a
/// [`DomainSet`](crate::DomainSet) that cannot be used.
///
/// Returned when the configuration is built, never while serving requests. The messages
/// quote the offending configuration value (escaped), never request data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The pattern is not an origin; `reason` says which part is wrong (a path, query,
    /// fragment or userinfo, a bad host or port, ...).
    InvalidOrigin {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: ParseOriginError,
    },
    /// A `*` other than a whole first label (`https://*.example.com`), or `*` alone, which
    /// would allow every origin.
    InvalidWildcard {
        /// The pattern as given.
        pattern: String,
    },
    /// A port list that is not `{port,port,...}` with at least one port in `0..=65535`.
    InvalidPorts {
        /// The pattern as given.
        pattern: String,
    },
    /// A `ws://` or `wss://` pattern. The `Origin` of a WebSocket handshake is the origin of
    /// the page that opened it (`https://app.example.com`), never a WebSocket URL, so such a
    /// pattern could never match.
    WebSocketScheme {
        /// The pattern as given.
        pattern: String,
    },
    /// An internationalised host that UTS 46 processing (the conversion to A-labels that
    /// browsers apply) refuses, such as a malformed `xn--` label.
    Idna {
        /// The pattern or domain as given.
        pattern: String,
    },
    /// A [`DomainSet`](crate::DomainSet) entry that is not a bare domain name or IP
    /// address.
    InvalidDomain {
        /// The entry as given.
        domain: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidOrigin { pattern, reason } => {
                write!(f, "invalid origin pattern {pattern:?}: {reason}")
            }
            Self::InvalidWildcard { pattern } => write!(
                f,
                "invalid origin pattern {pattern:?}: `*` may only stand for subdomains, as in \
                 `https://*.example.com`"
            ),
            Self::InvalidPorts { pattern } => write!(
                f,
                "invalid origin pattern {pattern:?}: ports are a number, `*`, or a list such \
                 as `{{3000,8080}}`"
            ),
            Self::WebSocketScheme { pattern } => write!(
                f,
                "invalid origin pattern {pattern:?}: the Origin of a WebSocket handshake is \
                 the page's origin (http or https), never ws:// or wss://"
            ),
            Self::Idna { pattern } => write!(
                f,
                "invalid origin pattern {pattern:?}: the host is not a valid internationalised \
                 domain name"
            ),
            Self::InvalidDomain { domain, reason } => {
                write!(f, "invalid domain {domain:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidOrigin { reason, .. } => Some(reason),
            _ => None,
        }
    }
}
