//! Serve an axum `Router` or any tower service over HTTP/1.1 with deadlines on the request
//! head and a cap on connections whose first request head is still arriving.
//!
//! A WebSocket handshake is an ordinary HTTP/1.1 request, so every stalled handshake holds a
//! socket and a file descriptor until something closes it. `axum::serve` gives hyper no timer,
//! so hyper's header-read timeout never runs: a TCP connection that sends nothing, or a request
//! head that stops half-way (slowloris), stays open forever, and a few dozen of them exhaust a
//! small file-descriptor limit. Connection limits such as [`conn_limit`](crate::conn_limit)
//! cannot see them either: they count requests, and these never become one.
//!
//! [`serve`] accepts connections itself and closes each one that
//!
//! - sends no byte within the *first-byte timeout* (measured from accept),
//! - has not sent its whole request head within the *header-read timeout* (hyper's own
//!   timeout, given a timer), or
//! - arrives while too many connections are still sending their first request head, from its
//!   IP address or in all (closed at once, with no answer: a flood is cut, not answered).
//!
//! Everything else works as with `axum::serve`: upgrades (WebSockets), graceful shutdown, and
//! the peer address in every request's extensions, as [`PeerAddr`] and, with the feature
//! `axum`, as axum's `ConnectInfo<SocketAddr>` (so `ConnectInfo` extractors and
//! [`client_ip`](crate::client_ip) work without `into_make_service_with_connect_info`).
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "axum")]
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use wsguard::serve::{serve, ServeConfig};
//!
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!
//! // The defaults are safe; this only shows the knobs.
//! let config = ServeConfig::builder()
//!     .header_read_timeout(Duration::from_secs(10))
//!     .first_byte_timeout(Duration::from_secs(10))
//!     .max_pending_heads(512)
//!     .max_pending_heads_per_ip(16)
//!     .build()?;
//!
//! serve(listener, app)
//!     .with_config(config)
//!     .with_graceful_shutdown(async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "axum"))]
//! # fn main() {}
//! ```
//!
//! With raw hyper, pass a tower service (for example one built with `tower::service_fn` and
//! `ServiceBuilder`) taking `Request<hyper::body::Incoming>`; upgrades work as with
//! `serve_connection(..).with_upgrades()`.
//!
//! # What each deadline covers
//!
//! | deadline | runs from | until |
//! |---|---|---|
//! | first byte ([`first_byte_timeout`](ServeConfigBuilder::first_byte_timeout)) | accept | the first byte read |
//! | header read ([`header_read_timeout`](ServeConfigBuilder::header_read_timeout)) | the connection's first poll (accept); again each time a keep-alive connection turns idle | the end of the request head |
//!
//! Either closes the connection without an answer.
//!
//! The header-read timeout is hyper's (`http1::Builder::header_read_timeout`, with a
//! `TokioTimer`). In current hyper (checked in 1.12; hyper#3185) it starts when hyper first
//! waits for a head, so it also covers a connection that sends nothing; older releases started
//! it at the first byte, and without a timer it does not run at all. The
//! first-byte deadline is this module's own and makes that case independent of the hyper
//! version; it can also be shorter, to drop silent connections sooner than slow ones.
//! Neither deadline applies to request bodies or to an upgraded socket: use
//! connection hygiene (`wsguard_core::Hygiene`: idle timeout, lifetime) after the
//! upgrade.
//!
//! # Lingering close
//!
//! When a connection is over (a plain HTTP connection, or an upgraded socket the application
//! dropped), and the peer ever sent a byte, the server closes it the way RFC 9112 section 9.6
//! and RFC 6455 section 7.1.1 ask: it shuts its write side (FIN), reads and discards what the
//! peer still sends until the peer closes too (at most 8 MiB and 2 seconds, in a task of its
//! own; at most 1024 connections linger at once), then closes. Closing with unread data at
//! once would send a TCP reset, which can destroy the last response or WebSocket close frame
//! before the peer reads it (a WebSocket the server closes for an oversized message stops
//! reading at the frame's header, with the rest unread). The application is not held: the
//! connection's guards are released when the socket is dropped, not when the lingering ends.
//!
//! # The pending-head cap
//!
//! A connection counts as *pending* from accept until its first request head is complete (or
//! it closes). The count per IP address lives in a map with at most
//! [`max_pending_heads`](ServeConfigBuilder::max_pending_heads) entries (an entry is removed
//! when its count reaches zero), so the memory is bounded whatever the number of addresses.
//! IPv6 clients are counted per /64 network, which one subscriber usually owns whole.
//! Later requests on a keep-alive connection are not counted; the header-read timeout bounds
//! them.
//!
//! A closed connection gets no answer. It is logged with a fixed `reason`
//! (`pending_heads` or `pending_heads_per_ip`): at `warn` level at most once every ten seconds,
//! every time at `debug` level with the peer's address. With the feature `metrics`, the
//! counter `wsguard_serve_closed_total` counts closes by `reason`: the two above,
//! `first_byte_timeout` and `header_read_timeout`.
//!
//! # Behind a reverse proxy
//!
//! The cap sees the address of the TCP peer. Behind a reverse proxy or load balancer that is
//! the proxy's address for every connection, so the per-IP cap becomes a second global cap:
//! set [`max_pending_heads_per_ip`](ServeConfigBuilder::max_pending_heads_per_ip) to
//! [`max_pending_heads`](ServeConfigBuilder::max_pending_heads) and let the proxy enforce
//! per-client header timeouts and limits (nginx `client_header_timeout`, `limit_conn`). The
//! proxy's forwarding headers are only read later, by [`client_ip`](crate::client_ip).
//!
//! # Scope
//!
//! HTTP/1.1 only, in clear text. hyper has no header-read timeout for HTTP/2, and WebSocket
//! handshakes from browsers and common clients use HTTP/1.1. Terminate TLS in front (a proxy)
//! or write your own accept loop on the same pieces (hyper's `http1::Builder` with a timer,
//! hyper-util's `TokioIo` and `TokioTimer`). Because the accepted stream is wrapped, an upgraded
//! connection cannot be downcast back to a `TcpStream`.

