//! Property tests: no header, query or token makes the layer panic, and whatever the
//! request, the inner service never sees a token in the query or the subprotocol list.

mod common;

use std::convert::Infallible;

use common::*;
use http::{Request, Response};
use proptest::prelude::*;
use tower::ServiceBuilder;
use wsguard_jwt_auth::{JwtAuthLayer, TokenSource};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Query strings and header values built from the characters that matter.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9._~%=&;, +\"-]{0,80}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_and_never_hands_on_a_token(
        query in text(),
        protocols in text(),
        authorization in text(),
        cookie in text(),
        token in proptest::string::string_regex("[a-zA-Z0-9._-]{0,120}").unwrap(),
    ) {
        let layer = JwtAuthLayer::<serde_json::Value>::new(hs256_key())
            .with_token_sources([
                TokenSource::bearer(),
                TokenSource::query("token").unwrap(),
                TokenSource::protocol("bearer").unwrap(),
                TokenSource::protocol_prefix("jwt.").unwrap(),
                TokenSource::cookie("session").unwrap(),
            ])
            .unwrap()
            .close_mode(true);
        let mut svc = ServiceBuilder::new().layer(layer).service_fn(|req: Request<()>| async move {
            if let Some(query) = req.uri().query() {
                for pair in query.split('&') {
                    let key = pair.split_once('=').map_or(pair, |(k, _)| k);
                    assert_ne!(key, "token", "a query token reached the inner service");
                }
            }
            for value in req.headers().get_all("sec-websocket-protocol") {
                let entries: Vec<&str> = value.to_str().unwrap().split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
                for (i, entry) in entries.iter().enumerate() {
                    assert!(!entry.starts_with("jwt."), "a prefixed token reached the inner service");
                    if *entry == "bearer" {
                        assert!(entries.get(i + 1).is_none(), "a token after the marker reached the inner service");
                    }
                }
            }
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let uri = format!("/ws?{}&token={token}", query.replace(['#', ' ', '"'], ""));
        let mut req = Request::builder()
            .uri(uri)
            .header("upgrade", "websocket")
            .header("sec-websocket-protocol", format!("{protocols}, bearer, {token}"));
        for (name, value) in [("authorization", &authorization), ("cookie", &cookie)] {
            req = req.header(name, value.as_str());
        }
        let Ok(req) = req.body(()) else { return Ok(()) };
        let res = runtime().block_on(call(&mut svc, req));
        prop_assert!(res.status().is_client_error() || res.status().is_success() || res.status().is_server_error());
    }

    #[test]
    fn arbitrary_tokens_are_refused_without_panicking(token in "[ -~]{0,300}") {
        let mut svc = ServiceBuilder::new()
            .layer(JwtAuthLayer::<serde_json::Value>::new(hs256_key()))
            .service_fn(inner);
        let Ok(req) = Request::builder().header("authorization", format!("Bearer {token}")).body(()) else {
            return Ok(());
        };
        let res = runtime().block_on(call(&mut svc, req));
        prop_assert_ne!(res.status(), http::StatusCode::OK);
    }
}
