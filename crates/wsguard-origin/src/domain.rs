//! Sets of allowed domains where an entry also covers its subdomains.

use std::{collections::HashSet, fmt, net::Ipv6Addr, str::FromStr};

use crate::{
    origin::{bracketed_ipv6, parse_host, HostKind},
    ConfigError, Origin,
};

/// Allowed domains, where each entry matches its host exactly or any subdomain of it: the
/// entry `example.com` matches `example.com`, `a.example.com` and `a.b.example.com`, never
/// `evilexample.com` or `example.com.evil.com`.
///
/// This is the shape of the "site token" check, where the domains a widget may be embedded
/// on travel in a signed claim, and of any per-tenant list. The host rules are the ones
/// every matcher of this crate uses:
///
/// - Entries are converted to A-labels with UTS 46 processing, as browsers do
///   (`bücher.example` becomes `xn--bcher-kva.example`), lowercased, with surrounding
///   whitespace and one trailing dot removed.
/// - IP addresses are allowed as entries (`127.0.0.1`, `::1` or `[::1]`) and match only
///   themselves.
/// - [`contains_host`](Self::contains_host) takes a host as [`Origin::host`] returns it: it
///   compares ASCII case-insensitively and does not convert Unicode, so a raw non-ASCII host
///   (which no browser sends) never matches, nor does a homoglyph such as
///   `xn--80ak6aa92e.com` (Cyrillic "аррӏе.com") for `apple.com`. A host with a trailing dot
///   (`example.com.`) is a distinct origin for a browser and does not match either.
/// - An entry that is a public suffix (`com`, `co.uk`) covers every site under it; the
///   Public Suffix List is not consulted.
///
/// ```
/// use wsguard_origin::{DomainSet, Origin};
///
/// let sites = DomainSet::new(["example.com", "Bücher.example."])?;
/// assert!(sites.contains_host("example.com"));
/// assert!(sites.contains_host("shop.EXAMPLE.com"));
/// assert!(sites.contains_host("xn--bcher-kva.example"));
/// assert!(!sites.contains_host("evilexample.com"));
/// assert!(!sites.contains_host("example.com.evil.com"));
///
/// let origin = Origin::parse("https://www.example.com").unwrap();
/// assert!(sites.contains_origin(&origin));
///
/// assert!(DomainSet::new(["https://example.com"]).is_err());
/// assert!(DomainSet::new(["*.example.com"]).is_err());
/// # Ok::<(), wsguard_origin::ConfigError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DomainSet {
    entries: HashSet<Box<str>>,
}

impl DomainSet {
    /// Builds a set from domain names (or IP addresses).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidDomain`] for an entry that is empty, `*` or a wildcard (entries
    /// already cover their subdomains), carries a scheme, port, path, query, fragment or
    /// userinfo, or is not a valid host name; [`ConfigError::Idna`] for an internationalised
    /// name UTS 46 refuses.
    pub fn new<I, S>(domains: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries = domains
            .into_iter()
            .map(|domain| parse_entry(domain.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Whether `host` is one of the domains or a subdomain of one.
    ///
    /// `host` is compared ASCII case-insensitively; a value that is not a valid host (with a
    /// port, a path, non-ASCII characters, ...) is not contained.
    pub fn contains_host(&self, host: &str) -> bool {
        let Ok(host) = parse_host(host) else {
            return false;
        };
        if self.entries.contains(&*host.name) {
            return true;
        }
        if host.kind != HostKind::Domain {
            return false;
        }
        // Every proper suffix that starts at a label boundary: `b.c` and `c` for `a.b.c`.
        let name = &*host.name;
        name.match_indices('.')
            .filter_map(|(dot, _)| name.get(dot + 1..))
            .any(|suffix| !suffix.is_empty() && self.entries.contains(suffix))
    }

    /// Whether `origin` is an `http` or `https` origin whose host
    /// [is contained](Self::contains_host). Ports are not compared.
    pub fn contains_origin(&self, origin: &Origin) -> bool {
        matches!(origin.scheme(), "http" | "https") && self.contains_host(origin.host())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set has no entries (and so contains nothing).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The normalised entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|entry| &**entry)
    }
}

impl fmt::Debug for DomainSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut entries: Vec<&str> = self.iter().collect();
        entries.sort_unstable();
        f.debug_tuple("DomainSet").field(&entries).finish()
    }
}

