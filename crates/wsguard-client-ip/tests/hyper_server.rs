//! A raw hyper 1 server on 127.0.0.1:0 that inserts `PeerAddr` per connection, exactly as
//! the crate docs show.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use http::{Request, Response};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};
use tower::ServiceBuilder;
use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
use wsguard_core::{ClientIp, PeerAddr};

const LIMIT: Duration = Duration::from_secs(10);

async fn get(addr: SocketAddr, xff: &str) -> String {
    let mut stream = timeout(LIMIT, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    timeout(LIMIT, stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn peer_addr_inserted_per_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let layer = ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback());
        // Two connections, then stop.
        for _ in 0..2 {
            let (stream, remote) = listener.accept().await.unwrap();
            let svc = ServiceBuilder::new()
                .map_request(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(remote));
                    req
                })
                .layer(layer.clone())
                .service_fn(|req: Request<Incoming>| async move {
                    let ip = req.extensions().get::<ClientIp>().map(ToString::to_string);
                    Ok::<_, Infallible>(Response::new(ip.unwrap_or_default()))
                });
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc)),
            );
        }
    });
    assert_eq!(get(addr, "203.0.113.50").await, "203.0.113.50");
    assert_eq!(get(addr, "garbage").await, "127.0.0.1");
    timeout(LIMIT, server).await.unwrap().unwrap();
}
