//! The failure penalty over real sockets: axum on 127.0.0.1:0 behind the real client-IP
//! layer, a stand-in authentication layer inside the penalty (a handshake without
//! `Authorization: Bearer valid` gets 401, as jwt-auth answers a forged token), and
//! tokio-tungstenite clients bound to distinct loopback addresses.

mod common;

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    http::{Request, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use common::{client_ip, ip, spawn, ws_route};
use tokio::time::sleep;
use tower::ServiceBuilder;
use wsguard_conn_limit::penalty::FailurePenaltyLayer;

/// Stands in for jwt-auth: only `Bearer valid` passes.
async fn stand_in_auth(req: Request<Body>, next: Next) -> Response {
    let valid = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v == "Bearer valid");
    if valid {
        next.run(req).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn serve(penalty: FailurePenaltyLayer) -> SocketAddr {
    let app = ws_route()
        .layer(middleware::from_fn(stand_in_auth))
        .layer(ServiceBuilder::new().layer(client_ip()).layer(penalty));
    spawn(app).await
}

/// A handshake from `from` with a valid or a forged token (and `forwarded` as
/// `X-Forwarded-For`, if any): its status and the `Retry-After` of a refusal, in seconds.
async fn handshake(
    addr: SocketAddr,
    from: std::net::IpAddr,
    valid: bool,
    forwarded: Option<&str>,
) -> (u16, Option<u64>) {
    let token = if valid {
        "Bearer valid"
    } else {
        "Bearer forged"
    };
    let mut headers = vec![("authorization", token)];
    headers.extend(forwarded.map(|v| ("x-forwarded-for", v)));
    let (status, retry_after) = common::handshake(addr, from, &headers).await;
    (status, retry_after.map(|s| s.parse().unwrap()))
}

fn layer(backoff: Duration) -> FailurePenaltyLayer {
    FailurePenaltyLayer::per_ip()
        .max_failures(5, Duration::from_secs(60))
        .unwrap()
        .backoff(backoff, Duration::from_secs(60))
        .unwrap()
}

#[tokio::test]
async fn forged_tokens_trigger_a_penalty_that_ends_by_itself() {
    let penalty = layer(Duration::from_millis(800));
    let addr = serve(penalty.clone()).await;
    let (attacker, bystander) = (ip("127.0.0.2"), ip("127.0.0.3"));
    for i in 0..5 {
        assert_eq!(
            handshake(addr, attacker, false, None).await.0,
            401,
            "try {i}"
        );
    }
    assert_eq!(penalty.penalized(), 1);
    // Now even a valid token from that address is refused, before authentication...
    let (status, retry_after) = handshake(addr, attacker, true, None).await;
    assert_eq!((status, retry_after), (429, Some(1)));
    // ...while another address is served.
    assert_eq!(handshake(addr, bystander, true, None).await.0, 101);
    // The penalty ends by itself: any request (here another address's) lets the layer notice,
    // and the gauge falls without the penalised address coming back.
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(handshake(addr, bystander, true, None).await.0, 101);
    assert_eq!(penalty.penalized(), 0);
    assert_eq!(handshake(addr, attacker, true, None).await.0, 101);
}

#[tokio::test]
async fn the_back_off_grows_while_failures_continue_and_successes_do_not_reset_it() {
    let penalty = layer(Duration::from_millis(1000));
    let addr = serve(penalty.clone()).await;
    let attacker = ip("127.0.0.4");
    // Four failures, a success in between, a fifth failure: the success reset nothing.
    for _ in 0..4 {
        assert_eq!(handshake(addr, attacker, false, None).await.0, 401);
    }
    assert_eq!(handshake(addr, attacker, true, None).await.0, 101);
    assert_eq!(handshake(addr, attacker, false, None).await.0, 401);
    assert_eq!(handshake(addr, attacker, true, None).await, (429, Some(1)));
    sleep(Duration::from_millis(1100)).await;
    // The failures go on: the next penalty lasts twice as long.
    for _ in 0..5 {
        assert_eq!(handshake(addr, attacker, false, None).await.0, 401);
    }
    assert_eq!(handshake(addr, attacker, true, None).await, (429, Some(2)));
}

#[tokio::test]
async fn a_flood_of_addresses_stays_under_the_cap_and_keeps_the_penalised_one() {
    let penalty = layer(Duration::from_secs(60)).max_keys(32).unwrap();
    let addr = serve(penalty.clone()).await;
    let proxy = ip("127.0.0.1");
    for _ in 0..5 {
        handshake(addr, proxy, false, Some("203.0.113.9")).await;
    }
    assert_eq!(penalty.penalized(), 1);
    for i in 0..200u32 {
        let client = format!("198.51.100.{}", i % 250 + 1);
        assert_eq!(handshake(addr, proxy, false, Some(&client)).await.0, 401);
        assert!(penalty.tracked() <= 32, "{} tracked", penalty.tracked());
    }
    // The penalised address was never evicted.
    assert_eq!(
        handshake(addr, proxy, true, Some("203.0.113.9")).await.0,
        429
    );
}

#[test]
fn configurations_that_cannot_work_fail_at_build_time() {
    use wsguard_conn_limit::penalty::PenaltyConfigError;
    let zero = Duration::ZERO;
    let second = Duration::from_secs(1);
    let cases = [
        (
            FailurePenaltyLayer::per_ip().max_failures(0, second).err(),
            PenaltyConfigError::Zero("max_failures"),
        ),
        (
            FailurePenaltyLayer::per_ip().max_failures(1, zero).err(),
            PenaltyConfigError::Zero("window"),
        ),
        (
            FailurePenaltyLayer::per_ip().backoff(zero, second).err(),
            PenaltyConfigError::Zero("backoff"),
        ),
        (
            FailurePenaltyLayer::per_ip()
                .backoff(second * 2, second)
                .err(),
            PenaltyConfigError::BackoffOrder,
        ),
        (
            FailurePenaltyLayer::per_ip().max_keys(0).err(),
            PenaltyConfigError::Zero("max_keys"),
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got, Some(expected.clone()), "{expected}");
    }
}

#[tokio::test]
async fn the_back_off_keeps_growing_when_a_penalty_outlasts_the_window() {
    // A penalty longer than two windows must not make the address forget its record: the
    // next penalty doubles again.
    let penalty = FailurePenaltyLayer::per_ip()
        .max_failures(5, Duration::from_millis(400))
        .unwrap()
        .backoff(Duration::from_secs(1), Duration::from_secs(60))
        .unwrap();
    let addr = serve(penalty.clone()).await;
    let attacker = ip("127.0.0.5");
    for _ in 0..5 {
        assert_eq!(handshake(addr, attacker, false, None).await.0, 401);
    }
    assert_eq!(handshake(addr, attacker, true, None).await, (429, Some(1)));
    sleep(Duration::from_millis(1100)).await;
    // Another address's request lets the layer sweep after the penalty ended.
    assert_eq!(handshake(addr, ip("127.0.0.6"), true, None).await.0, 101);
    for _ in 0..5 {
        assert_eq!(handshake(addr, attacker, false, None).await.0, 401);
    }
    assert_eq!(handshake(addr, attacker, true, None).await, (429, Some(2)));
}