use std::{
    cell::Cell,
    collections::HashMap,
    error::Error as StdError,
    fmt,
    future::{Future, IntoFuture},
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::{
    body::{Body, Incoming},
    server::conn::http1,
    Request, Response,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
    time::{Instant, Sleep},
};
use tower::util::{Oneshot, ServiceExt};
use tower_service::Service;
use wsguard_core::{ClientIpKey, Key, PeerAddr};

type BoxError = Box<dyn StdError + Send + Sync>;

/// The longest timeout [`ServeConfigBuilder::build`] accepts: one hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long to wait before accepting again after an accept error that is not about one
/// connection (`EMFILE`, `ENFILE`, `ENOMEM`): retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Closes over the cap are logged at `warn` level at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `service` on `listener` with the [default configuration](ServeConfig::default).
///
/// Returns a [`Serve`]; await it (it runs until the graceful-shutdown signal, or forever), or
/// change it first with [`Serve::with_config`] and [`Serve::with_graceful_shutdown`].
///
/// `service` is cloned once per request (as hyper-util's `TowerToHyperService` does); an axum
/// `Router` is such a service. See the [module docs](self) for an example.
pub fn serve<S, B>(listener: TcpListener, service: S) -> Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Serve {
        listener,
        service,
        config: ServeConfig::default(),
        signal: std::future::pending(),
    }
}

/// A server about to run; await it. See the [module docs](self) for an example.
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve<S, F = std::future::Pending<()>> {
    listener: TcpListener,
    service: S,
    config: ServeConfig,
    signal: F,
}

impl<S, F> fmt::Debug for Serve<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, F> Serve<S, F> {
    /// Replaces the configuration (by default [`ServeConfig::default`]).
    pub fn with_config(mut self, config: ServeConfig) -> Self {
        self.config = config;
        self
    }

