//! What the layer's tests share: an echo of the resolved IP and requests from a peer.

#![allow(unreachable_pub)]

use std::{convert::Infallible, net::SocketAddr};

use http::{Request, Response};
use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
use wsguard_core::{ClientIp, PeerAddr};

/// Answers with the resolved client IP, or "none".
pub async fn echo<B>(req: Request<B>) -> Result<Response<String>, Infallible> {
    let ip = req.extensions().get::<ClientIp>().map(ToString::to_string);
    Ok(Response::new(ip.unwrap_or_else(|| "none".into())))
}

/// A request from `peer` (none: the server did not say) with `headers`.
pub fn request(peer: Option<&str>, headers: &[(&str, &str)]) -> Request<String> {
    let mut req = Request::new(String::new());
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    if let Some(peer) = peer {
        req.extensions_mut()
            .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    }
    req
}

/// The layer trusting loopback proxies.
pub fn loopback() -> ClientIpLayer {
    ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback())
}
