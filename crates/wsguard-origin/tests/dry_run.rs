//! Dry-run mode over a real socket: the handshake that enforce mode refuses with 403
//! upgrades, and its refusal is logged and counted with `mode="dry_run"`.
#![cfg(feature = "metrics")]

use std::net::SocketAddr;

use axum::{routing::get, Router};
use http::{header, HeaderValue, StatusCode};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::Level;
use wsguard_core::axum::GuardedUpgrade;
use wsguard_origin::{AllowList, OriginGuardLayer};
use wsguard_test_kit::{
    client,
    handoff::{Echo, SocketHandler},
    logs::Logs,
    server,
};

async fn serve(layer: OriginGuardLayer) -> SocketAddr {
    let app = Router::new()
        .route(
            "/ws",
            get(|upgrade: GuardedUpgrade| async move {
                upgrade.on_upgrade(|socket, conn| Echo.handle(socket, conn))
            }),
        )
        .layer(layer);
    server::axum(app).await
}

fn request(addr: SocketAddr, origin: &str) -> http::Request<()> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
    req
}

/// The value of one series in a Prometheus text exposition (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

const ENFORCED: &str =
    r#"wsguard_rejections_total{layer="origin",reason="origin_not_allowed",mode="enforce"}"#;
const DRY_RUN: &str =
    r#"wsguard_rejections_total{layer="origin",reason="origin_not_allowed",mode="dry_run"}"#;

// A current-thread runtime: the server, the client and the thread-local recorder and log
// subscriber share one thread, so no other test's events reach them.
#[tokio::test]
async fn a_dry_run_lets_a_foreign_origin_upgrade_and_counts_and_logs_it() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let logs = Logs::new();
    let _logs = tracing::subscriber::set_default(logs.subscriber(Level::INFO));

    let layer = OriginGuardLayer::new(AllowList::new().add_origin("https://chat.example").unwrap())
        .allow_missing_origin(false);

    // Enforced: 403, counted as enforce.
    let enforcing = serve(layer.clone()).await;
    match client::try_connect(request(enforcing, "https://evil.example")).await {
        Err((status, _)) => assert_eq!(status, StatusCode::FORBIDDEN),
        Ok(_) => panic!("expected 403, got an upgrade"),
    }
    assert_eq!(value(&metrics.render(), ENFORCED), 1.0);
    assert_eq!(value(&metrics.render(), DRY_RUN), 0.0);

    // Dry run: the same handshake upgrades and the socket works; the refusal it would have
    // had is counted as dry_run and logged, and nothing more is counted as enforced.
    let dry = serve(layer.dry_run(true)).await;
    let mut ws = client::try_connect(request(dry, "https://evil.example"))
        .await
        .expect("a dry run refuses nothing");
    client::round_trip(&mut ws, "through").await;
    client::close(ws).await;
    let text = metrics.render();
    assert_eq!(value(&text, DRY_RUN), 1.0, "{text}");
    assert_eq!(value(&text, ENFORCED), 1.0, "{text}");
    let lines = logs.text();
    let dry_lines: Vec<_> = lines.lines().filter(|l| l.contains("dry run")).collect();
    assert_eq!(dry_lines.len(), 1, "{lines}");
    assert!(dry_lines[0].contains("dry_run"), "{lines}");
    assert!(
        dry_lines[0].contains("origin=https://evil.example"),
        "{lines}"
    );

    // An allowed origin is neither refused nor counted in either mode.
    let mut ws = client::try_connect(request(dry, "https://chat.example"))
        .await
        .unwrap();
    client::round_trip(&mut ws, "allowed").await;
    client::close(ws).await;
    assert_eq!(value(&metrics.render(), DRY_RUN), 1.0);
}
