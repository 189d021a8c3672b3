//! A raw hyper 1 server on 127.0.0.1:0 that inserts `PeerAddr` per connection, exactly as
//! the crate docs show.

use std::{convert::Infallible, net::SocketAddr};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::timeout;
use tower::ServiceBuilder;
use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
use wsguard_core::{ClientIp, PeerAddr};
use wsguard_test_kit::{client, server, WAIT};

async fn get(addr: SocketAddr, xff: &str) -> String {
    let (status, body) = client::fetch(addr, "/", &[("X-Forwarded-For", xff)]).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn peer_addr_inserted_per_connection() {
    let layer = ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback());
    // Two connections, then stop.
    let (addr, server) = server::hyper_connections(2, move |remote| {
        ServiceBuilder::new()
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(remote));
                req
            })
            .layer(layer.clone())
            .service_fn(|req: Request<Incoming>| async move {
                let ip = req.extensions().get::<ClientIp>().map(ToString::to_string);
                Ok::<_, Infallible>(Response::new(ip.unwrap_or_default()))
            })
    })
    .await;
    assert_eq!(get(addr, "203.0.113.50").await, "203.0.113.50");
    assert_eq!(get(addr, "garbage").await, "127.0.0.1");
    timeout(WAIT, server).await.unwrap().unwrap();
}
