//! The real client IP of a request, read from proxy headers only when the peer is a proxy
//! you trust.
//!
//! Behind a load balancer every connection comes from the balancer, so per-client limits
//! and logs need the address the balancer saw, which it reports in `X-Forwarded-For`,
//! `Forwarded` or a header of its own. Those headers are plain request data: anyone who can
//! reach the server directly, or put a value in front of the proxy's, can write any address
//! there. Services that trust them blindly hand attackers a fresh identity per request (and
//! an unlimited budget under every per-IP limit), or let them impersonate someone else's
//! address. [`ClientIpLayer`] reads them only when the direct peer is in your
//! [`TrustedProxies`], walks them from the right (the end your proxies wrote), and stops at
//! the first address that is not one of your proxies. It resolves the address once and
//! inserts [`ClientIp`] into the request's extensions, where every
//! later layer (limits, logs, the message plane) reads it.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, net::SocketAddr};
//! use http::{Request, Response};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
//! use wsguard_core::{ClientIp, PeerAddr};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = ClientIpLayer::new()
//!     .trusted_proxies(TrustedProxies::private())
//!     .source(Source::XForwardedFor)?;
//!
//! let mut svc = ServiceBuilder::new().layer(layer).service_fn(|req: Request<()>| async move {
//!     let ip = req.extensions().get::<ClientIp>().copied();
//!     Ok::<_, Infallible>(Response::new(format!("{}", ip.unwrap())))
//! });
//!
//! // From the load balancer at 10.0.0.2: the header is read, right to left.
//! let mut req = Request::builder()
//!     .header("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.9")
//!     .body(())?;
//! req.extensions_mut().insert(PeerAddr("10.0.0.2:41000".parse::<SocketAddr>()?));
//! let res = svc.ready().await?.call(req).await?;
//! assert_eq!(res.body(), "203.0.113.7"); // 198.51.100.1 was written by the client itself
//!
//! // Straight from the internet: the header is ignored.
//! let mut req = Request::builder().header("x-forwarded-for", "10.9.9.9").body(())?;
//! req.extensions_mut().insert(PeerAddr("203.0.113.50:5000".parse::<SocketAddr>()?));
//! let res = svc.ready().await?.call(req).await?;
//! assert_eq!(res.body(), "203.0.113.50");
//! # Ok(())
//! # }
//! ```
//!
//! # The peer address
//!
//! The layer needs the address of the directly connected peer. It reads, in order:
//! [`PeerAddr`] (insert it yourself with raw hyper, from what
//! `TcpListener::accept` returned), axum's `ConnectInfo<SocketAddr>` (feature `axum`; serve
//! with `into_make_service_with_connect_info::<SocketAddr>()`), and tonic's `TcpConnectInfo`
//! (feature `tonic`). A request with none of them is a configuration error: it is answered
//! `500` and logged, never filed under a shared "unknown" address.
//!
//! # Sources
//!
//! Headers are read only when the peer is trusted; otherwise the client IP is the peer.
//!
//! - [`Source::XForwardedFor`] (default): all `X-Forwarded-For` lines, as one list, walked
//!   from the right. Trusted addresses are skipped; the first untrusted one is the client.
//!   If every address is trusted, the leftmost is the client. An element that does not parse
//!   (garbage, `unknown`, an empty element) stops the walk, and the last good address wins
//!   (the peer if it was the first). This is nginx's `real_ip_recursive on`.
//! - [`Source::XForwardedForHops`]`(n)`: a fixed number of trusted hops. The client is the
//!   `n`-th address from the right of `X-Forwarded-For` (`0` is the peer itself), whatever
//!   the addresses are; with fewer than `n` addresses, the leftmost one. This is Envoy's
//!   `xff_num_trusted_hops: n` with `use_remote_address: true`; Envoy's examples with
//!   `use_remote_address: false` correspond to `n + 1` here. The peer must still be trusted.
//! - [`Source::Forwarded`]: RFC 7239. The `for=` parameters of all elements of all lines,
//!   walked like `X-Forwarded-For`. Parameter names are case-insensitive; values may be
//!   quoted (`for="[2001:db8:cafe::17]:4711"`); `unknown` and obfuscated identifiers
//!   (`_hidden`) stop the walk, as does an element without `for`.
//! - [`Source::SingleHeader`]: a header with exactly one address that your edge proxy or CDN
//!   sets and overwrites: `X-Real-IP`, `CF-Connecting-IP`, `True-Client-IP`,
//!   `Fly-Client-IP` (see the constructors on [`Source`]). A duplicated header means a second
//!   writer, so it is ignored and the peer is used.
//!
//! Every address may carry a port (`192.0.2.1:8080`, `[2001:db8::1]:8080`); IPv4-mapped
//! IPv6 addresses (`::ffff:192.0.2.1`) become IPv4.
//!
//! # Bounded work
//!
//! At most [`DEFAULT_MAX_ELEMENTS`] (64) elements are examined per request
//! ([`ClientIpLayer::max_elements`]); a longer chain stops the walk there, as garbage would.
//! Parsing allocates nothing for `X-Forwarded-For` and one bounded list for `Forwarded`.
//!
//! # Logs and metrics
//!
//! A missing peer address is an `error` event (and `wsguard_rejections_total{layer="client_ip",
//! reason="internal"}` with the `metrics` feature). An unusable header from a trusted proxy
//! is a `debug` event with the peer and the resolved address; headers from untrusted peers
//! are ignored silently (they are normal on the internet, and logging them would let anyone
//! fill your logs).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod layer;
mod parse;
mod resolve;

pub use layer::{
    peer_addr, ClientIpLayer, ClientIpService, ConfigError, ResponseFuture, DEFAULT_MAX_ELEMENTS,
};
pub use resolve::{InvalidCidr, Source, TrustedProxies};
pub use wsguard_core::{ClientIp, PeerAddr};
