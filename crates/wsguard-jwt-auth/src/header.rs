//! The JOSE header: read once, in one pass, before the signature, and only to choose the key.
//!
//! Every token goes through [`JoseHeader::parse`]. It keeps `alg`, `kid` and `typ`, skips the
//! values of everything else unparsed (only checking that they are JSON), and refuses the
//! parameters that would make a conforming signer and this verifier disagree about what was
//! signed, what the payload is, or which key verifies it. The classification, with its
//! sources, is in the crate docs ("JOSE header parameters").

use std::{borrow::Cow, fmt, str::FromStr};

use jsonwebtoken::Algorithm;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::{claims::CowStr, Failure, HeaderParameter};

/// What the layer reads from an accepted header.
#[derive(Debug)]
pub(crate) struct JoseHeader<'a> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<Cow<'a, str>>,
    pub(crate) typ: Option<Cow<'a, str>>,
}

/// Headers of up to this many bytes of JSON are decoded on the stack (a typical header is
/// 20 to 100 bytes).
pub(crate) const STACK_HEADER: usize = 192;

impl<'a> JoseHeader<'a> {
    /// Reads a decoded JOSE header.
    ///
    /// # Errors
    ///
    /// In this order, whatever the order of the members:
    /// - [`Failure::BadHeader`]: not one JSON object in UTF-8 (RFC 7515 section 5.2 step 3),
    ///   no `alg`, an `alg` that is not a supported algorithm (`none` included), or a `kid`,
    ///   `typ` or `cty` that is not a string;
    /// - [`Failure::DuplicateHeader`]: a parameter of [`HeaderParameter`] appears twice
    ///   (RFC 7515 section 4 lets parsers reject duplicates; this one does, so no two parsers
    ///   can disagree on the `alg`, the `kid` or the `typ`);
    /// - [`Failure::CriticalHeader`]: a `crit` member, whatever its value (RFC 7515 section
    ///   4.1.11);
    /// - [`Failure::UnsupportedHeader`]: a parameter that changes what is verified and that
    ///   the layer does not implement.
    pub(crate) fn parse(json: &'a [u8]) -> Result<Self, Failure> {
        // UTF-8 for the whole text, ignored values included (RFC 7515 section 4, RFC 8725
        // section 3.7): serde_json checks only the strings it reads.
        let json = std::str::from_utf8(json).map_err(|_| Failure::BadHeader)?;
        let mut de = serde_json::Deserializer::from_str(json);
        let read = HeaderSeed
            .deserialize(&mut de)
            .and_then(|read| de.end().map(|()| read))
            .map_err(|_| Failure::BadHeader)?;
        let Some(alg) = read.alg else {
            return Err(Failure::BadHeader);
        };
        if let Some(param) = read.duplicate {
            return Err(Failure::DuplicateHeader(param));
        }
        if read.crit {
            return Err(Failure::CriticalHeader);
        }
        if let Some(param) = read.unsupported {
            return Err(Failure::UnsupportedHeader(param));
        }
        Ok(Self {
            alg,
            kid: read.kid,
            typ: read.typ,
        })
    }
}

/// Everything one pass over the header found; refusals are decided after it, so that the
/// answer does not depend on the order of the members.
#[derive(Default)]
struct Read<'a> {
    alg: Option<Algorithm>,
    kid: Option<Cow<'a, str>>,
    typ: Option<Cow<'a, str>>,
    duplicate: Option<HeaderParameter>,
    crit: bool,
    /// The first parameter refused as unsupported.
    unsupported: Option<HeaderParameter>,
}

struct HeaderSeed;

impl<'de> DeserializeSeed<'de> for HeaderSeed {
    type Value = Read<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed {
    type Value = Read<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JOSE header (a JSON object)")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut read = Read::default();
        let mut seen = 0u32;
        while let Some(Name(param)) = map.next_key()? {
            if let Some(bit) = param.bit() {
                if seen & bit != 0 {
                    read.duplicate.get_or_insert(param);
                }
                seen |= bit;
            }
            match param {
                HeaderParameter::Alg => {
                    let CowStr(alg) = map.next_value()?;
                    // `none` and every name outside jsonwebtoken's list do not parse.
                    let alg = Algorithm::from_str(&alg)
                        .map_err(|_| de::Error::custom("unsupported alg"))?;
                    read.alg = Some(alg);
                }
                HeaderParameter::Kid => read.kid = Some(map.next_value::<CowStr<'de>>()?.0),
                HeaderParameter::Typ => read.typ = Some(map.next_value::<CowStr<'de>>()?.0),
                HeaderParameter::Cty => {
                    let CowStr(cty) = map.next_value()?;
                    if is_nested(&cty) {
                        read.unsupported.get_or_insert(param);
                    }
                }
                HeaderParameter::Crit => {
                    map.next_value::<IgnoredAny>()?;
                    read.crit = true;
                }
                HeaderParameter::X5t | HeaderParameter::X5tS256 | HeaderParameter::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                }
                // `b64`, the key-carrying and key-locating parameters, the JWE ones, and any
                // named parameter added later: refused unless listed above.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    read.unsupported.get_or_insert(param);
                }
            }
        }
        Ok(read)
    }
}

