//! Parsed, normalised origins (RFC 6454) and the host rules every matcher of this crate
//! shares.

use std::{
    borrow::Cow,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use http::{header, HeaderMap};

/// The longest `Origin` this crate parses, in bytes.
///
/// Longer values are refused with [`ParseOriginError::TooLong`]. A DNS name has at most 253
/// characters, so every origin a browser can actually have loaded (scheme, `://`, host and
/// port) fits with room to spare; the cap bounds the work done on hostile headers and the
/// size of what is logged.
pub const MAX_ORIGIN_LEN: usize = 512;

/// A parsed tuple origin (scheme, host, port), normalised as RFC 6454 section 4 and 6.2
/// describe.
///
/// - The scheme and the host are ASCII lowercase.
/// - The port is `None` when it is absent or the scheme's default (80 for `http` and `ws`,
///   443 for `https` and `wss`), so `https://example.com:443` and `https://example.com` are
///   the same origin.
/// - Hosts are ASCII only: browsers send internationalised names as A-labels
///   (`xn--bcher-kva.example`), so a raw non-ASCII value is refused rather than converted.
///   `xn--` labels are compared as they are; they are not decoded.
/// - Domain names may hold letters, digits, `-`, `_` and `.` (no empty label; a single
///   trailing dot is kept, as the URL Standard keeps it, so `example.com.` is a different
///   origin from `example.com`).
/// - A host that ends in a number must be a canonical dotted-quad IPv4 address
///   (`127.0.0.1`; not `127.1` or `0x7f.0.0.1`, forms a browser never sends).
/// - IPv6 literals keep their brackets and are rewritten in the canonical form of RFC 5952
///   and the URL Standard (`[2001:db8::1]`, IPv4-mapped addresses in hex:
///   `[::ffff:7f00:1]`); zone identifiers are refused.
///
/// The opaque origin `null` is not a tuple origin: [`Origin::parse`] refuses it with
/// [`ParseOriginError::Opaque`].
///
/// ```
/// use wsguard_origin::Origin;
///
/// let origin = Origin::parse("HTTPS://Chat.Example.COM:443").unwrap();
/// assert_eq!(origin.scheme(), "https");
/// assert_eq!(origin.host(), "chat.example.com");
/// assert_eq!(origin.port(), None);
/// assert_eq!(origin.to_string(), "https://chat.example.com");
///
/// let local = Origin::parse("http://[0:0::1]:3000").unwrap();
/// assert_eq!(local.host(), "[::1]");
/// assert_eq!(local.port(), Some(3000));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Box<str>,
    host: Box<str>,
    port: Option<u16>,
}

impl Origin {
    /// Parses and normalises the ASCII serialisation of an origin, `scheme "://" host [":"
    /// port]`, as sent in an `Origin` header.
    ///
    /// # Errors
    ///
    /// [`ParseOriginError`] when `input` is not an origin: `null`, a path, query, fragment or
    /// userinfo, a bad host or port, non-ASCII characters, or more than [`MAX_ORIGIN_LEN`]
    /// bytes.
    pub fn parse(input: &str) -> Result<Self, ParseOriginError> {
        parse_origin(input).map(OriginRef::into_owned)
    }

    /// Reads the `Origin` header of a request.
    ///
    /// Returns `Ok(None)` when there is no `Origin` header.
    ///
    /// # Errors
    ///
    /// [`ParseOriginError::Multiple`] when the header appears more than once (a browser sends
    /// exactly one), [`ParseOriginError::NonAscii`] when it holds bytes that are not visible
    /// ASCII, [`ParseOriginError::Opaque`] for `null`, and the errors of [`Origin::parse`].
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ParseOriginError> {
        match header_origin(headers) {
            HeaderOrigin::Absent => Ok(None),
            HeaderOrigin::Null => Err(ParseOriginError::Opaque),
            HeaderOrigin::Value(value) => Self::parse(value).map(Some),
            HeaderOrigin::Invalid(err) => Err(err),
        }
    }

    /// The scheme, ASCII lowercase (`https`).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, ASCII lowercase with A-labels: a domain name (`xn--bcher-kva.example`), a
    /// dotted-quad IPv4 address, or a bracketed IPv6 literal in canonical form (`[::1]`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, or `None` when it is absent or the scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port the origin's server listens on: [`port`](Self::port), or the scheme's
    /// default (80 for `http` and `ws`, 443 for `https` and `wss`); `None` for a scheme
    /// without a known default and no explicit port.
    pub fn port_or_default(&self) -> Option<u16> {
        self.port.or_else(|| default_port(&self.scheme))
    }

