//! Token discovery (`Authorization: Bearer`, `?token=`, the `bearer, <token>` subprotocol
//! pair, the `token` cookie) and token verification (the JOSE header, the signature, the
//! registered claims) through `JwtAuthLayer`, an HS256 key, and a fixed clock.
//!
//! Input: text lines, each `<kind>:<rest>`:
//! - `S:<header JSON>|<payload JSON>` mints a token *signed with the layer's key* over those
//!   exact bytes (so the fuzzer explores JOSE headers and claims that carry a good
//!   signature); the n-th minted token is written `$n` (`$0` to `$9`) in later values;
//! - `A:`, `C:`, `P:`, `O:` add an `Authorization`, `Cookie`, `Sec-WebSocket-Protocol`,
//!   `Origin` header line; `Q:` sets the query string; `$n` is replaced in each.
//!
//! Invariants checked beyond "no panic":
//! - the layer answers 400, 401 or 403, or passes the request on; it never waits;
//! - a request that passes carries a `Principal` and a `VerifiedToken`, and one of the
//!   tokens the harness minted deserves it (nothing else carries a valid signature):
//!   that token's header says `"alg":"HS256"` and has no `crit`, its payload has the
//!   principal as `sub`, an `exp` not past (with the 60 s leeway), no `nbf` in the
//!   future, and no `aud` (no audience is configured);
//! - what the inner service sees has no `token` query parameter and, when the token came
//!   from the subprotocol list (offered once), no longer has it there (the layer takes
//!   them out).
#![no_main]

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::{Duration, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::Sha256;
use tower::{Layer, Service};
use wsguard_core::Principal;
use wsguard_jwt_auth::{Algorithm, JwtAuthLayer, TokenSource, VerifiedToken, VerifyingKey};

const SECRET: &[u8] = b"wsguard fuzzing key, 32 bytes ok";
/// The layer's clock: 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600;
const LEEWAY: u64 = 60;

/// What the inner service saw of an accepted request.
#[derive(Debug, Clone)]
struct Seen {
    principal: Option<String>,
    /// `VerifiedToken::source`, when there is one.
    source: Option<&'static str>,
    uri: Uri,
    protocols: Vec<Vec<u8>>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut minted: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut builder = Request::builder()
        .header("connection", "upgrade")
        .header("upgrade", "websocket");
    let mut query = None;
    let mut protocols_sent: Vec<Vec<u8>> = Vec::new();
    for line in text.lines().take(32) {
        let Some((kind, rest)) = line.split_once(':') else {
            continue;
        };
        if kind == "S" {
            if minted.len() < 10 {
                let (header, payload) = rest.split_once('|').unwrap_or((rest, "{}"));
                minted.push(mint(header.as_bytes(), payload.as_bytes()));
            }
            continue;
        }
        let value = substitute(rest, &minted);
        let name = match kind {
            "A" => "authorization",
            "C" => "cookie",
            "P" => "sec-websocket-protocol",
            "O" => "origin",
            "Q" => {
                query = Some(value);
                continue;
            }
            _ => continue,
        };
        let Ok(header) = HeaderValue::from_str(&value) else {
            continue;
        };
        if name == "sec-websocket-protocol" {
            protocols_sent.push(value.into_bytes());
        }
        let value = header;
        builder = builder.header(name, value);
    }
    let uri = match &query {
        Some(q) => format!("/ws?{q}"),
        None => "/ws".to_owned(),
    };
    let Ok(uri) = uri.parse::<Uri>() else {
        return;
    };
    let Ok(req) = builder.uri(uri).body(()) else {
        return;
    };

    let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
    let status = call(req, seen.clone());
    let seen = seen.lock().unwrap().take();
    let Some(seen) = seen else {
        assert!(
            matches!(
                status,
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ),
            "refused with {status}"
        );
        return;
    };
    assert_eq!(status, StatusCode::OK);

    // Accepted: it must have been one of our tokens, and a good one.
    let source = seen.source.expect("accepted without a VerifiedToken");
    let principal = seen.principal.expect("accepted without a Principal");
    // Only the harness can sign: some minted token must deserve to pass.
    let good = minted
        .iter()
        .any(|(_, header, payload)| acceptable(header, payload, &principal));
    assert!(
        good,
        "accepted a request without a valid token of ours: {text:?}"
    );

    // The query token and the subprotocol token are gone before the inner service.
    if let Some(q) = seen.uri.query() {
        for pair in q.split('&') {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            assert_ne!(key, "token", "the query token reached the inner service");
        }
    }
    // A token taken from the subprotocol list is not left in it (when the client offered
    // it once: a second copy that is not after the marker is an ordinary entry).
    if source == "protocol" {
        for (token, _, _) in &minted {
            let offered: usize = protocols_sent.iter().map(|p| count(p, token)).sum();
            let left: usize = seen.protocols.iter().map(|p| count(p, token)).sum();
            assert!(
                offered != 1 || left == 0,
                "the subprotocol token reached the inner service"
            );
        }
    }
});

