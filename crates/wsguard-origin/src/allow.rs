//! The allow-list: every rule that lets an origin through, in one type.

use std::{borrow::Cow, collections::HashMap, fmt};

use crate::{
    origin::{
        authority_only, default_port, parse_host, parse_port, parse_scheme, split_host_port,
        HostKind, OriginRef,
    },
    ConfigError, Origin, ParseOriginError, MAX_ORIGIN_LEN,
};

/// The origins a [`OriginGuardLayer`](crate::OriginGuardLayer) lets through.
///
/// Patterns are added with [`add_origin`](Self::add_origin) and checked when they are added:
///
/// | pattern | allows |
/// |---|---|
/// | `https://app.example.com` | exactly that origin (and `https://app.example.com:443`) |
/// | `https://*.example.com` | `https://a.example.com`, `https://a.b.example.com`; never `https://example.com`, `https://evilexample.com` or `https://a.example.com.evil.com` |
/// | `http://localhost:{3000,8080}` | `http://localhost:3000` and `http://localhost:8080` |
/// | `http://localhost:*` | `http://localhost` on any port |
/// | `https://*.example.com:{443,8443}` | subdomains on either port |
/// | `https://bücher.example` | `https://xn--bcher-kva.example` (converted to A-labels) |
/// | `http://[::1]:3000` | the IPv6 loopback on port 3000 |
/// | `null` | the opaque origin `null` (see below) |
///
/// Patterns are normalised like [`Origin`]s: scheme and host are lowercased, default ports
/// (80 for `http`, 443 for `https`) are dropped, IPv6 literals are written canonically, and
/// Unicode hosts are converted to A-labels with UTS 46 processing as browsers do (so
/// `https://faß.de` becomes `https://xn--fa-hia.de`, not `https://fass.de`). Surrounding
/// whitespace and a single trailing `/` (as in a URL copied from the address bar) are
/// ignored; any other path, a query, a fragment or userinfo is a [`ConfigError`].
///
/// Matching is exact on the normalised values: no prefix or suffix matching other than the
/// explicit `*.` wildcard, which stands for one or more whole labels. A wildcard over a
/// public suffix (`https://*.co.uk`) is accepted and allows everyone under it: the Public
/// Suffix List is not consulted.
///
/// `null` is the origin of sandboxed iframes, `file:` pages and some cross-origin redirects.
/// Any site can produce it with `<iframe sandbox>`, so listing `null` lets every site in;
/// it is denied unless listed.
///
/// [`allow_same_host`](Self::allow_same_host) adds the same-host rule, which the layer
/// evaluates against the request (see the [crate docs](crate#same-host-mode)).
///
/// ```
/// use wsguard_origin::{AllowList, Origin};
///
/// let allow = AllowList::new()
///     .add_origin("https://app.example.com")?
///     .add_origin("https://*.example.com")?
///     .add_origins(["http://localhost:{3000,8080}", "http://[::1]:3000"])?;
///
/// let allowed = |o: &str| allow.allows(&Origin::parse(o).unwrap());
/// assert!(allowed("https://app.example.com:443"));
/// assert!(allowed("https://a.b.example.com"));
/// assert!(!allowed("https://example.com"));
/// assert!(!allowed("https://evilexample.com"));
/// assert!(allowed("http://localhost:8080"));
/// assert!(!allowed("http://localhost:8081"));
/// # Ok::<(), wsguard_origin::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct AllowList {
    /// Exact and port-list rules, by host.
    exact: HashMap<Box<str>, Vec<SchemePorts>>,
    wildcards: Vec<Wildcard>,
    null: bool,
    same_host: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SchemePorts {
    scheme: Box<str>,
    ports: Ports,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Wildcard {
    scheme: Box<str>,
    /// The domain with a leading dot: `.example.com`.
    suffix: Box<str>,
    ports: Ports,
}

/// The ports a rule allows; `None` stands for the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ports {
    List(Box<[Option<u16>]>),
    Any,
}

impl Ports {
    fn matches(&self, port: Option<u16>) -> bool {
        match self {
            Self::List(ports) => ports.contains(&port),
            Self::Any => true,
        }
    }
}

