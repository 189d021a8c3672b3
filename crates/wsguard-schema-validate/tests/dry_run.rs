//! Dry-run mode over a real socket: invalid and denied messages, which enforce mode answers
//! with error frames, reach the application as raw messages without a parsed value, and
//! each is logged and counted once with `mode="dry_run"`.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;

use axum::extract::ws::Message;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite;
use tracing::Level;
use wsguard_core::{Access, ConnectionInfo};
use wsguard_schema_validate::ValidateMessageLayer;
use wsguard_test_kit::{
    client::{self, Client},
    logs::Logs,
    metrics::Metrics,
    server, MAX_MESSAGES,
};

const INVALID: &str = r#"{"type":"error","code":"invalid_message"}"#;
const FORBIDDEN: &str = r#"{"type":"error","code":"forbidden"}"#;

/// An application answering `parsed <json>` for a message with a parsed value and `raw
/// <text>` for one without.
async fn serve(dry_run: bool) -> SocketAddr {
    let plane = ValidateMessageLayer::new()
        .authorize(|_: &ConnectionInfo, message: &Value| {
            let denied = message.get("admin") == Some(&Value::Bool(true));
            async move { Access::from(!denied) }
        })
        .dry_run(dry_run);
    server::axum_plane(plane, |mut socket| async move {
        for _ in 0..MAX_MESSAGES {
            let Some(Ok(mut msg)) = socket.next_admitted().await else {
                break;
            };
            let answer = match (msg.take_parsed::<Value>(), msg.message()) {
                (Some(value), _) => format!("parsed {value}"),
                (None, Message::Text(text)) => format!("raw {}", text.as_str()),
                (None, _) => continue, // a control frame
            };
            if socket.send(Message::text(answer)).await.is_err() {
                break;
            }
        }
    })
    .await
}

async fn ask(client: &mut Client, text: &str) -> String {
    client
        .send(tungstenite::Message::text(text.to_owned()))
        .await
        .unwrap();
    client::next(client).await.into_text().unwrap().to_string()
}

// A current-thread runtime: the server, the client and the thread-local recorder and log
// subscriber share one thread, so no other test's events reach them.
#[tokio::test]
async fn a_dry_run_hands_on_raw_what_enforce_mode_refuses_and_counts_and_logs_it() {
    let metrics = Metrics::new();
    let _metrics = metrics.set_local();
    let logs = Logs::new();
    let _logs = logs.set_local(Level::INFO);
    let rejections = |reason, mode| metrics.rejections("schema", reason, mode);

    // Enforced: the invalid and the denied message are answered with error frames.
    let enforcing = serve(false).await;
    let mut alice = client::connect(enforcing, "/ws?user=alice").await;
    assert_eq!(ask(&mut alice, r#"{"n":1}"#).await, r#"parsed {"n":1}"#);
    assert_eq!(ask(&mut alice, "not json").await, INVALID);
    assert_eq!(ask(&mut alice, r#"{"admin":true}"#).await, FORBIDDEN);
    client::close(alice).await;
    assert_eq!(rejections("invalid_message", "enforce"), 1, "{metrics}");
    assert_eq!(rejections("forbidden", "enforce"), 1, "{metrics}");
    assert_eq!(rejections("invalid_message", "dry_run"), 0, "{metrics}");

    // Dry run: both reach the application raw, without a parsed value; the valid message is
    // still parsed. Each would-be refusal is counted and logged once.
    let dry = serve(true).await;
    let mut alice = client::connect(dry, "/ws?user=alice").await;
    assert_eq!(ask(&mut alice, r#"{"n":1}"#).await, r#"parsed {"n":1}"#);
    assert_eq!(ask(&mut alice, "not json").await, "raw not json");
    assert_eq!(
        ask(&mut alice, r#"{"admin":true}"#).await,
        r#"raw {"admin":true}"#
    );
    // More invalid messages in a row than max_invalid (5) close nothing.
    for i in 0..6 {
        assert_eq!(ask(&mut alice, &format!("[{i}")).await, format!("raw [{i}"));
    }
    client::close(alice).await;
    assert_eq!(rejections("invalid_message", "dry_run"), 7, "{metrics}");
    assert_eq!(rejections("forbidden", "dry_run"), 1, "{metrics}");
    assert_eq!(rejections("invalid_message", "enforce"), 1, "{metrics}");
    assert_eq!(rejections("forbidden", "enforce"), 1, "{metrics}");
    let dry_lines = logs.lines_containing("dry run");
    assert_eq!(dry_lines.len(), 8, "{logs}");
    assert!(
        dry_lines
            .iter()
            .all(|l| l.contains("dry_run") && !l.contains("alice") && !l.contains("not json")),
        "{logs}"
    );
    assert_eq!(
        dry_lines.iter().filter(|l| l.contains("forbidden")).count(),
        1,
        "{logs}"
    );
}
