//! What the layer's tests share: an echo of the resolved IP and the loopback-trusting layer
//! (requests from a peer are built by `wsguard_test_kit::service::request`).

#![allow(unreachable_pub)]

use std::convert::Infallible;

use http::{Request, Response};
use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
use wsguard_core::ClientIp;

/// Answers with the resolved client IP, or "none".
pub async fn echo<B>(req: Request<B>) -> Result<Response<String>, Infallible> {
    let ip = req.extensions().get::<ClientIp>().map(ToString::to_string);
    Ok(Response::new(ip.unwrap_or_else(|| "none".into())))
}

/// The layer trusting loopback proxies.
pub fn loopback() -> ClientIpLayer {
    ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback())
}
