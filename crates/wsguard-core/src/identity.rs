// Who is on the other end: the values later layers key on.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::SystemTime,
};

/// The real client IP address of a request, as resolved by `wsguard-client-ip`.
///
/// IPv4-mapped IPv6 addresses are always normalised to IPv4.
///
/// Who is on the other end: the values later layers key on.
///
/// Handshake layers resolve identity once and put it into the request's extensions:
/// `wsguard-client-ip` inserts [`ClientIp`], `wsguard-jwt-auth` inserts [`Principal`] and
/// [`TokenExpiry`]. Everything after them (limits, handlers, the message plane through
/// [`Connection`](crate::Connection)) reads these types instead of parsing headers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address.
    pub const fn ip(self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The address of the directly connected peer (the TCP remote address).
///
/// axum and tonic put their own connect info into the request; with raw hyper, insert this
/// type yourself from what `TcpListener::accept` returned, for example with
/// `tower_http::add_extension::AddExtensionLayer::new(PeerAddr(remote))` on the per-connection
/// service, or by `req.extensions_mut().insert(PeerAddr(remote))` in a `service_fn`:
///
/// ```
/// use std::net::SocketAddr;
/// use wsguard_core::PeerAddr;
///
/// let remote: SocketAddr = "192.0.2.7:50123".parse().unwrap(); // from `listener.accept()`
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr(remote));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The authenticated principal (user id) of a request, as set by an authentication layer.
///
/// Cheap to clone. Its `Debug` form shows the id: a user id is not a secret, but it may be
/// personal data, so wsguard's own logs never print it (they log the key class instead).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(Arc<str>);

impl Principal {
    /// A principal with the given id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Principal").field(&&*self.0).finish()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Principal {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// When the credentials a connection was opened with stop being valid (a token's `exp`).
///
/// Set by authentication layers; the message plane closes a socket with 4440 at this instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenExpiry(pub SystemTime);