    /// Stops when `signal` completes, as `axum::serve`'s `with_graceful_shutdown` does: the
    /// listener is closed at once, idle connections and those that sent nothing are closed, a
    /// request head still arriving gets the rest of its header-read timeout, requests in flight
    /// finish (their responses carry `Connection: close`), and the server's future completes
    /// when every HTTP connection has ended.
    ///
    /// Upgraded connections (WebSockets) are no longer HTTP connections: they run in their own
    /// tasks and are not waited for. Close them with your own signal, for example
    /// the hygiene's `Shutdown` (`wsguard_core::Shutdown`), which sends close code 1001.
    pub fn with_graceful_shutdown<G>(self, signal: G) -> Serve<S, G>
    where
        G: Future<Output = ()> + Send + 'static,
    {
        Serve {
            listener: self.listener,
            service: self.service,
            config: self.config,
            signal,
        }
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<S, B, F> IntoFuture for Serve<S, F>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = ();
    type IntoFuture = ServeFuture;

    fn into_future(self) -> Self::IntoFuture {
        ServeFuture(Box::pin(run(self)))
    }
}

/// The future of a running [`Serve`]; completes after a graceful shutdown.
#[must_use = "futures do nothing unless polled"]
pub struct ServeFuture(Pin<Box<dyn Future<Output = ()> + Send>>);

impl fmt::Debug for ServeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeFuture").finish_non_exhaustive()
    }
}

impl Future for ServeFuture {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

/// The validated configuration of [`serve`]. See the [module docs](self) for an example.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    header_read_timeout: Duration,
    first_byte_timeout: Duration,
    max_pending_heads: u32,
    max_pending_heads_per_ip: u32,
}

impl Default for ServeConfig {
    /// Header read 10 s, first byte 10 s, 512 pending heads in all and 16 per IP (IPv6 /64).
    fn default() -> Self {
        Self {
            header_read_timeout: ServeConfigBuilder::DEFAULT_HEADER_READ_TIMEOUT,
            first_byte_timeout: ServeConfigBuilder::DEFAULT_FIRST_BYTE_TIMEOUT,
            max_pending_heads: ServeConfigBuilder::DEFAULT_MAX_PENDING_HEADS,
            max_pending_heads_per_ip: ServeConfigBuilder::DEFAULT_MAX_PENDING_HEADS_PER_IP,
        }
    }
}

impl ServeConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ServeConfigBuilder {
        ServeConfigBuilder {
            config: Self::default(),
        }
    }

    /// The header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// The first-byte timeout.
    pub fn first_byte_timeout(&self) -> Duration {
        self.first_byte_timeout
    }

    /// The cap on connections whose first request head is still arriving, in all.
    pub fn max_pending_heads(&self) -> u32 {
        self.max_pending_heads
    }

    /// The cap on connections whose first request head is still arriving, per IP address.
    pub fn max_pending_heads_per_ip(&self) -> u32 {
        self.max_pending_heads_per_ip
    }
}

/// Builds a [`ServeConfig`]; every value is checked by [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct ServeConfigBuilder {
    config: ServeConfig,
}

impl ServeConfigBuilder {
    /// 10 s: a request head is a few kilobytes and arrives in a round trip or two; ten
    /// seconds leaves room for a slow mobile link and is a third of hyper's own default.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// 10 s: a client that opened a connection to send a request sends it within a round trip;
    /// browsers that pre-open connections reconnect when one is closed.
    pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
    /// 512: half the common soft limit of 1024 file descriptors, so stalled connections alone
    /// cannot exhaust it; if each head took 100 ms to arrive, 512 places would still let
    /// through 5,120 new connections a second (arithmetic, not a measurement).
    pub const DEFAULT_MAX_PENDING_HEADS: u32 = 512;
    /// 16: a browser opens at most 6 HTTP/1.1 connections per host, so 16 at the same instant
    /// leaves room for a few users behind one NAT.
    pub const DEFAULT_MAX_PENDING_HEADS_PER_IP: u32 = 16;

