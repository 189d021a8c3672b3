//! Dry-run mode over real sockets: the connections that enforce mode refuses are upgraded
//! and served, holding no slot (so nothing leaks and nobody is kept out), and each
//! would-be refusal is logged and counted once with `mode="dry_run"`.
#![cfg(feature = "metrics")]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use axum::{body::Body, response::Response, routing::get, Router};
use http::{Request, StatusCode};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceBuilder;
use tracing::Level;
use wsguard_conn_limit::ConnLimitLayer;
use wsguard_core::{axum::GuardedUpgrade, ClientIp, Principal};
use wsguard_test_kit::{
    client::{self, Client, Refusal},
    handoff::{Echo, SocketHandler},
    logs::Logs,
    server,
};

/// The identity a deployment gets from wsguard-client-ip and wsguard-jwt-auth, from test
/// headers (`x-user`; the address is always 192.0.2.1).
fn identity(mut req: Request<Body>) -> Request<Body> {
    let user = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(user) = user {
        req.extensions_mut().insert(Principal::new(user));
    }
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
    req
}

/// An echo server behind `layer`.
async fn serve(layer: ConnLimitLayer) -> SocketAddr {
    let app = Router::new()
        .route(
            "/ws",
            get(|upgrade: GuardedUpgrade| async move {
                upgrade.on_upgrade(|socket, conn| Echo.handle(socket, conn))
            }),
        )
        .layer(
            ServiceBuilder::new()
                .map_request(identity)
                .layer(layer)
                .map_response(|res: Response<_>| res.map(Body::new)),
        );
    server::axum_without_connect_info(app).await
}

/// Connects as `user` (none when empty), and proves an opened socket open end to end.
async fn connect(addr: SocketAddr, user: &str) -> Result<Client, Refusal> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    if !user.is_empty() {
        req.headers_mut().insert("x-user", user.parse().unwrap());
    }
    let mut socket = client::try_connect(req).await?;
    client::round_trip(&mut socket, "ping").await;
    Ok(socket)
}

/// Waits (bounded) until the limit named `name` counts `n` connections.
async fn until_active(layer: &ConnLimitLayer, name: &str, n: u64) {
    for _ in 0..500 {
        if layer.active(name) == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "limit {name}: {:?} active, expected {n}",
        layer.active(name)
    );
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

fn refusals(reason: &str, mode: &str) -> String {
    format!(
        r#"wsguard_conn_limit_refusals_total{{limit="principal",reason="{reason}",mode="{mode}"}}"#
    )
}

fn rejections(reason: &str, mode: &str) -> String {
    format!(r#"wsguard_rejections_total{{layer="conn_limit",reason="{reason}",mode="{mode}"}}"#)
}

// A current-thread runtime: the server, the clients and the thread-local recorder and log
// subscriber share one thread, so no other test's events reach them.
#[tokio::test]
async fn a_dry_run_serves_over_limit_connections_without_slots_and_counts_and_logs_them() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let logs = Logs::new();
    let _logs = tracing::subscriber::set_default(logs.subscriber(Level::INFO));

    // Enforced: alice's third socket is refused.
    let enforcing = ConnLimitLayer::builder().per_principal(2).build().unwrap();
    let addr = serve(enforcing.clone()).await;
    let a1 = connect(addr, "alice").await.unwrap();
    let a2 = connect(addr, "alice").await.unwrap();
    let (status, _) = connect(addr, "alice").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    drop((a1, a2));
    let text = metrics.render();
    assert_eq!(
        value(&text, &refusals("too_many_connections", "enforce")),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&text, &refusals("too_many_connections", "dry_run")),
        0.0,
        "{text}"
    );

    // Dry run: all four of alice's sockets are served; two hold slots, the two over the
    // limit hold none, and each of those is counted and logged once.
    let dry = ConnLimitLayer::builder()
        .per_principal(2)
        .dry_run(true)
        .build()
        .unwrap();
    let addr = serve(dry.clone()).await;
    let counted1 = connect(addr, "alice").await.unwrap();
    let counted2 = connect(addr, "alice").await.unwrap();
    let mut over1 = connect(addr, "alice").await.unwrap();
    let mut over2 = connect(addr, "alice").await.unwrap();
    assert_eq!(dry.active("principal"), Some(2));
    let text = metrics.render();
    assert_eq!(
        value(&text, &refusals("too_many_connections", "dry_run")),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&text, &rejections("too_many_connections", "dry_run")),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&text, &refusals("too_many_connections", "enforce")),
        1.0,
        "{text}"
    );

    // The counted sockets close: their slots come back, while the uncounted ones stay open
    // and keep nobody out. Two new sockets are admitted and counted, with no refusal.
    client::close(counted1).await;
    client::close(counted2).await;
    until_active(&dry, "principal", 0).await;
    let counted3 = connect(addr, "alice").await.unwrap();
    let counted4 = connect(addr, "alice").await.unwrap();
    assert_eq!(dry.active("principal"), Some(2));
    client::round_trip(&mut over1, "still open").await;
    client::round_trip(&mut over2, "still open").await;
    // The uncounted sockets closing give nothing back (they held nothing).
    client::close(over1).await;
    client::close(over2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(dry.active("principal"), Some(2));
    let text = metrics.render();
    assert_eq!(
        value(&text, &refusals("too_many_connections", "dry_run")),
        2.0,
        "{text}"
    );

    // A handshake without the limit's key (no principal: enforce answers 500) goes
    // through too, holding no slot, counted as a would-be `internal` refusal.
    let mut anonymous = connect(addr, "").await.unwrap();
    client::round_trip(&mut anonymous, "hello").await;
    assert_eq!(dry.active("principal"), Some(2));
    let text = metrics.render();
    assert_eq!(
        value(&text, &rejections("internal", "dry_run")),
        1.0,
        "{text}"
    );

    client::close(anonymous).await;
    client::close(counted3).await;
    client::close(counted4).await;
    until_active(&dry, "principal", 0).await;
    assert_eq!(dry.store().tracked_keys(), 0, "nothing leaked");

    let lines = logs.text();
    let dry_lines: Vec<_> = lines.lines().filter(|l| l.contains("dry run")).collect();
    assert_eq!(dry_lines.len(), 3, "{lines}");
    assert!(dry_lines.iter().all(|l| l.contains("dry_run")
        && l.contains("principal")
        && !l.contains("alice")
        && !l.contains("192.0.2.1")));
}
