//! A tower layer that authenticates WebSocket handshakes (or any HTTP request) with a JWT
//! before they reach the application, and hands the typed claims to everything after it,
//! including the upgraded socket.
//!
//! A WebSocket is authenticated once, at the handshake, and then lives for hours. Whatever
//! the handshake lets through keeps its access for the connection's whole life, so the
//! check must be strict where it happens: tokens with `alg: none`, tokens signed with an
//! RSA public key used as an HMAC secret (algorithm confusion), tokens with a `kid` that
//! points at the wrong key, expired, not yet valid, for another issuer or audience,
//! tampered, revoked, or oversized are refused before any upgrade (the attacks of RFC 8725,
//! "JWT Best Current Practices"). [`JwtAuthLayer`] verifies with [`jsonwebtoken`]: every
//! [`VerifyingKey`] is bound to one algorithm in configuration, never to the token's `alg`; no claim
//! is read before the signature verifies (only the header is, to choose the key; see
//! [JOSE header parameters](#jose-header-parameters)). On success the request carries [`Claims<C>`], the
//! [`Principal`](wsguard_core::Principal), a [`VerifiedToken`] and the
//! [`TokenExpiry`](wsguard_core::TokenExpiry), which travels into the socket's
//! [`Connection`](wsguard_core::Connection) so that the message plane can close the socket
//! with 4440 when the token expires mid-connection.
//!
//! # Example
//!
//! The token is the example of RFC 7515 appendix A.1 with its published key; its `exp` is
//! in 2011, so the example fixes the clock, and its only identity claim is `iss`.
//!
//! ```
//! use std::{convert::Infallible, time::{Duration, UNIX_EPOCH}};
//! use http::{header::AUTHORIZATION, Request, Response, StatusCode};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use wsguard_core::{Principal, Reason, Rejection};
//! use wsguard_jwt_auth::{jwk::Jwk, Claims, JwtAuthLayer, VerifyingKey, KeySet};
//!
//! #[derive(Clone, serde::Deserialize)]
//! struct MyClaims {
//!     iss: String,
//!     #[serde(rename = "http://example.com/is_root")]
//!     is_root: bool,
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let jwk: Jwk = serde_json::from_str(r#"{"kty":"oct","alg":"HS256",
//!     "k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#)?;
//! let keys = KeySet::from_keys([VerifyingKey::from_jwk(&jwk)?])?;
//!
//! let layer = JwtAuthLayer::<MyClaims>::new(keys)
//!     .principal_claim("iss")?
//!     .with_clock(|| UNIX_EPOCH + Duration::from_secs(1_300_819_000));
//!
//! let mut service = ServiceBuilder::new().layer(layer).service_fn(|req: Request<()>| async move {
//!     let Claims(claims) = req.extensions().get::<Claims<MyClaims>>().unwrap().clone();
//!     let user = req.extensions().get::<Principal>().unwrap();
//!     assert_eq!(user.as_str(), "joe");
//!     Ok::<_, Infallible>(Response::new(format!("{} root={}", claims.iss, claims.is_root)))
//! });
//!
//! let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
//!     .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
//!     .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
//! let req = Request::builder().header(AUTHORIZATION, format!("Bearer {token}")).body(())?;
//! let res = service.ready().await?.call(req).await?;
//! assert_eq!(res.body(), "joe root=true");
//!
//! // The same token with one byte of the payload changed.
//! let tampered = token.replacen("eyJpc3MiOiJqb2", "eyJpc3MiOiJqb3", 1);
//! let req = Request::builder().header(AUTHORIZATION, format!("Bearer {tampered}")).body(())?;
//! let res = service.ready().await?.call(req).await?;
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(res.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
//! assert_eq!(res.extensions().get::<Rejection>().unwrap().reason(), Reason::TokenInvalid);
//! # Ok(())
//! # }
//! ```
//!
//! With axum, put the layer in front of the WebSocket route and hand the socket over with
//! `wsguard_core::axum::GuardedUpgrade`; browsers send the token in the subprotocol list:
//!
//! ```
//! use axum::{routing::get, Extension, Router};
//! use wsguard_core::axum::GuardedUpgrade;
//! use wsguard_jwt_auth::{Algorithm, Claims, JwtAuthLayer, VerifyingKey, TokenSource};
//!
//! #[derive(Clone, serde::Deserialize)]
//! struct MyClaims { sub: String, room: String }
//!
//! // `new WebSocket(url, ["bearer", token])` in the browser. With the `axum` feature,
//! // `Claims<MyClaims>` is an extractor of its own.
//! async fn ws(
//!     Extension(Claims(claims)): Extension<Claims<MyClaims>>,
//!     upgrade: GuardedUpgrade,
//! ) -> axum::response::Response {
//!     upgrade.protocols(["bearer"]).on_upgrade(move |socket, conn| async move {
//!         // `conn.token_expiry()` is the token's expiry; `conn.principal()` its subject.
//!         let _ = (socket, conn, claims.room);
//!     })
//! }
//!
//! # fn main() -> Result<(), wsguard_jwt_auth::ConfigError> {
//! let layer = JwtAuthLayer::<MyClaims>::new(VerifyingKey::hmac(Algorithm::HS256, &[42; 32])?)
//!     .with_token_sources([TokenSource::protocol("bearer")?, TokenSource::bearer()])?
//!     .with_audiences(["chat"])
//!     .close_mode(true);
//! let app: Router = Router::new().route("/ws", get(ws)).layer(layer);
//! # Ok(())
//! # }
//! ```
//!
//! # Refusals
//!
//! | cause ([`Failure`]) | answer | after an upgrade ([close mode](JwtAuthLayer::close_mode)) |
//! |---|---|---|
//! | no token | 401, `WWW-Authenticate: Bearer` | 4401 |
//! | invalid token (signature, `alg`, `kid`, claims, issuer, audience, `nbf`, length, ...) | 401, `Bearer error="invalid_token"` | 4401 |
//! | expired | 401, `Bearer error="invalid_token", error_description="token expired"` | 4440 |
//! | predicate denied, revoked, site not allowed | 403 | 4403 |
//! | two tokens in one request | 400 (RFC 6750 section 3.1) | 1008 |
//! | revocation store down (fail closed) | 500 | 1011 |
//! | keys not loaded yet: a JWKS or OpenID Connect source (feature `jwks`) that could hold the token's key has not completed its first fetch ([`Failure::KeysUnavailable`]) | 503, `Retry-After` | 1013 |
//!
//! Bodies are short and generic; the precise [`Failure`] goes to a `tracing` event (target
//! `wsguard_jwt_auth`, with the reason, the cause, the token's source and the client
//! address, never the token, a claim or a key) and into the response's extensions. Each
//! refusal is counted by `wsguard_core::guard::record_rejection` (layer `jwt_auth`). For
//! tonic, answer in the gRPC form with
//! [`on_rejection(GrpcRejection)`](JwtAuthLayer::on_rejection).
//!
//! # Revocation that reaches live sockets
//!
//! A [`Revocation`] store refuses a revoked token at its next handshake; a WebSocket opened
//! with it before stays open for hours. With [`LiveSessions`], a revocation closes those
//! sockets too, at once:
//!
//! - [`JwtAuthLayer::with_sessions`] registers every WebSocket handshake the layer accepts,
//!   by subject and by token ([`TokenId`], a hash of the `jti`), for exactly as long as the
//!   connection lives (the entry is held by the connection's
//!   [`ConnectionScope`](wsguard_core::ConnectionScope), so the registry never outgrows the
//!   live connections);
//! - [`InMemoryRevocations::with_sessions`] closes the matching connections of this instance
//!   when it revokes a token or a subject (`wsguard-redis`'s `RedisRevocations` does it on
//!   every instance of a fleet, through Redis pub/sub); a store of your own calls
//!   [`LiveSessions::close_token`] or [`LiveSessions::close_subject_before`];
//! - each connection's socket closes with **4403** ([`Reason::Forbidden`](wsguard_core::Reason::Forbidden),
//!   the answer the revoked token gets at a handshake: 403, or 4403 in close mode) through
//!   the one closing handshake, when it is served through the message plane
//!   (`wsguard_core::GuardedSocket`, or the facade's `SocketGuard`) or wrapped with
//!   `wsguard_core::Hygiene::wrap_connection`, which obey the connection's
//!   [`CloseHandle`](wsguard_core::CloseHandle). A bare socket without either is not closed:
//!   fire nothing at it, or read `conn.scope().close_handle()` yourself.
//!
//! See [`LiveSessions`] for an example.
//!
//! # JOSE header parameters
//!
//! The header is the only part of a token read before its signature verifies, so it decides
//! which bytes are verified, with which key, and how the payload is read. A signer and a
//! verifier that understand a header differently check different things: the layer keeps
//! the three parameters it implements, ignores those that can never change the outcome, and
//! refuses every other parameter that could, with 401 `invalid_token` (4401 in close mode).
//!
//! | parameter | what the layer does | why |
//! |---|---|---|
//! | `alg` | required; one of the supported algorithms (never `none`), and must be the algorithm of the key that verifies | RFC 7515 section 4.1.1, RFC 8725 sections 2.1 and 3.1 |
//! | `kid` | a string; chooses among the configured keys only | RFC 7515 section 4.1.4, RFC 8725 section 3.10 |
//! | `typ` | a string; compared when [`require_type`](JwtAuthLayer::require_type) is set, else ignored | RFC 7515 section 4.1.9, RFC 8725 section 3.11 |
//! | `cty` | a string; ignored, except `JWT`, `JOSE` and `JOSE+JSON` (a nested token, which the layer does not unwrap): refused | RFC 7519 sections 5.2 and 7.2 step 8, RFC 8725 section 2.3 |
//! | `crit` | refused whatever its value: the layer implements no extension, and `[]` is forbidden | RFC 7515 section 4.1.11 |
//! | `b64` | refused, `true` or `false`: a verifier that ignores `"b64":false` checks other bytes than the signer signed, and JWTs must not use it | RFC 7797 sections 3, 6 and 7 |
//! | `jku`, `x5u` | refused: a location to fetch the key from; never followed | RFC 7515 sections 4.1.2 and 4.1.5, RFC 8725 sections 2.9 and 3.10 |
//! | `jwk`, `x5c` | refused: a key (or certificate chain) carried by the token itself; never used | RFC 7515 sections 4.1.3 and 4.1.6, RFC 8725 section 3.10 |
//! | `x5t`, `x5t#S256` | ignored: thumbprints that identify a certificate but carry no key; the key is chosen by `kid` | RFC 7515 sections 4.1.7 and 4.1.8 |
//! | `enc`, `zip`, `epk`, `apu`, `apv`, `iv`, `tag`, `p2s`, `p2c` | refused: JWE parameters (encryption, compression, key agreement); a compact JWS with them is not what it seems | RFC 7516 sections 4.1.2 and 4.1.3, RFC 7518 sections 4.6 to 4.8, RFC 8725 sections 2.8 and 3.12 |
//! | any other name (`foo`, `url`, `nonce`, `ppt`, claims replicated in the header, `B64`: names are case-sensitive) | ignored | RFC 7515 section 4: a parameter that is not understood and not in `crit` must be ignored |
//!
//! A header is also refused when it is not one JSON object in UTF-8 with nothing after it
//! (RFC 7515 section 5.2, RFC 8725 section 3.7), or when a parameter named above (any of
//! them) appears twice: RFC 7515 section 4 lets a parser either refuse duplicates or keep the
//! last one, and parsers that keep the first exist, so refusing is the only answer all of
//! them agree with (RFC 7515 section 10.12). A duplicate of an ignored name is not looked
//! for: whichever copy a parser keeps, the layer reads neither, and tracking them would cost
//! memory in proportion to the attacker's input.
//!
//! The refusal's [`Failure`] says why ([`Failure::CriticalHeader`],
//! [`Failure::UnsupportedHeader`], [`Failure::DuplicateHeader`], [`Failure::BadHeader`]), and
//! the `tracing` event names the parameter from the fixed set of [`HeaderParameter`] (never
//! the header's text; any other name is logged as `unknown`).
//!
//! # Time
//!
//! `exp` and `nbf` are checked with a leeway (default 60 s) against the layer's clock,
//! [`SystemTime::now`](std::time::SystemTime::now) unless [`with_clock`](JwtAuthLayer::with_clock)
//! replaces it. jsonwebtoken's own `Validation` reads the system clock only, so the layer
//! checks the registered claims itself (in one pass over the verified payload), reads the
//! header itself (in one pass, see above), and uses jsonwebtoken for what it is made for:
//! keys and signatures.
//! The [`TokenExpiry`](wsguard_core::TokenExpiry) handed on is `exp` plus the leeway: the
//! instant the layer itself would start refusing the token.
//!
//! # Query tokens
//!
//! A token in the query string is taken out of the request URI before the inner service
//! runs, other parameters kept byte for byte, so the application, tower-http's `TraceLayer`
//! and access logs placed *inside* the layer never see it. Middleware placed *outside* it
//! (and axum's `OriginalUri`, if an outer `Router` recorded it before this layer ran) still
//! sees the original URI: put request logging inside the layer, or prefer the subprotocol
//! list, which is never logged.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `rust-crypto` (default) | signature verification with the pure-Rust RustCrypto crates |
//! | `aws-lc-rs` | signature verification with aws-lc-rs for the public-key algorithms (used when both are enabled) |
//! | `jwks` | [`jwks::Jwks`]: keys from a JWKS URL or an OpenID Connect issuer (discovery), cached and refreshed (reqwest + rustls) |
//! | `axum` | [`Claims<C>`] and [`VerifiedToken`] as axum extractors |
//! | `site-token` | [`site_claim`](JwtAuthLayer::site_claim): site/widget tokens bound to `Origin` domains |
//! | `metrics` | rejection counters through the `metrics` facade |
//!
//! HMAC keys (`HS256`, `HS384`, `HS512`) are checked with RustCrypto's `hmac` under either
//! feature: the HMAC state keyed with the secret is computed once, when the
//! [`VerifyingKey`] is built, and each token's tag is compared with it in constant time and at
//! full length.
//!
//! The layer names its `jsonwebtoken` backend explicitly, so it works with either feature or
//! both. Your own calls to `jsonwebtoken::encode` or `decode` use jsonwebtoken's process-wide
//! backend, which it cannot choose when both are compiled in (for example under
//! `--all-features`): install one first with
//! `jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default()` (or `aws_lc`'s).
//!
//! # Contributor notes
//!
//! Every wsguard middleware crate has the same shape; keep this one to it.
//!
//! - **One way through.** `layer.rs` (the layer and its builder methods) -> `service.rs`
//!   (the service) -> `future.rs` (the response future) -> `config.rs` (the configuration
//!   the layer and its services share, the decision on each request, and the log and count
//!   of each refusal). No module imports one above it. `call` asks `config.rs` for the
//!   decision and builds the future; every state after that (the key fetch, the revocation
//!   store, the asynchronous predicate, close mode) lives in `future.rs`. Below them,
//!   `verify.rs` verifies one token, and `keys/` holds the keys by concept (`key.rs`,
//!   `set.rs`, `handle.rs`, `jwks.rs`, and `source.rs`, the one crate-private trait every
//!   kind of key source implements). `revocation.rs` (the stores) uses `sessions.rs` (the
//!   live sessions a revocation closes), which imports neither.
//! - **Type parameters.** The layer is `JwtAuthLayer<C, P>`: the claims type and the
//!   rejection policy (which shapes the response). The service is `JwtAuth<S, C, P>`: the
//!   inner service first, then the layer's parameters in the layer's order. Its future is
//!   `ResponseFuture<S, ReqBody, C, P>`: the inner service, the request body, then the same
//!   parameters in the same order. Hooks that run at most once per handshake (the
//!   [`Revocation`] store, the [`ClaimsPredicate`]) are boxed, not type parameters: one
//!   allocation next to a signature check costs nothing measurable, and every user-facing
//!   type stays short. The builder methods take `impl Revocation` / `impl ClaimsPredicate<C>`
//!   and box them; the traits keep their associated futures.
//! - **Polled after completion.** A `ResponseFuture` that has returned `Ready` panics with
//!   "ResponseFuture polled after completion" when polled again (once it has handed over to
//!   the inner service's future, it does what that future does). This is what tower-http's
//!   futures do, and what [`Future::poll`](std::future::Future::poll) allows: polling a
//!   finished future is the caller's bug, and a second, made-up answer or a future pending
//!   forever would hide it.
//! - **The inner service.** Every service has `get_ref`, `get_mut` and `into_inner`.
//! - **Names.** The option that accepts a refused handshake and closes the socket at once
//!   with the close code (browsers cannot read a refused handshake's status) is called
//!   `close_mode` ([`JwtAuthLayer::close_mode`]), as in `wsguard-conn-limit`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod claims;
mod config;
mod error;
mod future;
mod header;
mod keys;
mod layer;
mod predicate;
mod revocation;
mod segment;
mod service;
mod sessions;
mod source;
mod verify;

#[cfg(feature = "jwks")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks")))]
pub use keys::jwks;

#[cfg(feature = "axum")]
mod extract;

pub use claims::{Claims, NoClaims, VerifiedToken};
pub use config::DEFAULT_MAX_TOKEN_LEN;
pub use error::{ConfigError, Failure, HeaderParameter};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::MissingClaims;
pub use future::ResponseFuture;
pub use keys::{KeySet, KeySetHandle, KeySource, VerifyingKey};
pub use layer::JwtAuthLayer;
pub use predicate::ClaimsPredicate;
pub use revocation::{
    InMemoryRevocations, Revocation, RevocationError, RevocationQuery, RevocationStatus, StoreFull,
};
pub use service::JwtAuth;
pub use sessions::{InvalidTokenId, LiveSession, LiveSessions, TokenId};
pub use source::TokenSource;

#[doc(no_inline)]
pub use jsonwebtoken::{jwk, Algorithm};

/// Re-exported for writing [`ClaimsPredicate`]s: their answer.
pub use wsguard_core::Access;
