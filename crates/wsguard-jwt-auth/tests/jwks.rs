//! JWKS from a real local HTTP server: rotation, a flood of random `kid`s, stale keys on
//! failure.
#![cfg(feature = "jwks")]

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{extract::State, http::StatusCode as AxumStatus, routing::get, Router};
use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use wsguard_jwt_auth::{
    jwks::{HttpFetcher, Jwks, JwksError},
    ConfigError, Failure, HeaderParameter, JwtAuthLayer, NoClaims,
};

/// The JWKS server: the document it serves (or a 500 when `None`) and how often it was asked.
#[derive(Clone, Default)]
struct Server {
    document: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn serve_doc(&self, doc: Option<String>) {
        *self.document.lock().unwrap() = doc;
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn start(server: Server) -> SocketAddr {
    let app = Router::new()
        .route(
            "/jwks.json",
            get(|State(server): State<Server>| async move {
                server.hits.fetch_add(1, Ordering::SeqCst);
                match server.document.lock().unwrap().clone() {
                    Some(doc) => (AxumStatus::OK, doc),
                    None => (AxumStatus::INTERNAL_SERVER_ERROR, String::new()),
                }
            }),
        )
        .with_state(server);
    wsguard_test_kit::server::axum(app).await
}

/// A JWK set with the test P-256 key under each of `kids` (no `alg`: bound to ES256 by its
/// curve), plus an `oct` key that must be ignored.
fn document(kids: &[&str]) -> String {
    let pem = String::from_utf8(P256_PUBLIC.to_vec()).unwrap();
    let key = Jwk::from_pem(&pem);
    let mut keys: Vec<String> = kids
        .iter()
        .map(|kid| {
            format!(
                r#"{{"kty":"EC","crv":"P-256","use":"sig","kid":"{kid}","x":"{}","y":"{}"}}"#,
                key.x, key.y
            )
        })
        .collect();
    keys.push(r#"{"kty":"oct","kid":"hmac","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#.to_owned());
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

/// The `x` and `y` of the test P-256 public key, read from its SPKI DER.
struct Jwk {
    x: String,
    y: String,
}

impl Jwk {
    fn from_pem(pem: &str) -> Self {
        use base64::{engine::general_purpose::STANDARD, Engine};
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        // The uncompressed point 04 || x || y is the last 65 bytes of a P-256 SPKI.
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 4);
        Self {
            x: b64(&point[1..33]),
            y: b64(&point[33..]),
        }
    }
}

fn es256(kid: &str) -> String {
    sign(
        &format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
        &claims(""),
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(P256_PRIVATE).unwrap(),
    )
}

fn hs256_kid(kid: &str) -> String {
    sign(
        &format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(&[0x03; 64]),
    )
}

#[tokio::test]
async fn rotation_is_picked_up_and_stale_keys_survive_failures() {
    let server = Server::default();
    server.serve_doc(Some(document(&["k1"])));
    let addr = start(server.clone()).await;
    let cooldown = Duration::from_millis(300);
    let jwks = Jwks::from_url(&format!("http://{addr}/jwks.json"))
        .unwrap()
        .cooldown(cooldown)
        .fetch_timeout(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    assert_eq!(server.hits(), 1, "fetched at start");
    assert_eq!(jwks.keys().len(), 1, "the oct key is ignored");

    let mut svc = ServiceBuilder::new()
        .layer(JwtAuthLayer::<NoClaims>::new(jwks.clone()))
        .service_fn(inner);
    assert_eq!(
        call(&mut svc, bearer(&es256("k1"))).await.status(),
        StatusCode::OK
    );

    // The provider rotates in k2. Once the cooldown since the last fetch has passed, the
    // first token naming k2 makes the cache fetch, and waits for it.
    server.serve_doc(Some(document(&["k2"])));
    tokio::time::sleep(cooldown).await;
    let res = call(&mut svc, bearer(&es256("k2"))).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));
    assert_eq!(server.hits(), 2);
    // k1 is gone from the new set.
    let res = call(&mut svc, bearer(&es256("k1"))).await;
    assert_eq!(failure(&res), Some(Failure::UnknownKey));

    // The server fails: the refresh reports it, and the keys loaded before stay usable.
    server.serve_doc(None);
    assert_eq!(jwks.refresh().await, Err(JwksError::Status(500)));
    assert_eq!(
        call(&mut svc, bearer(&es256("k2"))).await.status(),
        StatusCode::OK
    );
    // A document without a usable key (only the oct key) does not replace them either.
    server.serve_doc(Some(document(&[])));
    assert_eq!(jwks.refresh().await, Err(JwksError::NoUsableKeys));
    assert_eq!(
        call(&mut svc, bearer(&es256("k2"))).await.status(),
        StatusCode::OK
    );
    // The oct key of the document can never verify an HS256 token.
    server.serve_doc(Some(document(&["k2"])));
    jwks.refresh().await.unwrap();
    let res = call(&mut svc, bearer(&hs256_kid("hmac"))).await;
    assert_eq!(failure(&res), Some(Failure::UnknownKey));
}

#[tokio::test]
async fn a_flood_of_random_kids_fetches_at_most_once_per_cooldown() {
    let server = Server::default();
    server.serve_doc(Some(document(&["k1"])));
    let addr = start(server.clone()).await;
    let cooldown = Duration::from_secs(2);
    let jwks = Jwks::from_url(&format!("http://{addr}/jwks.json"))
        .unwrap()
        .cooldown(cooldown)
        .start()
        .await
        .unwrap();
    let layer = JwtAuthLayer::<NoClaims>::new(jwks);
    assert_eq!(server.hits(), 1);

    // Right after the start fetch, within the cooldown: unknown kids are refused at once.
    let started = Instant::now();
    let mut svc = ServiceBuilder::new().layer(layer.clone()).service_fn(inner);
    for i in 0..200 {
        let res = call(&mut svc, bearer(&es256(&format!("random-{i}")))).await;
        assert_eq!(failure(&res), Some(Failure::UnknownKey));
    }
    let expected_max = 1 + started.elapsed().as_millis() / cooldown.as_millis();
    assert!(
        server.hits() as u128 <= expected_max,
        "{} fetches",
        server.hits()
    );

    // After the cooldown, a concurrent flood: the fetches are single-flight.
    tokio::time::sleep(cooldown).await;
    let started = Instant::now();
    let flood = (0..200).map(|i| {
        let layer = layer.clone();
        tokio::spawn(async move {
            let mut svc = ServiceBuilder::new().layer(layer).service_fn(inner);
            let res = call(&mut svc, bearer(&es256(&format!("flood-{i}")))).await;
            failure(&res)
        })
    });
    for task in flood {
        let res = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res, Some(Failure::UnknownKey));
    }
    let windows = 1 + started.elapsed().as_millis() / cooldown.as_millis();
    let hits = server.hits() as u128 - 1;
    assert!(hits >= 1, "an unknown kid after the cooldown fetches");
    assert!(
        hits <= windows,
        "{hits} fetches in {windows} cooldown windows"
    );
}

#[tokio::test]
async fn a_slow_server_times_out_and_the_url_comes_only_from_configuration() {
    // A fetcher that never answers: the fetch times out and the cache keeps no keys.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetches);
    let jwks = Jwks::builder(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<jsonwebtoken::jwk::JwkSet, JwksError>>()
    })
    .fetch_timeout(Duration::from_millis(100))
    .build()
    .unwrap();
    assert_eq!(jwks.refresh().await, Err(JwksError::Timeout));
    // A token with a `jku` pointing elsewhere is refused for its header (RFC 8725 section
    // 3.10), before any key lookup; without it, the unknown `kid` fetches nothing within the
    // cooldown. Either way the URL is never followed.
    let es256 = |header: &str| {
        sign(
            header,
            &claims(""),
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(P256_PRIVATE).unwrap(),
        )
    };
    let mut svc = ServiceBuilder::new()
        .layer(JwtAuthLayer::<NoClaims>::new(jwks))
        .service_fn(inner);
    let token = es256(r#"{"alg":"ES256","kid":"x","jku":"http://127.0.0.1:1/evil.json"}"#);
    let res = call(&mut svc, bearer(&token)).await;
    assert_eq!(
        failure(&res),
        Some(Failure::UnsupportedHeader(HeaderParameter::Jku))
    );
    // The cache never got keys: the token cannot be judged (503), and within the cooldown
    // nothing is fetched again.
    let res = call(&mut svc, bearer(&es256(r#"{"alg":"ES256","kid":"x"}"#))).await;
    assert_eq!(failure(&res), Some(Failure::KeysUnavailable));
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "within the cooldown: no new fetch"
    );
}

/// A P-256 JWK set for ES256 under `kid`, as the server publishes it.
fn es256_set(kid: &str) -> jsonwebtoken::jwk::JwkSet {
    serde_json::from_str(&document(&[kid])).unwrap()
}

/// Issue 12: the chat's composition. A static HS256 key without a `kid` used to be tried for
/// every `kid`, so RS/ES tokens were refused as `algorithm_mismatch` and an unknown `kid`
/// never made the JWKS fetch.
#[tokio::test]
async fn a_static_key_without_kid_and_a_jwks_are_combined() {
    let server = Server::default();
    server.serve_doc(Some(document(&["k1"])));
    let addr = start(server.clone()).await;
    let cooldown = Duration::from_millis(300);
    let jwks = Jwks::from_url(&format!("http://{addr}/jwks.json"))
        .unwrap()
        .cooldown(cooldown)
        .start()
        .await
        .unwrap();
    let layer = JwtAuthLayer::<NoClaims>::new(
        wsguard_jwt_auth::VerifyingKey::hmac(Algorithm::HS256, &[0x03; 64]).unwrap(),
    )
    .add_key_source(jwks);
    assert!(layer.keys_ready());
    let mut svc = ServiceBuilder::new().layer(layer).service_fn(inner);
    let res = call(&mut svc, bearer(&es256("k1"))).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));
    // The static key still verifies its tokens, with or without a `kid`.
    let res = call(&mut svc, bearer(&hs256_kid("anything"))).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));

    // Rotation: the unknown `kid` k2 makes the cache fetch despite the static fallback key.
    server.serve_doc(Some(document(&["k1", "k2"])));
    tokio::time::sleep(cooldown).await;
    let res = call(&mut svc, bearer(&es256("k2"))).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));
    assert_eq!(server.hits(), 2);
    // Within the cooldown, another unknown `kid` fetches nothing and is refused at once.
    let res = call(&mut svc, bearer(&es256("k3"))).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn until_the_first_fetch_succeeds_tokens_get_503_then_pass() {
    let server = Server::default();
    server.serve_doc(None);
    let addr = start(server.clone()).await;
    let jwks = Jwks::from_url(&format!("http://{addr}/jwks.json"))
        .unwrap()
        .cooldown(Duration::from_secs(60))
        .retry_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let layer = JwtAuthLayer::<NoClaims>::new(
        wsguard_jwt_auth::VerifyingKey::hmac(Algorithm::HS256, &[0x03; 64]).unwrap(),
    )
    .add_key_source(jwks.clone());
    let mut svc = ServiceBuilder::new().layer(layer.clone()).service_fn(inner);
    // Fetched at build, not after a refresh interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.hits() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.hits() >= 1, "fetched at start");
    assert!(!layer.keys_ready() && !jwks.is_ready());

    let res = call(&mut svc, bearer(&es256("k1"))).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failure(&res), Some(Failure::KeysUnavailable));
    assert!(res.headers().contains_key("retry-after"));
    // A token of the static key does not depend on the JWKS.
    let res = call(&mut svc, bearer(&hs256_kid("x"))).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));
    // An HS256 token the static key does not verify is not the JWKS's business: 401.
    let forged = sign(
        r#"{"alg":"HS256"}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(&[0x04; 64]),
    );
    let res = call(&mut svc, bearer(&forged)).await;
    assert_eq!(failure(&res), Some(Failure::BadSignature));

    // The provider answers: the refresh task retries and the token passes.
    server.serve_doc(Some(document(&["k1"])));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !layer.keys_ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(layer.keys_ready(), "the retry fetched the keys");
    let res = call(&mut svc, bearer(&es256("k1"))).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));
}

