//! Verifying one token: the pipeline from the compact serialization to typed claims.
//!
//! The order matters. The length was checked before this runs. Then: the characters and
//! the three parts; the header (the only part read before the signature: `alg`, `kid` and
//! `typ` are kept, and the parameters the layer does not implement are refused, see
//! `header.rs`); the key, chosen by `kid` and bound to one algorithm;
//! the signature; and only then the payload: registered claims, the site list, the typed
//! claims, and the synchronous predicate.

use std::{sync::Arc, time::SystemTime};

use http::HeaderMap;
use serde::de::DeserializeOwned;
use wsguard_core::Principal;

use crate::{
    claims::{to_secs, to_system_time, ClaimRules, Registered},
    header::{JoseHeader, STACK_HEADER},
    keys::{KeySource, KeyWait},
    segment, Failure, VerifiedToken, VerifyingKey,
};

/// The synchronous claims predicate.
pub(crate) type SyncPredicate<C> = Arc<dyn Fn(&C) -> bool + Send + Sync>;

/// A verified token.
pub(crate) struct Verified<C> {
    pub(crate) claims: C,
    pub(crate) token: VerifiedToken,
}

/// What verifying a token concluded.
pub(crate) enum Outcome<C> {
    Verified(Verified<C>),
    Failed(Failure),
    /// The `kid` is unknown, and a key source is fetching keys: verify again once it is done.
    WaitForKeys(KeyWait),
}

/// Everything verification needs.
pub(crate) struct Verifier<C> {
    pub(crate) keys: Vec<KeySource>,
    pub(crate) rules: ClaimRules,
    pub(crate) typ: Option<Box<str>>,
    pub(crate) predicate: Option<SyncPredicate<C>>,
}

impl<C> Clone for Verifier<C> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            rules: self.rules.clone(),
            typ: self.typ.clone(),
            predicate: self.predicate.clone(),
        }
    }
}

/// The bytes of a compact JWS: the base64url alphabet and the dots between the parts.
const JWS_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        byte += 1;
    }
    table
};