impl AllowList {
    /// An empty list: it allows nothing (requests without `Origin` are a separate setting of
    /// the layer).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an origin pattern (see the [type docs](Self) for the syntax).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the pattern is not an origin, uses `*` other than as
    /// `scheme://*.domain`, has a malformed port list, uses a `ws`/`wss` scheme, or holds a
    /// host UTS 46 refuses.
    pub fn add_origin(mut self, pattern: &str) -> Result<Self, ConfigError> {
        match parse_pattern(pattern)? {
            Rule::Null => self.null = true,
            Rule::Exact {
                scheme,
                host,
                ports,
            } => {
                let rules = self.exact.entry(host).or_default();
                let rule = SchemePorts { scheme, ports };
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
            Rule::Wildcard(wildcard) => {
                if !self.wildcards.contains(&wildcard) {
                    self.wildcards.push(wildcard);
                }
            }
        }
        Ok(self)
    }

    /// Adds several origin patterns, as [`add_origin`](Self::add_origin) does.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] of [`add_origin`](Self::add_origin).
    pub fn add_origins<I, S>(self, patterns: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        patterns
            .into_iter()
            .try_fold(self, |list, pattern| list.add_origin(pattern.as_ref()))
    }

    /// Also allows an origin whose host and port are the request's own `Host` (or HTTP/2
    /// `:authority`), whatever the patterns say. See the [crate docs](crate#same-host-mode).
    #[must_use]
    pub fn allow_same_host(mut self, allow: bool) -> Self {
        self.same_host = allow;
        self
    }

    /// Whether `origin` matches one of the patterns (the same-host rule, which needs the
    /// request, is not evaluated here).
    pub fn allows(&self, origin: &Origin) -> bool {
        self.allows_ref(&origin.borrowed())
    }

    /// Whether the opaque origin `null` was listed.
    pub fn allows_null(&self) -> bool {
        self.null
    }

    /// Whether the same-host rule is on.
    pub fn allows_same_host(&self) -> bool {
        self.same_host
    }

    pub(crate) fn allows_ref(&self, origin: &OriginRef<'_>) -> bool {
        let scheme = &*origin.scheme;
        let exact = self.exact.get(&*origin.host).is_some_and(|rules| {
            rules
                .iter()
                .any(|rule| *rule.scheme == *scheme && rule.ports.matches(origin.port))
        });
        exact
            || self.wildcards.iter().any(|rule| {
                *rule.scheme == *scheme
                    && rule.ports.matches(origin.port)
                    && origin.host.len() > rule.suffix.len()
                    && origin.host.ends_with(&*rule.suffix)
            })
    }

    /// The same-host rule: `origin` (an `http` or `https` origin) names the host and port of
    /// `authority`, the request's `Host` or `:authority`.
    pub(crate) fn allows_for_authority(&self, origin: &OriginRef<'_>, authority: &str) -> bool {
        if !self.same_host || !matches!(&*origin.scheme, "http" | "https") {
            return false;
        }
        let Ok((host, port)) = split_host_port(authority) else {
            return false;
        };
        let (Ok(host), Ok(port)) = (parse_host(host), parse_port(port)) else {
            return false;
        };
        if host.name != origin.host {
            return false;
        }
        match port {
            // No port in `Host`: the default port of the scheme the client used, which a
            // server behind TLS termination cannot know; the origin must use its default.
            None => origin.port.is_none(),
            Some(port) => origin.port.or_else(|| default_port(&origin.scheme)) == Some(port),
        }
    }
}

impl fmt::Debug for AllowList {
    /// Lists the normalised patterns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut patterns: Vec<String> = self
            .exact
            .iter()
            .flat_map(|(host, rules)| {
                rules
                    .iter()
                    .map(move |rule| pattern_string(&rule.scheme, host, &rule.ports))
            })
            .chain(
                self.wildcards
                    .iter()
                    .map(|w| pattern_string(&w.scheme, &format!("*{}", w.suffix), &w.ports)),
            )
            .collect();
        patterns.sort();
        if self.null {
            patterns.push("null".to_owned());
        }
        f.debug_struct("AllowList")
            .field("origins", &patterns)
            .field("same_host", &self.same_host)
            .finish()
    }
}