#[tokio::test]
async fn an_oversized_set_is_refused_and_keys_stay_unavailable() {
    let server = Server::default();
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(4096));
    server.serve_doc(Some(big));
    let addr = start(server.clone()).await;
    let fetcher = HttpFetcher::new(&format!("http://{addr}/jwks.json"))
        .unwrap()
        .max_body_len(1024);
    let jwks = Jwks::builder(fetcher).build().unwrap();
    assert_eq!(jwks.refresh().await, Err(JwksError::TooLarge));
    assert!(!jwks.is_ready());
    let mut svc = ServiceBuilder::new()
        .layer(JwtAuthLayer::<NoClaims>::new(jwks))
        .service_fn(inner);
    let res = call(&mut svc, bearer(&es256("k1"))).await;
    assert_eq!(failure(&res), Some(Failure::KeysUnavailable));
}

#[tokio::test]
async fn a_cache_that_could_never_hold_a_key_is_a_configuration_error() {
    let set = || async { Ok::<_, JwksError>(es256_set("k1")) };
    let refused = [
        Jwks::builder(set).max_keys(0).build(),
        Jwks::builder(set).allowed_algorithms([]).build(),
        Jwks::builder(set)
            .allowed_algorithms([Algorithm::HS256, Algorithm::HS512])
            .build(),
        Jwks::builder(set).retry_interval(Duration::ZERO).build(),
        Jwks::builder(set).refresh_interval(Duration::ZERO).build(),
        Jwks::builder(set).rsa_algorithm(Algorithm::ES256).build(),
    ];
    for (i, result) in refused.into_iter().enumerate() {
        assert!(
            matches!(result, Err(ConfigError::Jwks { .. })),
            "case {i}: {result:?}"
        );
    }
    let jwks = Jwks::builder(set)
        .allowed_algorithms([Algorithm::HS256, Algorithm::ES256])
        .build()
        .unwrap();
    assert_eq!(jwks.refresh().await, Ok(1));
    assert!(jwks.is_ready());
}