impl<C> Verifier<C>
where
    C: DeserializeOwned,
{
    /// Verifies `token`. With `may_refresh`, an unknown `kid` may start a key fetch.
    pub(crate) fn verify(
        &self,
        token: &str,
        source: &'static str,
        headers: &HeaderMap,
        now: SystemTime,
        may_refresh: bool,
    ) -> Outcome<C> {
        match self.verify_inner(token, source, headers, now, may_refresh) {
            Ok(verified) => Outcome::Verified(verified),
            Err(Step::Failed(failure)) => Outcome::Failed(failure),
            Err(Step::Wait(wait)) => Outcome::WaitForKeys(wait),
        }
    }

    fn verify_inner(
        &self,
        token: &str,
        source: &'static str,
        headers: &HeaderMap,
        now: SystemTime,
        may_refresh: bool,
    ) -> Result<Verified<C>, Step> {
        // A compact JWS is three base64url parts (RFC 7515 section 7.1): one pass checks the
        // bytes and finds the two dots.
        let mut dots = [0usize; 2];
        let mut found = 0;
        for (at, &byte) in token.as_bytes().iter().enumerate() {
            if !JWS_BYTES[usize::from(byte)] {
                return Err(Failure::Malformed.into());
            }
            if byte == b'.' {
                let Some(slot) = dots.get_mut(found) else {
                    return Err(Failure::Malformed.into());
                };
                *slot = at;
                found += 1;
            }
        }
        let [first, second] = dots;
        let (Some(header), Some(payload), Some(signature)) = (
            token.get(..first),
            token.get(first + 1..second),
            token.get(second + 1..),
        ) else {
            return Err(Failure::Malformed.into());
        };
        if found != 2 {
            return Err(Failure::Malformed.into());
        }
        if header.is_empty() || payload.is_empty() {
            return Err(Failure::Malformed.into());
        }

        // The header is read before the signature, for choosing the key only, in one pass
        // that also refuses what this verifier does not implement (`crit`, `b64`, keys in
        // the header, JWE parameters, nested tokens, duplicates). An `alg` that is not one of
        // the supported algorithms (`none` included) does not parse.
        let (mut stack, mut heap) = ([0; STACK_HEADER], Vec::new());
        let header = segment::decode(header, &mut stack, &mut heap).ok_or(Failure::BadHeader)?;
        let header = JoseHeader::parse(header)?;
        if let Some(expected) = &self.typ {
            if !header
                .typ
                .as_deref()
                .is_some_and(|typ| typ_matches(typ, expected))
            {
                return Err(Failure::WrongType.into());
            }
        }
        if signature.is_empty() {
            return Err(Failure::BadSignature.into());
        }
        let message_len = token.len() - signature.len() - 1;
        let message = token.as_bytes().get(..message_len).unwrap_or_default();
        let (key, pinned_issuer) = self.find_key(
            header.alg,
            header.kid.as_deref(),
            message,
            signature.as_bytes(),
            may_refresh,
        )?;

        // Verified: the payload may be read now, from the stack when it fits.
        let (mut stack, mut heap) = ([0; STACK_PAYLOAD], Vec::new());
        let payload = segment::decode(payload, &mut stack, &mut heap).ok_or(Failure::BadClaims)?;
        let registered =
            Registered::parse(payload, &self.rules.names).map_err(|_| Failure::BadClaims)?;
        let now_secs = to_secs(now);
        self.rules.check(&registered, now_secs)?;
        // A key of an OpenID Connect source vouches for its own issuer's tokens only.
        if let Some(issuer) = &pinned_issuer {
            if registered.iss.as_deref() != Some(&**issuer) {
                return Err(Failure::WrongIssuer.into());
            }
        }
        if self.rules.names.site.is_some() {
            let allowed = registered
                .site
                .as_deref()
                .is_some_and(|domains| site_allows(domains, headers));
            if !allowed {
                return Err(Failure::SiteNotAllowed.into());
            }
        }
        let claims: C = serde_json::from_slice(payload).map_err(|_| Failure::BadClaims)?;
        if let Some(predicate) = &self.predicate {
            if !predicate(&claims) {
                return Err(Failure::Denied.into());
            }
        }

        let leeway = self.rules.leeway.as_secs_f64();
        let expires_at = match registered.exp {
            Some(exp) => Some(to_system_time(exp + leeway).ok_or(Failure::BadClaims)?),
            None => None,
        };
        let principal = registered.principal.as_deref().unwrap_or_default();
        let token = VerifiedToken {
            principal: Principal::new(principal),
            expires_at,
            issued_at: registered.iat.and_then(to_system_time),
            jti: registered.jti.as_deref().map(Arc::from),
            kid: key.shared_kid().cloned(),
            algorithm: key.algorithm(),
            source,
        };
        Ok(Verified { claims, token })
    }

    /// The key that verifies the signature, among the keys of every source for `kid` that
    /// are bound to `alg`, and the issuer its source pins, if any.
    ///
    /// Every source is asked: a static key without a `kid` (tried for any `kid` its set does
    /// not hold) never hides the keys of a JWKS cache. When no loaded key verifies, the
    /// sources that fetch keys and could hold one for `alg` are asked to fetch (at most once
    /// per cooldown each) if they have no keys yet, or if no source holds the token's `kid`
    /// (key rotation); while such a source has no keys, the token cannot be judged:
    /// [`Failure::KeysUnavailable`].
    fn find_key(
        &self,
        alg: jsonwebtoken::Algorithm,
        kid: Option<&str>,
        message: &[u8],
        signature: &[u8],
        may_refresh: bool,
    ) -> Result<(Arc<VerifyingKey>, Option<Arc<str>>), Step> {
        let mut any_key = false;
        let mut any_of_alg = false;
        let mut kid_known = false;
        for source in &self.keys {
            let source = source.provider();
            let keys = source.load();
            if let Some(kid) = kid {
                kid_known |= keys.get(kid).is_some();
            }
            for key in keys.candidates(kid) {
                any_key = true;
                if key.algorithm() != alg {
                    continue;
                }
                any_of_alg = true;
                if key.verify(message, signature) {
                    return Ok((Arc::clone(key), source.pinned_issuer()));
                }
            }
        }
        let unknown = match kid {
            Some(_) => !kid_known,
            None => !any_of_alg,
        };
        let fetching = || {
            self.keys
                .iter()
                .map(KeySource::provider)
                .filter(|source| source.fetches_keys_for(alg))
        };
        if may_refresh {
            let mut waits: Vec<KeyWait> = fetching()
                .filter(|source| unknown || !source.is_ready())
                .filter_map(|source| source.refresh_for_unknown_kid())
                .collect();
            let wait = match waits.len() {
                0 => None,
                1 => waits.pop(),
                _ => Some(Box::pin(async move {
                    // The fetches run on their own tasks; this only waits for all of them.
                    for wait in waits {
                        wait.await;
                    }
                }) as KeyWait),
            };
            if let Some(wait) = wait {
                return Err(Step::Wait(wait));
            }
        }
        if fetching().any(|source| !source.is_ready()) {
            return Err(Failure::KeysUnavailable.into());
        }
        if any_of_alg {
            return Err(Failure::BadSignature.into());
        }
        if any_key {
            return Err(Failure::AlgorithmMismatch.into());
        }
        Err(Failure::UnknownKey.into())
    }
}