    pub(crate) fn borrowed(&self) -> OriginRef<'_> {
        OriginRef {
            scheme: Cow::Borrowed(&self.scheme),
            host: Cow::Borrowed(&self.host),
            port: self.port,
        }
    }
}

impl fmt::Display for Origin {
    /// The ASCII serialisation of RFC 6454 section 6.2, which [`Origin::parse`] reads back
    /// unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_origin(f, &self.scheme, &self.host, self.port)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

impl FromStr for Origin {
    type Err = ParseOriginError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Why a string is not an origin. See [`Origin::parse`].
///
/// The messages describe the problem without repeating the input, so they are safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseOriginError {
    /// The value is empty.
    Empty,
    /// The value is longer than [`MAX_ORIGIN_LEN`].
    TooLong,
    /// The value holds non-ASCII (or, in a header, non-visible) characters. Browsers send
    /// internationalised hosts as A-labels.
    NonAscii,
    /// The opaque origin `null` (sandboxed frames, `file:` pages, some redirects).
    Opaque,
    /// There is no `scheme://`.
    MissingScheme,
    /// The scheme is empty or holds characters RFC 3986 does not allow in a scheme.
    InvalidScheme,
    /// Userinfo (`user@`) is not part of an origin.
    Userinfo,
    /// A path is not part of an origin.
    Path,
    /// A query is not part of an origin.
    Query,
    /// A fragment is not part of an origin.
    Fragment,
    /// The host is empty.
    EmptyHost,
    /// The host is neither a domain name, a canonical IPv4 address nor an IPv6 literal.
    InvalidHost,
    /// The port is empty, not a number or larger than 65535.
    InvalidPort,
    /// The `Origin` header appears more than once.
    Multiple,
}

impl ParseOriginError {
    /// A stable `snake_case` name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong => "too_long",
            Self::NonAscii => "non_ascii",
            Self::Opaque => "opaque",
            Self::MissingScheme => "missing_scheme",
            Self::InvalidScheme => "invalid_scheme",
            Self::Userinfo => "userinfo",
            Self::Path => "path",
            Self::Query => "query",
            Self::Fragment => "fragment",
            Self::EmptyHost => "empty_host",
            Self::InvalidHost => "invalid_host",
            Self::InvalidPort => "invalid_port",
            Self::Multiple => "multiple",
        }
    }
}

impl fmt::Display for ParseOriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty origin",
            Self::TooLong => "origin too long",
            Self::NonAscii => {
                "non-ASCII characters in origin (internationalised hosts are sent as A-labels)"
            }
            Self::Opaque => "opaque origin `null`",
            Self::MissingScheme => "missing `scheme://`",
            Self::InvalidScheme => "invalid scheme",
            Self::Userinfo => "userinfo is not part of an origin",
            Self::Path => "a path is not part of an origin",
            Self::Query => "a query is not part of an origin",
            Self::Fragment => "a fragment is not part of an origin",
            Self::EmptyHost => "empty host",
            Self::InvalidHost => "invalid host",
            Self::InvalidPort => "invalid port",
            Self::Multiple => "several Origin headers",
        })
    }
}

impl std::error::Error for ParseOriginError {}

/// A parsed origin that borrows from its input where the input is already normalised, so
/// the request path does not allocate for the usual (lowercase, canonical) values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginRef<'a> {
    pub(crate) scheme: Cow<'a, str>,
    pub(crate) host: Cow<'a, str>,
    pub(crate) port: Option<u16>,
}

impl OriginRef<'_> {
    pub(crate) fn into_owned(self) -> Origin {
        Origin {
            scheme: self.scheme.into_owned().into_boxed_str(),
            host: self.host.into_owned().into_boxed_str(),
            port: self.port,
        }
    }
}

impl fmt::Display for OriginRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_origin(f, &self.scheme, &self.host, self.port)
    }
}

fn write_origin(
    f: &mut fmt::Formatter<'_>,
    scheme: &str,
    host: &str,
    port: Option<u16>,
) -> fmt::Result {
    write!(f, "{scheme}://{host}")?;
    if let Some(port) = port {
        write!(f, ":{port}")?;
    }
    Ok(())
}

/// What a request's `Origin` header holds.
#[derive(Debug)]
pub(crate) enum HeaderOrigin<'a> {
    Absent,
    Null,
    Value(&'a str),
    Invalid(ParseOriginError),
}

pub(crate) fn header_origin(headers: &HeaderMap) -> HeaderOrigin<'_> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let Some(value) = values.next() else {
        return HeaderOrigin::Absent;
    };
    if values.next().is_some() {
        return HeaderOrigin::Invalid(ParseOriginError::Multiple);
    }
    match value.to_str() {
        // RFC 6454 section 7.1: the serialisation is exactly `null`.
        Ok("null") => HeaderOrigin::Null,
        Ok(value) => HeaderOrigin::Value(value),
        Err(_) => HeaderOrigin::Invalid(ParseOriginError::NonAscii),
    }
}

