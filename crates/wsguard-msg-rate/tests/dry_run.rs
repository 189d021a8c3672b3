//! Dry-run mode over a real socket: the messages that enforce mode refuses are echoed, and
//! each refusal is logged and counted once with `mode="dry_run"`.
#![cfg(feature = "metrics")]

use std::{net::SocketAddr, time::Duration};

use axum::extract::ws::Message;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;
use tracing::Level;
use wsguard_core::PrincipalKey;
use wsguard_msg_rate::{rate, Budget, MessageRateLimitLayer};
use wsguard_test_kit::{
    client::{self, Client},
    logs::Logs,
    metrics::Metrics,
    server, MAX_MESSAGES,
};

/// An echo server whose sockets go through `layer`; `?user=NAME` becomes the principal.
async fn serve(layer: MessageRateLimitLayer) -> SocketAddr {
    server::axum_plane(layer, |mut socket| async move {
        for _ in 0..MAX_MESSAGES {
            let Some(Ok(msg)) = socket.next().await else {
                break;
            };
            if matches!(msg, Message::Text(_)) && socket.send(msg).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// Sends `n` messages, then reads `n` answers; returns how many were echoes.
async fn flood(client: &mut Client, n: usize) -> usize {
    for i in 0..n {
        client
            .feed(tungstenite::Message::text(format!("m{i}")))
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let mut echoed = 0;
    for _ in 0..n {
        let text = client::next(client).await.into_text().unwrap().to_string();
        if text.starts_with('m') {
            echoed += 1;
        }
    }
    echoed
}

const LAYER: &str = "msg_rate";
const REASON: &str = "rate_exceeded";

/// A burst of 3 per user that does not refill during the test.
fn layer() -> MessageRateLimitLayer {
    let budget = Budget::new().messages(rate(1).per(Duration::from_secs(3600)).burst(3));
    MessageRateLimitLayer::new()
        .per_key(PrincipalKey::default(), budget)
        .unwrap()
        .never_close()
}

// A current-thread runtime: the server, the client and the thread-local recorder and log
// subscriber share one thread, so no other test's events reach them.
#[tokio::test]
async fn a_dry_run_echoes_what_enforce_mode_refuses_and_counts_and_logs_it() {
    let metrics = Metrics::new();
    let _metrics = metrics.set_local();
    let logs = Logs::new();
    let _logs = logs.set_local(Level::INFO);

    // Enforced: 3 of 8 echoed, 5 refused.
    let enforcing = serve(layer()).await;
    let mut alice = client::connect(enforcing, "/ws?user=alice").await;
    assert_eq!(flood(&mut alice, 8).await, 3);
    client::close(alice).await;
    assert_eq!(metrics.rejections(LAYER, REASON, "enforce"), 5, "{metrics}");
    assert_eq!(metrics.rejections(LAYER, REASON, "dry_run"), 0, "{metrics}");

    // Dry run: all 8 echoed; the 5 it would have refused are counted and logged, once each.
    let dry = serve(layer().dry_run(true)).await;
    let mut alice = client::connect(dry, "/ws?user=alice").await;
    assert_eq!(flood(&mut alice, 8).await, 8);
    client::close(alice).await;
    assert_eq!(metrics.rejections(LAYER, REASON, "dry_run"), 5, "{metrics}");
    assert_eq!(metrics.rejections(LAYER, REASON, "enforce"), 5, "{metrics}");
    let dry_lines = logs.lines_containing("dry run");
    assert_eq!(dry_lines.len(), 5, "{logs}");
    assert!(
        dry_lines
            .iter()
            .all(|l| l.contains("rate_exceeded") && !l.contains("alice")),
        "{logs}"
    );
}
