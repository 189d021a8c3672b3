// Keys that limits are counted by, and the extractors that compute them.

use std::{fmt, net::IpAddr, sync::Arc};

use http::{request::Parts, Extensions, HeaderMap, HeaderName, HeaderValue, Request, Uri};
use ipnet::IpNet;

use crate::{ClientIp, Principal};

/// The bucket a request is counted in.
#[derive(Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Key {
    /// One bucket for everything.
    Global,
    /// A single client address.
    Ip(IpAddr),
    /// A client network (for example an IPv6 /64, which one subscriber usually owns whole).
    Net(IpNet),
    /// An authenticated principal.
    Principal(Principal),
    /// The value of a header.
    Header(HeaderValue),
    /// Anything else, computed by a custom extractor.
    Custom(Arc<str>),
}

impl Key {
    /// A [`Key::Custom`] key.
    pub fn custom(value: impl Into<Arc<str>>) -> Self {
        Self::Custom(value.into())
    }

    /// The kind of key, safe to log and to use as a metric label: it never contains the
    /// key's value, which may be personal data.
    pub const fn class(&self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Ip(_) => "ip",
            Self::Net(_) => "ip_prefix",
            Self::Principal(_) => "principal",
            Self::Header(_) => "header",
            Self::Custom(_) => "custom",
        }
    }

    /// Roughly how many bytes of heap this key keeps alive beyond its inline size, for
    /// memory accounting in keyed stores.
    pub fn heap_size(&self) -> usize {
        match self {
            Self::Global | Self::Ip(_) | Self::Net(_) => 0,
            Self::Principal(p) => p.as_str().len(),
            Self::Header(v) => v.len(),
            Self::Custom(s) => s.len(),
        }
    }
}

impl fmt::Debug for Key {
    /// Shows the class only: keys are often personal data (addresses, user ids).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.class())
    }
}

