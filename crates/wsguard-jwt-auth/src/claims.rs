//! Claims: the typed claims handed to the application, and the registered claims the layer
//! checks itself, read in one pass over the verified payload.

use std::{
    borrow::Cow,
    fmt,
    ops::{Deref, DerefMut},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::Algorithm;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use wsguard_core::Principal;

use crate::Failure;

/// The typed claims of a verified token, in the request's extensions (and so in the
/// [`Connection`](wsguard_core::Connection) of an upgraded socket).
///
/// `C` is any `DeserializeOwned + Clone + Send + Sync` type: your own struct,
/// `serde_json::Value`, or [`NoClaims`] when only the principal matters. With the `axum`
/// feature, `Claims<C>` (and `Option<Claims<C>>`) is an extractor.
///
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Claims<C>(pub C);

impl<C> Claims<C> {
    /// The claims.
    pub fn into_inner(self) -> C {
        self.0
    }
}

impl<C> Deref for Claims<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.0
    }
}

impl<C> DerefMut for Claims<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.0
    }
}

/// Claims that deserialize from any payload without keeping anything: for layers where only
/// the [`Principal`] and the [`VerifiedToken`] matter. Costs nothing to parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct NoClaims;

impl<'de> serde::Deserialize<'de> for NoClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_ignored_any(IgnoredAny)?;
        Ok(Self)
    }
}

/// What the layer learned from a verified token besides its typed claims, in the request's
/// extensions next to [`Claims`], [`Principal`] and [`TokenExpiry`](wsguard_core::TokenExpiry).
///
/// It never holds the token itself.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub(crate) principal: Principal,
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) issued_at: Option<SystemTime>,
    pub(crate) jti: Option<Arc<str>>,
    pub(crate) kid: Option<Arc<str>>,
    pub(crate) algorithm: Algorithm,
    pub(crate) source: &'static str,
}

impl VerifiedToken {
    /// The principal (the `sub` claim, or the configured principal claim).
    pub const fn principal(&self) -> &Principal {
        &self.principal
    }

    /// When the layer stops accepting the token: its `exp` plus the leeway. `None` for a
    /// token without `exp` (only accepted when `exp` is not required).
    pub const fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The `iat` claim, if any.
    pub const fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// The `jti` claim, if any.
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }

    /// The `kid` of the key that verified the token, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The algorithm that verified the token.
    pub const fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Where the token came from: `authorization`, `query`, `protocol` or `cookie`.
    pub const fn source(&self) -> &'static str {
        self.source
    }
}

/// The claim names the layer reads itself.
#[derive(Debug, Clone)]
pub(crate) struct ClaimNames {
    pub(crate) principal: Box<str>,
    pub(crate) site: Option<Box<str>>,
    pub(crate) required: Vec<Box<str>>,
}

/// The rules of the registered claims.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRules {
    pub(crate) names: ClaimNames,
    pub(crate) leeway: Duration,
    pub(crate) require_exp: bool,
    pub(crate) issuers: Option<Box<[Box<str>]>>,
    pub(crate) audiences: Option<Box<[Box<str>]>>,
}

impl Default for ClaimRules {
    fn default() -> Self {
        Self {
            names: ClaimNames {
                principal: "sub".into(),
                site: None,
                required: Vec::new(),
            },
            leeway: Duration::from_secs(60),
            require_exp: true,
            issuers: None,
            audiences: None,
        }
    }
}

/// The registered claims of a payload (and the configured principal, site and required
/// claims), borrowed from the payload where possible.
#[derive(Debug, Default)]
pub(crate) struct Registered<'a> {
    pub(crate) exp: Option<f64>,
    pub(crate) nbf: Option<f64>,
    pub(crate) iat: Option<f64>,
    pub(crate) iss: Option<Cow<'a, str>>,
    pub(crate) aud: Option<Vec<Cow<'a, str>>>,
    pub(crate) jti: Option<Cow<'a, str>>,
    pub(crate) principal: Option<Cow<'a, str>>,
    pub(crate) site: Option<Vec<Cow<'a, str>>>,
    /// Bit `i` is set when `names.required[i]` is present and not `null`.
    pub(crate) present: u64,
}