#[test]
fn a_cache_outside_a_runtime_could_never_start() {
    let set = || async { Ok::<_, JwksError>(es256_set("k1")) };
    assert!(matches!(
        Jwks::builder(set).build(),
        Err(ConfigError::Jwks { .. })
    ));
}

/// An OpenID provider on loopback: its configuration under `/realm` and its keys at `/keys`;
/// `configuration_issuer` is the `issuer` the configuration claims.
async fn provider(configuration_issuer: Option<&str>, server: Server) -> (String, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}/realm");
    let configuration = serde_json::json!({
        "issuer": configuration_issuer.unwrap_or(&issuer),
        "jwks_uri": format!("http://{addr}/keys"),
        "id_token_signing_alg_values_supported": ["ES256"],
    })
    .to_string();
    let app = Router::new()
        .route(
            "/realm/.well-known/openid-configuration",
            get(move || async move { configuration }),
        )
        .route(
            "/keys",
            get(|State(server): State<Server>| async move {
                server.hits.fetch_add(1, Ordering::SeqCst);
                server.document.lock().unwrap().clone().unwrap_or_default()
            }),
        )
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (issuer, addr)
}

fn es256_claims(kid: &str, claims: &str) -> String {
    sign(
        &format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#),
        claims,
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(P256_PRIVATE).unwrap(),
    )
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys_and_pins_the_issuer() {
    let server = Server::default();
    server.serve_doc(Some(document(&["k1"])));
    let (issuer, _) = provider(None, server.clone()).await;
    // Reads {issuer}/.well-known/openid-configuration (OpenID Connect Discovery 1.0 section 4).
    let jwks = Jwks::from_issuer(&issuer).unwrap().start().await.unwrap();
    assert_eq!(jwks.issuer(), Some(issuer.as_str()));
    assert_eq!(server.hits(), 1, "the keys at jwks_uri were fetched");
    let mut svc = ServiceBuilder::new()
        .layer(JwtAuthLayer::<NoClaims>::new(jwks))
        .service_fn(inner);

    let own = es256_claims("k1", &claims(&format!(r#""iss":"{issuer}""#)));
    let res = call(&mut svc, bearer(&own)).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));
    // The issuer is pinned: another `iss`, or none, is refused even with a good signature.
    for other in [
        claims(r#""iss":"https://evil.example""#),
        claims(&format!(r#""iss":"{issuer}/""#)),
        claims(""),
    ] {
        let res = call(&mut svc, bearer(&es256_claims("k1", &other))).await;
        assert_eq!(failure(&res), Some(Failure::WrongIssuer), "{other}");
    }
}

#[tokio::test]
async fn a_provider_configuration_naming_another_issuer_is_refused() {
    let server = Server::default();
    server.serve_doc(Some(document(&["k1"])));
    let (issuer, _) = provider(Some("https://evil.example"), server.clone()).await;
    let jwks = Jwks::from_issuer(&issuer).unwrap().build().unwrap();
    assert!(matches!(jwks.refresh().await, Err(JwksError::Invalid(_))));
    assert!(!jwks.is_ready());
    assert_eq!(
        server.hits(),
        0,
        "jwks_uri of a foreign configuration is not followed"
    );
    let mut svc = ServiceBuilder::new()
        .layer(JwtAuthLayer::<NoClaims>::new(jwks))
        .service_fn(inner);
    let token = es256_claims("k1", &claims(&format!(r#""iss":"{issuer}""#)));
    let res = call(&mut svc, bearer(&token)).await;
    assert_eq!(failure(&res), Some(Failure::KeysUnavailable));
}

#[test]
fn issuer_urls_that_cannot_be_issuers_are_refused() {
    for issuer in [
        "login.example.com",
        "ftp://login.example.com",
        "https://login.example.com/?tenant=1",
        "https://login.example.com/#x",
    ] {
        assert!(
            matches!(
                HttpFetcher::discovery(issuer),
                Err(ConfigError::Jwks { .. })
            ),
            "{issuer}"
        );
    }
    assert!(HttpFetcher::discovery("https://login.example.com/realms/chat/").is_ok());
}
