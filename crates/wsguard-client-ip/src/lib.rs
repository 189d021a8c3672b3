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
//! [`TrustedProxies`], walks them from the right (the end your proxies wrote), stops at the
//! first address that is not one of your proxies, and bounds the work a hostile header can
//! cause. It resolves the address once and inserts [`ClientIp`] into the request's
//! extensions, where every later layer (limits, logs, the message plane) reads it.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, net::SocketAddr};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt};
//! use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
//! use wsguard_core::{ClientIp, PeerAddr};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = ClientIpLayer::new()
//!     .trusted_proxies(TrustedProxies::private())
//!     .source(Source::XForwardedFor)?;
//!
//! let svc = ServiceBuilder::new().layer(layer).service_fn(|req: Request<()>| async move {
//!     let ip = req.extensions().get::<ClientIp>().map(ToString::to_string);
//!     Ok::<_, Infallible>(Response::new(ip.unwrap_or_default()))
//! });
//!
//! // From the load balancer at 10.0.0.2: the header is read, right to left.
//! let mut req = Request::builder()
//!     .header("x-forwarded-for", "198.51.100.1, 203.0.113.7, 10.0.0.9")
//!     .body(())?;
//! req.extensions_mut().insert(PeerAddr("10.0.0.2:41000".parse::<SocketAddr>()?));
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.body(), "203.0.113.7"); // 198.51.100.1 was written by the client itself
//!
//! // Straight from the internet: the header is ignored.
//! let mut req = Request::builder().header("x-forwarded-for", "10.9.9.9").body(())?;
//! req.extensions_mut().insert(PeerAddr("203.0.113.50:5000".parse::<SocketAddr>()?));
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.body(), "203.0.113.50");
//!
//! // No peer address at all: a configuration error, answered 500.
//! let res = svc.oneshot(Request::new(())).await?;
//! assert_eq!(res.status(), 500);
//! # Ok(())
//! # }
//! ```
//!
//! With axum, serve with connect info and read the address with the [`ClientIp`] extractor
//! (feature `axum`):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
//! use wsguard_core::ClientIp;
//!
//! let app = Router::new()
//!     .route("/", get(|ClientIp(ip): ClientIp| async move { ip.to_string() }))
//!     .layer(ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback()));
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # The peer address
//!
//! The layer needs the address of the directly connected peer. It reads the first of these
//! it finds in the request's extensions (see [`peer_addr`]):
//!
//! 1. [`PeerAddr`], which you insert yourself with raw hyper, from what
//!    `TcpListener::accept` returned (below), or from a PROXY protocol header you parsed.
//! 2. axum's `ConnectInfo<SocketAddr>` (feature `axum`): serve with
//!    `into_make_service_with_connect_info::<SocketAddr>()`.
//! 3. tonic's `TcpConnectInfo` (feature `tonic`), which tonic's server inserts for plain TCP.
//!
//! A function set with [`ClientIpLayer::peer_addr_from`] is asked before these, for any
//! other transport: tonic terminating TLS (`TlsConnectInfo<TcpConnectInfo>`, which exists
//! only with one of tonic's TLS features), an address recovered from the PROXY protocol,
//! your own connect-info type.
//!
//! A request with none of them is a configuration error: it is answered `500` through the
//! layer's [`OnRejection`](wsguard_core::OnRejection) policy ([`Reason::Internal`]) and
//! logged as an `error`, never filed under a shared "unknown" address, which would merge
//! every client into one bucket for every later limit.
//!
//! With raw hyper 1, insert [`PeerAddr`] per connection:
//!
//! ```no_run
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use hyper::{body::Incoming, server::conn::http1};
//! use hyper_util::{rt::TokioIo, service::TowerToHyperService};
//! use tower::ServiceBuilder;
//! use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
//! use wsguard_core::{ClientIp, PeerAddr};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let layer = ClientIpLayer::new().trusted_proxies(TrustedProxies::loopback());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! loop {
//!     let (stream, remote) = listener.accept().await?;
//!     let svc = ServiceBuilder::new()
//!         .map_request(move |mut req: Request<Incoming>| {
//!             req.extensions_mut().insert(PeerAddr(remote));
//!             req
//!         })
//!         .layer(layer.clone())
//!         .service_fn(|req: Request<Incoming>| async move {
//!             let ip = req.extensions().get::<ClientIp>().map(ToString::to_string);
//!             Ok::<_, Infallible>(Response::new(ip.unwrap_or_default()))
//!         });
//!     tokio::spawn(
//!         http1::Builder::new().serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc)),
//!     );
//! }
//! # }
//! ```
//!
//! # Trusted proxies
//!
//! [`TrustedProxies`] is a list of IPv4 and IPv6 networks. Headers are read only when the
//! direct peer is in it; from any other peer they are ignored, whatever they say, and the
//! client IP is the peer. The same list tells the walk below which addresses in a header
//! are your own proxies. Presets: [`loopback`](TrustedProxies::loopback),
//! [`private`](TrustedProxies::private) (RFC 1918, `fc00::/7` and loopback) and
//! [`link_local`](TrustedProxies::link_local); networks are added as CIDR strings
//! (checked when the layer is built) or [`ipnet::IpNet`] values. The default is empty:
//! no header is ever read.
//!
//! # Sources
//!
//! One [`Source`] per layer, read only from a trusted peer. All lists are read right to
//! left: the rightmost element was written by the proxy closest to you.
//!
//! - [`Source::XForwardedFor`] (the default). All `X-Forwarded-For` lines, in order, form
//!   one comma-separated list. The walk starts at the peer and moves left: a trusted
//!   address is skipped, and the first untrusted address is the client. If every address
//!   is trusted, the leftmost one is the client. Empty elements (`a,,b`) are skipped
//!   (RFC 9110's list rule). An element that is not an address (garbage, `unknown`, a host
//!   name, two addresses separated by a space) stops the walk, and the last good address
//!   wins: the peer if the bad element is the rightmost, otherwise the trusted address to
//!   its right. This is nginx's `real_ip_recursive on`.
//! - [`Source::XForwardedForHops`]`(n)`, a fixed number of trusted hops for when your
//!   proxies' addresses are not known in advance. The client is the `n`-th address from
//!   the right of `X-Forwarded-For`, whatever it is; `n = 0` is the peer itself. The peer
//!   must still be trusted (trust `0.0.0.0/0` and `::/0` explicitly to skip that check).
//!   Empty elements are skipped and do not count as hops; an unparsable element before the
//!   `n`-th stops the walk as above. **With fewer than `n` addresses, the leftmost one is
//!   the client**: each of them sits in a position one of your proxies wrote, so the
//!   leftmost is what the first proxy the request reached saw as its peer. (Envoy falls
//!   back to the peer here instead, which would file every such request under your proxy's
//!   address.) With `use_remote_address: true`, Envoy's `xff_num_trusted_hops: n` is
//!   `XForwardedForHops(n)` here; with `use_remote_address: false`, it is
//!   `XForwardedForHops(n + 1)`. Hop counting trusts positions, not addresses: it is sound
//!   only if every request passes through all `n` proxies. A client that can reach an
//!   inner proxy directly can pad the header and choose its address; prefer
//!   [`Source::XForwardedFor`] with the proxies' networks when you know them.
//! - [`Source::Forwarded`] (RFC 7239). The `for=` parameter of every element of every
//!   `Forwarded` line, walked like `X-Forwarded-For`. Parameter names are
//!   case-insensitive; values may be quoted (`for="[2001:db8:cafe::17]:4711"`); commas and
//!   semicolons inside quoted strings do not split. `for=unknown`, obfuscated identifiers
//!   (`for=_hidden`), an element without `for=` or with two, and a malformed element stop
//!   the walk.
//! - [`Source::SingleHeader`], a header holding exactly one address that your edge proxy
//!   or CDN sets, overwriting whatever the client sent: [`Source::x_real_ip`],
//!   [`Source::cf_connecting_ip`], [`Source::true_client_ip`], [`Source::fly_client_ip`],
//!   or any [`HeaderName`](http::HeaderName). Read only when configured, and only from a
//!   trusted peer. A header that appears twice means a second writer (the proxy passed a
//!   client's copy through): it is ignored, the peer is used, and a `warn` event says so.
//!   A list (`a, b`) or anything that is not one address is ignored likewise (`debug`).
//! - [`Source::Peer`]: never read a header.
//!
//! Every address may carry a port and quotes: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
//! `[2001:db8::1]`, `[2001:db8::1]:8080`, `"[2001:db8::1]:8080"`. IPv4-mapped IPv6
//! addresses (`::ffff:192.0.2.1`) become IPv4, for the peer, the trusted networks and every
//! header address. Zone ids (`fe80::1%eth0`) and host names are not addresses.
//!
//! # Bounded work
//!
//! Every list is split from its right end, on bytes, so nothing a client writes on the left
//! (non-UTF-8 bytes, an unterminated quote, a flood of commas) changes how your proxies'
//! part is read. At most [`DEFAULT_MAX_ELEMENTS`] (64) elements
//! ([`ClientIpLayer::max_elements`]) and [`DEFAULT_MAX_HEADER_BYTES`] (8 KiB) of header
//! ([`ClientIpLayer::max_header_bytes`]) are examined per request, counted from the right;
//! the walk stops at either cap as it does at garbage, and the last good address wins. A
//! single-value header longer than the byte cap is ignored, and no element longer than 64
//! bytes (the longest address form is 55) is parsed. Parsing never allocates and never
//! panics.
//!
//! # Logs and metrics
//!
//! | event | level |
//! |---|---|
//! | no peer address (answered 500) | `error`, and `wsguard_rejections_total{layer="client_ip", reason="internal"}` with the `metrics` feature |
//! | single-value header duplicated by a trusted proxy | `warn` |
//! | header from a trusted proxy unusable (garbage, a cap reached) | `debug` |
//! | header from an untrusted peer ignored | `trace` |
//! | client IP resolved | `trace` |
//!
//! Events carry the peer address and, where one was resolved, the client IP; never header
//! contents. Headers from untrusted peers are ordinary on the internet (and anyone could
//! use them to flood your logs), so ignoring them is only a `trace` event. A duplicated
//! single-value header can only arrive through a trusted proxy and means that proxy
//! forwards client copies: a misconfiguration worth a `warn`.
//!
//! # Deployment notes
//!
//! - Put the layer outermost, before anything that keys on [`ClientIp`] (connection and
//!   message limits, logs). It works on any `http::Request`, so the same layer serves
//!   WebSocket handshakes, gRPC and SSE.
//! - Your outermost proxy must append to `X-Forwarded-For` (nginx
//!   `$proxy_add_x_forwarded_for`) or overwrite the single-value header (nginx
//!   `proxy_set_header X-Real-IP $remote_addr`), never pass a client's value through
//!   unchanged.
//! - Trust only the proxies in front of you. A trusted network that also holds untrusted
//!   clients lets those clients choose their address.
//!
//! # Feature flags
//!
//! | feature | what it adds |
//! |---|---|
//! | `axum` | peers from axum's `ConnectInfo<SocketAddr>`; turns on `wsguard-core/axum`, whose [`ClientIp`] extractor reads the result |
//! | `tonic` | peers from tonic's `TcpConnectInfo` |
//! | `metrics` | `wsguard_rejections_total{layer="client_ip"}` through the `metrics` facade |
//!
//! [`Reason::Internal`]: wsguard_core::Reason::Internal
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod future;
mod layer;
mod parse;
mod resolve;
mod service;
mod trusted;

pub use error::ConfigError;
pub use future::ResponseFuture;
pub use layer::{ClientIpLayer, DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_HEADER_BYTES};
pub use resolve::Source;
pub use service::{peer_addr, ClientIpService};
pub use trusted::TrustedProxies;
#[doc(no_inline)]
pub use wsguard_core::{ClientIp, PeerAddr};

/// The `ipnet` crate, whose [`IpNet`](ipnet::IpNet) [`TrustedProxies::add_net`] takes.
pub use ipnet;
