//! Dry-run mode over real sockets: the connections that enforce mode refuses are upgraded
//! and served, holding no slot (so nothing leaks and nobody is kept out), and each
//! would-be refusal is logged and counted once with `mode="dry_run"`. The same for the
//! handshake rate (a handshake over budget is served and spends nothing) and the failure
//! penalty (a penalised address is served, and its failures still count).
#![cfg(feature = "metrics")]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use axum::{body::Body, response::Response, Router};
use http::{Request, StatusCode};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tower::ServiceBuilder;
use tracing::Level;
use wsguard_conn_limit::{
    handshake_rate::HandshakeRateLimitLayer, penalty::FailurePenaltyLayer, ConnLimitLayer,
};
use wsguard_core::{ClientIp, ClientIpKey, Principal};
use wsguard_msg_rate::{rate, Budget, InMemoryKeyStore};
use wsguard_test_kit::{
    client::{self, Client, Refusal},
    handoff::{self, Echo, Upgrade},
    logs::Logs,
    metrics::{Metrics, REJECTIONS_TOTAL},
    poll, server,
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

/// The echo route.
fn echo_route() -> Router {
    Router::new().route("/ws", handoff::route(Upgrade::default(), Echo))
}

/// An echo server behind `layer`.
async fn serve(layer: ConnLimitLayer) -> SocketAddr {
    let app = echo_route().layer(
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
    poll::until_eq(
        format!("limit {name}, active"),
        || layer.active(name),
        Some(n),
    )
    .await;
}

/// The lines of `logs` about a dry run, each checked to carry the mode and neither the
/// address nor the user.
fn dry_run_lines(logs: &Logs) -> Vec<String> {
    let lines = logs.lines_containing("dry run");
    for line in &lines {
        assert!(line.contains("dry_run"), "{line}");
        assert!(!line.contains("192.0.2.1"), "{line}");
        assert!(!line.contains("alice"), "{line}");
    }
    lines
}

// A current-thread runtime: the server, the clients and the thread-local recorder and log
// subscriber share one thread, so no other test's events reach them.
#[tokio::test]
async fn a_dry_run_serves_over_limit_connections_without_slots_and_counts_and_logs_them() {
    let metrics = Metrics::new();
    let _metrics = metrics.set_local();
    let logs = Logs::new();
    let _logs = logs.set_local(Level::INFO);
    // `wsguard_conn_limit_refusals_total` of the per-principal limit, and the layer's
    // refusals in the shared `wsguard_rejections_total`.
    let refusals = |reason, mode| {
        metrics.counter(
            "wsguard_conn_limit_refusals_total",
            &[("limit", "principal"), ("reason", reason), ("mode", mode)],
        )
    };
    let rejections = |reason, mode| metrics.rejections("conn_limit", reason, mode);

    // Enforced: alice's third socket is refused.
    let enforcing = ConnLimitLayer::builder().per_principal(2).build().unwrap();
    let addr = serve(enforcing.clone()).await;
    let a1 = connect(addr, "alice").await.unwrap();
    let a2 = connect(addr, "alice").await.unwrap();
    let (status, _) = connect(addr, "alice").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    drop((a1, a2));
    assert_eq!(refusals("too_many_connections", "enforce"), 1, "{metrics}");
    assert_eq!(refusals("too_many_connections", "dry_run"), 0, "{metrics}");

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
    assert_eq!(refusals("too_many_connections", "dry_run"), 2, "{metrics}");
    assert_eq!(
        rejections("too_many_connections", "dry_run"),
        2,
        "{metrics}"
    );
    assert_eq!(refusals("too_many_connections", "enforce"), 1, "{metrics}");

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
    assert_eq!(refusals("too_many_connections", "dry_run"), 2, "{metrics}");

    // A handshake without the limit's key (no principal: enforce answers 500) goes
    // through too, holding no slot, counted as a would-be `internal` refusal.
    let mut anonymous = connect(addr, "").await.unwrap();
    client::round_trip(&mut anonymous, "hello").await;
    assert_eq!(dry.active("principal"), Some(2));
    assert_eq!(rejections("internal", "dry_run"), 1, "{metrics}");

    client::close(anonymous).await;
    client::close(counted3).await;
    client::close(counted4).await;
    until_active(&dry, "principal", 0).await;
    assert_eq!(dry.store().tracked_keys(), 0, "nothing leaked");

    let dry_lines = dry_run_lines(&logs);
    assert_eq!(dry_lines.len(), 3, "{logs}");
    assert!(dry_lines.iter().all(|l| l.contains("principal")), "{logs}");
}

/// An echo server behind a handshake rate `layer` (on a store of its own or shared).
async fn serve_rate(layer: HandshakeRateLimitLayer) -> SocketAddr {
    let app = echo_route().layer(ServiceBuilder::new().map_request(identity).layer(layer));
    server::axum_without_connect_info(app).await
}

/// Stands in for an authentication layer inside the penalty: a handshake without `x-user`
/// gets 401, as jwt-auth answers a forged token.
async fn stand_in_auth(req: Request<Body>, next: axum::middleware::Next) -> Response {
    if req.headers().contains_key("x-user") {
        next.run(req).await
    } else {
        axum::response::IntoResponse::into_response(StatusCode::UNAUTHORIZED)
    }
}

/// An echo server behind `penalty`, with the stand-in authentication inside it.
async fn serve_penalty(penalty: FailurePenaltyLayer) -> SocketAddr {
    let app = echo_route()
        .layer(axum::middleware::from_fn(stand_in_auth))
        .layer(ServiceBuilder::new().map_request(identity).layer(penalty));
    server::axum_without_connect_info(app).await
}

/// Asserts that `describe_metrics` registered `layer`'s would-be refusals for each of
/// `reasons` at zero: the series is in the exposition before anything is counted.
fn assert_registered_at_zero(metrics: &Metrics, layer: &str, reasons: &[&str]) {
    for reason in reasons {
        let labels = [("layer", layer), ("reason", reason), ("mode", "dry_run")];
        assert!(
            metrics.has_series(REJECTIONS_TOTAL, &labels),
            "{labels:?}: {metrics}"
        );
        assert_eq!(metrics.rejections(layer, reason, "dry_run"), 0, "{metrics}");
    }
}

#[tokio::test]
async fn a_dry_run_handshake_rate_serves_handshakes_over_budget_and_spends_nothing_on_them() {
    let metrics = Metrics::new();
    let _metrics = metrics.set_local();
    let logs = Logs::new();
    let _logs = logs.set_local(Level::INFO);
    wsguard_conn_limit::describe_metrics();
    // Every would-be refusal of the layer has its series from the start.
    assert_registered_at_zero(
        &metrics,
        "handshake_rate",
        &["rate_exceeded", "at_capacity", "bad_request", "internal"],
    );
    let rejections = |mode| metrics.rejections("handshake_rate", "rate_exceeded", mode);

    // Enforced: a burst of 2, then 429.
    let budget = || rate(1).per(Duration::from_secs(60)).burst(2);
    let enforcing = HandshakeRateLimitLayer::per_ip(budget()).unwrap();
    let addr = serve_rate(enforcing).await;
    let _a = connect(addr, "alice").await.unwrap();
    let _b = connect(addr, "alice").await.unwrap();
    let (status, _) = connect(addr, "alice").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Dry run: all five are served, the three over the burst counted and logged once each.
    let dry = HandshakeRateLimitLayer::per_ip(budget())
        .unwrap()
        .dry_run(true);
    let addr = serve_rate(dry).await;
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(connect(addr, "alice").await.unwrap());
    }
    assert_eq!(rejections("dry_run"), 3, "{metrics}");
    assert_eq!(rejections("enforce"), 1, "{metrics}");
    assert_eq!(dry_run_lines(&logs).len(), 3, "{logs}");
    for socket in sockets {
        client::close(socket).await;
    }

    // The handshakes let through over budget spent nothing: one period after the one
    // admitted handshake, an enforcing layer on the same store admits the next (had each
    // of the three over-budget handshakes been charged, the budget would be spent for three
    // periods more).
    // Long enough that the five handshakes below fit in one period on a loaded machine.
    let period = Duration::from_secs(2);
    let store =
        InMemoryKeyStore::new(Budget::new().messages(rate(1).per(period).burst(1))).unwrap();
    let dry =
        HandshakeRateLimitLayer::with_store(ClientIpKey::default(), store.clone()).dry_run(true);
    let enforcing = HandshakeRateLimitLayer::with_store(ClientIpKey::default(), store);
    let (dry_addr, enforcing_addr) = (serve_rate(dry).await, serve_rate(enforcing).await);
    let admitted = connect(dry_addr, "alice").await.unwrap();
    for _ in 0..3 {
        client::close(connect(dry_addr, "alice").await.unwrap()).await;
    }
    let (status, _) = connect(enforcing_addr, "alice").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the burst is spent");
    tokio::time::sleep(period + Duration::from_millis(100)).await;
    let next = connect(enforcing_addr, "alice").await;
    assert!(next.is_ok(), "over-budget dry-run handshakes were charged");
    assert_eq!(rejections("dry_run"), 6, "{metrics}");
    assert_eq!(rejections("enforce"), 2, "{metrics}");
    client::close(admitted).await;
}

#[tokio::test]
async fn a_dry_run_penalty_serves_a_penalised_address_and_still_records_its_failures() {
    let metrics = Metrics::new();
    let _metrics = metrics.set_local();
    let logs = Logs::new();
    let _logs = logs.set_local(Level::INFO);
    wsguard_conn_limit::describe_metrics();
    assert_registered_at_zero(
        &metrics,
        "failure_penalty",
        &["rate_exceeded", "bad_request", "internal"],
    );
    let rejections = |mode| metrics.rejections("failure_penalty", "rate_exceeded", mode);
    // Long enough that each phase below fits in one penalty on a loaded machine.
    let backoff = Duration::from_secs(2);
    let penalty = || {
        FailurePenaltyLayer::per_ip()
            .max_failures(3, Duration::from_secs(60))
            .unwrap()
            .backoff(backoff, Duration::from_secs(60))
            .unwrap()
    };

    // Enforced: three failures, then even a valid handshake is refused with 429.
    let enforcing = penalty();
    let addr = serve_penalty(enforcing.clone()).await;
    for _ in 0..3 {
        let (status, _) = connect(addr, "").await.err().unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(enforcing.penalized(), 1);
    let (status, _) = connect(addr, "alice").await.err().unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rejections("enforce"), 1, "{metrics}");

    // Dry run: the same three failures start the same penalty, ...
    let dry = penalty().dry_run(true);
    let addr = serve_penalty(dry.clone()).await;
    for _ in 0..3 {
        let (status, _) = connect(addr, "").await.err().unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(dry.penalized(), 1);
    // ... but the penalised address is served: a valid handshake upgrades and echoes, and
    // failed ones reach the authentication (401, not 429). Each is counted and logged.
    let mut served = connect(addr, "alice").await.unwrap();
    client::round_trip(&mut served, "let through").await;
    for _ in 0..3 {
        let (status, _) = connect(addr, "").await.err().unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(rejections("dry_run"), 4, "{metrics}");
    assert_eq!(rejections("enforce"), 1, "{metrics}");
    assert_eq!(
        metrics.gauge("wsguard_store_keys_over_limit", &[("store", "penalties")]),
        2.0,
        "both layers' penalties: {metrics}"
    );
    assert_eq!(dry_run_lines(&logs).len(), 4, "{logs}");

    // The failures let through were recorded: once the penalty is over, the next failure
    // starts the next penalty at once (enforce mode, having refused them, would need three
    // new failures).
    tokio::time::sleep(backoff + Duration::from_millis(100)).await;
    let (status, _) = connect(addr, "").await.err().unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        dry.penalized(),
        1,
        "penalised again by the recorded failures"
    );
    let starts = logs.lines_containing("penalty started");
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!(
        starts.iter().filter(|l| l.contains("dry_run")).count(),
        2,
        "{starts:?}"
    );
    assert!(starts.iter().all(|l| !l.contains("192.0.2.1")));
    client::close(served).await;
}
