//! Tokens in the subprotocol list are taken out before the inner service (the query token and
//! the logs: `query_logs.rs`).

mod common;

use common::*;
use http::{Request, StatusCode};
use tower::ServiceBuilder;
use wsguard_jwt_auth::{Failure, JwtAuthLayer, TokenSource};

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
async fn the_subprotocol_token_is_removed_and_the_marker_kept() {
    let mut svc = ServiceBuilder::new().layer(layer()).service_fn(inner);
    let token = hs256(&claims(""));
    let req = Request::builder()
        .uri("/ws")
        .header(
            "sec-websocket-protocol",
            format!("chat.v2, bearer, {token}"),
        )
        .body(())
        .unwrap();
    let res = call(&mut svc, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.body().contains("protocols=Some(\"chat.v2, bearer\")"),
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
        .layer(layer().close_mode(true))
        .service_fn(|req: Request<()>| async move {
            let seen = inner(req).await.unwrap().into_body();
            assert!(
                seen.contains("uri=/ws?x=1 principal=None token=false expiry=false"),
                "{seen}"
            );
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
