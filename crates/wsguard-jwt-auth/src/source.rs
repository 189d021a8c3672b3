//! Where a request carries its token, and taking it out of the request.

use http::{
    header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL},
    uri::PathAndQuery,
    HeaderValue, Request, Uri,
};

use crate::{ConfigError, Failure};

/// A place a request may carry its token.
///
/// | source | the client sends | what inner services see |
/// |---|---|---|
/// | [`bearer`](Self::bearer) | `Authorization: Bearer <token>` (RFC 6750 section 2.1) | unchanged |
/// | [`query`](Self::query) | `/ws?token=<token>` (RFC 6750 section 2.3) | the URI without the parameter |
/// | [`protocol`](Self::protocol) | `Sec-WebSocket-Protocol: bearer, <token>` | `Sec-WebSocket-Protocol: bearer` |
/// | [`protocol_prefix`](Self::protocol_prefix) | `Sec-WebSocket-Protocol: <prefix><token>` | the header without that entry |
/// | [`cookie`](Self::cookie) | `Cookie: <name>=<token>` | unchanged |
///
/// Browsers cannot set headers on a WebSocket handshake, so browser clients use the query,
/// the subprotocol list (`new WebSocket(url, ["bearer", token])`) or a cookie. A token in the
/// query ends up in access logs and browser history; the subprotocol list does not.
///
/// The layer takes the token out of the query and the subprotocol list before any inner
/// service runs, whatever the outcome, so neither the application nor its logs see it, and
/// the token can never be echoed back as the selected subprotocol. The server still has to
/// select the marker (`bearer`) for browsers that offered one, for example with
/// `GuardedUpgrade::protocols(["bearer"])`: Chromium fails a handshake that offered
/// subprotocols and got none selected.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSource {
    kind: SourceKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SourceKind {
    Bearer,
    Query(Box<str>),
    Protocol(Box<str>),
    ProtocolPrefix(Box<str>),
    Cookie(Box<str>),
}

impl TokenSource {
    /// `Authorization: Bearer <token>`; the scheme is matched case-insensitively. Other
    /// schemes (`Basic`, ...) are ignored.
    pub const fn bearer() -> Self {
        Self {
            kind: SourceKind::Bearer,
        }
    }

    /// The query parameter `name` (such as `token` or `access_token`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenSource`] for an empty name or one with `&`, `=`, `#`, `%`,
    /// `+` or characters outside visible ASCII.
    pub fn query(name: &str) -> Result<Self, ConfigError> {
        let bad = |c: u8| !c.is_ascii_graphic() || matches!(c, b'&' | b'=' | b'#' | b'%' | b'+');
        check_name(
            name,
            bad,
            "a query parameter name needs plain visible ASCII",
        )?;
        Ok(Self {
            kind: SourceKind::Query(name.into()),
        })
    }

    /// The subprotocol list, where the client offers the `marker` (such as `bearer`) followed
    /// by the token: `Sec-WebSocket-Protocol: bearer, <token>`. The marker stays in the list,
    /// the token is removed.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenSource`] when `marker` is not a token (RFC 9110 section
    /// 5.6.2), which a subprotocol must be.
    pub fn protocol(marker: &str) -> Result<Self, ConfigError> {
        check_name(
            marker,
            |c| !is_tchar(c),
            "a subprotocol must be an HTTP token",
        )?;
        Ok(Self {
            kind: SourceKind::Protocol(marker.into()),
        })
    }

    /// The subprotocol list, where the client offers one entry made of `prefix` and the
    /// token, such as `base64url.bearer.authorization.k8s.io.<token>`. The entry is removed.
    ///
    /// # Errors
    ///
    /// As [`TokenSource::protocol`].
    pub fn protocol_prefix(prefix: &str) -> Result<Self, ConfigError> {
        check_name(
            prefix,
            |c| !is_tchar(c),
            "a subprotocol must be an HTTP token",
        )?;
        Ok(Self {
            kind: SourceKind::ProtocolPrefix(prefix.into()),
        })
    }