    /// How long a connection has to send its whole request head (default 10 s). On a
    /// keep-alive connection the same timeout runs again each time the connection turns idle.
    /// Between 1 ms and [`MAX_TIMEOUT`].
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// How long a connection has, from accept, to send its first byte (default 10 s).
    /// Between 1 ms and [`MAX_TIMEOUT`].
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.config.first_byte_timeout = timeout;
        self
    }

    /// How many connections may be sending their first request head at once, in all
    /// (default 512). Keep it well below the process's file-descriptor limit.
    pub fn max_pending_heads(mut self, max: u32) -> Self {
        self.config.max_pending_heads = max;
        self
    }

    /// How many connections from one IP address (IPv6: one /64) may be sending their first
    /// request head at once (default 16). At most [`max_pending_heads`](Self::max_pending_heads).
    pub fn max_pending_heads_per_ip(mut self, max: u32) -> Self {
        self.config.max_pending_heads_per_ip = max;
        self
    }

    /// The checked configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Timeout`] for a timeout under 1 ms or over [`MAX_TIMEOUT`],
    /// [`ConfigError::ZeroCap`] for a cap of zero, [`ConfigError::PerIpAboveGlobal`] when the
    /// per-IP cap exceeds the global one.
    pub fn build(self) -> Result<ServeConfig, ConfigError> {
        let config = self.config;
        for (name, timeout) in [
            ("header_read_timeout", config.header_read_timeout),
            ("first_byte_timeout", config.first_byte_timeout),
        ] {
            if timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT {
                return Err(ConfigError::Timeout { name, timeout });
            }
        }
        for (name, max) in [
            ("max_pending_heads", config.max_pending_heads),
            ("max_pending_heads_per_ip", config.max_pending_heads_per_ip),
        ] {
            if max == 0 {
                return Err(ConfigError::ZeroCap { name });
            }
        }
        if config.max_pending_heads_per_ip > config.max_pending_heads {
            return Err(ConfigError::PerIpAboveGlobal {
                per_ip: config.max_pending_heads_per_ip,
                global: config.max_pending_heads,
            });
        }
        Ok(config)
    }
}

/// An invalid configuration, reported by [`ServeConfigBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timeout under 1 ms (every connection would be closed) or over [`MAX_TIMEOUT`].
    Timeout {
        /// The option's name.
        name: &'static str,
        /// The value given.
        timeout: Duration,
    },
    /// A cap of zero (every connection would be closed).
    ZeroCap {
        /// The option's name.
        name: &'static str,
    },
    /// The per-IP cap is above the global cap.
    PerIpAboveGlobal {
        /// The per-IP cap.
        per_ip: u32,
        /// The global cap.
        global: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { name, timeout } => write!(
                f,
                "{name} is {timeout:?}; it must be between 1ms and {MAX_TIMEOUT:?}"
            ),
            Self::ZeroCap { name } => write!(f, "{name} is zero: every connection would be closed"),
            Self::PerIpAboveGlobal { per_ip, global } => write!(
                f,
                "max_pending_heads_per_ip ({per_ip}) is above max_pending_heads ({global})"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a connection was closed by this module: the `reason` of logs and metrics.
#[derive(Debug, Clone, Copy)]
enum Closed {
    PendingHeads,
    PendingHeadsPerIp,
    FirstByteTimeout,
    HeaderReadTimeout,
}

impl Closed {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 4] = [
        Self::PendingHeads,
        Self::PendingHeadsPerIp,
        Self::FirstByteTimeout,
        Self::HeaderReadTimeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::PendingHeads => "pending_heads",
            Self::PendingHeadsPerIp => "pending_heads_per_ip",
            Self::FirstByteTimeout => "first_byte_timeout",
            Self::HeaderReadTimeout => "header_read_timeout",
        }
    }

    fn record(self) {
        #[cfg(feature = "metrics")]
        metrics::counter!(SERVE_CLOSED_TOTAL, "reason" => self.as_str()).increment(1);
    }
}

/// `wsguard_serve_closed_total{reason}`.
#[cfg(feature = "metrics")]
const SERVE_CLOSED_TOTAL: &str = "wsguard_serve_closed_total";

/// Describes `wsguard_serve_closed_total` and registers its series at zero.
#[cfg(feature = "metrics")]
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        SERVE_CLOSED_TOTAL,
        metrics::Unit::Count,
        "Connections closed by wsguard::serve before their request head was read, by reason"
    );
    for closed in Closed::ALL {
        metrics::counter!(SERVE_CLOSED_TOTAL, "reason" => closed.as_str()).increment(0);
    }
}

