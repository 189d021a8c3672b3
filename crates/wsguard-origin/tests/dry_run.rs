//! Dry-run mode over a real socket: the handshake that enforce mode refuses with 403
//! upgrades, and its refusal is logged and counted with `mode="dry_run"`.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;

use axum::Router;
use http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::Level;
use wsguard_origin::{AllowList, OriginGuardLayer};
use wsguard_test_kit::{
    client,
    handoff::{self, Echo, Upgrade},
    logs::Logs,
    metrics::Metrics,
    server,
};

async fn serve(layer: OriginGuardLayer) -> SocketAddr {
    let app = Router::new()
        .route("/ws", handoff::route(Upgrade::default(), Echo))
        .layer(layer);
    server::axum(app).await
}

fn request(addr: SocketAddr, origin: &str) -> http::Request<()> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
    req
}

const LAYER: &str = "origin";
const REASON: &str = "origin_not_allowed";

// A current-thread runtime: the server, the client and the thread-local recorder and log
// subscriber share one thread, so no other test's events reach them.
#[tokio::test]
async fn a_dry_run_lets_a_foreign_origin_upgrade_and_counts_and_logs_it() {
    let metrics = Metrics::new();
    let _metrics = metrics.set_local();
    let logs = Logs::new();
    let _logs = logs.set_local(Level::INFO);

    let layer = OriginGuardLayer::new(AllowList::new().add_origin("https://chat.example").unwrap())
        .allow_missing_origin(false);

    // Enforced: 403, counted as enforce.
    let enforcing = serve(layer.clone()).await;
    match client::try_connect(request(enforcing, "https://evil.example")).await {
        Err((status, _)) => assert_eq!(status, StatusCode::FORBIDDEN),
        Ok(_) => panic!("expected 403, got an upgrade"),
    }
    assert_eq!(metrics.rejections(LAYER, REASON, "enforce"), 1, "{metrics}");
    assert_eq!(metrics.rejections(LAYER, REASON, "dry_run"), 0, "{metrics}");

    // Dry run: the same handshake upgrades and the socket works; the refusal it would have
    // had is counted as dry_run and logged, and nothing more is counted as enforced.
    let dry = serve(layer.dry_run(true)).await;
    let mut ws = client::try_connect(request(dry, "https://evil.example"))
        .await
        .expect("a dry run refuses nothing");
    client::round_trip(&mut ws, "through").await;
    client::close(ws).await;
    assert_eq!(metrics.rejections(LAYER, REASON, "dry_run"), 1, "{metrics}");
    assert_eq!(metrics.rejections(LAYER, REASON, "enforce"), 1, "{metrics}");
    let dry_lines = logs.lines_containing("dry run");
    assert_eq!(dry_lines.len(), 1, "{logs}");
    assert!(dry_lines[0].contains("dry_run"), "{logs}");
    assert!(
        dry_lines[0].contains("origin=https://evil.example"),
        "{logs}"
    );

    // An allowed origin is neither refused nor counted in either mode.
    let mut ws = client::try_connect(request(dry, "https://chat.example"))
        .await
        .unwrap();
    client::round_trip(&mut ws, "allowed").await;
    client::close(ws).await;
    assert_eq!(metrics.rejections(LAYER, REASON, "dry_run"), 1, "{metrics}");
}
