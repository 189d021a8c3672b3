//! Parsing of forwarding headers.
//!
//! Everything works on bytes and from the right: the right end of a forwarding header is
//! what your own proxies wrote, the left end is whatever the client sent. Splitting from the
//! right means nothing a client puts on the left (non-UTF-8 bytes, an unterminated quote, a
//! megabyte of commas) changes how the proxies' part is read. Nothing here allocates or
//! panics, and every loop is bounded by the byte budget.

use std::{
    iter::Rev,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use http::header::{HeaderValue, ValueIter};

/// The longest address element accepted, after trimming. The longest valid form, a quoted,
/// bracketed IPv6 address with an embedded IPv4 part and a port
/// (`"[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"`), is 55 bytes.
pub(crate) const MAX_NODE_LEN: usize = 64;

/// Parses one node: `ip`, `ipv4:port`, `[ipv6]` or `[ipv6]:port`, optionally quoted and
/// surrounded by spaces or tabs. IPv4-mapped IPv6 addresses come back as IPv4. Anything else
/// (a host name, `unknown`, an obfuscated `_identifier`, a zone id, garbage) is `None`.
pub(crate) fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = trim_ows(node);
    if node.len() > MAX_NODE_LEN {
        return None;
    }
    let node = match node {
        [b'"', inner @ .., b'"'] => inner,
        _ => node,
    };
    let text = std::str::from_utf8(node).ok()?;
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return addr
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, port) = text.split_once(':')?;
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

/// `s` without leading and trailing spaces and tabs (HTTP's optional whitespace).
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// One step of a right-to-left walk over list elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Element<'a> {
    /// A whole element, untrimmed.
    Whole(&'a [u8]),
    /// The byte budget ends inside the next element.
    OverBudget,
}

/// The comma-separated elements of every line of a header, right to left: the last line
/// first, each line from its end. Each element costs its length plus one separator byte;
/// once `budget` bytes are spent, the iterator yields [`Element::OverBudget`] and ends, so
/// no more than `budget` bytes are ever looked at, whatever the header holds.
///
/// With `quoted`, commas inside RFC 9110 quoted strings (with `\` escapes) do not split,
/// as `Forwarded` requires. Scanning from the right, the proxies' well-formed suffix is
/// split correctly whatever precedes it; an unbalanced quote only ever swallows text on its
/// own left, which then fails to parse as an element.
#[derive(Debug)]
pub(crate) struct Elements<'a> {
    lines: Rev<ValueIter<'a, HeaderValue>>,
    /// What is left of the current line, if any.
    rest: Option<&'a [u8]>,
    budget: usize,
    quoted: bool,
    done: bool,
}

impl<'a> Elements<'a> {
    pub(crate) fn new(lines: ValueIter<'a, HeaderValue>, budget: usize, quoted: bool) -> Self {
        Self {
            lines: lines.rev(),
            rest: None,
            budget,
            quoted,
            done: false,
        }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        if self.done {
            return None;
        }
        let rest = match self.rest.take() {
            Some(rest) => rest,
            None => self.lines.next()?.as_bytes(),
        };
        // Only the last `budget` bytes of what is left may be looked at.
        let start = rest.len().saturating_sub(self.budget);
        let window = rest.get(start..).unwrap_or_default();
        let comma = if self.quoted {
            rposition_unquoted(window, b',')
        } else {
            window.iter().rposition(|&b| b == b',')
        };
        let element = match comma {
            Some(i) => {
                self.rest = rest.get(..start + i);
                window.get(i + 1..).unwrap_or_default()
            }
            // The rest of the line is one element, and it fits.
            None if start == 0 => rest,
            None => {
                self.done = true;
                return Some(Element::OverBudget);
            }
        };
        self.budget = self.budget.saturating_sub(element.len() + 1);
        Some(Element::Whole(element))
    }
}

