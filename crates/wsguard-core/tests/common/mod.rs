//! What the socket tests share: a raw hyper 1 server that supports upgrades.

#![allow(unreachable_pub)]

use std::{convert::Infallible, error::Error, net::SocketAddr};

use http::{Request, Response};
use hyper::{
    body::{Body, Incoming},
    server::conn::http1,
    service::Service,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves HTTP/1.1 with upgrades on a free loopback port, with the service `make` builds for
/// each connection.
pub async fn serve_http1<M, S, B>(make: M) -> SocketAddr
where
    M: Fn() -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), make())
                    .with_upgrades(),
            );
        }
    });
    addr
}
