//! Tokens in the query and the subprotocol list are taken out before the inner service, and
//! never reach a log.

mod common;

use std::{
    io,
    sync::{Arc, Mutex},
};

use common::*;
use http::{Request, StatusCode};
use tower::ServiceBuilder;
use wsguard_jwt_auth::{Failure, JwtAuthLayer, TokenSource};

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn layer() -> JwtAuthLayer<serde_json::Value> {
    JwtAuthLayer::new(hs256_key())
        .with_token_sources([
            TokenSource::bearer(),
            TokenSource::query("access_token").unwrap(),
            TokenSource::protocol("bearer").unwrap(),
        ])
        .unwrap()
}

#[tokio::test]
async fn the_inner_service_and_the_logs_never_see_a_query_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // An application that logs every URI it sees, as access logs do.
    let mut svc = ServiceBuilder::new()
        .layer(layer())
        .service_fn(|req: Request<()>| async move {
            tracing::info!(uri = %req.uri(), "request served");
            inner(req).await
        });

    let token = hs256(&claims(""));
    let expired = hs256(&format!(r#"{{"sub":"alice","exp":{}}}"#, unix_now() - 3600));
    let forged = forged(&claims(""));
    let uri = |token: &str| format!("/ws?room=a%20b&access_token={token}&x=1+2&&y");

    let res = call(&mut svc, Request::builder().uri(uri(&token)).body(()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.body().starts_with("uri=/ws?room=a%20b&x=1+2&&y principal=Some(\"alice\")"),
        "{}",
        res.body()
    );

    for bad in [&expired, &forged] {
        let res = call(&mut svc, Request::builder().uri(uri(bad)).body(()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // A query token next to a header token: refused, and still not logged.
    let req = Request::builder()
        .uri(uri(&token))
        .header("authorization", format!("Bearer {expired}"))
        .body(())
        .unwrap();
    assert_eq!(failure(&call(&mut svc, req).await), Some(Failure::MultipleTokens));

    let logs = captured.text();
    assert!(logs.contains("request served"), "{logs}");
    assert!(logs.contains("uri=/ws?room=a%20b&x=1+2&&y"), "{logs}");
    assert!(logs.contains("cause=\"expired\""), "{logs}");
    assert!(logs.contains("cause=\"bad_signature\""), "{logs}");
    assert!(logs.contains("cause=\"multiple_tokens\""), "{logs}");
    for secret in [&token, &expired, &forged] {
        // No part of a token: neither its signature nor its payload.
        for part in secret.split('.').skip(1) {
            assert!(!logs.contains(part), "a token part leaked into the logs:\n{logs}");
        }
    }
    assert!(!logs.contains("alice"), "a principal leaked into the logs:\n{logs}");
}

#[tokio::test]
async fn the_subprotocol_token_is_removed_and_the_marker_kept() {
    let mut svc = ServiceBuilder::new().layer(layer()).service_fn(inner);
    let token = hs256(&claims(""));
    let req = Request::builder()
        .uri("/ws")
        .header("sec-websocket-protocol", format!("chat.v2, bearer, {token}"))
        .body(())
        .unwrap();
    let res = call(&mut svc, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.body()
            .contains("protocols=Some(\"chat.v2, bearer\")"),
        "{}",
        res.body()
    );
    assert!(!res.body().contains(&token));
}

#[tokio::test]
async fn close_mode_hands_on_a_refused_request_without_its_token() {
    // In close mode the inner service runs for a refused handshake: it must not get the
    // token, nor claims, nor a principal. It answers without a hand-off, so the layer
    // answers the plain rejection (fail closed).
    let mut svc = ServiceBuilder::new()
        .layer(layer().reject_after_upgrade(true))
        .service_fn(|req: Request<()>| async move {
            let seen = inner(req).await.unwrap().into_body();
            assert!(seen.contains("uri=/ws?x=1 principal=None token=false expiry=false"), "{seen}");
            assert!(seen.contains("protocols=Some(\"bearer\")"), "{seen}");
            Ok::<_, std::convert::Infallible>(http::Response::new(seen))
        });
    let expired = hs256(&format!(r#"{{"sub":"alice","exp":{}}}"#, unix_now() - 3600));
    let req = Request::builder()
        .uri(format!("/ws?x=1&access_token={expired}"))
        .header("upgrade", "websocket")
        .header("sec-websocket-protocol", "bearer")
        .header("connection", "upgrade")
        .body(())
        .unwrap();
    let res = call(&mut svc, req).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.body(), "token expired");

    let forged = forged(&claims(""));
    let req = Request::builder()
        .uri("/ws?x=1")
        .header("upgrade", "websocket")
        .header("sec-websocket-protocol", format!("bearer, {forged}"))
        .body(())
        .unwrap();
    let res = call(&mut svc, req).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(failure(&res), Some(Failure::BadSignature));
}
