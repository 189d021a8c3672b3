//! Shared helpers: signing test tokens with any header, keys, and a service to drive. The
//! benches use them too (`#[path = "../tests/common/mod.rs"]`).
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use http::{Request, Response};
use jsonwebtoken::{crypto::CryptoProvider, Algorithm, EncodingKey};
use tower::{Service, ServiceExt};
use wsguard_core::{Principal, TokenExpiry};
use wsguard_jwt_auth::{Claims, Failure, VerifiedToken, VerifyingKey};

pub const RSA_PRIVATE: &[u8] = include_bytes!("../keys/rsa_private.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../keys/rsa_public.pem");
pub const RSA_1024_PUBLIC: &[u8] = include_bytes!("../keys/rsa1024_public.pem");
pub const P256_PRIVATE: &[u8] = include_bytes!("../keys/p256_private.pem");
pub const P256_PUBLIC: &[u8] = include_bytes!("../keys/p256_public.pem");
pub const P384_PRIVATE: &[u8] = include_bytes!("../keys/p384_private.pem");
pub const P384_PUBLIC: &[u8] = include_bytes!("../keys/p384_public.pem");
pub const ED25519_PRIVATE: &[u8] = include_bytes!("../keys/ed25519_private.pem");
pub const ED25519_PUBLIC: &[u8] = include_bytes!("../keys/ed25519_public.pem");

/// A 32-byte HS256 secret.
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// The jsonwebtoken backend of the build's feature (what the layer signs and verifies with).
pub fn provider() -> &'static CryptoProvider {
    #[cfg(feature = "aws-lc-rs")]
    return &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    #[cfg(not(feature = "aws-lc-rs"))]
    return &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of `claims` under the literal `header`, signed with `key` for `alg`
/// (whatever the header says, so that attacks can be forged).
pub fn sign(header: &str, claims: &str, alg: Algorithm, key: &EncodingKey) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let signer = (provider().signer_factory)(&alg, key).expect("signer");
    let signature = signer.try_sign(message.as_bytes()).expect("signature");
    format!("{message}.{}", b64(signature))
}

/// An HS256 token of `claims` with header `{"alg":"HS256","typ":"JWT"}`.
pub fn hs256(claims: &str) -> String {
    sign(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    )
}

/// The claims of the chat example's tokens (the benches' claim type).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ChatClaims {
    pub sub: String,
    pub exp: u64,
    pub room: String,
}

/// A token of the chat's kind for `user-42`, valid for an hour, with header
/// `{"typ":"JWT","alg":ALG}`, signed with `key` for `alg`: what the benches verify.
pub fn chat_token(alg: Algorithm, key: &EncodingKey) -> String {
    let exp = unix_now() + 3600;
    sign(
        &format!(r#"{{"typ":"JWT","alg":"{alg:?}"}}"#),
        &format!(
            r#"{{"sub":"user-42","exp":{exp},"iat":{},"room":"lobby","roles":["reader","writer"]}}"#,
            exp - 3600
        ),
        alg,
        key,
    )
}

/// An HS256 token of `claims` signed with another secret than [`SECRET`].
pub fn forged(claims: &str) -> String {
    sign(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(&[1; 32]),
    )
}

pub fn hs256_key() -> VerifyingKey {
    VerifyingKey::hmac(Algorithm::HS256, SECRET).unwrap()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `alice`, valid for an hour, plus `extra` members (a JSON fragment such as
/// `"aud":"chat"`).
pub fn claims(extra: &str) -> String {
    let exp = unix_now() + 3600;
    if extra.is_empty() {
        format!(r#"{{"sub":"alice","exp":{exp}}}"#)
    } else {
        format!(r#"{{"sub":"alice","exp":{exp},{extra}}}"#)
    }
}

pub fn encoding(alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(&[9; 64])
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(P256_PRIVATE).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(P384_PRIVATE).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(ED25519_PRIVATE).unwrap(),
        _ => unreachable!("no other algorithm"),
    }
}

pub fn decoding(alg: Algorithm) -> VerifyingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => VerifyingKey::hmac(alg, &[9; 64]),
        Algorithm::ES256 => VerifyingKey::ec_pem(alg, P256_PUBLIC),
        Algorithm::ES384 => VerifyingKey::ec_pem(alg, P384_PUBLIC),
        Algorithm::EdDSA => VerifyingKey::ed_pem(ED25519_PUBLIC),
        _ => VerifyingKey::rsa_pem(alg, RSA_PUBLIC),
    }
    .unwrap()
}

pub const ALL: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What the inner service saw, as its response body: the URI, the principal, the
/// `Sec-WebSocket-Protocol` header and whether an expiry was set.
pub async fn inner(req: Request<()>) -> Result<Response<String>, Infallible> {
    let principal = req
        .extensions()
        .get::<Principal>()
        .map(Principal::to_string);
    let token = req.extensions().get::<VerifiedToken>().is_some();
    let expiry = req.extensions().get::<TokenExpiry>().is_some();
    let claims = req
        .extensions()
        .get::<Claims<serde_json::Value>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let protocols = req
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok(Response::new(format!(
        "uri={} principal={principal:?} token={token} expiry={expiry} protocols={protocols:?} claims={claims}",
        req.uri()
    )))
}

/// Sends `req` through `svc`.
pub async fn call<S>(svc: &mut S, req: Request<()>) -> Response<String>
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
{
    svc.ready().await.unwrap().call(req).await.unwrap()
}

pub fn bearer(token: &str) -> Request<()> {
    Request::builder()
        .uri("/ws")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
}

pub fn failure(res: &Response<String>) -> Option<Failure> {
    res.extensions().get::<Failure>().copied()
}

pub fn hour() -> Duration {
    Duration::from_secs(3600)
}
