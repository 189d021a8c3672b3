//! Configuration errors, and why a request failed authentication.

use std::fmt;

use jsonwebtoken::Algorithm;
use wsguard_core::Reason;

/// A key, token source or setting that cannot be used.
///
/// Returned when the configuration is built, never while serving requests. Messages never
/// contain key material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An HMAC secret shorter than the algorithm's output (32 bytes for HS256, 48 for HS384,
    /// 64 for HS512), as RFC 7518 section 3.2 requires.
    HmacSecretTooShort {
        /// The algorithm the secret was meant for.
        algorithm: Algorithm,
        /// The smallest length allowed, in bytes.
        min_len: usize,
        /// The length given, in bytes.
        len: usize,
    },
    /// An RSA key smaller than 2048 bits (RFC 7518 section 3.3).
    RsaKeyTooSmall {
        /// The modulus size of the key, in bits.
        bits: usize,
    },
    /// The key's type cannot be used with the algorithm (an RSA key for ES256, a P-384 key
    /// for ES256, an HMAC secret for RS256, ...).
    AlgorithmMismatch {
        /// The algorithm asked for.
        algorithm: Algorithm,
        /// What is wrong.
        reason: &'static str,
    },
    /// The key could not be parsed (malformed PEM, DER, or base64url components).
    InvalidKey {
        /// The algorithm the key was meant for.
        algorithm: Algorithm,
        /// What is wrong (the parser's message: never key material).
        reason: String,
    },
    /// A JWK that cannot be used for verifying signatures: its `use` or `key_ops` exclude
    /// verification, it names no algorithm and none was given, or it is of an unsupported
    /// type.
    UnsupportedJwk {
        /// The JWK's `kid`, if it has one.
        kid: Option<String>,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key set with no key: a layer with only such a set could never accept a token.
    NoKeys,
    /// Two keys of one key set have the same `kid`.
    DuplicateKid {
        /// The `kid`.
        kid: String,
    },
    /// A token source that cannot work: an empty or reserved query parameter or cookie name,
    /// a subprotocol marker or prefix that is not a valid protocol token.
    InvalidTokenSource {
        /// The name, marker or prefix as given.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No token source was configured.
    NoTokenSource,
    /// Two token sources read the same place.
    DuplicateTokenSource,
    /// A claim name that is empty.
    InvalidClaimName,
    /// More required claims than the layer supports (64).
    TooManyRequiredClaims,
    /// The JWKS or OpenID Connect discovery configuration cannot work (a URL that is not
    /// `http` or `https`, a zero interval, a cache that could never hold a usable key, no
    /// tokio runtime to start it on, ...).
    Jwks {
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HmacSecretTooShort {
                algorithm,
                min_len,
                len,
            } => write!(
                f,
                "HMAC secret for {algorithm:?} is {len} bytes; at least {min_len} are required"
            ),
            Self::RsaKeyTooSmall { bits } => {
                write!(f, "RSA key of {bits} bits; at least 2048 bits are required")
            }
            Self::AlgorithmMismatch { algorithm, reason } => {
                write!(f, "key cannot be used with {algorithm:?}: {reason}")
            }
            Self::InvalidKey { algorithm, reason } => {
                write!(f, "invalid key for {algorithm:?}: {reason}")
            }
            Self::UnsupportedJwk { kid, reason } => match kid {
                Some(kid) => write!(f, "unsupported JWK {kid:?}: {reason}"),
                None => write!(f, "unsupported JWK: {reason}"),
            },
            Self::NoKeys => f.write_str("a key set needs at least one key"),
            Self::DuplicateKid { kid } => write!(f, "two keys have the kid {kid:?}"),
            Self::InvalidTokenSource { name, reason } => {
                write!(f, "invalid token source {name:?}: {reason}")
            }
            Self::NoTokenSource => f.write_str("no token source configured"),
            Self::DuplicateTokenSource => f.write_str("a token source is configured twice"),
            Self::InvalidClaimName => f.write_str("claim names must not be empty"),
            Self::TooManyRequiredClaims => f.write_str("at most 64 required claims"),
            Self::Jwks { reason } => write!(f, "invalid JWKS configuration: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a request failed authentication: the precise, server-side cause.
///
/// Clients only ever see the generic [`Reason`] it maps to (through the layer's
/// [`OnRejection`](wsguard_core::OnRejection) policy); the cause goes to the `tracing` event
/// of the rejection and into the response's extensions, for outer middleware and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// No token in any configured source.
    Missing,
    /// More than one token in one request (RFC 6750 section 3.1 `invalid_request`).
    MultipleTokens,
    /// A token longer than the configured maximum; it was not decoded at all.
    TooLong,
    /// Not a compact JWS: characters outside base64url, or not three parts.
    Malformed,
    /// The header does not decode, or names an algorithm that does not exist here
    /// (including `none`).
    BadHeader,
    /// The header has a `crit` parameter, whatever its value: no JWS extension is understood
    /// here, so RFC 7515 section 4.1.11 requires rejecting any it names, and an empty list is
    /// not allowed either.
    CriticalHeader,
    /// The header carries a parameter that changes what is verified and that the layer does
    /// not implement: `b64` (RFC 7797), a key or a key's location (`jku`, `jwk`, `x5u`,
    /// `x5c`), a JWE parameter (`enc`, `zip`, ...), or a `cty` announcing a nested token. See
    /// the crate docs, "JOSE header parameters".
    UnsupportedHeader(HeaderParameter),
    /// A header parameter appears twice (RFC 7515 section 4): refused rather than resolved,
    /// so that no two JSON parsers can read the header differently.
    DuplicateHeader(HeaderParameter),
    /// The header's `typ` is not the one required.
    WrongType,
    /// No key for the token's `kid` (or, without a `kid`, no key without one).
    UnknownKey,
    /// A key was found, but it is bound to another algorithm than the token's `alg`.
    AlgorithmMismatch,
    /// The signature does not verify.
    BadSignature,
    /// The verified payload is not a JSON object of the expected shape (a registered claim of
    /// the wrong type, a duplicate claim, a `C` that does not deserialize).
    BadClaims,
    /// A required claim is absent.
    MissingClaim,
    /// The token has expired (`exp`, with the leeway).
    Expired,
    /// The token is not valid yet (`nbf`, with the leeway).
    NotYetValid,
    /// The `iss` claim is not one of the accepted issuers.
    WrongIssuer,
    /// The `aud` claim names none of the accepted audiences.
    WrongAudience,
    /// The principal claim is absent or empty.
    NoPrincipal,
    /// A site token presented from an `Origin` outside its domain list (or without one).
    SiteNotAllowed,
    /// A claims predicate denied the request.
    Denied,
    /// The token was revoked.
    Revoked,
    /// The revocation store could not answer, and the layer fails closed. Answered with 503
    /// and `Retry-After` (1 s): the token may well be valid, and the store may answer on the
    /// next try.
    RevocationUnavailable,
    /// No loaded key verifies the token, and a key source that could hold its key (a JWKS
    /// cache or an OpenID Connect issuer whose first fetch has not succeeded yet) has no
    /// keys: the token cannot be judged now. Answered with 503 and `Retry-After`, not 401,
    /// so clients retry instead of discarding a token that may be valid.
    KeysUnavailable,
}

impl Failure {
    /// A stable `snake_case` name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::MultipleTokens => "multiple_tokens",
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::BadHeader => "bad_header",
            Self::CriticalHeader => "critical_header",
            Self::UnsupportedHeader(_) => "unsupported_header",
            Self::DuplicateHeader(_) => "duplicate_header",
            Self::WrongType => "wrong_type",
            Self::UnknownKey => "unknown_kid",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::BadSignature => "bad_signature",
            Self::BadClaims => "bad_claims",
            Self::MissingClaim => "missing_claim",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::NoPrincipal => "no_principal",
            Self::SiteNotAllowed => "site_not_allowed",
            Self::Denied => "denied",
            Self::Revoked => "revoked",
            Self::RevocationUnavailable => "revocation_unavailable",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The header parameter a [`UnsupportedHeader`](Self::UnsupportedHeader) or
    /// [`DuplicateHeader`](Self::DuplicateHeader) refusal is about, for logs and metrics.
    pub const fn header_parameter(self) -> Option<HeaderParameter> {
        match self {
            Self::UnsupportedHeader(param) | Self::DuplicateHeader(param) => Some(param),
            _ => None,
        }
    }

    /// The generic reason the client is answered with.
    ///
    /// | cause | reason | HTTP |
    /// |---|---|---|
    /// | [`Missing`](Self::Missing) | [`Reason::CredentialsMissing`] | 401 |
    /// | [`MultipleTokens`](Self::MultipleTokens) | [`Reason::BadRequest`] | 400 |
    /// | [`Expired`](Self::Expired) | [`Reason::TokenExpired`] | 401 |
    /// | [`SiteNotAllowed`](Self::SiteNotAllowed), [`Denied`](Self::Denied), [`Revoked`](Self::Revoked) | [`Reason::Forbidden`] | 403 |
    /// | [`RevocationUnavailable`](Self::RevocationUnavailable), [`KeysUnavailable`](Self::KeysUnavailable) | [`Reason::AtCapacity`] | 503 + `Retry-After` (1013 after an upgrade) |
    /// | every other cause | [`Reason::TokenInvalid`] | 401 |
    pub const fn reason(self) -> Reason {
        match self {
            Self::Missing => Reason::CredentialsMissing,
            Self::MultipleTokens => Reason::BadRequest,
            Self::Expired => Reason::TokenExpired,
            Self::SiteNotAllowed | Self::Denied | Self::Revoked => Reason::Forbidden,
            Self::RevocationUnavailable | Self::KeysUnavailable => Reason::AtCapacity,
            _ => Reason::TokenInvalid,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Failure {}

/// A JOSE header parameter, named in the [`Failure`] of a refused token.
///
/// A fixed set: the names RFC 7515, RFC 7516, RFC 7518 and RFC 7797 define for JWS and JWE
/// headers. Any other name is [`Unknown`](Self::Unknown), so that a log line never carries
/// text chosen by the client. See the crate docs, "JOSE header parameters", for what the
/// layer does with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderParameter {
    /// `alg`, the signature algorithm (RFC 7515 section 4.1.1).
    Alg,
    /// `kid`, the key ID (RFC 7515 section 4.1.4).
    Kid,
    /// `typ`, the type of the whole token (RFC 7515 section 4.1.9).
    Typ,
    /// `cty`, the type of the payload (RFC 7515 section 4.1.10).
    Cty,
    /// `crit`, the extensions the recipient must understand (RFC 7515 section 4.1.11).
    Crit,
    /// `b64`, the unencoded payload option (RFC 7797 section 3).
    B64,
    /// `jku`, a URL of a JWK set holding the key (RFC 7515 section 4.1.2).
    Jku,
    /// `jwk`, the key itself (RFC 7515 section 4.1.3).
    Jwk,
    /// `x5u`, a URL of the key's X.509 certificate chain (RFC 7515 section 4.1.5).
    X5u,
    /// `x5c`, the key's X.509 certificate chain (RFC 7515 section 4.1.6).
    X5c,
    /// `x5t`, a SHA-1 thumbprint of the key's certificate (RFC 7515 section 4.1.7).
    X5t,
    /// `x5t#S256`, a SHA-256 thumbprint of the key's certificate (RFC 7515 section 4.1.8).
    X5tS256,
    /// `enc`, JWE content encryption (RFC 7516 section 4.1.2).
    Enc,
    /// `zip`, JWE compression (RFC 7516 section 4.1.3).
    Zip,
    /// `epk`, a JWE ephemeral public key (RFC 7518 section 4.6.1.1).
    Epk,
    /// `apu`, JWE agreement PartyUInfo (RFC 7518 section 4.6.1.2).
    Apu,
    /// `apv`, JWE agreement PartyVInfo (RFC 7518 section 4.6.1.3).
    Apv,
    /// `iv`, a JWE key wrapping IV (RFC 7518 section 4.7.1.1).
    Iv,
    /// `tag`, a JWE key wrapping tag (RFC 7518 section 4.7.1.2).
    Tag,
    /// `p2s`, a JWE PBES2 salt (RFC 7518 section 4.8.1.1).
    P2s,
    /// `p2c`, a JWE PBES2 iteration count (RFC 7518 section 4.8.1.2).
    P2c,
    /// Any other name; its text is not kept.
    Unknown,
}

impl HeaderParameter {
    /// The parameter's name as it appears in a header (`"unknown"` for
    /// [`Unknown`](Self::Unknown)), for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Alg => "alg",
            Self::Kid => "kid",
            Self::Typ => "typ",
            Self::Cty => "cty",
            Self::Crit => "crit",
            Self::B64 => "b64",
            Self::Jku => "jku",
            Self::Jwk => "jwk",
            Self::X5u => "x5u",
            Self::X5c => "x5c",
            Self::X5t => "x5t",
            Self::X5tS256 => "x5t#S256",
            Self::Enc => "enc",
            Self::Zip => "zip",
            Self::Epk => "epk",
            Self::Apu => "apu",
            Self::Apv => "apv",
            Self::Iv => "iv",
            Self::Tag => "tag",
            Self::P2s => "p2s",
            Self::P2c => "p2c",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for HeaderParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
