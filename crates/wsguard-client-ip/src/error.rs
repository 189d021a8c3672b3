//! Configuration errors.

use std::fmt;

/// A configuration the layer refuses to be built with.
///
/// Every check happens while the layer is built, never on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A trusted-proxy entry that is neither a CIDR network (`10.0.0.0/8`, `2001:db8::/32`)
    /// nor an IP address.
    InvalidCidr {
        /// The entry as given.
        input: String,
    },
    /// `max_elements(0)`: no header element could ever be read.
    ZeroMaxElements,
    /// `max_header_bytes(0)`: no header byte could ever be read.
    ZeroMaxHeaderBytes,
    /// A hop count larger than the element cap: the client would never be reached.
    HopsOverLimit {
        /// The hop count asked for.
        hops: usize,
        /// The element cap in force.
        max_elements: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCidr { input } => {
                write!(f, "`{input}` is not a CIDR network or an IP address")
            }
            Self::ZeroMaxElements => f.write_str("max_elements must be at least 1"),
            Self::ZeroMaxHeaderBytes => f.write_str("max_header_bytes must be at least 1"),
            Self::HopsOverLimit { hops, max_elements } => write!(
                f,
                "{hops} trusted hops exceed the element cap of {max_elements}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