async fn run<S, B, F>(serve: Serve<S, F>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    let Serve {
        listener,
        service,
        config,
        signal,
    } = serve;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let heads = Arc::new(PendingHeads::new(&config));
    // As `axum::serve`: one channel tells every connection to shut down gracefully; the other
    // is closed when every connection task has dropped its receiver.
    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let (done_tx, done_rx) = watch::channel(());
    let mut log = RefusalLog::default();
    let lingering = Arc::new(AtomicUsize::new(0));
    let mut signal = std::pin::pin!(signal);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Most likely out of file descriptors (EMFILE): back off instead of spinning,
                // and let connections close meanwhile.
                tracing::error!(%error, "accept error; retrying in 1 s");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = &mut signal => break,
                }
            }
        };
        let permit = match PendingHeads::try_acquire(&heads, peer.ip()) {
            Ok(permit) => permit,
            Err(closed) => {
                log.closed(closed, peer.ip());
                drop(tcp);
                continue;
            }
        };
        // Small WebSocket frames should not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(FirstByte::new(
            tcp,
            config.first_byte_timeout,
            peer,
            Arc::clone(&lingering),
        ));
        let conn = builder
            .serve_connection(
                io,
                ConnService {
                    inner: service.clone(),
                    peer,
                    head: Cell::new(Some(permit)),
                },
            )
            .with_upgrades();
        let (mut shutdown_rx, done_rx) = (shutdown_rx.clone(), done_rx.clone());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = shutdown_rx.changed() => {
                    // Closes an idle connection at once, lets a request in flight finish.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            drop(done_rx);
            if let Err(error) = result {
                if error.is_timeout() {
                    Closed::HeaderReadTimeout.record();
                    tracing::debug!(
                        reason = Closed::HeaderReadTimeout.as_str(),
                        %peer,
                        "connection closed: request head incomplete"
                    );
                } else {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    drop(shutdown_rx);
    let _ = shutdown_tx.send(());
    drop(done_rx);
    done_tx.closed().await;
}

/// Errors about one connection, which the next accept does not repeat (as `axum::serve`).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Logs closes over the cap: every one at `debug`, at most one `warn` per [`WARN_EVERY`].
#[derive(Default)]
struct RefusalLog {
    last_warn: Option<Instant>,
    since_warn: u64,
}

impl RefusalLog {
    fn closed(&mut self, closed: Closed, ip: IpAddr) {
        closed.record();
        let reason = closed.as_str();
        tracing::debug!(reason, peer = %ip, "connection closed at accept: too many pending request heads");
        self.since_warn += 1;
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|last| now.duration_since(last) >= WARN_EVERY)
        {
            tracing::warn!(
                reason,
                closed = self.since_warn,
                "closing new connections: too many request heads still arriving"
            );
            self.last_warn = Some(now);
            self.since_warn = 0;
        }
    }
}

/// The connections whose first request head is still arriving, in all and per IP key.
struct PendingHeads {
    max: u32,
    max_per_ip: u32,
    key: ClientIpKey,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: u32,
    /// At most `max` entries: each counts at least one pending connection.
    per_ip: HashMap<Key, u32>,
}

impl PendingHeads {
    fn new(config: &ServeConfig) -> Self {
        // 64 is a valid IPv6 prefix length, so this falls back only in theory.
        let key = ClientIpKey::new()
            .ipv6_prefix(64)
            .unwrap_or_else(|_| ClientIpKey::new());
        Self {
            max: config.max_pending_heads,
            max_per_ip: config.max_pending_heads_per_ip,
            key,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn try_acquire(this: &Arc<Self>, ip: IpAddr) -> Result<HeadPermit, Closed> {
        let key = this.key.key_of(ip);
        let mut counts = this.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= this.max {
            return Err(Closed::PendingHeads);
        }
        let count = counts.per_ip.get(&key).copied().unwrap_or(0);
        if count >= this.max_per_ip {
            return Err(Closed::PendingHeadsPerIp);
        }
        counts.total += 1;
        counts.per_ip.insert(key.clone(), count + 1);
        drop(counts);
        Ok(HeadPermit {
            heads: Arc::clone(this),
            key,
        })
    }
}

/// One pending connection's place in [`PendingHeads`]; dropping it frees the place.
struct HeadPermit {
    heads: Arc<PendingHeads>,
    key: Key,
}

impl Drop for HeadPermit {
    fn drop(&mut self) {
        let mut counts = self
            .heads
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_ip.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.per_ip.remove(&self.key);
            }
        }
    }
}

/// The per-connection service: frees the pending-head place at the first request, puts the
/// peer into every request and calls a clone of the user's service.
struct ConnService<S> {
    inner: S,
    peer: SocketAddr,
    /// Dropped when the first request head is complete (hyper calls the service only then).
    head: Cell<Option<HeadPermit>>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Oneshot<S, Request<Incoming>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        drop(self.head.take());
        req.extensions_mut().insert(PeerAddr(self.peer));
        #[cfg(feature = "axum")]
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.inner.clone().oneshot(req)
    }
}