    /// The cookie `name`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenSource`] when `name` is not a token (RFC 6265 section 4.1.1).
    pub fn cookie(name: &str) -> Result<Self, ConfigError> {
        check_name(
            name,
            |c| !is_tchar(c),
            "a cookie name must be an HTTP token",
        )?;
        Ok(Self {
            kind: SourceKind::Cookie(name.into()),
        })
    }

    /// The kind of source, for logs: `authorization`, `query`, `protocol` or `cookie`.
    pub const fn kind(&self) -> &'static str {
        match self.kind {
            SourceKind::Bearer => "authorization",
            SourceKind::Query(_) => "query",
            SourceKind::Protocol(_) | SourceKind::ProtocolPrefix(_) => "protocol",
            SourceKind::Cookie(_) => "cookie",
        }
    }
}

fn check_name(
    name: &str,
    bad: impl Fn(u8) -> bool,
    reason: &'static str,
) -> Result<(), ConfigError> {
    if name.is_empty() || name.bytes().any(bad) {
        return Err(ConfigError::InvalidTokenSource {
            name: name.to_owned(),
            reason,
        });
    }
    Ok(())
}

/// `tchar` of RFC 9110 section 5.6.2.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// The one token of a request, as it was found.
#[derive(Debug)]
pub(crate) struct Extracted {
    pub(crate) token: String,
    pub(crate) source: &'static str,
}

/// What went wrong while extracting, and from which source (when one token was found).
pub(crate) type ExtractError = (Failure, Option<&'static str>);

/// Collects the tokens found: how many, and a copy of the first.
struct Found {
    count: usize,
    first: Option<(Result<String, Failure>, &'static str)>,
    max_len: usize,
}

impl Found {
    fn add(&mut self, token: &[u8], source: &'static str) {
        self.count += 1;
        if self.first.is_some() {
            return;
        }
        // The length is checked before anything else looks at the token.
        let token = if token.len() > self.max_len {
            Err(Failure::TooLong)
        } else {
            std::str::from_utf8(token)
                .map(str::to_owned)
                .map_err(|_| Failure::Malformed)
        };
        self.first = Some((token, source));
    }
}

/// Finds the request's token in `sources`, removing it from the query and the subprotocol
/// list on the way.
///
/// # Errors
///
/// [`Failure::Missing`] without a token, [`Failure::MultipleTokens`] with more than one,
/// [`Failure::TooLong`] or [`Failure::Malformed`] for the one found.
pub(crate) fn extract<B>(
    req: &mut Request<B>,
    sources: &[TokenSource],
    max_len: usize,
) -> Result<Extracted, ExtractError> {
    let mut found = Found {
        count: 0,
        first: None,
        max_len,
    };
    for source in sources {
        let kind = source.kind();
        match &source.kind {
            SourceKind::Bearer => {
                for value in req.headers().get_all(AUTHORIZATION) {
                    if let Some(token) = bearer_token(value.as_bytes()) {
                        found.add(token, kind);
                    }
                }
            }
            SourceKind::Cookie(name) => {
                for value in req.headers().get_all(COOKIE) {
                    for token in cookie_values(value.as_bytes(), name.as_bytes()) {
                        found.add(token, kind);
                    }
                }
            }
            SourceKind::Query(name) => {
                let Some(query) = req.uri().query() else {
                    continue;
                };
                let mut removed = false;
                let rest = strip_query(query, name, |token| {
                    removed = true;
                    found.add(&percent_decode(token).unwrap_or_default(), kind);
                });
                if removed && set_query(req, &rest).is_err() {
                    return Err((Failure::Malformed, Some(kind)));
                }
            }
            SourceKind::Protocol(marker) => {
                rewrite_protocols(req, |offered, kept| {
                    let mut taken = Vec::new();
                    let mut entries = offered.iter();
                    while let Some(&entry) = entries.next() {
                        kept.push(entry);
                        if entry == marker.as_bytes() {
                            if let Some(&token) = entries.next() {
                                found.add(token, kind);
                                taken.push(token);
                            }
                        }
                    }
                    // A copy of a token elsewhere in the list is no protocol either: it never
                    // reaches the application.
                    kept.retain(|entry| !taken.contains(entry));
                });
            }
            SourceKind::ProtocolPrefix(prefix) => {
                rewrite_protocols(req, |offered, kept| {
                    for &entry in offered {
                        match entry.strip_prefix(prefix.as_bytes()) {
                            Some(token) => found.add(token, kind),
                            None => kept.push(entry),
                        }
                    }
                });
            }
        }
    }
    match (found.count, found.first) {
        (1, Some((Ok(token), source))) => Ok(Extracted { token, source }),
        (1, Some((Err(failure), source))) => Err((failure, Some(source))),
        (0, _) | (_, None) => Err((Failure::Missing, None)),
        _ => Err((Failure::MultipleTokens, None)),
    }
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, token) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (value.get(..space)?, value.get(space..)?.trim_ascii()),
        None => (value, &[][..]),
    };
    scheme.eq_ignore_ascii_case(b"bearer").then_some(token)
}