/// The default port of the schemes this crate knows (RFC 6454 section 4 uses the scheme's
/// default port; RFC 7230 and RFC 6455 define these).
pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

pub(crate) fn parse_origin(input: &str) -> Result<OriginRef<'_>, ParseOriginError> {
    if input.is_empty() {
        return Err(ParseOriginError::Empty);
    }
    if input.len() > MAX_ORIGIN_LEN {
        return Err(ParseOriginError::TooLong);
    }
    if !input.is_ascii() {
        return Err(ParseOriginError::NonAscii);
    }
    if input == "null" {
        return Err(ParseOriginError::Opaque);
    }
    let (scheme, rest) = input
        .split_once(':')
        .ok_or(ParseOriginError::MissingScheme)?;
    let rest = rest
        .strip_prefix("//")
        .ok_or(ParseOriginError::MissingScheme)?;
    let scheme = parse_scheme(scheme)?;
    let authority = authority_only(rest)?;
    let (host, port) = split_host_port(authority)?;
    let host = parse_host(host)?.name;
    let port = parse_port(port)?.filter(|&p| Some(p) != default_port(&scheme));
    Ok(OriginRef { scheme, host, port })
}

/// RFC 3986 section 3.1: `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`, lowercased.
pub(crate) fn parse_scheme(scheme: &str) -> Result<Cow<'_, str>, ParseOriginError> {
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if first_ok && rest_ok {
        Ok(lowercase(scheme))
    } else {
        Err(ParseOriginError::InvalidScheme)
    }
}

/// Checks that `rest` (what follows `scheme://`) is an authority and nothing else.
pub(crate) fn authority_only(rest: &str) -> Result<&str, ParseOriginError> {
    let mut userinfo = false;
    for b in rest.bytes() {
        match b {
            b'/' => return Err(ParseOriginError::Path),
            b'?' => return Err(ParseOriginError::Query),
            b'#' => return Err(ParseOriginError::Fragment),
            b'@' => userinfo = true,
            _ => {}
        }
    }
    if userinfo {
        return Err(ParseOriginError::Userinfo);
    }
    Ok(rest)
}

/// Splits `host[:port]` (with `[v6]` literals) into its host and raw port.
pub(crate) fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), ParseOriginError> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or(ParseOriginError::InvalidHost)?;
        let (host, tail) = authority.split_at(end + 1);
        if tail.is_empty() {
            Ok((host, None))
        } else {
            let port = tail
                .strip_prefix(':')
                .ok_or(ParseOriginError::InvalidHost)?;
            Ok((host, Some(port)))
        }
    } else {
        Ok(match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        })
    }
}

/// A normalised host and what kind of host it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host<'a> {
    pub(crate) name: Cow<'a, str>,
    pub(crate) kind: HostKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind {
    Domain,
    Ipv4,
    Ipv6,
}

/// Parses and normalises an ASCII host: a bracketed IPv6 literal, a canonical IPv4 address
/// or a domain name (letters, digits, `-`, `_`, non-empty labels, one optional trailing dot).
pub(crate) fn parse_host(host: &str) -> Result<Host<'_>, ParseOriginError> {
    if host.is_empty() {
        return Err(ParseOriginError::EmptyHost);
    }
    if let Some(literal) = host.strip_prefix('[') {
        let literal = literal
            .strip_suffix(']')
            .ok_or(ParseOriginError::InvalidHost)?;
        // `Ipv6Addr` refuses zone identifiers (`%25eth0`), which browsers do not support.
        let addr = Ipv6Addr::from_str(literal).map_err(|_| ParseOriginError::InvalidHost)?;
        let canonical = bracketed_ipv6(addr);
        let name = if canonical == host {
            Cow::Borrowed(host)
        } else {
            Cow::Owned(canonical)
        };
        return Ok(Host {
            name,
            kind: HostKind::Ipv6,
        });
    }
    // One pass: allowed characters, no empty label (one trailing dot is allowed), case.
    let mut label_len = 0usize;
    let mut upper = false;
    for b in host.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label_len += 1,
            b'A'..=b'Z' => {
                upper = true;
                label_len += 1;
            }
            b'.' if label_len > 0 => label_len = 0,
            _ => return Err(ParseOriginError::InvalidHost),
        }
    }
    let without_root = host.strip_suffix('.').unwrap_or(host);
    if ends_in_number(without_root) {
        // The URL Standard parses such a host as IPv4 and serialises it as a dotted quad;
        // anything else is not what a browser sends.
        let canonical = Ipv4Addr::from_str(host)
            .ok()
            .is_some_and(|addr| addr.to_string() == host);
        return if canonical {
            Ok(Host {
                name: Cow::Borrowed(host),
                kind: HostKind::Ipv4,
            })
        } else {
            Err(ParseOriginError::InvalidHost)
        };
    }
    let name = if upper {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    Ok(Host {
        name,
        kind: HostKind::Domain,
    })
}