/// The position of the last `delim` in `s` outside quoted strings, scanning from the right.
fn rposition_unquoted(s: &[u8], delim: u8) -> Option<usize> {
    let mut in_quotes = false;
    let mut i = s.len();
    while i > 0 {
        i -= 1;
        let Some(&b) = s.get(i) else { break };
        if b == b'"' {
            // Inside a quoted string, a quote after an odd run of backslashes is escaped.
            let escaped = in_quotes
                && s.get(..i)
                    .unwrap_or_default()
                    .iter()
                    .rev()
                    .take_while(|&&c| c == b'\\')
                    .count()
                    % 2
                    == 1;
            if !escaped {
                in_quotes = !in_quotes;
            }
        } else if b == delim && !in_quotes {
            return Some(i);
        }
    }
    None
}

/// The position of the first `delim` in `s` outside quoted strings; `Err` if a quote is
/// left open.
fn position_unquoted(s: &[u8], delim: u8) -> Result<Option<usize>, ()> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if in_quotes && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            in_quotes = !in_quotes;
        } else if b == delim && !in_quotes {
            return Ok(Some(i));
        }
    }
    if in_quotes {
        Err(())
    } else {
        Ok(None)
    }
}

/// The value of the `for` parameter of one `Forwarded` element (RFC 7239 section 4:
/// `;`-separated `name=value` pairs, names case-insensitive), or `None` if the element has
/// none, has it twice, or is malformed (a pair without `=`, an unterminated quote).
pub(crate) fn forwarded_for(element: &[u8]) -> Option<&[u8]> {
    let mut found = None;
    let mut rest = element;
    loop {
        let (pair, next) = match position_unquoted(rest, b';').ok()? {
            Some(i) => (rest.get(..i)?, rest.get(i + 1..)),
            None => (rest, None),
        };
        let pair = trim_ows(pair);
        if !pair.is_empty() {
            let eq = pair.iter().position(|&b| b == b'=')?;
            let name = trim_ows(pair.get(..eq)?);
            if name.eq_ignore_ascii_case(b"for") {
                if found.is_some() {
                    return None;
                }
                found = Some(pair.get(eq + 1..)?);
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
    use http::HeaderMap;

    use super::*;

    #[test]
    fn nodes() {
        // (input, expected), one accepted or rejected form per row.
        for (input, expected) in [
            ("192.0.2.60", Some("192.0.2.60")),
            (" 192.0.2.60 ", Some("192.0.2.60")),
            ("\t192.0.2.60", Some("192.0.2.60")),
            ("192.0.2.60:4711", Some("192.0.2.60")),
            ("192.0.2.60:0", Some("192.0.2.60")),
            ("192.0.2.60:65535", Some("192.0.2.60")),
            ("\"192.0.2.60:4711\"", Some("192.0.2.60")),
            ("2001:db8:cafe::17", Some("2001:db8:cafe::17")),
            ("[2001:db8:cafe::17]", Some("2001:db8:cafe::17")),
            ("\"[2001:db8:cafe::17]:4711\"", Some("2001:db8:cafe::17")),
            ("::ffff:192.0.2.1", Some("192.0.2.1")),
            ("[::ffff:192.0.2.1]:80", Some("192.0.2.1")),
            (
                "\"[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535\"",
                Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ),
            ("unknown", None),
            ("_hidden", None),
            ("\"_gazonk\"", None),
            ("192.0.2.60:", None),
            ("192.0.2.60:65536", None),
            ("192.0.2.60:+80", None),
            ("192.0.2.60:8080:1", None),
            ("[2001:db8::1", None),
            ("[2001:db8::1]x", None),
            ("[2001:db8::1]:", None),
            ("[192.0.2.1]", None),
            ("fe80::1%eth0", None),
            ("\"192.0.2.60", None),
            ("\"", None),
            ("", None),
            ("300.1.1.1", None),
            ("1.2.3", None),
            ("example.com:80", None),
            ("192.0.2.60 198.51.100.1", None),
        ] {
            assert_eq!(
                parse_node(input.as_bytes()),
                expected.map(|e| e.parse().unwrap()),
                "{input:?}"
            );
        }
        assert_eq!(parse_node(&[0xff, b'1']), None);
        let padded = format!("{}1.2.3.4", " ".repeat(100));
        assert_eq!(
            parse_node(padded.as_bytes()),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_node("9".repeat(MAX_NODE_LEN + 1).as_bytes()), None);
    }

    fn elements(lines: &[&[u8]], budget: usize, quoted: bool) -> Vec<Result<String, ()>> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x", HeaderValue::from_bytes(line).unwrap());
        }
        Elements::new(headers.get_all("x").iter(), budget, quoted)
            .map(|e| match e {
                Element::Whole(e) => Ok(String::from_utf8_lossy(e).into_owned()),
                Element::OverBudget => Err(()),
            })
            .collect()
    }

    #[test]
    fn elements_right_to_left_over_lines() {
        assert_eq!(
            elements(&[b"a, b", b"c,d"], 100, false),
            [
                Ok("d".into()),
                Ok("c".into()),
                Ok(" b".into()),
                Ok("a".into())
            ]
        );
        assert_eq!(elements(&[b""], 100, false), [Ok(String::new())]);
        assert_eq!(
            elements(&[b"a,,"], 100, false),
            [Ok(String::new()), Ok(String::new()), Ok("a".into())]
        );
    }

    #[test]
    fn elements_respect_the_budget() {
        // "bb" costs 3 (with its separator), "a" 2: a budget of 5 reads both.
        assert_eq!(
            elements(&[b"a,bb"], 5, false),
            [Ok("bb".into()), Ok("a".into())]
        );
        // A budget of 4 reads "bb", then stops inside "a,".
        assert_eq!(elements(&[b"xa,bb"], 4, false), [Ok("bb".into()), Err(())]);
        // A single oversized line is never scanned past the budget.
        let long = [b"1.2.3.4".as_slice(), &[b'9'; 10_000]].concat();
        assert_eq!(elements(&[&long], 64, false), [Err(())]);
        // The budget spans lines.
        assert_eq!(
            elements(&[b"c", b"a", b"b"], 4, false),
            [Ok("b".into()), Ok("a".into()), Err(())]
        );
    }

    #[test]
    fn quoted_commas_do_not_split() {
        assert_eq!(
            elements(&[br#"for=a;host="x,y", for=b"#], 100, true),
            [Ok(" for=b".into()), Ok(r#"for=a;host="x,y""#.into())]
        );
        // An escaped quote stays inside the string.
        assert_eq!(
            elements(&[br#"for=a;x="p\",q", for=b"#], 100, true),
            [Ok(" for=b".into()), Ok(r#"for=a;x="p\",q""#.into())]
        );
        // An escaped backslash before the closing quote does not escape it.
        assert_eq!(
            elements(&[br#"for=a;x="p\\", for=b"#], 100, true),
            [Ok(" for=b".into()), Ok(r#"for=a;x="p\\""#.into())]
        );
        // A client's unterminated quote on the left does not swallow the proxy's element.
        assert_eq!(
            elements(&[br#"for="evil, for=192.0.2.1"#], 100, true),
            [Ok(" for=192.0.2.1".into()), Ok(r#"for="evil"#.into())]
        );
    }

    #[test]
    fn for_parameter() {
        for (element, expected) in [
            ("for=192.0.2.60", Some("192.0.2.60")),
            (
                "For=\"[2001:db8:cafe::17]:4711\"",
                Some("\"[2001:db8:cafe::17]:4711\""),
            ),
            (
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                Some("192.0.2.60"),
            ),
            ("proto=https;FOR=192.0.2.60", Some("192.0.2.60")),
            ("host=\"a;b\";for=192.0.2.60", Some("192.0.2.60")),
            (" for = 192.0.2.60 ", Some(" 192.0.2.60")),
            ("proto=https", None),
            ("for=192.0.2.60;for=192.0.2.61", None),
            ("for", None),
            ("for=\"192.0.2.60", None),
            ("", None),
            ("forwarded=192.0.2.60", None),
        ] {
            assert_eq!(
                forwarded_for(element.as_bytes()),
                expected.map(str::as_bytes),
                "{element:?}"
            );
        }
    }
}
