//! The layer, its service and its response future.

use std::{
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Extensions, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use wsguard_core::{
    reject::respond, telemetry, ClientIp, HttpRejection, OnRejection, PeerAddr, Reason, Rejection,
};

use crate::resolve::{Outcome, Resolver, Source, TrustedProxies};

/// The default cap on forwarding-header elements examined per request.
pub const DEFAULT_MAX_ELEMENTS: usize = 64;

/// A configuration the layer refuses to be built with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_elements(0)`: no header could ever be read.
    ZeroMaxElements,
    /// A hop count larger than the element cap.
    HopsOverLimit {
        /// The hop count asked for.
        hops: usize,
        /// The element cap in force.
        max_elements: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroMaxElements => f.write_str("max_elements must be at least 1"),
            Self::HopsOverLimit { hops, max_elements } => {
                write!(
                    f,
                    "{hops} trusted hops exceed the element cap of {max_elements}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Resolves the client IP once per request and inserts [`ClientIp`].
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct ClientIpLayer<P = HttpRejection> {
    resolver: Arc<Resolver>,
    policy: P,
}

impl Default for ClientIpLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> fmt::Debug for ClientIpLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIpLayer")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl ClientIpLayer {
    /// A layer that trusts no proxy: the client IP is the peer address.
    pub fn new() -> Self {
        Self {
            resolver: Arc::new(Resolver {
                trusted: TrustedProxies::new(),
                source: Source::XForwardedFor,
                max_elements: DEFAULT_MAX_ELEMENTS,
            }),
            policy: HttpRejection,
        }
    }
}

impl<P> ClientIpLayer<P> {
    fn edit(mut self, f: impl FnOnce(&mut Resolver)) -> Self {
        f(Arc::make_mut(&mut self.resolver));
        self
    }

    /// Replaces the trusted proxies. Headers are read only from these peers.
    #[must_use]
    pub fn trusted_proxies(self, trusted: TrustedProxies) -> Self {
        self.edit(|r| r.trusted = trusted)
    }

    /// Where to read the client IP from when the peer is trusted (default
    /// [`Source::XForwardedFor`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError::HopsOverLimit`] for a hop count above the element cap.
    pub fn source(self, source: Source) -> Result<Self, ConfigError> {
        check(&source, self.resolver.max_elements)?;
        Ok(self.edit(|r| r.source = source))
    }

    /// The most forwarding-header elements examined per request (default 64). The walk
    /// stops there and the last good address wins.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroMaxElements`] for 0, [`ConfigError::HopsOverLimit`] if the hop
    /// count of the source is larger.
    pub fn max_elements(self, max: usize) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::ZeroMaxElements);
        }
        check(&self.resolver.source, max)?;
        Ok(self.edit(|r| r.max_elements = max))
    }

    /// Changes how a request without a peer address (a configuration error) is answered.
    pub fn on_rejection<Q>(self, policy: Q) -> ClientIpLayer<Q> {
        ClientIpLayer {
            resolver: self.resolver,
            policy,
        }
    }

    /// The client IP for a request from `peer` with `headers`, as the layer resolves it.
    pub fn resolve(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        self.resolver.resolve(peer, headers).0
    }
}

fn check(source: &Source, max_elements: usize) -> Result<(), ConfigError> {
    match source {
        Source::XForwardedForHops(hops) if *hops > max_elements => {
            Err(ConfigError::HopsOverLimit {
                hops: *hops,
                max_elements,
            })
        }
        _ => Ok(()),
    }
}

impl<S, P: Clone> Layer<S> for ClientIpLayer<P> {
    type Service = ClientIpService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientIpService {
            inner,
            resolver: self.resolver.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The service of [`ClientIpLayer`].
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct ClientIpService<S, P = HttpRejection> {
    inner: S,
    resolver: Arc<Resolver>,
    policy: P,
}

impl<S: fmt::Debug, P> fmt::Debug for ClientIpService<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIpService")
            .field("inner", &self.inner)
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

/// The address of the directly connected peer: wsguard's own [`PeerAddr`], axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`), or tonic's `TcpConnectInfo` (feature `tonic`).
pub fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0);
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(addr);
    }
    None
}

impl<S, P, ReqBody, ResBody> Service<Request<ReqBody>> for ClientIpService<S, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(peer) = peer_addr(req.extensions()) else {
            tracing::error!(
                "no peer address in the request: serve with axum's `into_make_service_with_connect_info::<SocketAddr>()`, tonic's server, or insert `wsguard_core::PeerAddr`"
            );
            telemetry::record_rejection("client_ip", Reason::Internal);
            return ResponseFuture::rejected(respond(
                &self.policy,
                Rejection::new(Reason::Internal),
            ));
        };
        let (ip, outcome) = self.resolver.resolve(peer.ip(), req.headers());
        match outcome {
            Outcome::Stopped => tracing::debug!(
                peer = %peer.ip(),
                client_ip = %ip,
                "forwarding header from a trusted proxy was unusable (garbage, duplicated or too long); using the last good address"
            ),
            Outcome::Header | Outcome::Peer => {
                tracing::trace!(peer = %peer.ip(), client_ip = %ip, "client ip resolved");
            }
        }
        req.extensions_mut().insert(ClientIp(ip));
        ResponseFuture::inner(self.inner.call(req))
    }
}

pin_project! {
    /// The response future of [`ClientIpService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<B>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after completion: stay pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}