fn pattern_string(scheme: &str, host: &str, ports: &Ports) -> String {
    let ports = match ports {
        Ports::Any => ":*".to_owned(),
        Ports::List(list) => match &**list {
            [None] => String::new(),
            [Some(port)] => format!(":{port}"),
            list => {
                let list: Vec<String> = list
                    .iter()
                    .map(|p| p.or_else(|| default_port(scheme)).unwrap_or(0).to_string())
                    .collect();
                format!(":{{{}}}", list.join(","))
            }
        },
    };
    format!("{scheme}://{host}{ports}")
}

enum Rule {
    Null,
    Exact {
        scheme: Box<str>,
        host: Box<str>,
        ports: Ports,
    },
    Wildcard(Wildcard),
}

fn parse_pattern(pattern: &str) -> Result<Rule, ConfigError> {
    let invalid = |reason| ConfigError::InvalidOrigin {
        pattern: pattern.to_owned(),
        reason,
    };
    let trimmed = pattern.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err(invalid(ParseOriginError::Empty));
    }
    if trimmed.eq_ignore_ascii_case("null") {
        return Ok(Rule::Null);
    }
    if trimmed == "*" {
        return Err(ConfigError::InvalidWildcard {
            pattern: pattern.to_owned(),
        });
    }
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or(invalid(ParseOriginError::MissingScheme))?;
    let scheme = parse_scheme(scheme).map_err(invalid)?;
    if matches!(&*scheme, "ws" | "wss") {
        return Err(ConfigError::WebSocketScheme {
            pattern: pattern.to_owned(),
        });
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let authority = authority_only(rest).map_err(invalid)?;
    let (host, port) = split_host_port(authority).map_err(invalid)?;

    let ports = parse_ports(port, &scheme).ok_or_else(|| ConfigError::InvalidPorts {
        pattern: pattern.to_owned(),
    })?;

    let (wildcard, host) = match host.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, host),
    };
    if host.contains('*') {
        return Err(ConfigError::InvalidWildcard {
            pattern: pattern.to_owned(),
        });
    }
    let ascii: Cow<'_, str> = if host.is_empty() {
        return Err(invalid(ParseOriginError::EmptyHost));
    } else if host.starts_with('[') {
        Cow::Borrowed(host)
    } else {
        idna::domain_to_ascii_cow(host.as_bytes(), idna::AsciiDenyList::URL).map_err(|_| {
            ConfigError::Idna {
                pattern: pattern.to_owned(),
            }
        })?
    };
    let parsed = parse_host(&ascii).map_err(invalid)?;
    if wildcard && parsed.kind != HostKind::Domain {
        return Err(ConfigError::InvalidWildcard {
            pattern: pattern.to_owned(),
        });
    }
    // A pattern whose shortest match is longer than any accepted `Origin` could never
    // match: the scheme, `://`, one more label for a wildcard, the host, the shortest port.
    let port_len = match &ports {
        Ports::Any => 0,
        Ports::List(list) => list
            .iter()
            .map(|port| port.map_or(0, |port| ":".len() + port.to_string().len()))
            .min()
            .unwrap_or(0),
    };
    let label_len = if wildcard { "x.".len() } else { 0 };
    let shortest_match = scheme.len() + "://".len() + label_len + parsed.name.len() + port_len;
    if shortest_match > MAX_ORIGIN_LEN {
        return Err(invalid(ParseOriginError::TooLong));
    }
    let scheme: Box<str> = scheme.into();
    let host: Box<str> = parsed.name.into();
    Ok(if wildcard {
        Rule::Wildcard(Wildcard {
            scheme,
            suffix: format!(".{host}").into(),
            ports,
        })
    } else {
        Rule::Exact {
            scheme,
            host,
            ports,
        }
    })
}

