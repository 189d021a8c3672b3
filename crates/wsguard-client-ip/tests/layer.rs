//! The layer as a tower service: the rejection for a missing peer in each policy, the
//! order of peer sources and any body type (gRPC, SSE). The events it logs are tested in
//! `logging.rs`.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{echo, loopback};
use http::{Extensions, Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
use wsguard_core::{GrpcRejection, PeerAddr, Reason, Rejection};
use wsguard_test_kit::service::request;

#[tokio::test]
async fn missing_peer_is_rejected_through_the_policy() {
    // Default: HTTP 500, generic body, the typed rejection in the extensions.
    let res = loopback()
        .layer(service_fn(echo))
        .oneshot(request(None, &[("x-forwarded-for", "203.0.113.50")]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.body(), Reason::Internal.message());
    assert_eq!(
        res.extensions().get::<Rejection>().map(|r| r.reason()),
        Some(Reason::Internal)
    );

    // gRPC: 200 with grpc-status INTERNAL (13).
    let res = loopback()
        .on_rejection(GrpcRejection)
        .layer(service_fn(echo))
        .oneshot(request(None, &[]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "13");
    assert!(res.extensions().get::<Rejection>().is_some());

    // A closure.
    let res = loopback()
        .on_rejection(|r: &Rejection| {
            let mut res = Response::new(format!("custom {}", r.reason().as_str()));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res
        })
        .layer(service_fn(echo))
        .oneshot(request(None, &[]))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.body(), "custom internal");
    assert!(res.extensions().get::<Rejection>().is_some());
}

#[derive(Clone)]
struct ProxyProtocolPeer(SocketAddr);

#[tokio::test]
async fn peer_addr_from_comes_first_then_the_built_in_sources() {
    let layer =
        loopback().peer_addr_from(|ext: &Extensions| ext.get::<ProxyProtocolPeer>().map(|p| p.0));
    // The custom source wins over PeerAddr.
    let mut req = request(Some("127.0.0.1:1000"), &[]);
    req.extensions_mut()
        .insert(ProxyProtocolPeer("198.51.100.9:2000".parse().unwrap()));
    let res = layer.layer(service_fn(echo)).oneshot(req).await.unwrap();
    assert_eq!(res.body(), "198.51.100.9");
    // When it finds nothing, PeerAddr is used.
    let res = layer
        .layer(service_fn(echo))
        .oneshot(request(
            Some("127.0.0.1:1000"),
            &[("x-forwarded-for", "203.0.113.50")],
        ))
        .await
        .unwrap();
    assert_eq!(res.body(), "203.0.113.50");
}

#[tokio::test]
async fn any_body_type_and_grpc_requests() {
    // A gRPC call is a POST with a streaming body; the layer only reads the head.
    let layer = loopback();
    let svc = layer.layer(service_fn(|req: Request<Vec<u8>>| echo(req)));
    let mut req = Request::post("/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("x-forwarded-for", "2001:db8::9")
        .body(vec![0u8, 0, 0, 0, 0])
        .unwrap();
    req.extensions_mut()
        .insert(PeerAddr("[::1]:50051".parse().unwrap()));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.body(), "2001:db8::9");
}

#[tokio::test]
async fn clones_share_the_configuration() {
    let layer = ClientIpLayer::new()
        .trusted_proxies(TrustedProxies::private())
        .source(Source::x_real_ip())
        .unwrap();
    let svc = layer.clone().layer(service_fn(echo));
    drop(layer);
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(request(Some("10.0.0.1:1"), &[("x-real-ip", "192.0.2.3")]))
            .await
            .unwrap();
        assert_eq!(res.body(), "192.0.2.3");
    }
}

#[test]
fn resolve_matches_the_service() {
    let layer = loopback();
    let headers = request(None, &[("x-forwarded-for", "192.0.2.1, 127.0.0.5")]);
    assert_eq!(
        layer.resolve("127.0.0.1".parse().unwrap(), headers.headers()),
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
}