impl<'a> Registered<'a> {
    /// Reads the claims of a JSON object in one pass; other members are skipped unparsed.
    ///
    /// # Errors
    ///
    /// When `payload` is not a JSON object, a read claim has the wrong type, or a read claim
    /// appears twice (RFC 7519 section 4 lets parsers reject duplicate names; this one
    /// does, so no two parsers can disagree on a claim's value).
    pub(crate) fn parse(payload: &'a [u8], names: &ClaimNames) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let registered = RegisteredSeed { names }.deserialize(&mut de)?;
        de.end()?;
        Ok(registered)
    }
}

impl ClaimRules {
    /// Checks the registered claims at `now` (seconds since the epoch).
    pub(crate) fn check(&self, claims: &Registered<'_>, now: f64) -> Result<(), Failure> {
        let required = mask(self.names.required.len());
        if claims.present & required != required || (self.require_exp && claims.exp.is_none()) {
            return Err(Failure::MissingClaim);
        }
        if let Some(issuers) = &self.issuers {
            let known = claims
                .iss
                .as_deref()
                .is_some_and(|iss| issuers.iter().any(|i| **i == *iss));
            if !known {
                return Err(Failure::WrongIssuer);
            }
        }
        match (&self.audiences, &claims.aud) {
            (Some(audiences), Some(aud)) => {
                if !aud.iter().any(|a| audiences.iter().any(|b| **b == **a)) {
                    return Err(Failure::WrongAudience);
                }
            }
            (Some(_), None) => return Err(Failure::WrongAudience),
            // RFC 7519 section 4.1.3: a principal that does not identify itself with a value
            // in a present `aud` claim must reject the token.
            (None, Some(aud)) if !aud.is_empty() => return Err(Failure::WrongAudience),
            (None, _) => {}
        }
        let leeway = self.leeway.as_secs_f64();
        // RFC 7519 section 4.1.4: the current time must be before `exp`.
        if claims.exp.is_some_and(|exp| now >= exp + leeway) {
            return Err(Failure::Expired);
        }
        // RFC 7519 section 4.1.5: the current time must be after or equal to `nbf`.
        if claims.nbf.is_some_and(|nbf| now + leeway < nbf) {
            return Err(Failure::NotYetValid);
        }
        if claims.principal.as_deref().is_none_or(str::is_empty) {
            return Err(Failure::NoPrincipal);
        }
        Ok(())
    }
}

/// The low `n` bits set.
fn mask(n: usize) -> u64 {
    match n {
        0 => 0,
        64.. => u64::MAX,
        n => (1u64 << n) - 1,
    }
}

/// Seconds since the epoch as a [`SystemTime`], `None` if not representable.
pub(crate) fn to_system_time(secs: f64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)
}

/// A [`SystemTime`] as seconds since the epoch (0 before it).
pub(crate) fn to_secs(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct RegisteredSeed<'n> {
    names: &'n ClaimNames,
}

impl<'de> DeserializeSeed<'de> for RegisteredSeed<'_> {
    type Value = Registered<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

// Bits of the claims read, to find duplicates.
const EXP: u8 = 1;
const NBF: u8 = 1 << 1;
const IAT: u8 = 1 << 2;
const ISS: u8 = 1 << 3;
const AUD: u8 = 1 << 4;
const JTI: u8 = 1 << 5;
const PRINCIPAL: u8 = 1 << 6;
const SITE: u8 = 1 << 7;