/// Whether a `cty` says the payload is itself a JWS or JWE (RFC 7519 section 5.2: `JWT`;
/// RFC 7515 section 4.1.10 and 9.2: `JOSE`, `JOSE+JSON`), compared like `typ`: without case,
/// with an optional `application/` prefix.
fn is_nested(cty: &str) -> bool {
    let short = match cty.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => cty.get(12..).unwrap_or(cty),
        _ => cty,
    };
    ["JWT", "JOSE", "JOSE+JSON"]
        .iter()
        .any(|nested| short.eq_ignore_ascii_case(nested))
}

impl HeaderParameter {
    /// The parameter named `name` (case-sensitive, RFC 7515 section 4), or `Unknown`.
    fn from_name(name: &str) -> Self {
        match name {
            "alg" => Self::Alg,
            "kid" => Self::Kid,
            "typ" => Self::Typ,
            "cty" => Self::Cty,
            "crit" => Self::Crit,
            "b64" => Self::B64,
            "jku" => Self::Jku,
            "jwk" => Self::Jwk,
            "x5u" => Self::X5u,
            "x5c" => Self::X5c,
            "x5t" => Self::X5t,
            "x5t#S256" => Self::X5tS256,
            "enc" => Self::Enc,
            "zip" => Self::Zip,
            "epk" => Self::Epk,
            "apu" => Self::Apu,
            "apv" => Self::Apv,
            "iv" => Self::Iv,
            "tag" => Self::Tag,
            "p2s" => Self::P2s,
            "p2c" => Self::P2c,
            _ => Self::Unknown,
        }
    }

    /// The bit of a known parameter, to find duplicates; `None` for `Unknown`.
    const fn bit(self) -> Option<u32> {
        let index = match self {
            Self::Alg => 0,
            Self::Kid => 1,
            Self::Typ => 2,
            Self::Cty => 3,
            Self::Crit => 4,
            Self::B64 => 5,
            Self::Jku => 6,
            Self::Jwk => 7,
            Self::X5u => 8,
            Self::X5c => 9,
            Self::X5t => 10,
            Self::X5tS256 => 11,
            Self::Enc => 12,
            Self::Zip => 13,
            Self::Epk => 14,
            Self::Apu => 15,
            Self::Apv => 16,
            Self::Iv => 17,
            Self::Tag => 18,
            Self::P2s => 19,
            Self::P2c => 20,
            Self::Unknown => return None,
        };
        Some(1 << index)
    }
}