impl<C> Verifier<C> {
    /// The `Retry-After` hint of a [`Failure::KeysUnavailable`] refusal: the shortest of the
    /// sources still without keys (1 s if none says).
    pub(crate) fn keys_retry_after(&self) -> std::time::Duration {
        self.keys
            .iter()
            .filter_map(|source| source.provider().retry_after())
            .min()
            .unwrap_or(std::time::Duration::from_secs(1))
    }

    /// Whether every key source has its keys (see [`KeySource::is_ready`]).
    pub(crate) fn keys_ready(&self) -> bool {
        self.keys.iter().all(KeySource::is_ready)
    }
}

/// The payload's stack buffer: most claim sets are a few hundred bytes.
const STACK_PAYLOAD: usize = 1024;

/// Why verification stopped.
enum Step {
    Failed(Failure),
    Wait(KeyWait),
}

impl From<Failure> for Step {
    fn from(failure: Failure) -> Self {
        Self::Failed(failure)
    }
}

/// `typ` values compare case-insensitively, with an optional `application/` prefix (RFC 7515
/// section 4.1.9).
fn typ_matches(actual: &str, expected: &str) -> bool {
    fn short(typ: &str) -> &str {
        match typ.get(..12) {
            Some(prefix) if prefix.eq_ignore_ascii_case("application/") => {
                typ.get(12..).unwrap_or(typ)
            }
            _ => typ,
        }
    }
    short(actual).eq_ignore_ascii_case(short(expected))
}

/// Whether the request's `Origin` host is one of `domains` or a subdomain of one, with the
/// rules of `wsguard-origin`'s `DomainSet`. A missing or malformed `Origin`, or a malformed
/// domain list, is refused.
#[cfg(feature = "site-token")]
fn site_allows(domains: &[std::borrow::Cow<'_, str>], headers: &HeaderMap) -> bool {
    let Ok(Some(origin)) = wsguard_origin::Origin::from_headers(headers) else {
        return false;
    };
    wsguard_origin::DomainSet::new(domains.iter().map(|d| &**d))
        .is_ok_and(|sites| sites.contains_origin(&origin))
}

#[cfg(not(feature = "site-token"))]
fn site_allows(_: &[std::borrow::Cow<'_, str>], _: &HeaderMap) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_comparison() {
        assert!(typ_matches("JWT", "jwt"));
        assert!(typ_matches("application/at+jwt", "at+JWT"));
        assert!(typ_matches("at+jwt", "Application/at+jwt"));
        assert!(!typ_matches("JWT", "at+jwt"));
        assert!(!typ_matches("application/", "jwt"));
    }
}
