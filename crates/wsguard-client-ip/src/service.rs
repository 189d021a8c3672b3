//! The service: resolves and inserts the client IP on each request.

use std::{
    fmt,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Extensions, HeaderMap, Request, Response};
use tower_service::Service;
use wsguard_core::{
    guard::{record_rejection, respond},
    ClientIp, HttpRejection, OnRejection, PeerAddr, Reason, Rejection,
};

use crate::{
    resolve::{Outcome, Resolver, Stop},
    ResponseFuture,
};

/// Inserts the resolved [`ClientIp`] into each request before passing it to `S`.
///
/// Built by [`ClientIpLayer`](crate::ClientIpLayer).
/// See the [crate docs](crate) for an example.
pub struct ClientIpService<S, P = HttpRejection> {
    inner: S,
    resolver: Arc<Resolver>,
    policy: P,
}

impl<S, P> ClientIpService<S, P> {
    pub(crate) fn from_parts(inner: S, resolver: Arc<Resolver>, policy: P) -> Self {
        Self {
            inner,
            resolver,
            policy,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, P: Clone> Clone for ClientIpService<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            resolver: Arc::clone(&self.resolver),
            policy: self.policy.clone(),
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for ClientIpService<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIpService")
            .field("inner", &self.inner)
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

/// The address of the directly connected peer, from the first of these found in
/// `extensions`: wsguard's own [`PeerAddr`], axum's `ConnectInfo<SocketAddr>` (feature
/// `axum`), tonic's `TcpConnectInfo` (feature `tonic`).
///
/// `None` when none of them is present (or tonic's holds no remote address). Other
/// transports plug in with [`ClientIpLayer::peer_addr_from`](crate::ClientIpLayer::peer_addr_from).
pub fn peer_addr(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
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
        let Some(peer) = self.resolver.peer(req.extensions()) else {
            tracing::error!(
                reason = Reason::Internal.as_str(),
                "no peer address in the request: serve axum with \
                 `into_make_service_with_connect_info::<SocketAddr>()`, use tonic's server, \
                 or insert `wsguard_core::PeerAddr`; answering 500"
            );
            record_rejection("client_ip", Reason::Internal);
            return ResponseFuture::rejected(respond(
                &self.policy,
                Rejection::new(Reason::Internal),
            ));
        };
        let (ip, outcome) = self.resolver.resolve(peer.ip(), req.headers());
        log_outcome(&self.resolver, peer, ip, outcome, req.headers());
        req.extensions_mut().insert(ClientIp(ip));
        ResponseFuture::inner(self.inner.call(req))
    }
}

/// The events of a resolution (see "Logs and metrics" in the crate docs).
fn log_outcome(
    resolver: &Resolver,
    peer: SocketAddr,
    ip: std::net::IpAddr,
    outcome: Outcome,
    headers: &HeaderMap,
) {
    let header = || resolver.source.header_name().map(|name| name.as_str());
    match outcome {
        Outcome::Untrusted => {
            // Internet noise: anyone can send these headers; never above trace.
            if tracing::enabled!(tracing::Level::TRACE) {
                if let Some(name) = resolver.source.header_name() {
                    if headers.contains_key(name) {
                        tracing::trace!(
                            peer = %peer.ip(),
                            header = name.as_str(),
                            "forwarding header from an untrusted peer ignored"
                        );
                    }
                }
            }
        }
        Outcome::Stopped(Stop::Duplicated) => tracing::warn!(
            peer = %peer.ip(),
            header = header(),
            "single-value client IP header sent twice through a trusted proxy, so the proxy \
             does not overwrite client copies; ignored, using the peer address"
        ),
        Outcome::Stopped(stop) => tracing::debug!(
            peer = %peer.ip(),
            client_ip = %ip,
            header = header(),
            stop = stop.as_str(),
            "forwarding header walk stopped early; using the last good address"
        ),
        Outcome::Peer | Outcome::Header => {
            tracing::trace!(peer = %peer.ip(), client_ip = %ip, "client ip resolved");
        }
    }
}