impl<'de> Visitor<'de> for RegisteredSeed<'_> {
    type Value = Registered<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims set (a JSON object)")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let names = self.names;
        let mut claims = Registered::default();
        let mut seen = 0u8;
        while let Some(CowStr(key)) = map.next_key()? {
            let mut roles = match &*key {
                "exp" => EXP,
                "nbf" => NBF,
                "iat" => IAT,
                "iss" => ISS,
                "aud" => AUD,
                "jti" => JTI,
                _ => 0,
            };
            if *key == *names.principal {
                roles |= PRINCIPAL;
            }
            if names.site.as_deref() == Some(&*key) {
                roles |= SITE;
            }
            let required = names.required.iter().position(|name| **name == *key);
            if roles == 0 && required.is_none() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if seen & roles != 0 {
                return Err(de::Error::custom("duplicate claim"));
            }
            seen |= roles;
            let value: Json<'de> = map.next_value()?;
            if let Some(i) = required {
                if !matches!(value, Json::Null) {
                    claims.present |= 1u64.checked_shl(i as u32).unwrap_or(0);
                }
            }
            if roles & EXP != 0 {
                claims.exp = value.numeric_date()?;
            }
            if roles & NBF != 0 {
                claims.nbf = value.numeric_date()?;
            }
            if roles & IAT != 0 {
                claims.iat = value.numeric_date()?;
            }
            if roles & ISS != 0 {
                claims.iss = value.string()?;
            }
            if roles & AUD != 0 {
                claims.aud = value.strings()?;
            }
            if roles & JTI != 0 {
                claims.jti = value.id()?;
            }
            if roles & PRINCIPAL != 0 {
                claims.principal = value.id()?;
            }
            if roles & SITE != 0 {
                claims.site = value.strings()?;
            }
        }
        Ok(claims)
    }
}

/// A string, borrowed from the input unless it had escapes.
pub(crate) struct CowStr<'de>(pub(crate) Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The shapes of claim value the layer understands; anything else is `Other`.
#[derive(Debug)]
enum Json<'de> {
    Null,
    Str(Cow<'de, str>),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Strings(Vec<Cow<'de, str>>),
    Other,
}

impl<'de> Json<'de> {
    /// An RFC 7519 NumericDate: non-negative seconds, possibly fractional. `null` is absent.
    fn numeric_date<E: de::Error>(&self) -> Result<Option<f64>, E> {
        match *self {
            Self::Null => Ok(None),
            Self::Unsigned(n) => Ok(Some(n as f64)),
            Self::Float(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
            _ => Err(E::custom("a date claim is not a non-negative number")),
        }
    }

    /// A string claim (`iss`). `null` is absent.
    fn string<E: de::Error>(&self) -> Result<Option<Cow<'de, str>>, E> {
        match self {
            Self::Null => Ok(None),
            Self::Str(s) => Ok(Some(s.clone())),
            _ => Err(E::custom("a string claim is not a string")),
        }
    }