/// The URL Standard's "ends in a number": the last label is decimal digits or `0x` hex.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x").or_else(|| last.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// Parses a port: decimal digits (leading zeros allowed, as in the URL Standard), at most
/// 65535.
pub(crate) fn parse_port(port: Option<&str>) -> Result<Option<u16>, ParseOriginError> {
    let Some(port) = port else {
        return Ok(None);
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseOriginError::InvalidPort);
    }
    let significant = port.trim_start_matches('0');
    if significant.len() > 5 {
        return Err(ParseOriginError::InvalidPort);
    }
    if significant.is_empty() {
        return Ok(Some(0));
    }
    significant
        .parse::<u16>()
        .map(Some)
        .map_err(|_| ParseOriginError::InvalidPort)
}

/// The URL Standard's IPv6 serialiser (the compression rules of RFC 5952 section 4, and
/// IPv4-mapped addresses in hex), in brackets.
pub(crate) fn bracketed_ipv6(addr: Ipv6Addr) -> String {
    use fmt::Write;

    let segments = addr.segments();
    // The first longest run of at least two zero pieces is compressed.
    let mut best: Option<(usize, usize)> = None;
    let mut run: Option<(usize, usize)> = None;
    for (i, &segment) in segments.iter().enumerate() {
        if segment == 0 {
            let (start, len) = run.map_or((i, 1), |(start, len)| (start, len + 1));
            run = Some((start, len));
            if len >= 2 && best.is_none_or(|(_, best_len)| len > best_len) {
                best = Some((start, len));
            }
        } else {
            run = None;
        }
    }
    let mut out = String::with_capacity(41);
    out.push('[');
    let mut first = true;
    for (index, &segment) in segments.iter().enumerate() {
        if let Some((start, len)) = best {
            if index == start {
                out.push_str("::");
                first = true;
            }
            if (start..start + len).contains(&index) {
                continue;
            }
        }
        if !first {
            out.push(':');
        }
        let _ = write!(out, "{segment:x}");
        first = false;
    }
    out.push(']');
    out
}

/// `s` in ASCII lowercase, borrowed when it already is.
pub(crate) fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_serialisation_follows_the_url_standard() {
        // (input, canonical) pairs: RFC 5952 section 4 and the URL Standard's serialiser.
        let cases = [
            // RFC 5952 4.1: leading zeros are suppressed.
            ("2001:0db8::0001", "[2001:db8::1]"),
            // RFC 5952 4.2.1: "::" shortens as much as possible.
            ("2001:db8:0:0:0:0:2:1", "[2001:db8::2:1]"),
            // RFC 5952 4.2.2: "::" is not used for one 16-bit 0 field.
            ("2001:db8:0:1:1:1:1:1", "[2001:db8:0:1:1:1:1:1]"),
            // RFC 5952 4.2.3: the longest run is shortened; on a tie, the first.
            ("2001:0:0:1:0:0:0:1", "[2001:0:0:1::1]"),
            ("2001:db8:0:0:1:0:0:1", "[2001:db8::1:0:0:1]"),
            // RFC 5952 4.3: lowercase.
            ("2001:DB8::AbCd", "[2001:db8::abcd]"),
            // URL Standard: IPv4-mapped addresses are serialised in hex.
            ("::ffff:127.0.0.1", "[::ffff:7f00:1]"),
            ("::", "[::]"),
            ("::1", "[::1]"),
            ("1::", "[1::]"),
            ("1:2:3:4:5:6:7:8", "[1:2:3:4:5:6:7:8]"),
        ];
        for (input, expected) in cases {
            let addr: Ipv6Addr = input.parse().unwrap();
            assert_eq!(bracketed_ipv6(addr), expected, "{input}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port(None), Ok(None));
        assert_eq!(parse_port(Some("0")), Ok(Some(0)));
        assert_eq!(parse_port(Some("00080")), Ok(Some(80)));
        assert_eq!(parse_port(Some("65535")), Ok(Some(65535)));
        assert_eq!(
            parse_port(Some("0000000000000000000008080")),
            Ok(Some(8080))
        );
        for bad in [
            "", "65536", "99999", "123456", "-1", "+80", "8o", " 80", "80 ",
        ] {
            assert_eq!(
                parse_port(Some(bad)),
                Err(ParseOriginError::InvalidPort),
                "{bad:?}"
            );
        }
    }
}
