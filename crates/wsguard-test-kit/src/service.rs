//! Driving a layer alone: request builders and inner services that count their calls.
//!
//! ```
//! use std::sync::{atomic::{AtomicUsize, Ordering}, Arc};
//! use wsguard_test_kit::service::{call, counting, handshake};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! let mut svc = counting(&calls);
//! let res = call(&mut svc, handshake("https://app.example.com")).await;
//! assert_eq!((res.status().as_u16(), calls.load(Ordering::SeqCst)), (200, 1));
//! # }
//! ```

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use http::{header, HeaderName, HeaderValue, Request, Response};
use tower::{service_fn, Service, ServiceExt};
use wsguard_core::PeerAddr;

/// A WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`) from `origin`.
///
/// # Panics
///
/// If `origin` is not a valid header value.
pub fn handshake(origin: &str) -> Request<()> {
    Request::builder()
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::ORIGIN, origin)
        .body(())
        .unwrap()
}

/// A request from the peer `peer` (`None`: the server did not say), inserted as
/// [`PeerAddr`], with `headers` in order (a name may repeat).
///
/// # Panics
///
/// If `peer` is not a socket address, or a header is not valid.
pub fn request(peer: Option<&str>, headers: &[(&str, &str)]) -> Request<String> {
    let mut req = Request::new(String::new());
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    if let Some(peer) = peer {
        req.extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    }
    req
}

/// An inner service that answers 200 `passed` and counts its calls in `calls`.
pub fn counting<B>(
    calls: &Arc<AtomicUsize>,
) -> impl Service<
    Request<B>,
    Response = Response<String>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<String>, Infallible>> + Send,
> + Clone {
    let calls = Arc::clone(calls);
    service_fn(move |_: Request<B>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new("passed".to_owned())) }
    })
}

/// Sends `req` through `svc` once it is ready: the response.
///
/// # Panics
///
/// If the service fails.
pub async fn call<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
    S::Error: fmt::Debug,
{
    svc.ready().await.unwrap().call(req).await.unwrap()
}