    /// An identifier claim (`sub`, `jti`, a principal claim): a string or an integer.
    fn id<E: de::Error>(&self) -> Result<Option<Cow<'de, str>>, E> {
        match self {
            Self::Null => Ok(None),
            Self::Str(s) => Ok(Some(s.clone())),
            Self::Unsigned(n) => Ok(Some(Cow::Owned(n.to_string()))),
            Self::Signed(n) => Ok(Some(Cow::Owned(n.to_string()))),
            _ => Err(E::custom(
                "an identifier claim is not a string or an integer",
            )),
        }
    }

    /// A string or an array of strings (`aud`, the site claim). `null` is absent.
    fn strings<E: de::Error>(&self) -> Result<Option<Vec<Cow<'de, str>>>, E> {
        match self {
            Self::Null => Ok(None),
            Self::Str(s) => Ok(Some(vec![s.clone()])),
            Self::Strings(v) => Ok(Some(v.clone())),
            _ => Err(E::custom(
                "a list claim is not a string or an array of strings",
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Json::Other)
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Json::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Json::Signed(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Json::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Json::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Json::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Json::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut strings = Vec::new();
                let mut all_strings = true;
                while let Some(item) = seq.next_element::<Json<'de>>()? {
                    match item {
                        Json::Str(s) if all_strings => strings.push(s),
                        _ => all_strings = false,
                    }
                }
                Ok(if all_strings {
                    Json::Strings(strings)
                } else {
                    Json::Other
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Json::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ClaimNames {
        ClaimNames {
            principal: "sub".into(),
            site: Some("domains".into()),
            required: vec!["jti".into(), "tenant".into()],
        }
    }

    #[test]
    fn reads_registered_claims_in_one_pass() {
        let payload = br#"{"iss":"joe","exp":1300819380,"nbf":1.5,"sub":42,"aud":["a","b"],
            "jti":"x\u0041","tenant":{"id":1},"domains":"example.com","http://example.com/is_root":true}"#;
        let claims = Registered::parse(payload, &names()).unwrap();
        assert_eq!(claims.exp, Some(1_300_819_380.0));
        assert_eq!(claims.nbf, Some(1.5));
        assert_eq!(claims.iss.as_deref(), Some("joe"));
        assert_eq!(claims.principal.as_deref(), Some("42"));
        assert_eq!(claims.aud.unwrap(), ["a", "b"]);
        assert_eq!(claims.jti.as_deref(), Some("xA"));
        assert_eq!(claims.site.unwrap(), ["example.com"]);
        assert_eq!(claims.present, 0b11);
    }

    #[test]
    fn rejects_what_could_be_read_two_ways() {
        // Each of these must fail to parse: (payload, why).
        let cases: &[(&[u8], &str)] = &[
            (
                br#"{"exp":1,"exp":2}"#,
                "duplicate exp (RFC 7519 section 4)",
            ),
            (br#"{"sub":"a","sub":"b"}"#, "duplicate principal"),
            (br#"{"exp":"1"}"#, "exp as a string"),
            (br#"{"exp":-1}"#, "negative exp"),
            (br#"{"aud":[1]}"#, "aud with a number"),
            (br#"{"iss":["a"]}"#, "iss as an array"),
            (br#"{"sub":1.5}"#, "fractional subject"),
            (br#"[]"#, "not an object"),
            (br#"{"exp":1} x"#, "trailing data"),
        ];
        for (payload, why) in cases {
            assert!(Registered::parse(payload, &names()).is_err(), "{why}");
        }
    }

    #[test]
    fn checks_time_issuer_audience_and_presence() {
        let rules = ClaimRules {
            issuers: Some(vec!["joe".into()].into()),
            audiences: Some(vec!["api".into()].into()),
            ..ClaimRules::default()
        };
        let ok = br#"{"iss":"joe","aud":"api","sub":"u","exp":1000,"nbf":900}"#;
        let names = &rules.names;
        let parse = |p: &'static [u8]| Registered::parse(p, names).unwrap();
        assert_eq!(rules.check(&parse(ok), 950.0), Ok(()));
        // Leeway 60 s on both sides.
        assert_eq!(rules.check(&parse(ok), 1059.0), Ok(()));
        assert_eq!(rules.check(&parse(ok), 1060.0), Err(Failure::Expired));
        assert_eq!(rules.check(&parse(ok), 840.0), Ok(()));
        assert_eq!(rules.check(&parse(ok), 839.0), Err(Failure::NotYetValid));
        let cases: &[(&[u8], Failure)] = &[
            (
                br#"{"iss":"eve","aud":"api","sub":"u","exp":1000}"#,
                Failure::WrongIssuer,
            ),
            (
                br#"{"aud":"api","sub":"u","exp":1000}"#,
                Failure::WrongIssuer,
            ),
            (
                br#"{"iss":"joe","aud":["x","y"],"sub":"u","exp":1000}"#,
                Failure::WrongAudience,
            ),
            (
                br#"{"iss":"joe","sub":"u","exp":1000}"#,
                Failure::WrongAudience,
            ),
            (
                br#"{"iss":"joe","aud":"api","sub":"u"}"#,
                Failure::MissingClaim,
            ),
            (
                br#"{"iss":"joe","aud":"api","exp":1000}"#,
                Failure::NoPrincipal,
            ),
            (
                br#"{"iss":"joe","aud":"api","sub":"","exp":1000}"#,
                Failure::NoPrincipal,
            ),
        ];
        for (payload, failure) in cases {
            let claims = Registered::parse(payload, names).unwrap();
            assert_eq!(rules.check(&claims, 950.0), Err(*failure));
        }
        // Without configured audiences, a present `aud` is refused (RFC 7519 section 4.1.3).
        let open = ClaimRules::default();
        let claims =
            Registered::parse(br#"{"aud":"api","sub":"u","exp":1000}"#, &open.names).unwrap();
        assert_eq!(open.check(&claims, 950.0), Err(Failure::WrongAudience));
    }

    #[test]
    fn no_claims_accepts_anything() {
        let _: NoClaims = serde_json::from_slice(br#"{"a":[1,{"b":null}]}"#).unwrap();
    }
}
