//! Parsing of forwarding headers. Nothing here allocates per element or panics on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Parses one node of a forwarding header: `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port`,
/// optionally quoted. IPv4-mapped IPv6 addresses come back as IPv4.
pub(crate) fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches([' ', '\t']);
    let s = match s.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => s,
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return addr
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, port) = s.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u16>().is_ok()
}

/// The `for=` value of each element of `Forwarded` header lines, in order (RFC 7239 section
/// 4). An element without a `for` parameter, or a line that does not parse, yields `None` in
/// its place, which stops a walk. At most `max` elements are returned; `None` on overflow
/// tells the caller the header was longer than it is willing to read.
pub(crate) fn forwarded_for<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    max: usize,
) -> Option<Vec<Option<&'a str>>> {
    let mut out = Vec::new();
    for line in lines {
        let line = std::str::from_utf8(line).ok()?;
        let mut rest = line;
        loop {
            let (element, next) = split_unquoted(rest, b',')?;
            let element = element.trim_matches([' ', '\t']);
            if !element.is_empty() {
                if out.len() == max {
                    return None;
                }
                out.push(for_param(element));
            }
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }
    }
    Some(out)
}

/// Splits off what comes before the first `delim` outside a quoted string (RFC 7230
/// quoted-string, with backslash escapes). `None` if a quote is left open.
fn split_unquoted(s: &str, delim: u8) -> Option<(&str, Option<&str>)> {
    let bytes = s.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b if b == delim && !in_quotes => return Some((&s[..i], Some(&s[i + 1..]))),
            _ => {}
        }
        i += 1;
    }
    if in_quotes {
        return None;
    }
    Some((s, None))
}

/// The value of the `for` parameter of one element (`;`-separated `name=value` pairs, names
/// case-insensitive), or `None` if it has none, has it twice, or is malformed.
fn for_param(element: &str) -> Option<&str> {
    let mut found = None;
    let mut rest = element;
    loop {
        let (pair, next) = split_unquoted(rest, b';')?;
        let pair = pair.trim_matches([' ', '\t']);
        if !pair.is_empty() {
            let (name, value) = pair.split_once('=')?;
            if name.trim_matches([' ', '\t']).eq_ignore_ascii_case("for") {
                if found.is_some() {
                    return None;
                }
                found = Some(value.trim_matches([' ', '\t']));
            }
        }
        match next {
            Some(next) => rest = next,
            None => return found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes() {
        for (input, expected) in [
            ("192.0.2.60", Some("192.0.2.60")),
            (" 192.0.2.60 ", Some("192.0.2.60")),
            ("192.0.2.60:4711", Some("192.0.2.60")),
            ("\"192.0.2.60:4711\"", Some("192.0.2.60")),
            ("2001:db8:cafe::17", Some("2001:db8:cafe::17")),
            ("[2001:db8:cafe::17]", Some("2001:db8:cafe::17")),
            ("\"[2001:db8:cafe::17]:4711\"", Some("2001:db8:cafe::17")),
            ("::ffff:192.0.2.1", Some("192.0.2.1")),
            ("[::ffff:192.0.2.1]:80", Some("192.0.2.1")),
            ("unknown", None),
            ("_hidden", None),
            ("192.0.2.60:", None),
            ("192.0.2.60:99999", None),
            ("192.0.2.60:+80", None),
            ("[2001:db8::1", None),
            ("[2001:db8::1]x", None),
            ("[192.0.2.1]", None),
            ("\"192.0.2.60", None),
            ("", None),
            ("300.1.1.1", None),
            ("example.com:80", None),
        ] {
            assert_eq!(
                parse_node(input),
                expected.map(|e| e.parse().unwrap()),
                "{input:?}"
            );
        }
    }
}