/// A member name, matched after JSON unescaping without keeping it.
struct Name(HeaderParameter);

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header parameter name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(HeaderParameter::from_name(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::HeaderParameter as P;

    fn parse(json: &[u8]) -> Result<(Algorithm, Option<String>, Option<String>), Failure> {
        JoseHeader::parse(json).map(|h| {
            (
                h.alg,
                h.kid.map(Cow::into_owned),
                h.typ.map(Cow::into_owned),
            )
        })
    }

    #[test]
    fn bytes_that_are_not_one_json_object_in_utf8() {
        // RFC 8725 section 3.7 (UTF-8 only) and RFC 7515 section 5.2 step 3.
        for json in [
            &b"\xef\xbb\xbf{\"alg\":\"HS256\"}"[..],
            b"{\"alg\":\"HS256\",\"x\":\"\xff\"}",
            b"{\"alg\":\"HS256\",\"\xc3\x28\":1}",
            b"\xff\xfe{\x00\"\x00a\x00l\x00g\x00\"\x00:\x00\"\x00H\x00S\x002\x005\x006\x00\"\x00}\x00",
            b"{\"alg\":\"HS256\"}\x00",
            b"",
            b"null",
            b"{",
        ] {
            assert_eq!(parse(json), Err(Failure::BadHeader), "{json:?}");
        }
        // Deep nesting in a skipped value is skipped without recursion: no stack overflow.
        let deep = format!(
            r#"{{"alg":"HS256","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(parse(deep.as_bytes()), Ok((Algorithm::HS256, None, None)));
        let deep = deep.replace("\"x\"", "\"b64\"");
        assert_eq!(
            parse(deep.as_bytes()),
            Err(Failure::UnsupportedHeader(P::B64))
        );
        let unclosed = format!(r#"{{"alg":"HS256","x":{}}}"#, "[".repeat(100_000));
        assert_eq!(parse(unclosed.as_bytes()), Err(Failure::BadHeader));
    }

    #[test]
    fn what_an_accepted_header_hands_on() {
        assert_eq!(
            parse(br#"{"kid":"a\"b","typ":"at+jwt","alg":"ES256","x5t":"t"}"#),
            Ok((Algorithm::ES256, Some("a\"b".into()), Some("at+jwt".into())))
        );
        assert_eq!(
            parse(br#"{"alg":"EdDSA"}"#),
            Ok((Algorithm::EdDSA, None, None))
        );
    }

    /// Names, some spelled with a JSON escape, and how the parser must classify them.
    const NAMES: &[(&str, P)] = &[
        ("alg", P::Alg),
        ("\\u0061lg", P::Alg),
        ("kid", P::Kid),
        ("typ", P::Typ),
        ("cty", P::Cty),
        ("crit", P::Crit),
        ("b64", P::B64),
        ("b\\u0036\\u0034", P::B64),
        ("jku", P::Jku),
        ("jwk", P::Jwk),
        ("x5u", P::X5u),
        ("x5c", P::X5c),
        ("x5t", P::X5t),
        ("x5t#S256", P::X5tS256),
        ("enc", P::Enc),
        ("zip", P::Zip),
        ("p2c", P::P2c),
        ("foo", P::Unknown),
        ("B64", P::Unknown),
        ("url", P::Unknown),
    ];

    const VALUES: &[&str] = &[
        r#""HS256""#,
        r#""none""#,
        r#""JWT""#,
        r#""application/json""#,
        r#""k\u0031""#,
        "1",
        "null",
        "false",
        "[]",
        r#"["b64"]"#,
        r#"{"a":[1,{"b":null}]}"#,
    ];

    /// What the header of `members` must give, worked out independently of the parser.
    fn model(members: &[(usize, usize)]) -> Result<(), Failure> {
        let mut seen = Vec::new();
        let (mut alg, mut duplicate, mut crit, mut unsupported) = (false, None, false, None);
        for &(name, value) in members {
            let (param, value) = (NAMES[name].1, VALUES[value]);
            let string: Option<String> = serde_json::from_str(value).ok();
            if param != P::Unknown && seen.contains(&param) {
                duplicate = duplicate.or(Some(param));
            }
            seen.push(param);
            match param {
                P::Alg => match string.as_deref() {
                    Some("HS256") => alg = true,
                    _ => return Err(Failure::BadHeader),
                },
                P::Kid | P::Typ => {
                    if string.is_none() {
                        return Err(Failure::BadHeader);
                    }
                }
                P::Cty => match string.as_deref() {
                    None => return Err(Failure::BadHeader),
                    Some("JWT") => unsupported = unsupported.or(Some(param)),
                    Some(_) => {}
                },
                P::Crit => crit = true,
                P::X5t | P::X5tS256 | P::Unknown => {}
                _ => unsupported = unsupported.or(Some(param)),
            }
        }
        match (alg, duplicate, crit, unsupported) {
            (false, ..) => Err(Failure::BadHeader),
            (true, Some(param), ..) => Err(Failure::DuplicateHeader(param)),
            (true, None, true, _) => Err(Failure::CriticalHeader),
            (true, None, false, Some(param)) => Err(Failure::UnsupportedHeader(param)),
            (true, None, false, None) => Ok(()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The parser gives the model's answer, and an accepted header reads the same with a
        /// last-wins parser (serde_json's `Value`): no JSON parser can see another `alg`,
        /// `kid` or `typ`, nor a parameter the layer refuses.
        #[test]
        fn headers_are_classified_like_the_model(
            members in proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..6)
        ) {
            let body: Vec<String> = members
                .iter()
                .map(|&(name, value)| format!("\"{}\":{}", NAMES[name].0, VALUES[value]))
                .collect();
            let json = format!("{{{}}}", body.join(","));
            let parsed = JoseHeader::parse(json.as_bytes());
            prop_assert_eq!(parsed.as_ref().map(|_| ()).map_err(|f| *f), model(&members), "{}", json);
            if let Ok(header) = parsed {
                let value: serde_json::Value = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(value["alg"].as_str(), Some("HS256"));
                prop_assert_eq!(value.get("kid").and_then(|v| v.as_str()), header.kid.as_deref());
                prop_assert_eq!(value.get("typ").and_then(|v| v.as_str()), header.typ.as_deref());
                for refused in ["b64", "crit", "jku", "jwk", "x5u", "x5c", "enc", "zip", "p2c"] {
                    prop_assert!(value.get(refused).is_none(), "{}", json);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(json in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = JoseHeader::parse(&json);
        }

        #[test]
        fn arbitrary_json_like_text_never_panics(json in r#"[{}\[\]",:a-z0-9\\ ]{0,120}"#) {
            let _ = JoseHeader::parse(json.as_bytes());
        }
    }
}