/// `None`, a port, `*`, or `{port,port,...}`; default ports become `None`.
fn parse_ports(port: Option<&str>, scheme: &str) -> Option<Ports> {
    let normalise = |p: u16| Some(p).filter(|&p| Some(p) != default_port(scheme));
    let Some(port) = port else {
        return Some(Ports::List([None].into()));
    };
    if port == "*" {
        return Some(Ports::Any);
    }
    let (list, braced) = match port.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        Some(list) => (list, true),
        None => (port, false),
    };
    if !braced && port.contains(',') {
        return None;
    }
    let mut ports = Vec::new();
    for item in list.split(',') {
        let item = if braced {
            item.trim_matches(|c: char| c.is_ascii_whitespace())
        } else {
            item
        };
        let port = normalise(parse_port(Some(item)).ok().flatten()?);
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Some(Ports::List(ports.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_normalised() {
        // (pattern, normalised form in Debug)
        let cases = [
            ("https://Example.COM", "https://example.com"),
            ("HTTPS://example.com:443", "https://example.com"),
            ("https://example.com/", "https://example.com"),
            ("  https://example.com  ", "https://example.com"),
            (
                "http://localhost:{3000, 8080,3000}",
                "http://localhost:{3000,8080}",
            ),
            ("http://localhost:{80,3000}", "http://localhost:{80,3000}"),
            ("http://localhost:{80}", "http://localhost"),
            ("http://localhost:*", "http://localhost:*"),
            ("https://*.Example.com:8443", "https://*.example.com:8443"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
            ("http://[0:0:0:0:0:0:0:1]:3000", "http://[::1]:3000"),
            (
                "chrome-extension://abcdefghijklmnop",
                "chrome-extension://abcdefghijklmnop",
            ),
        ];
        for (pattern, normalised) in cases {
            let list = AllowList::new().add_origin(pattern).unwrap();
            let debug = format!("{list:?}");
            assert!(
                debug.contains(&format!("\"{normalised}\"")),
                "{pattern}: {debug}"
            );
        }
    }

    #[test]
    fn config_errors() {
        use ParseOriginError as P;
        let origin = |reason| move |e: &ConfigError| matches!(e, ConfigError::InvalidOrigin { reason: r, .. } if *r == reason);
        let wildcard = |e: &ConfigError| matches!(e, ConfigError::InvalidWildcard { .. });
        let ports = |e: &ConfigError| matches!(e, ConfigError::InvalidPorts { .. });
        let ws = |e: &ConfigError| matches!(e, ConfigError::WebSocketScheme { .. });
        let idna = |e: &ConfigError| matches!(e, ConfigError::Idna { .. });
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Box<dyn Fn(&ConfigError) -> bool>)> = vec![
            ("", Box::new(origin(P::Empty))),
            ("example.com", Box::new(origin(P::MissingScheme))),
            ("https://example.com/app", Box::new(origin(P::Path))),
            ("https://example.com//", Box::new(origin(P::Path))),
            ("https://example.com?x=1", Box::new(origin(P::Query))),
            ("https://example.com#top", Box::new(origin(P::Fragment))),
            ("https://user@example.com", Box::new(origin(P::Userinfo))),
            ("https://", Box::new(origin(P::EmptyHost))),
            ("https://a b.com", Box::new(idna)),
            ("https://a..com", Box::new(origin(P::InvalidHost))),
            ("https://127.1", Box::new(origin(P::InvalidHost))),
            ("1https://example.com", Box::new(origin(P::InvalidScheme))),
            ("*", Box::new(wildcard)),
            ("https://*", Box::new(wildcard)),
            ("https://*example.com", Box::new(wildcard)),
            ("https://a.*.example.com", Box::new(wildcard)),
            ("https://*.*.example.com", Box::new(wildcard)),
            ("https://*.127.0.0.1", Box::new(wildcard)),
            // Read as host `*.[` and port `:1]`: refused either way.
            ("https://*.[::1]", Box::new(|_: &ConfigError| true)),
            ("https://example.com:99999", Box::new(ports)),
            ("https://example.com:", Box::new(ports)),
            ("https://example.com:{}", Box::new(ports)),
            ("https://example.com:{80,}", Box::new(ports)),
            ("https://example.com:80,81", Box::new(ports)),
            ("https://example.com:{80", Box::new(ports)),
            ("wss://example.com", Box::new(ws)),
            ("WS://example.com", Box::new(ws)),
            ("https://xn--zz.example", Box::new(idna)),
        ];
        for (pattern, expected) in cases {
            match AllowList::new().add_origin(pattern) {
                Ok(list) => panic!("{pattern:?} was accepted: {list:?}"),
                Err(err) => assert!(expected(&err), "{pattern:?}: {err:?}"),
            }
        }
    }
}
