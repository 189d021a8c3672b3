//! What the plane knows about a connection, and the binding of per-connection state to it.

use std::{
    fmt,
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use http::{Extensions, HeaderMap, Uri};

use crate::{key::RequestHead, Connection, ConnectionScope, PendingRejection, Principal};

/// What the message plane knows about a connection: a cheap, shared handle.
///
/// Built once per socket from the [`Connection`] of the handshake. Unlike the `Connection`,
/// it does not hold the connection's guards: a clone kept somewhere else (in a spawned task,
/// say) does not keep connection permits alive after the socket ends.
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct ConnectionInfo {
    inner: Arc<InfoInner>,
}

struct InfoInner {
    uri: Uri,
    extensions: Extensions,
    client_ip: Option<IpAddr>,
    principal: Option<Principal>,
    token_expiry: Option<SystemTime>,
}

impl ConnectionInfo {
    /// A snapshot of `conn`'s identity: its URI and a copy of its extensions, without the
    /// [`ConnectionScope`] and the [`PendingRejection`].
    pub fn new(conn: &Connection) -> Self {
        let mut extensions = conn.extensions().clone();
        extensions.remove::<ConnectionScope>();
        extensions.remove::<PendingRejection>();
        Self {
            inner: Arc::new(InfoInner {
                uri: conn.uri().clone(),
                extensions,
                client_ip: conn.client_ip(),
                principal: conn.principal().cloned(),
                token_expiry: conn.token_expiry(),
            }),
        }
    }

    /// The handshake's URI.
    pub fn uri(&self) -> &Uri {
        &self.inner.uri
    }

    /// The handshake's extensions (claims and anything else the handshake layers left).
    pub fn extensions(&self) -> &Extensions {
        &self.inner.extensions
    }

    /// The client IP resolved by `wsguard-client-ip`, if that layer ran.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.inner.client_ip
    }

    /// The authenticated principal, if an authentication layer ran.
    pub fn principal(&self) -> Option<&Principal> {
        self.inner.principal.as_ref()
    }

    /// When the connection's credentials expire, if an authentication layer said so.
    pub fn token_expiry(&self) -> Option<SystemTime> {
        self.inner.token_expiry
    }

    /// The connection as a request head for [`KeyExtractor`](crate::KeyExtractor)s. Its
    /// headers are empty: they are not kept after the handshake.
    pub fn head(&self) -> RequestHead<'_> {
        static NO_HEADERS: OnceLock<HeaderMap> = OnceLock::new();
        RequestHead::new(
            &self.inner.uri,
            NO_HEADERS.get_or_init(HeaderMap::new),
            &self.inner.extensions,
        )
    }

    /// Whether two handles describe the same connection.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl From<&Connection> for ConnectionInfo {
    fn from(conn: &Connection) -> Self {
        Self::new(conn)
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("uri", &self.inner.uri.path())
            .field("client_ip", &self.inner.client_ip)
            .field("authenticated", &self.inner.principal.is_some())
            .field("token_expiry", &self.inner.token_expiry)
            .finish_non_exhaustive()
    }
}

/// The connection a guard's per-connection state belongs to, bound by the first message.
///
/// A guard of the message plane keeps per-connection state (a budget, a count of invalid
/// messages, the connection's key) in the service its layer builds for one socket. Built
/// once and cloned for every socket instead (a habit tower invites), such state would be
/// shared: one connection's budget spent by all, one user's messages charged to another.
/// `ConnectionBinding` makes that misuse fail safe: the state binds to the connection of
/// its first message, and [`check`](Self::check) says when a message comes from another
/// one, which the guard then refuses with [`foreign_connection`](super::foreign_connection) (close 1011 and an `error`
/// event) instead of mis-charging it.
///
/// ```
/// use wsguard_core::plane::ConnectionBinding;
/// # use wsguard_core::{plane::ConnectionInfo, Connection};
/// # let mut ext = http::Extensions::new();
/// # let a = ConnectionInfo::new(&Connection::new(http::Uri::from_static("/ws"), &mut ext));
/// # let b = ConnectionInfo::new(&Connection::new(http::Uri::from_static("/ws"), &mut ext));
/// let binding = ConnectionBinding::new();
/// assert!(binding.check(&a));
/// assert!(binding.check(&a));
/// assert!(!binding.check(&b), "another connection's message");
/// ```
#[derive(Debug, Default)]
pub struct ConnectionBinding {
    bound: OnceLock<ConnectionInfo>,
}

impl ConnectionBinding {
    /// A binding to no connection yet.
    pub const fn new() -> Self {
        Self {
            bound: OnceLock::new(),
        }
    }

    /// Whether `info` is the bound connection, binding it if none is yet. One pointer
    /// comparison per message once bound.
    #[inline]
    pub fn check(&self, info: &ConnectionInfo) -> bool {
        self.bound.get_or_init(|| info.clone()).ptr_eq(info)
    }
}