/// The values of the cookies named `name` in one `Cookie` header (RFC 6265 section 5.4),
/// without surrounding double quotes.
fn cookie_values<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    header.split(|&b| b == b';').filter_map(move |pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (key, value) = (pair.get(..eq)?, pair.get(eq + 1..)?);
        if key.trim_ascii() != name {
            return None;
        }
        let value = value.trim_ascii();
        Some(
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value),
        )
    })
}

/// `query` without the parameters named `name` (compared after percent-decoding), each of
/// whose values is given to `on_token`. Every other parameter is kept byte for byte.
fn strip_query(query: &str, name: &str, mut on_token: impl FnMut(&[u8])) -> String {
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let matches = if key.contains('%') {
            percent_decode(key.as_bytes()).is_some_and(|key| key == name.as_bytes())
        } else {
            key == name
        };
        if matches {
            on_token(value.as_bytes());
        } else {
            kept.push(pair);
        }
    }
    kept.join("&")
}

/// Percent-decodes `input`; `None` for a malformed escape.
fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex(*bytes.next()?)?;
            let lo = hex(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Replaces the request's query with `query` (none if empty).
fn set_query<B>(req: &mut Request<B>, query: &str) -> Result<(), http::Error> {
    let mut parts = req.uri().clone().into_parts();
    let path = parts
        .path_and_query
        .as_ref()
        .map_or("/", PathAndQuery::path);
    let path_and_query = if query.is_empty() {
        PathAndQuery::try_from(path)?
    } else {
        PathAndQuery::try_from(format!("{path}?{query}"))?
    };
    parts.path_and_query = Some(path_and_query);
    *req.uri_mut() = Uri::from_parts(parts)?;
    Ok(())
}

/// Lets `scan` split the offered subprotocols into those kept and tokens, and writes the kept
/// ones back as one header if anything was taken out.
fn rewrite_protocols<B>(
    req: &mut Request<B>,
    scan: impl for<'a> FnOnce(&[&'a [u8]], &mut Vec<&'a [u8]>),
) {
    let headers = req.headers();
    if !headers.contains_key(SEC_WEBSOCKET_PROTOCOL) {
        return;
    }
    let offered: Vec<&[u8]> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|entry| !entry.is_empty())
        .collect();
    let mut kept = Vec::with_capacity(offered.len());
    scan(&offered, &mut kept);
    if kept.len() == offered.len() {
        return;
    }
    let value = (!kept.is_empty())
        .then(|| HeaderValue::from_bytes(&kept.join(&b", "[..])).ok())
        .flatten();
    let headers = req.headers_mut();
    headers.remove(SEC_WEBSOCKET_PROTOCOL);
    if let Some(value) = value {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap()
    }

    fn all() -> Vec<TokenSource> {
        vec![
            TokenSource::bearer(),
            TokenSource::query("token").unwrap(),
            TokenSource::protocol("bearer").unwrap(),
            TokenSource::protocol_prefix("access_token.").unwrap(),
            TokenSource::cookie("jwt").unwrap(),
        ]
    }

    #[test]
    fn finds_one_token_in_each_source() {
        // (uri, headers, token, source, uri after, protocols after)
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            &'static str,
            &'static str,
            &'static str,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            // RFC 6750 section 2.1.
            (
                "/ws",
                &[("authorization", "Bearer a.b.c")],
                "a.b.c",
                "authorization",
                "/ws",
                None,
            ),
            (
                "/ws",
                &[("authorization", "bearer   a.b.c  ")],
                "a.b.c",
                "authorization",
                "/ws",
                None,
            ),
            // RFC 6750 section 2.3, other parameters kept byte for byte.
            ("/ws?token=a.b.c", &[], "a.b.c", "query", "/ws", None),
            (
                "/ws?x=1&token=a.b.c&y=%20+2",
                &[],
                "a.b.c",
                "query",
                "/ws?x=1&y=%20+2",
                None,
            ),
            ("/ws?token=a.b.c&y", &[], "a.b.c", "query", "/ws?y", None),
            (
                "/ws?%74oken=a.b.c&a=",
                &[],
                "a.b.c",
                "query",
                "/ws?a=",
                None,
            ),
            ("/ws?token=a%2Eb.c", &[], "a.b.c", "query", "/ws", None),
            (
                "/ws?tokens=1&token=a.b.c",
                &[],
                "a.b.c",
                "query",
                "/ws?tokens=1",
                None,
            ),
            // The browser way: `new WebSocket(url, ["bearer", token])`.
            (
                "/ws",
                &[("sec-websocket-protocol", "bearer, a.b.c")],
                "a.b.c",
                "protocol",
                "/ws",
                Some("bearer"),
            ),
            (
                "/ws",
                &[("sec-websocket-protocol", "chat.v1, bearer,a.b.c, json")],
                "a.b.c",
                "protocol",
                "/ws",
                Some("chat.v1, bearer, json"),
            ),
            (
                "/ws",
                &[
                    ("sec-websocket-protocol", "chat"),
                    ("sec-websocket-protocol", "bearer, a.b.c"),
                ],
                "a.b.c",
                "protocol",
                "/ws",
                Some("chat, bearer"),
            ),
            // The Kubernetes way.
            (
                "/ws",
                &[("sec-websocket-protocol", "access_token.a.b.c")],
                "a.b.c",
                "protocol",
                "/ws",
                None,
            ),
            (
                "/ws",
                &[("sec-websocket-protocol", "chat, access_token.a.b.c")],
                "a.b.c",
                "protocol",
                "/ws",
                Some("chat"),
            ),
            // RFC 6265 section 5.4.
            (
                "/ws",
                &[("cookie", "a=1; jwt=a.b.c; b=2")],
                "a.b.c",
                "cookie",
                "/ws",
                None,
            ),
            (
                "/ws",
                &[("cookie", "jwt=\"a.b.c\"")],
                "a.b.c",
                "cookie",
                "/ws",
                None,
            ),
        ];
        for (uri, headers, token, source, uri_after, protocols_after) in cases {
            let mut req = request(uri, headers);
            let found = extract(&mut req, &all(), 8192)
                .unwrap_or_else(|e| panic!("{uri} {headers:?}: {e:?}"));
            assert_eq!(found.token, *token, "{uri} {headers:?}");
            assert_eq!(found.source, *source, "{uri} {headers:?}");
            assert_eq!(req.uri(), *uri_after, "{uri} {headers:?}");
            assert_eq!(
                req.headers()
                    .get(SEC_WEBSOCKET_PROTOCOL)
                    .map(|v| v.to_str().unwrap()),
                *protocols_after,
                "{uri} {headers:?}"
            );
        }
    }

    #[test]
    fn missing_multiple_and_too_long() {
        // (uri, headers, failure)
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            Failure,
        );
        let cases: &[Case] = &[
            ("/ws", &[], Failure::Missing),
            (
                "/ws",
                &[("authorization", "Basic dXNlcjpwYXNz")],
                Failure::Missing,
            ),
            ("/ws?tokens=a.b.c", &[], Failure::Missing),
            (
                "/ws",
                &[("sec-websocket-protocol", "chat, bearer")],
                Failure::Missing,
            ),
            ("/ws", &[("cookie", "jwtx=a.b.c")], Failure::Missing),
            // RFC 6750 section 3.1: more than one method is an invalid request.
            (
                "/ws?token=a.b.c",
                &[("authorization", "Bearer a.b.c")],
                Failure::MultipleTokens,
            ),
            ("/ws?token=a.b.c&token=a.b.c", &[], Failure::MultipleTokens),
            (
                "/ws",
                &[
                    ("authorization", "Bearer a.b.c"),
                    ("authorization", "Bearer d.e.f"),
                ],
                Failure::MultipleTokens,
            ),
            (
                "/ws",
                &[("sec-websocket-protocol", "bearer, a.b.c, bearer, d.e.f")],
                Failure::MultipleTokens,
            ),
            (
                "/ws",
                &[("cookie", "jwt=a.b.c; jwt=d.e.f")],
                Failure::MultipleTokens,
            ),
            (
                "/ws",
                &[
                    ("cookie", "jwt=a.b.c"),
                    ("sec-websocket-protocol", "access_token.x.y.z"),
                ],
                Failure::MultipleTokens,
            ),
            ("/ws?token=0123456789abcdefX", &[], Failure::TooLong),
        ];
        for (uri, headers, failure) in cases {
            let mut req = request(uri, headers);
            let err = extract(&mut req, &all(), 16).unwrap_err();
            assert_eq!(err.0, *failure, "{uri} {headers:?}");
            if *failure == Failure::Missing {
                continue;
            }
            // Every token found is taken out, even from a refused request.
            assert!(!req.uri().to_string().contains("a.b.c"), "{uri}");
            let protocols = req.headers().get(SEC_WEBSOCKET_PROTOCOL);
            assert!(protocols.is_none_or(|p| !p.to_str().unwrap().contains("a.b.c")));
        }
    }

    #[test]
    fn a_token_offered_twice_as_a_protocol_never_reaches_the_application() {
        // `bearer, T, T`: the marker's token is taken; a copy elsewhere in the list is no
        // protocol either, and must not stay in the header the application (and its logs)
        // see.
        let mut req = request(
            "/ws",
            &[("sec-websocket-protocol", "bearer, a.b.c, chat, a.b.c")],
        );
        let found = extract(&mut req, &all(), 16).unwrap();
        assert_eq!(found.token, "a.b.c");
        assert_eq!(req.headers()[SEC_WEBSOCKET_PROTOCOL], "bearer, chat");
    }

    #[test]
    fn a_malformed_escape_is_an_empty_token_and_still_removed() {
        let mut req = request("/ws?a=1&token=%zz", &[]);
        let found = extract(&mut req, &all(), 16).unwrap();
        assert_eq!(found.token, "");
        assert_eq!(req.uri(), "/ws?a=1");
    }

    #[test]
    fn invalid_source_names() {
        assert!(TokenSource::query("").is_err());
        assert!(TokenSource::query("a&b").is_err());
        assert!(TokenSource::query("access_token").is_ok());
        assert!(TokenSource::protocol("bearer token").is_err());
        assert!(TokenSource::protocol("a,b").is_err());
        assert!(TokenSource::cookie("a=b").is_err());
        assert!(TokenSource::protocol_prefix("base64url.bearer.authorization.k8s.io.").is_ok());
    }
}