fn parse_entry(raw: &str) -> Result<Box<str>, ConfigError> {
    let invalid = |reason| ConfigError::InvalidDomain {
        domain: raw.to_owned(),
        reason,
    };
    let domain = raw.trim_matches(|c: char| c.is_ascii_whitespace());
    if domain.is_empty() {
        return Err(invalid("empty"));
    }
    if domain.contains("://") {
        return Err(invalid("a domain, not an origin: remove the scheme"));
    }
    if domain.contains('*') {
        return Err(invalid(
            "entries cover their subdomains already: remove the wildcard",
        ));
    }
    if domain.contains(['/', '?', '#', '@']) {
        return Err(invalid(
            "a path, query, fragment or userinfo is not part of a domain",
        ));
    }
    // IPv6 addresses, bracketed or not.
    let literal = domain
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .unwrap_or(domain);
    if let Ok(addr) = Ipv6Addr::from_str(literal) {
        return Ok(bracketed_ipv6(addr).into());
    }
    if domain.contains([':', '[', ']']) {
        return Err(invalid("a port is not part of a domain"));
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err(invalid("empty"));
    }
    let ascii =
        idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::URL).map_err(|_| {
            ConfigError::Idna {
                pattern: raw.to_owned(),
            }
        })?;
    let host = parse_host(&ascii).map_err(|_| invalid("not a valid host name"))?;
    if host.name.ends_with('.') {
        return Err(invalid("not a valid host name"));
    }
    Ok(host.name.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_normalised() {
        let set = DomainSet::new([
            " Example.COM ",
            "bücher.example.",
            "::1",
            "[0:0::2]",
            "127.0.0.1",
            "_dev.local",
        ])
        .unwrap();
        let mut entries: Vec<&str> = set.iter().collect();
        entries.sort_unstable();
        assert_eq!(
            entries,
            [
                "127.0.0.1",
                "[::1]",
                "[::2]",
                "_dev.local",
                "example.com",
                "xn--bcher-kva.example"
            ]
        );
        assert_eq!(set.len(), 6);
        assert!(!set.is_empty());
        assert!(DomainSet::new(Vec::<String>::new()).unwrap().is_empty());
    }

    #[test]
    fn invalid_entries() {
        for bad in [
            "",
            " ",
            ".",
            "*",
            "*.example.com",
            "https://example.com",
            "example.com:443",
            "example.com/",
            "example.com?x",
            "user@example.com",
            "a..example.com",
            "example.com..",
            "127.1",
            "[::1",
            "a b.com",
            "xn--zz.example",
        ] {
            assert!(DomainSet::new([bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn matching() {
        // (entries, host, contained): the seed's `host == d or host.endswith('.' + d)` and the
        // pitfalls of suffix matching (PortSwigger, "Exploiting CORS misconfigurations").
        let cases: &[(&[&str], &str, bool)] = &[
            (&["example.com"], "example.com", true),
            (&["example.com"], "a.example.com", true),
            (&["example.com"], "a.b.example.com", true),
            (&["example.com"], "EXAMPLE.COM", true),
            (&["example.com"], "evilexample.com", false),
            (&["example.com"], "example.com.evil.com", false),
            (&["example.com"], "com", false),
            (&["example.com"], "example.com.", false),
            (&["example.com"], "example.com:443", false),
            (&["example.com"], ".example.com", false),
            (&["example.com"], "", false),
            (&["a.example.com"], "example.com", false),
            (&["a.example.com"], "b.example.com", false),
            (&["bücher.example"], "xn--bcher-kva.example", true),
            (&["bücher.example"], "bücher.example", false),
            (&["apple.com"], "xn--80ak6aa92e.com", false),
            (&["127.0.0.1"], "127.0.0.1", true),
            (&["::1"], "[::1]", true),
            (&["::1"], "[0::1]", true),
            (&["::1"], "::1", false),
            (&["localhost"], "localhost", true),
            (&["localhost"], "app.localhost", true),
        ];
        for (entries, host, expected) in cases {
            let set = DomainSet::new(*entries).unwrap();
            assert_eq!(set.contains_host(host), *expected, "{entries:?} {host:?}");
        }
    }
}
