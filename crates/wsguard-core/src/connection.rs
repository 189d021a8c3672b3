//! An upgraded connection: [`ConnectionInfo`], its identity, and [`Connection`], that identity
//! plus the guards that live as long as the socket.

use std::{
    fmt,
    net::IpAddr,
    ops::Deref,
    sync::{Arc, OnceLock},
    time::SystemTime,
};

use http::{
    request::Parts,
    uri::{Authority, PathAndQuery, Scheme},
    Extensions, HeaderMap, Uri,
};

use crate::{
    close_mode::PendingRejection, key::RequestHead, ClientIp, ConnectionScope, Principal,
    TokenExpiry,
};

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
    /// A connection's identity from its handshake's URI and extensions (a copy of them,
    /// without the [`ConnectionScope`] and the [`PendingRejection`]).
    ///
    /// The URI is copied into an allocation of its own: hyper parses a request's URI in
    /// place, so the URI it hands over shares the connection's whole read buffer (8 KiB or
    /// more), which a URI kept for the socket's life would otherwise keep alive.
    pub fn from_handshake(uri: Uri, extensions: &Extensions) -> Self {
        let mut extensions = extensions.clone();
        extensions.remove::<ConnectionScope>();
        extensions.remove::<PendingRejection>();
        Self {
            inner: Arc::new(InfoInner {
                client_ip: extensions.get::<ClientIp>().map(|ip| ip.0),
                principal: extensions.get::<Principal>().cloned(),
                token_expiry: extensions.get::<TokenExpiry>().map(|e| e.0),
                uri: owned_uri(uri),
                extensions,
            }),
        }
    }

    /// The identity of `conn` (a reference count, no copy).
    pub fn new(conn: &Connection) -> Self {
        conn.info.clone()
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

/// `uri` in storage of its own, not a slice of the buffer it was parsed from (the same
/// URI; kept as it is in the impossible case that its own parts do not parse again). Each
/// part is copied as it is, without formatting and parsing the whole URI again.
fn owned_uri(uri: Uri) -> Uri {
    let mut parts = uri.clone().into_parts();
    let copied = (|| -> Result<(), http::Error> {
        if let Some(scheme) = &parts.scheme {
            parts.scheme = Some(Scheme::try_from(scheme.as_str())?);
        }
        if let Some(authority) = &parts.authority {
            parts.authority = Some(Authority::try_from(authority.as_str())?);
        }
        if let Some(path_and_query) = &parts.path_and_query {
            parts.path_and_query = Some(PathAndQuery::try_from(path_and_query.as_str())?);
        }
        Ok(())
    })();
    match copied {
        Ok(()) => Uri::from_parts(parts).unwrap_or(uri),
        Err(_) => uri,
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

/// An upgraded connection: its identity ([`ConnectionInfo`], which it dereferences to) and
/// its guards ([`ConnectionScope`]).
///
/// Built by the hand-offs from the handshake request: it keeps the request's URI and a copy
/// of its extensions (with [`ClientIp`], [`Principal`], [`TokenExpiry`] and claims), not its
/// headers. It owns a handle on the scope, so the guards live as long as the `Connection`:
/// keep it in the socket's task and let it drop when the socket ends. It is deliberately not
/// `Clone`; [`info`](Self::info) is the cheap handle to share.
///
/// ```
/// use wsguard_core::{Connection, Principal};
///
/// let mut extensions = http::Extensions::new();
/// extensions.insert(Principal::new("alice"));
/// let conn = Connection::new(http::Uri::from_static("/ws"), &mut extensions);
/// assert_eq!(conn.principal().map(Principal::as_str), Some("alice"));
/// assert!(conn.scope().is_claimed());
/// ```
pub struct Connection {
    info: ConnectionInfo,
    scope: ConnectionScope,
    pending: Option<PendingRejection>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .field("scope", &self.scope)
            .field("pending_rejection", &self.pending.is_some())
            .finish()
    }
}

impl Connection {
    /// The connection of a handshake, from its request parts. Claims the scope.
    pub fn from_parts(parts: &mut Parts) -> Self {
        Self::new(parts.uri.clone(), &mut parts.extensions)
    }

    /// The connection of a handshake from its URI and extensions. Claims the scope.
    pub fn new(uri: Uri, extensions: &mut Extensions) -> Self {
        let scope = ConnectionScope::from_extensions(extensions);
        scope.claim();
        Self {
            pending: extensions.get::<PendingRejection>().cloned(),
            info: ConnectionInfo::from_handshake(uri, extensions),
            scope,
        }
    }

    /// The connection's identity: a cheap handle that does not hold the guards.
    pub const fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The rejection to deliver as a close frame instead of serving the socket, if any.
    pub const fn pending_rejection(&self) -> Option<&PendingRejection> {
        self.pending.as_ref()
    }

    /// The guards of this connection.
    pub const fn scope(&self) -> &ConnectionScope {
        &self.scope
    }
}

impl Deref for Connection {
    type Target = ConnectionInfo;

    fn deref(&self) -> &ConnectionInfo {
        &self.info
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Extensions, Uri};

    use super::Connection;

    /// A URI parsed in place from a server's read buffer (as hyper does) must not keep that
    /// buffer alive for the connection's life.
    #[test]
    fn connection_does_not_pin_the_read_buffer_of_its_uri() {
        let head = b"/ws?token=abc&room=r1";
        let mut buffer = vec![b' '; 16 * 1024];
        buffer[..head.len()].copy_from_slice(head);
        let buffer = Bytes::from(buffer);
        let uri = Uri::from_maybe_shared(buffer.slice(..head.len())).unwrap();
        assert!(!buffer.is_unique(), "the parsed URI shares the buffer");

        let conn = Connection::new(uri, &mut Extensions::new());
        assert!(
            buffer.is_unique(),
            "the connection still holds the read buffer"
        );
        assert_eq!(conn.uri(), "/ws?token=abc&room=r1");
        assert_eq!(conn.uri().query(), Some("token=abc&room=r1"));
    }

    #[test]
    fn absolute_uris_survive_the_copy_and_do_not_pin_the_buffer_either() {
        let head = b"http://example.com:8080/ws?x=1";
        let mut buffer = vec![b' '; 16 * 1024];
        buffer[..head.len()].copy_from_slice(head);
        let buffer = Bytes::from(buffer);
        let uri = Uri::from_maybe_shared(buffer.slice(..head.len())).unwrap();
        assert!(!buffer.is_unique(), "the parsed URI shares the buffer");

        let conn = Connection::new(uri.clone(), &mut Extensions::new());
        drop(uri);
        assert!(
            buffer.is_unique(),
            "the connection still holds the read buffer"
        );
        assert_eq!(conn.uri(), "http://example.com:8080/ws?x=1");
        assert_eq!(conn.uri().authority().unwrap(), "example.com:8080");
        assert_eq!(conn.uri().scheme_str(), Some("http"));

        let other: Uri = "wss+custom://h/p".parse().unwrap();
        assert_eq!(
            Connection::new(other.clone(), &mut Extensions::new()).uri(),
            &other
        );
    }
}