/// How long a closed connection lingers at most, reading and discarding what the peer still
/// sends after the server shut its write side (see [`FirstByte`]'s `Drop`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// How much a lingering connection reads and discards at most: 8 MiB (what a client can
/// have in flight on a fast link).
const LINGER_MAX_BYTES: usize = 8 * 1024 * 1024;

/// How many connections linger at once at most, per server; beyond it a connection closes
/// at once.
const MAX_LINGERING: usize = 1024;

/// The accepted stream, failing reads with `TimedOut` when no byte arrives within the
/// first-byte timeout; after the first byte, a plain pass-through.
///
/// When dropped (the connection is over, upgraded or not), a stream that received anything
/// closes lingeringly (RFC 9112 section 9.6; RFC 6455 section 7.1.1): a task shuts the write
/// side (FIN), reads and discards what the peer still sends until it closes too, at most
/// [`LINGER_MAX_BYTES`] and [`LINGER_TIMEOUT`], then closes. Closing with unread data at once
/// would send a reset, which can destroy the last response or close frame before the peer
/// reads it. A peer that never sent a byte is closed at once.
struct FirstByte {
    tcp: Option<TcpStream>,
    deadline: Option<Pin<Box<Sleep>>>,
    peer: SocketAddr,
    received: bool,
    lingering: Arc<AtomicUsize>,
}

impl FirstByte {
    fn new(
        tcp: TcpStream,
        timeout: Duration,
        peer: SocketAddr,
        lingering: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            tcp: Some(tcp),
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            peer,
            received: false,
            lingering,
        }
    }

    /// The stream; `NotConnected` once it was handed to the lingering close (never while the
    /// stream is in use: that happens on drop).
    fn tcp(&mut self) -> io::Result<&mut TcpStream> {
        self.tcp
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for FirstByte {
    fn drop(&mut self) {
        let Some(tcp) = self.tcp.take() else {
            return;
        };
        if !self.received {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.lingering.fetch_add(1, Ordering::AcqRel) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let lingering = Arc::clone(&self.lingering);
        runtime.spawn(async move {
            linger(tcp).await;
            lingering.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Shuts the write side, then reads and discards until the peer closes or a bound is hit.
async fn linger(mut tcp: TcpStream) {
    if tcp.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut buf = [0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return,
            Ok(Ok(n)) => discarded += n,
        }
    }
}

impl AsyncRead for FirstByte {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        match Pin::new(this.tcp()?).poll_read(cx, buf) {
            Poll::Ready(result) => {
                // Data, end of stream or an error: either way the wait for a first byte is over.
                this.deadline = None;
                this.received |= buf.filled().len() > filled;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let Some(deadline) = &mut this.deadline else {
                    return Poll::Pending;
                };
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.deadline = None;
                Closed::FirstByteTimeout.record();
                tracing::debug!(
                    reason = Closed::FirstByteTimeout.as_str(),
                    peer = %this.peer,
                    "connection closed: no byte received"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no byte received within the first-byte timeout",
                )))
            }
        }
    }
}

impl AsyncWrite for FirstByte {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().tcp()?).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().tcp()?).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().tcp()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().tcp()?).poll_shutdown(cx)
    }
}
