//! The query token is taken out before the inner service and never reaches a log.
//!
//! Alone in its own test binary: `tracing` caches per-callsite interest per process, so a
//! subscriber set for one test misses events of callsites first hit by a concurrent test.

mod common;

use common::*;
use http::{Request, StatusCode};
use tower::ServiceBuilder;
use wsguard_jwt_auth::{Failure, JwtAuthLayer, TokenSource};
use wsguard_test_kit::logs::Logs;

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
    let captured = Logs::new();
    let _guard = tracing::subscriber::set_default(captured.subscriber(tracing::Level::TRACE));

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

    let res = call(
        &mut svc,
        Request::builder().uri(uri(&token)).body(()).unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.body()
            .starts_with("uri=/ws?room=a%20b&x=1+2&&y principal=Some(\"alice\")"),
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
    assert_eq!(
        failure(&call(&mut svc, req).await),
        Some(Failure::MultipleTokens)
    );

    let logs = captured.text();
    assert!(logs.contains("request served"), "{logs}");
    assert!(logs.contains("uri=/ws?room=a%20b&x=1+2&&y"), "{logs}");
    assert!(logs.contains("cause=\"expired\""), "{logs}");
    assert!(logs.contains("cause=\"bad_signature\""), "{logs}");
    assert!(logs.contains("cause=\"multiple_tokens\""), "{logs}");
    for secret in [&token, &expired, &forged] {
        // No part of a token: neither its signature nor its payload.
        for part in secret.split('.').skip(1) {
            assert!(
                !logs.contains(part),
                "a token part leaked into the logs:\n{logs}"
            );
        }
    }
    assert!(
        !logs.contains("alice"),
        "a principal leaked into the logs:\n{logs}"
    );
}