/// Why a key could not be extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A value the extractor relies on is absent: a configuration error, for example a
    /// [`PrincipalKey`] without an authentication layer in front of it. Layers answer 500.
    Missing(&'static str),
    /// The client sent a value that cannot be a key (for example an oversized header).
    /// Layers answer 400.
    Invalid(&'static str),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(what) => write!(f, "no {what} in the request"),
            Self::Invalid(what) => write!(f, "unusable {what} in the request"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The part of a request that key extractors see.
///
/// On the message plane (after the upgrade) it is rebuilt from the
/// [`Connection`](crate::Connection): the URI and extensions of the handshake are kept, its
/// headers are not (they are often large), so header-based keys are only available on the
/// handshake.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// A view of `req`'s head.
    pub fn from_request<B>(req: &'a Request<B>) -> Self {
        Self::new(req.uri(), req.headers(), req.extensions())
    }

    /// A view of request parts.
    pub fn from_parts(parts: &'a Parts) -> Self {
        Self::new(&parts.uri, &parts.headers, &parts.extensions)
    }

    /// A view of the given pieces.
    pub const fn new(uri: &'a Uri, headers: &'a HeaderMap, extensions: &'a Extensions) -> Self {
        Self {
            uri,
            headers,
            extensions,
        }
    }

    /// The request URI.
    pub const fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request headers (empty on the message plane).
    pub const fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request extensions.
    pub const fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

/// Computes the [`Key`] a request is counted under.
///
/// Implemented for the extractors of this module and for every
/// `Fn(&RequestHead<'_>) -> Result<Key, KeyError>`.
///
/// Keys that limits are counted by, and the extractors that compute them.
///
/// A [`KeyExtractor`] looks at a request head (its URI, headers and extensions, where earlier
/// layers left [`ClientIp`] and [`Principal`]) and names the bucket it belongs to: the whole
/// server ([`GlobalKey`]), its client IP or IP prefix ([`ClientIpKey`]), its principal
/// ([`PrincipalKey`]), a header ([`HeaderKey`]) or anything a closure computes.
///
/// ```
/// use wsguard_core::{ClientIp, ClientIpKey, Key, KeyExtractor, RequestHead};
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(ClientIp("2001:db8:1:2:3:4:5:6".parse().unwrap()));
///
/// let per_64 = ClientIpKey::new().ipv6_prefix(64).unwrap();
/// let key = per_64.extract(&RequestHead::from_request(&req)).unwrap();
/// assert_eq!(key, Key::Net("2001:db8:1:2::/64".parse().unwrap()));
///
/// // Any closure is an extractor too, for example a path segment such as a dialog id.
/// let by_path = |head: &RequestHead<'_>| Ok(Key::custom(head.uri().path()));
/// assert_eq!(by_path.extract(&RequestHead::from_request(&req)).unwrap(), Key::custom("/"));
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key of `head`.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the request carries nothing to key on.
    fn extract(&self, head: &RequestHead<'_>) -> Result<Key, KeyError>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Result<Key, KeyError> + Send + Sync + 'static,
{
    fn extract(&self, head: &RequestHead<'_>) -> Result<Key, KeyError> {
        self(head)
    }
}

/// One key for every request: a server-wide limit.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct GlobalKey;

impl KeyExtractor for GlobalKey {
    fn extract(&self, _: &RequestHead<'_>) -> Result<Key, KeyError> {
        Ok(Key::Global)
    }
}

/// Keys by the [`ClientIp`] that `wsguard-client-ip` resolved, optionally by network prefix.
///
/// By default an address is its own key. [`ipv6_prefix`](Self::ipv6_prefix) groups IPv6
/// clients by network (a /64 is usually one subscriber, who can pick any of its 2^64
/// addresses), [`ipv4_prefix`](Self::ipv4_prefix) does the same for IPv4.
#[derive(Debug, Clone, Copy)]
pub struct ClientIpKey {
    v4_prefix: u8,
    v6_prefix: u8,
}

impl Default for ClientIpKey {
    fn default() -> Self {
        Self::new()
    }
}

/// A prefix length outside 0..=32 (IPv4) or 0..=128 (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPrefix(pub u8);

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid prefix length {}", self.0)
    }
}

impl std::error::Error for InvalidPrefix {}

impl ClientIpKey {
    /// One key per address.
    pub const fn new() -> Self {
        Self {
            v4_prefix: 32,
            v6_prefix: 128,
        }
    }

    /// Groups IPv6 clients by their first `len` bits (64 is the usual choice).
    ///
    /// # Errors
    ///
    /// [`InvalidPrefix`] when `len > 128`.
    pub fn ipv6_prefix(mut self, len: u8) -> Result<Self, InvalidPrefix> {
        if len > 128 {
            return Err(InvalidPrefix(len));
        }
        self.v6_prefix = len;
        Ok(self)
    }

    /// Groups IPv4 clients by their first `len` bits.
    ///
    /// # Errors
    ///
    /// [`InvalidPrefix`] when `len > 32`.
    pub fn ipv4_prefix(mut self, len: u8) -> Result<Self, InvalidPrefix> {
        if len > 32 {
            return Err(InvalidPrefix(len));
        }
        self.v4_prefix = len;
        Ok(self)
    }

    /// The key of an address under this extractor's prefixes.
    pub fn key_of(&self, ip: IpAddr) -> Key {
        let ip = ip.to_canonical();
        let prefix = match ip {
            IpAddr::V4(_) => self.v4_prefix,
            IpAddr::V6(_) => self.v6_prefix,
        };
        let full = if ip.is_ipv4() { 32 } else { 128 };
        if prefix == full {
            return Key::Ip(ip);
        }
        // Prefix lengths are validated by the builders, so this cannot fail.
        match IpNet::new(ip, prefix) {
            Ok(net) => Key::Net(net.trunc()),
            Err(_) => Key::Ip(ip),
        }
    }
}

impl KeyExtractor for ClientIpKey {
    fn extract(&self, head: &RequestHead<'_>) -> Result<Key, KeyError> {
        head.extensions()
            .get::<ClientIp>()
            .map(|ip| self.key_of(ip.0))
            .ok_or(KeyError::Missing("client ip"))
    }
}

/// Keys by the authenticated [`Principal`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct PrincipalKey;

impl KeyExtractor for PrincipalKey {
    fn extract(&self, head: &RequestHead<'_>) -> Result<Key, KeyError> {
        head.extensions()
            .get::<Principal>()
            .map(|p| Key::Principal(p.clone()))
            .ok_or(KeyError::Missing("principal"))
    }
}

/// Keys by the value of a request header (for example an API key id set by a gateway).
///
/// The header must be present exactly once and be at most [`HeaderKey::MAX_LEN`] bytes long,
/// so that a client cannot make the key store hold large values.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// The longest header value accepted as a key, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Keys by header `name`.
    pub const fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl KeyExtractor for HeaderKey {
    fn extract(&self, head: &RequestHead<'_>) -> Result<Key, KeyError> {
        let mut values = head.headers().get_all(&self.name).iter();
        let value = values.next().ok_or(KeyError::Missing("key header"))?;
        if values.next().is_some() || value.len() > Self::MAX_LEN || value.is_empty() {
            return Err(KeyError::Invalid("key header"));
        }
        Ok(Key::Header(value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_with_ip(ip: &str) -> Request<()> {
        let mut req = Request::new(());
        req.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
        req
    }

    #[test]
    fn client_ip_keys_and_prefixes() {
        let req = req_with_ip("2001:db8::1");
        let head = RequestHead::from_request(&req);
        assert_eq!(
            ClientIpKey::new().extract(&head).unwrap(),
            Key::Ip("2001:db8::1".parse().unwrap())
        );
        let k64 = ClientIpKey::new().ipv6_prefix(64).unwrap();
        assert_eq!(
            k64.extract(&head).unwrap(),
            Key::Net("2001:db8::/64".parse().unwrap())
        );
        assert_eq!(
            k64.extract(&RequestHead::from_request(&req_with_ip("2001:db8::ffff:1")))
                .unwrap(),
            k64.extract(&head).unwrap()
        );
        // IPv4 stays per address under an IPv6 prefix, and mapped addresses are IPv4.
        let v4 = req_with_ip("::ffff:192.0.2.1");
        assert_eq!(
            k64.extract(&RequestHead::from_request(&v4)).unwrap(),
            Key::Ip("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            ClientIpKey::new().ipv6_prefix(129).unwrap_err(),
            InvalidPrefix(129)
        );
        assert_eq!(
            ClientIpKey::new().ipv4_prefix(33).unwrap_err(),
            InvalidPrefix(33)
        );
        let k0 = ClientIpKey::new().ipv4_prefix(0).unwrap();
        assert_eq!(
            k0.extract(&RequestHead::from_request(&req_with_ip("198.51.100.9")))
                .unwrap(),
            Key::Net("0.0.0.0/0".parse().unwrap())
        );
    }

    #[test]
    fn missing_identity_is_a_configuration_error() {
        let req = Request::new(());
        let head = RequestHead::from_request(&req);
        assert_eq!(
            ClientIpKey::new().extract(&head),
            Err(KeyError::Missing("client ip"))
        );
        assert_eq!(
            PrincipalKey.extract(&head),
            Err(KeyError::Missing("principal"))
        );
        assert_eq!(GlobalKey.extract(&head), Ok(Key::Global));
    }

    #[test]
    fn header_keys_are_bounded_and_single() {
        let name = HeaderName::from_static("x-api-key-id");
        let ext = HeaderKey::new(name.clone());
        let mut req = Request::new(());
        assert!(matches!(
            ext.extract(&RequestHead::from_request(&req)),
            Err(KeyError::Missing(_))
        ));
        req.headers_mut()
            .insert(name.clone(), HeaderValue::from_static("k1"));
        assert_eq!(
            ext.extract(&RequestHead::from_request(&req)).unwrap(),
            Key::Header(HeaderValue::from_static("k1"))
        );
        req.headers_mut()
            .append(name.clone(), HeaderValue::from_static("k2"));
        assert!(matches!(
            ext.extract(&RequestHead::from_request(&req)),
            Err(KeyError::Invalid(_))
        ));
        let long = "x".repeat(HeaderKey::MAX_LEN + 1);
        req.headers_mut()
            .insert(name, HeaderValue::from_str(&long).unwrap());
        assert!(matches!(
            ext.extract(&RequestHead::from_request(&req)),
            Err(KeyError::Invalid(_))
        ));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let key = Key::Principal(Principal::new("alice@example.com"));
        assert_eq!(format!("{key:?}"), "Key(principal)");
        assert_eq!(key.heap_size(), "alice@example.com".len());
    }
}
