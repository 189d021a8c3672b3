//! A token refused for its JOSE header is logged with a fixed cause and the parameter's name
//! from a fixed set: never the token, never the header's text.
//!
//! Alone in its own test binary: `tracing` caches per-callsite interest per process, so a
//! subscriber set for one test misses events of callsites first hit by a concurrent test.

mod common;

use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use tower::ServiceBuilder;
use wsguard_jwt_auth::JwtAuthLayer;
use wsguard_test_kit::logs::Logs;

#[tokio::test]
async fn refusals_log_the_cause_and_a_known_parameter_name_only() {
    let captured = Logs::new();
    let _guard = tracing::subscriber::set_default(captured.subscriber(tracing::Level::TRACE));

    let layer: JwtAuthLayer<serde_json::Value> = JwtAuthLayer::new(hs256_key());
    let mut svc = ServiceBuilder::new().layer(layer).service_fn(inner);
    // Attacker text in the header: in an ignored name, in `kid`, and in the refused values.
    let headers = [
        r#"{"alg":"HS256","kid":"ATTACKER-KID","ATTACKER-NAME":1,"b64":false}"#,
        r#"{"alg":"HS256","jku":"https://ATTACKER-URL.example/"}"#,
        r#"{"alg":"HS256","kid":"ATTACKER-KID","kid":"ATTACKER-KID-2"}"#,
        r#"{"alg":"HS256","crit":["ATTACKER-EXT"],"ATTACKER-EXT":1}"#,
        r#"{"alg":"ATTACKER-ALG"}"#,
    ];
    let mut tokens = Vec::new();
    for header in headers {
        let token = sign(
            header,
            &claims(""),
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET),
        );
        let res = call(&mut svc, bearer(&token)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
        tokens.push(token);
    }

    let logs = captured.text();
    for expected in [
        r#"cause="unsupported_header" header_parameter="b64""#,
        r#"cause="unsupported_header" header_parameter="jku""#,
        r#"cause="duplicate_header" header_parameter="kid""#,
        r#"cause="critical_header""#,
        r#"cause="bad_header""#,
    ] {
        assert!(logs.contains(expected), "{expected} missing in:\n{logs}");
    }
    assert!(
        !logs.contains("ATTACKER"),
        "header text in the logs:\n{logs}"
    );
    for token in &tokens {
        for part in token.split('.') {
            assert!(!logs.contains(part), "a token part in the logs:\n{logs}");
        }
    }
}
