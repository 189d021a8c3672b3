//! The layer: configuration and its builder.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{Extensions, HeaderMap};
use tower_layer::Layer;
use wsguard_core::HttpRejection;

use crate::{
    resolve::{Resolver, Source},
    ClientIpService, ConfigError, TrustedProxies,
};

/// The default cap on forwarding-header elements examined per request.
pub const DEFAULT_MAX_ELEMENTS: usize = 64;

/// The default cap on forwarding-header bytes examined per request (8 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;

/// Resolves the client IP once per request and inserts [`ClientIp`](crate::ClientIp).
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
    /// A layer that trusts no proxy: the client IP is the peer address, and headers are
    /// never read until [`trusted_proxies`](Self::trusted_proxies) names some.
    ///
    /// The source is [`Source::XForwardedFor`], the caps [`DEFAULT_MAX_ELEMENTS`] and
    /// [`DEFAULT_MAX_HEADER_BYTES`], and a request without a peer address is answered
    /// with [`HttpRejection`] (500).
    pub fn new() -> Self {
        Self {
            resolver: Arc::new(Resolver {
                peer_from: None,
                trusted: TrustedProxies::new(),
                source: Source::XForwardedFor,
                max_elements: DEFAULT_MAX_ELEMENTS,
                max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
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

    /// Replaces the trusted proxies. Headers are read only when the peer is one of them.
    #[must_use]
    pub fn trusted_proxies(self, trusted: TrustedProxies) -> Self {
        self.edit(|r| r.trusted = trusted)
    }

    /// Replaces where the client IP is read from when the peer is trusted (default
    /// [`Source::XForwardedFor`]).
    ///
    /// # Errors
    ///
    /// [`ConfigError::HopsOverLimit`] for a hop count above the element cap.
    pub fn source(self, source: Source) -> Result<Self, ConfigError> {
        check_hops(&source, self.resolver.max_elements)?;
        Ok(self.edit(|r| r.source = source))
    }

    /// The most forwarding-header elements examined per request (default
    /// [`DEFAULT_MAX_ELEMENTS`], 64). Empty elements count. A longer chain stops the walk
    /// there, and the last good address wins.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroMaxElements`] for 0, [`ConfigError::HopsOverLimit`] if the hop
    /// count of the source is larger.
    pub fn max_elements(self, max: usize) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::ZeroMaxElements);
        }
        check_hops(&self.resolver.source, max)?;
        Ok(self.edit(|r| r.max_elements = max))
    }

    /// The most forwarding-header bytes examined per request, counted from the right end
    /// of the last line (default [`DEFAULT_MAX_HEADER_BYTES`], 8 KiB). The walk stops at
    /// the first element that does not fit, and the last good address wins; a
    /// single-value header longer than this is ignored.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroMaxHeaderBytes`] for 0.
    pub fn max_header_bytes(self, max: usize) -> Result<Self, ConfigError> {
        if max == 0 {
            return Err(ConfigError::ZeroMaxHeaderBytes);
        }
        Ok(self.edit(|r| r.max_header_bytes = max))
    }

    /// Reads the peer address with `peer_from` before the built-in sources (see
    /// [`peer_addr`](crate::peer_addr)), for transports wsguard does not know: tonic
    /// serving TLS (`TlsConnectInfo<TcpConnectInfo>`), an address recovered from the PROXY
    /// protocol, your own connect-info type. When it returns `None`, the built-in sources
    /// are tried.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use wsguard_client_ip::{ClientIpLayer, TrustedProxies};
    ///
    /// /// What a custom acceptor put into each request.
    /// #[derive(Clone)]
    /// struct MyConnInfo {
    ///     remote: SocketAddr,
    /// }
    ///
    /// let layer = ClientIpLayer::new()
    ///     .trusted_proxies(TrustedProxies::private())
    ///     .peer_addr_from(|ext| ext.get::<MyConnInfo>().map(|info| info.remote));
    /// ```
    ///
    /// With tonic's TLS, the function is
    /// `|ext| ext.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr())`.
    #[must_use]
    pub fn peer_addr_from(self, peer_from: fn(&Extensions) -> Option<SocketAddr>) -> Self {
        self.edit(|r| r.peer_from = Some(peer_from))
    }

    /// Replaces how a request without a peer address (a configuration error) is answered:
    /// [`GrpcRejection`](wsguard_core::GrpcRejection) for tonic stacks, or a closure
    /// `Fn(&Rejection) -> Response<B>`. The response always carries the
    /// [`Rejection`](wsguard_core::Rejection) in its extensions.
    #[must_use]
    pub fn on_rejection<Q>(self, policy: Q) -> ClientIpLayer<Q> {
        ClientIpLayer {
            resolver: self.resolver,
            policy,
        }
    }

    /// The client IP of a request from `peer` with `headers`, as the layer resolves it:
    /// for tests, and for transports that are not tower services.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.resolver.resolve(peer, headers).0
    }
}

fn check_hops(source: &Source, max_elements: usize) -> Result<(), ConfigError> {
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
        ClientIpService::from_parts(inner, Arc::clone(&self.resolver), self.policy.clone())
    }
}