/// A compact JWS over exactly `header` and `payload`, HS256 with the layer's key.
fn mint(header: &[u8], payload: &[u8]) -> (String, Vec<u8>, Vec<u8>) {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    (
        format!("{signing_input}.{signature}"),
        header.to_vec(),
        payload.to_vec(),
    )
}

fn substitute(value: &str, minted: &[(String, Vec<u8>, Vec<u8>)]) -> String {
    let mut out = value.to_owned();
    for (i, (token, _, _)) in minted.iter().enumerate().rev() {
        out = out.replace(&format!("${i}"), token);
    }
    out
}

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &[u8], needle: &str) -> usize {
    let needle = needle.as_bytes();
    if needle.is_empty() {
        return 0;
    }
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// The members of a JOSE header that decide whether a token may pass.
#[derive(serde::Deserialize)]
struct Jose {
    alg: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

/// Whether a token with this header and payload may be accepted for `principal`.
fn acceptable(header: &[u8], payload: &[u8], principal: &str) -> bool {
    // The header is read for its `alg` and `crit` only: other members may hold anything
    // JSON allows (such as a number out of `f64`'s range, which `Value` refuses).
    let (Ok(header), Ok(Value::Object(claims))) = (
        serde_json::from_slice::<Jose>(header),
        serde_json::from_slice::<Value>(payload),
    ) else {
        return false;
    };
    let alg_ok = header.alg.as_deref() == Some("HS256");
    let no_crit = header.crit.is_none();
    // `sub` is a string or an integer (RFC 7519 StringOrURI; integers are read as text).
    let sub_ok = match claims.get("sub") {
        Some(Value::String(sub)) => sub == principal,
        Some(Value::Number(sub)) => sub.to_string() == principal,
        _ => false,
    };
    // NumericDate may be fractional; one second of slack around the leeway's edges.
    let (now, leeway) = (NOW as f64, LEEWAY as f64);
    let exp_ok = claims
        .get("exp")
        .and_then(Value::as_f64)
        .is_some_and(|exp| exp + leeway + 1.0 >= now);
    let nbf_ok = match claims.get("nbf") {
        None => true,
        Some(nbf) => nbf.as_f64().is_some_and(|nbf| nbf - leeway - 1.0 <= now),
    };
    let no_aud = !claims.contains_key("aud");
    alg_ok && no_crit && sub_ok && exp_ok && nbf_ok && no_aud
}

/// Calls the layer; a layer without revocation or an async predicate never waits.
fn call(req: Request<()>, seen: Arc<Mutex<Option<Seen>>>) -> StatusCode {
    let layer =
        JwtAuthLayer::<Value>::new(VerifyingKey::hmac(Algorithm::HS256, SECRET).expect("key"))
            .with_token_sources([
                TokenSource::bearer(),
                TokenSource::query("token").expect("source"),
                TokenSource::protocol("bearer").expect("source"),
                TokenSource::cookie("token").expect("source"),
            ])
            .expect("sources")
            .leeway(Duration::from_secs(LEEWAY))
            .with_clock(|| UNIX_EPOCH + Duration::from_secs(NOW));
    let mut service = layer.layer(tower::service_fn(move |req: Request<()>| {
        let protocols = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        *seen.lock().unwrap() = Some(Seen {
            principal: req
                .extensions()
                .get::<Principal>()
                .map(|p| p.as_str().to_owned()),
            source: req
                .extensions()
                .get::<VerifiedToken>()
                .map(VerifiedToken::source),
            uri: req.uri().clone(),
            protocols,
        });
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = pin!(service.call(req));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(res)) => res.status(),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("the layer waited without a reason to"),
    }
}
