//! A tower layer that rejects WebSocket handshakes from origins you did not allow, with
//! `403 Forbidden`, before any upgrade.
//!
//! Browsers attach cookies, HTTP authentication and client certificates to a WebSocket
//! handshake whichever page opened it, and neither the same-origin policy nor CORS applies
//! to WebSockets: there is no preflight, and the page can read every message the server
//! sends. A page on `https://evil.example` can therefore open
//! `wss://chat.example.com/ws` with the victim's session and act as the victim. This is
//! *cross-site WebSocket hijacking* (CSWSH). The only signal the server gets is the
//! `Origin` header, which browsers always set on handshakes and scripts cannot forge
//! (RFC 6455 section 10.2). [`OriginGuardLayer`] checks it against an [`AllowList`] of
//! normalised origins and answers anything else with [`Reason::OriginNotAllowed`] (403,
//! through an [`OnRejection`] policy) without the request ever reaching the upgrade.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use wsguard_origin::{AllowList, OriginGuardLayer};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let allow = AllowList::new()
//!     .add_origin("https://app.example.com")?
//!     .add_origin("https://*.example.com")?
//!     .add_origin("http://localhost:{3000,8080}")?;
//!
//! let mut service = ServiceBuilder::new()
//!     .layer(OriginGuardLayer::new(allow))
//!     .service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
//!
//! let handshake = |origin: &str| {
//!     Request::builder()
//!         .header("connection", "upgrade")
//!         .header("upgrade", "websocket")
//!         .header("origin", origin)
//!         .body(())
//!         .unwrap()
//! };
//!
//! let res = service.ready().await?.call(handshake("https://chat.example.com")).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//!
//! let res = service.ready().await?.call(handshake("https://evil.example")).await?;
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(res.body(), "origin not allowed");
//! # Ok(())
//! # }
//! ```
//!
//! With axum, put the layer on the router (or on the WebSocket route only) and hand the
//! socket over with `wsguard_core::axum::GuardedUpgrade`:
//!
//! ```
//! use axum::{routing::get, Router};
//! use wsguard_core::axum::GuardedUpgrade;
//! use wsguard_origin::{AllowList, OriginGuardLayer};
//!
//! async fn ws(upgrade: GuardedUpgrade) -> axum::response::Response {
//!     upgrade.on_upgrade(|socket, conn| async move { /* ... */ })
//! }
//!
//! let allow = AllowList::new().add_origin("https://app.example.com")?;
//! let app: Router = Router::new()
//!     .route("/ws", get(ws))
//!     .layer(OriginGuardLayer::new(allow));
//! # Ok::<(), wsguard_origin::ConfigError>(())
//! ```
//!
//! # What is checked
//!
//! By default only WebSocket handshakes, as [`is_websocket_upgrade`] recognises them: an
//! `Upgrade: websocket` request (HTTP/1.1) or an extended `CONNECT` (HTTP/2 and HTTP/3).
//! Other requests pass untouched. [`OriginGuardLayer::check_every_request`] checks every
//! request instead, for example to guard server-sent events.
//!
//! A checked request passes when:
//!
//! 1. it has no `Origin` header and [missing origins are allowed](OriginGuardLayer::allow_missing_origin)
//!    (the default: browsers always send one on handshakes, so its absence means a
//!    non-browser client);
//! 2. its `Origin` is `null` and `null` was [listed](AllowList) (never by default);
//! 3. its `Origin` parses as an [`Origin`] and the [`AllowList`] allows it, by one of its
//!    patterns or by the [same-host rule](#same-host-mode);
//! 4. or, failing that, the [predicate](OriginGuardLayer::with_predicate) allows it.
//!
//! Everything else is rejected: an `Origin` that is not allowed, several `Origin` headers,
//! an empty, over-long ([`MAX_ORIGIN_LEN`]) or malformed value, and any value with non-ASCII
//! bytes. Browsers send internationalised hosts as A-labels (`xn--bcher-kva.example`), so
//! a raw Unicode `Origin` does not come from a browser and never matches; Unicode patterns
//! are converted to A-labels when the allow-list is built, and a homoglyph host
//! (`xn--80ak6aa92e.com`, Cyrillic "аррӏе.com") is simply a different host.
//!
//! # Allow rules
//!
//! The [`AllowList`] holds every rule: exact origins normalised as RFC 6454 prescribes
//! (`https://App.Example.com:443` is `https://app.example.com`), wildcard subdomains
//! (`https://*.example.com`), port lists (`http://localhost:{3000,8080}`) and any port
//! (`http://localhost:*`), `null`, and the same-host rule. Every pattern is checked when it
//! is added; a bad one is a [`ConfigError`], so a misconfiguration stops the program at
//! start-up rather than letting requests through. Nothing in this crate panics on a request.
//!
//! # Same-host mode
//!
//! [`AllowList::allow_same_host`] also allows an `http` or `https` origin whose host and
//! port equal the request's own authority: the HTTP/2 `:authority` (or the authority of an
//! absolute-form request target), else the single `Host` header. Hosts compare
//! case-insensitively; a `Host` without a port matches an origin on its scheme's default
//! port, and `Host: example.com:8443` matches `https://example.com:8443`. The comparison is
//! scheme-blind, because a server behind TLS termination cannot tell which scheme the client
//! used: a page on `http://example.com` passes for `Host: example.com`. Use HSTS, or list
//! exact `https://` origins instead, if that matters. This is the rule of gorilla/websocket's
//! default `CheckOrigin` and of Go's `CrossOriginProtection` fallback.
//!
//! # Predicates: per-request rules
//!
//! Some allowed origins are only known per request: the domains a widget may be embedded on,
//! carried in a claim of a "site token" that an authentication layer verified and put into
//! the request's extensions. [`OriginGuardLayer::with_predicate`] takes an asynchronous
//! [`OriginPredicate`] (any `Fn(&Origin, &RequestHead<'_>) -> impl Future<Output = Access>`,
//! answering [`wsguard_core::Access`] like every authorization hook in wsguard) that is
//! consulted for well-formed origins the allow-list refused. [`DomainSet`] holds such a list
//! of domains, each matching itself and its subdomains. The predicate's future is boxed (one
//! allocation, only for a handshake whose origin the allow-list refused), so the layer's type
//! does not name it; without a predicate the allow-list alone decides and nothing is boxed.
//!
//! # Rejections and logs
//!
//! A rejection is answered by the layer's [`OnRejection`] policy, [`HttpRejection`] by
//! default (403 with the short body `origin not allowed`), with the [`Rejection`] in the
//! response's extensions. [`OriginGuardLayer::on_rejection`] swaps the policy, for example to
//! [`GrpcRejection`](wsguard_core::GrpcRejection) (`PERMISSION_DENIED`) in tonic stacks.
//!
//! Every rejection emits one `tracing` event at `INFO` level with target `wsguard_origin`
//! and the fields `reason` (`origin_not_allowed`), `cause` (`missing`, `null`, `malformed`,
//! `not_allowed` or `predicate`), `peer` (the [`ClientIp`], else the [`PeerAddr`], when an
//! earlier layer provided one), and either `origin` or `error`. The `Origin` value is chosen
//! by the attacker, so it is logged only once it has parsed, in its normalised form: at most
//! [`MAX_ORIGIN_LEN`] bytes of lowercase letters, digits and `.-_:[]/+`, nothing that can
//! forge a log line. A malformed value is never logged, only the kind of error (`error =
//! "non_ascii"`, ...). Anyone can make a browser send a foreign `Origin`, so the rate of these
//! events is attacker-driven: filter by target if they are too many. Each rejection is also
//! counted (see [Metrics](#metrics)).
//!
//! # Dry run
//!
//! [`OriginGuardLayer::dry_run`]`(true)` lets every request through and logs and counts what
//! the layer would refuse: the same `INFO` event with a `mode = "dry_run"` field, and the
//! counter with `mode="dry_run"`. Use it to roll an allow-list out on live traffic. The
//! option has this one name, `dry_run`, on every wsguard limit.
//!
//! # Metrics
//!
//! With the `metrics` feature, through wsguard-core's counter (the label this crate uses
//! lives in one module, `telemetry.rs`). [`describe_metrics`] describes it and registers
//! both series at zero.
//!
//! | metric | type | unit | labels | counts |
//! |---|---|---|---|---|
//! | `wsguard_rejections_total` | counter | count | `layer="origin"`, `reason="origin_not_allowed"`, `mode` (`enforce`, `dry_run`) | handshakes refused, or in dry-run mode let through that would have been |
//!
//! # Compared with tower-http's `CsrfLayer`
//!
//! tower-http 0.7's `CsrfLayer` lets every `GET`, `HEAD` and `OPTIONS` request through
//! before it looks at any header, because those methods must not change state. An HTTP/1.1
//! WebSocket handshake is a `GET` (RFC 6455 section 4.1), so `CsrfLayer` passes it whatever
//! its `Origin`, although the upgraded socket is where the state changes. (An HTTP/2
//! handshake is an extended `CONNECT`, which `CsrfLayer` does evaluate, by `Sec-Fetch-Site`
//! and a byte-for-byte comparison of `Origin` with its trusted origins and with the `Host`.)
//! The two layers complement each other: `CsrfLayer` for forms and `fetch` calls, this layer
//! for handshakes, with normalised origins, wildcards, port lists and per-request rules.
//!
//! # Deployment caveats
//!
//! The layer trusts the `Origin` and `Host` headers that reach it.
//!
//! - A reverse proxy or load balancer that **strips `Origin`** turns every browser handshake
//!   into a "missing origin", which is allowed by default: the protection silently
//!   disappears. Configure intermediaries to forward `Origin` unchanged, and set
//!   [`allow_missing_origin(false)`](OriginGuardLayer::allow_missing_origin) when every
//!   client is a browser, so that a stripping proxy fails closed.
//! - A proxy that **rewrites `Host`** (to an internal name such as `backend:8080`) makes the
//!   [same-host rule](#same-host-mode) refuse legitimate pages, and a proxy that sets `Host`
//!   from an attacker-controlled value (for example a forwarded-host header it copies
//!   without validation) lets that attacker choose what "same host" means. Behind such
//!   proxies, list the public origins explicitly instead of using the same-host rule; this
//!   layer does not read `X-Forwarded-Host` or `Forwarded`.
//! - **DNS rebinding** defeats the [same-host rule](#same-host-mode) on its own. An attacker's
//!   page on `http://rebind.attacker.example:8080` resolves that name to your server (for
//!   example a service on `127.0.0.1:8080` or a private address), and the browser then sends
//!   `Origin: http://rebind.attacker.example:8080` *and* `Host: rebind.attacker.example:8080`:
//!   same host, allowed, although the page is the attacker's. Services reachable under names
//!   you do not control (local development servers, devices on private networks) must check
//!   `Host` against the names they serve (a host allow-list in the router or the proxy), or
//!   list their origins explicitly instead of using the same-host rule. Explicit patterns
//!   are not affected: the attacker's origin is not on the list.
//! - Non-browser clients can send any `Origin` they like, or none. This layer protects
//!   browser users' sessions from other sites; it does not authenticate clients. Put an
//!   authentication layer (such as `wsguard-jwt-auth`) next to it.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `metrics` | the counter of [Metrics](#metrics) through the `metrics` facade |
//!
//! # Contributor notes
//!
//! Every wsguard middleware crate has the same shape; keep this one to it.
//!
//! - **One way through.** `layer.rs` (the layer and its builder methods) -> `service.rs`
//!   (the service) -> `future.rs` (the response future) -> `config.rs` (the configuration
//!   the layer and its services share, the decision on each request, and the log and count
//!   of each refusal). No module imports one above it. `call` asks `config.rs` for the
//!   decision and builds the future; every state after that lives in `future.rs`.
//! - **Type parameters.** The layer is `OriginGuardLayer<P>` (the rejection policy, which
//!   shapes the response); the service is `OriginGuard<S, P>`: the inner service first, then
//!   the layer's parameter. Its future is `ResponseFuture<S, ReqBody, P>`: the inner service,
//!   the request body, then the same parameter. A hook that runs at most once per handshake
//!   (the [`OriginPredicate`]) is boxed rather than a type parameter: one allocation next to
//!   a handshake costs nothing measurable, and every user-facing type stays short.
//! - **Polled after completion.** A `ResponseFuture` that has returned `Ready` panics with
//!   "ResponseFuture polled after completion" when polled again (once it has handed over to
//!   the inner service's future, it does what that future does). This is what tower-http's
//!   futures do, and what [`Future::poll`](std::future::Future::poll) allows: polling a
//!   finished future is the caller's bug, and a second, made-up answer or a future pending
//!   forever would hide it.
//! - **The inner service.** Every service has `get_ref`, `get_mut` and `into_inner`.
//! - **Names.** The option that accepts a refused handshake and closes the socket at once
//!   with the close code (browsers cannot read a refused handshake's status) is called
//!   `close_mode` in every crate that has it (`wsguard-conn-limit`, `wsguard-jwt-auth`); this
//!   crate has no such option.
//!
//! [`is_websocket_upgrade`]: wsguard_core::is_websocket_upgrade
//! [`Reason::OriginNotAllowed`]: wsguard_core::Reason::OriginNotAllowed
//! [`OnRejection`]: wsguard_core::OnRejection
//! [`HttpRejection`]: wsguard_core::HttpRejection
//! [`Rejection`]: wsguard_core::Rejection
//! [`ClientIp`]: wsguard_core::ClientIp
//! [`PeerAddr`]: wsguard_core::PeerAddr
#![cfg_attr(docsrs, feature(doc_cfg))]

mod allow;
mod config;
mod domain;
mod error;
mod future;
mod layer;
mod origin;
mod predicate;
mod service;
mod telemetry;

pub use allow::AllowList;
pub use domain::DomainSet;
pub use error::ConfigError;
pub use future::ResponseFuture;
pub use layer::OriginGuardLayer;
pub use origin::{Origin, ParseOriginError, MAX_ORIGIN_LEN};
pub use predicate::OriginPredicate;
pub use service::OriginGuard;
pub use telemetry::describe_metrics;

/// Re-exported for writing [`OriginPredicate`]s: the view of a request head they receive.
pub use wsguard_core::RequestHead;

/// Re-exported for writing [`OriginPredicate`]s: their answer.
pub use wsguard_core::Access;
