//! Driving a layer alone: request builders, inner services that count their calls, and a
//! stand-in for authentication.
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
    time::{Duration, SystemTime},
};

use http::{header, HeaderName, HeaderValue, Request, Response};
use tower::{service_fn, Service, ServiceExt};
use wsguard_core::{PeerAddr, Principal, TokenExpiry};

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

/// A stand-in for an authentication layer, to pass to `map_request` in front of a route:
/// the query's `user=NAME` becomes the request's [`Principal`], `ttl_ms=N` a
/// [`TokenExpiry`] `N` ms from now; other pairs are ignored.
///
/// ```
/// use wsguard_core::Principal;
/// use wsguard_test_kit::service::query_identity;
///
/// let req = query_identity(http::Request::get("/ws?user=alice&ttl_ms=1000").body(()).unwrap());
/// assert_eq!(req.extensions().get::<Principal>().map(Principal::as_str), Some("alice"));
/// ```
///
/// # Panics
///
/// If `ttl_ms` is not a number of milliseconds.
pub fn query_identity<B>(mut req: Request<B>) -> Request<B> {
    let query = req.uri().query().unwrap_or_default().to_owned();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("user", user)) => {
                req.extensions_mut().insert(Principal::new(user));
            }
            Some(("ttl_ms", ms)) => {
                let ttl = Duration::from_millis(ms.parse().expect("ttl_ms in milliseconds"));
                req.extensions_mut()
                    .insert(TokenExpiry(SystemTime::now() + ttl));
            }
            _ => {}
        }
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
