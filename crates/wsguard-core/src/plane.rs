//! The message plane: every inbound data frame of an upgraded socket goes through a tower
//! [`Service`].
//!
//! After the upgrade, guards work per message rather than per request. The plane's request
//! is an [`Inbound`] (the message and a cheap handle on its [`ConnectionInfo`]: client IP,
//! principal, token expiry, the handshake's extensions) and its response a [`Verdict`]: hand
//! the message to the application, answer it with a reply frame, drop it, or close the
//! socket with a [`Rejection`]'s close code. Guards of the message plane (`wsguard-msg-rate`,
//! `wsguard-schema-validate`, your own) are ordinary tower [`Layer`]s over such a service,
//! so tower's own layers (timeouts, concurrency limits, `ServiceBuilder`) compose with them;
//! the innermost service is usually [`Admit`], which lets every message through.
//!
//! [`GuardedSocket`] runs a socket through such a service. It wraps any
//! `Stream<Item = Result<M, E>> + Sink<M, Error = E>` of [`WsMessage`]s (axum's `WebSocket`,
//! tokio-tungstenite's `WebSocketStream`, or another adapter of the same shape, such as the
//! connection hygiene of `wsguard-conn-limit`, inside or outside it) and is itself one:
//!
//! - every message but the peer's close frame is passed to the service: text, binary, and
//!   the ping and pong control frames too (they cost the server as much as a small message,
//!   so budgets must see them); only admitted messages reach the application, and a
//!   [`Verdict::Close`] closes the socket through the [closing handshake](crate::close)
//!   (close frame, flush, read and discard what the peer still sends within bounds, end);
//! - a ping is answered by the socket itself (tungstenite queues one pong at a time, and a
//!   newer ping replaces a pong that could not go out yet: RFC 6455 section 5.5.3), and a
//!   ping the service does not admit is not seen by the application;
//! - refusal frames ([`Verdict::Reply`]) are coalesced: at most
//!   [`MAX_REPLIES_PER_SECOND`] per connection (unless set), the others are dropped
//!   silently, so that a flood of refused messages is never answered message for message;
//! - the peer's close frame reaches the application as it is (the socket answers it);
//! - backpressure: the socket is not read while the service is not ready or a message is
//!   being decided, so a slow guard (or a rate limiter that waits) slows the client down
//!   through TCP flow control instead of buffering its messages;
//! - token lifetime: when the connection's [`TokenExpiry`](crate::TokenExpiry) passes, the
//!   socket is closed with 4440 ([`Reason::TokenExpired`]) by a timer, idle or not;
//! - the peer's faults: a message over the socket's own limit (which the hand-offs set, and
//!   which tungstenite enforces while the message arrives) closes the socket with 1009
//!   ([`Reason::MessageTooLarge`]), a text message that is not UTF-8 with 1007, a frame
//!   that breaks RFC 6455's framing rules with 1002 ([`Reason::ProtocolError`]); see
//!   [`WsError::close_reason`]. The close frame goes out at once and the stream ends as soon
//!   as it is flushed (nothing more can be read). Other socket errors reach the application.
//!
//! The adapter does its work (the timers included) while the application polls it for the
//! next message, as a WebSocket loop does anyway: keep reading the socket, for example in a
//! `tokio::select!` beside the application's other sources, rather than only between long
//! pauses.
//!
//! What a guard learned about a message travels with it in the [`Inbound`]: the message's
//! parsed form ([`Inbound::set_parsed`]: a validator's typed message) and its extensions
//! (anything else). Both reach the application as part of an [`Admitted`] message through
//! [`GuardedSocket::next_admitted`], so nothing is parsed twice. Through the plain `Stream`
//! interface the application gets the bare message, and what was learned about the message
//! it got last from [`GuardedSocket::take_parsed`] and [`GuardedSocket::take_extensions`].
//!
//! The plane builds one service per connection ([`GuardedSocket::layered`] calls
//! [`Layer::layer`] for each socket), so a guard keeps its per-connection state in the
//! service it builds and its shared state (per-user budgets) in its layer.
//!
//! # Example
//!
//! A plane that refuses binary messages with an error frame, under tower's timeout, in front
//! of an echo over axum:
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # {
//! use std::{convert::Infallible, time::Duration};
//! use axum::{extract::ws::Message, routing::get, Router};
//! use futures_util::SinkExt;
//! use tower::ServiceBuilder;
//! use wsguard_core::{axum::GuardedUpgrade, plane::{GuardedSocket, Inbound, Verdict}};
//!
//! async fn text_only(req: Inbound<Message>) -> Result<Verdict<Message>, Infallible> {
//!     Ok(match req.message() {
//!         Message::Binary(_) => {
//!             Verdict::Reply(Message::text(r#"{"type":"error","code":"text_only"}"#))
//!         }
//!         _ => Verdict::Admit(req),
//!     })
//! }
//!
//! async fn ws(upgrade: GuardedUpgrade) -> axum::response::Response {
//!     upgrade.on_upgrade(|socket, conn| async move {
//!         let plane = ServiceBuilder::new()
//!             .timeout(Duration::from_secs(5))
//!             .service_fn(text_only);
//!         let mut socket = GuardedSocket::new(socket, conn, plane);
//!         while let Some(Ok(msg)) = socket.next_admitted().await {
//!             if socket.send(msg.into_message()).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! let app: Router = Router::new().route("/ws", get(ws));
//! # }
//! ```

use std::{
    any::Any,
    convert::Infallible,
    fmt,
    future::{poll_fn, Future},
    net::IpAddr,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{ready, Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::{Sink, Stream};
use http::{Extensions, HeaderMap, Uri};
use tokio::time::{sleep_until, Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

pub use crate::close::{WsSocket, CLOSE_TIMEOUT};
use crate::{
    close::Closing, key::RequestHead, telemetry, Connection, ConnectionScope, MessageKind,
    PendingRejection, Principal, Reason, Rejection, WsError, WsMessage,
};

/// How many refusal frames ([`Verdict::Reply`]) a [`GuardedSocket`] sends per second at
/// most, unless set with [`GuardedSocket::max_replies_per_second`]: 3. Refusals beyond it
/// are dropped without an answer.
pub const MAX_REPLIES_PER_SECOND: u32 = 3;

/// What the message plane knows about a connection: a cheap, shared handle.
///
/// Built once per socket from the [`Connection`] of the handshake. Unlike the `Connection`,
/// it does not hold the connection's guards: a clone kept somewhere else (in a spawned task,
/// say) does not keep connection permits alive after the socket ends.
///
/// See the [module docs](self) for an example.
#[derive(Clone)]
pub struct ConnectionInfo {
    inner: Arc<InfoInner>,
}

struct InfoInner {
    uri: Uri,
    extensions: Extensions,
    client_ip: Option<IpAddr>,
    principal: Option<Principal>,
    token_expiry: Option<SystemTime>,
}

impl ConnectionInfo {
    /// A snapshot of `conn`'s identity: its URI and a copy of its extensions, without the
    /// [`ConnectionScope`] and the [`PendingRejection`].
    pub fn new(conn: &Connection) -> Self {
        let mut extensions = conn.extensions().clone();
        extensions.remove::<ConnectionScope>();
        extensions.remove::<PendingRejection>();
        Self {
            inner: Arc::new(InfoInner {
                uri: conn.uri().clone(),
                extensions,
                client_ip: conn.client_ip(),
                principal: conn.principal().cloned(),
                token_expiry: conn.token_expiry(),
            }),
        }
    }

    /// The handshake's URI.
    pub fn uri(&self) -> &Uri {
        &self.inner.uri
    }

    /// The handshake's extensions (claims and anything else the handshake layers left).
    pub fn extensions(&self) -> &Extensions {
        &self.inner.extensions
    }

    /// The client IP resolved by `wsguard-client-ip`, if that layer ran.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.inner.client_ip
    }

    /// The authenticated principal, if an authentication layer ran.
    pub fn principal(&self) -> Option<&Principal> {
        self.inner.principal.as_ref()
    }

    /// When the connection's credentials expire, if an authentication layer said so.
    pub fn token_expiry(&self) -> Option<SystemTime> {
        self.inner.token_expiry
    }

    /// The connection as a request head for [`KeyExtractor`](crate::KeyExtractor)s. Its
    /// headers are empty: they are not kept after the handshake.
    pub fn head(&self) -> RequestHead<'_> {
        static NO_HEADERS: OnceLock<HeaderMap> = OnceLock::new();
        RequestHead::new(
            &self.inner.uri,
            NO_HEADERS.get_or_init(HeaderMap::new),
            &self.inner.extensions,
        )
    }

    /// Whether two handles describe the same connection.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl From<&Connection> for ConnectionInfo {
    fn from(conn: &Connection) -> Self {
        Self::new(conn)
    }
}

impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("uri", &self.inner.uri.path())
            .field("client_ip", &self.inner.client_ip)
            .field("authenticated", &self.inner.principal.is_some())
            .field("token_expiry", &self.inner.token_expiry)
            .finish_non_exhaustive()
    }
}

/// The connection a guard's per-connection state belongs to, bound by the first message.
///
/// A guard of the message plane keeps per-connection state (a budget, a count of invalid
/// messages, the connection's key) in the service its layer builds for one socket. Built
/// once and cloned for every socket instead (a habit tower invites), such state would be
/// shared: one connection's budget spent by all, one user's messages charged to another.
/// `ConnectionBinding` makes that misuse fail safe: the state binds to the connection of
/// its first message, and [`check`](Self::check) says when a message comes from another
/// one, which the guard then refuses with [`foreign_connection`] (close 1011 and an `error`
/// event) instead of mis-charging it.
///
/// ```
/// use wsguard_core::plane::ConnectionBinding;
/// # use wsguard_core::{plane::ConnectionInfo, Connection};
/// # let mut ext = http::Extensions::new();
/// # let a = ConnectionInfo::new(&Connection::new(http::Uri::from_static("/ws"), &mut ext));
/// # let b = ConnectionInfo::new(&Connection::new(http::Uri::from_static("/ws"), &mut ext));
/// let binding = ConnectionBinding::new();
/// assert!(binding.check(&a));
/// assert!(binding.check(&a));
/// assert!(!binding.check(&b), "another connection's message");
/// ```
#[derive(Debug, Default)]
pub struct ConnectionBinding {
    bound: OnceLock<ConnectionInfo>,
}

impl ConnectionBinding {
    /// A binding to no connection yet.
    pub const fn new() -> Self {
        Self {
            bound: OnceLock::new(),
        }
    }

    /// Whether `info` is the bound connection, binding it if none is yet. One pointer
    /// comparison per message once bound.
    #[inline]
    pub fn check(&self, info: &ConnectionInfo) -> bool {
        self.bound.get_or_init(|| info.clone()).ptr_eq(info)
    }
}

/// The verdict for a message handed to another connection's service (see
/// [`ConnectionBinding`]): logs an `error` event (a misconfiguration: a plane service built
/// once and shared by several sockets) and closes the socket with 1011
/// ([`Reason::Internal`]).
pub fn foreign_connection<M>(layer: &'static str) -> Verdict<M> {
    tracing::error!(
        layer,
        "a message-plane service got a message from another connection than its own: build \
         the plane for each socket (GuardedSocket::layered does), never share one; closing"
    );
    telemetry::record_rejection(layer, Reason::Internal);
    Verdict::Close(Rejection::new(Reason::Internal))
}

/// The parsed form of a message, of whatever type the guard that parsed it chose.
type Parsed = Option<Box<dyn Any + Send + Sync>>;

/// The request of the message plane: one inbound data message and its connection.
///
/// Besides the message, it carries what the guards learned about it: the message as a
/// guard parsed it ([`parsed`](Self::parsed), one value, set by a validator) and
/// [`extensions`](Self::extensions) for anything else.
///
/// See the [module docs](self) for an example.
pub struct Inbound<M> {
    message: M,
    connection: ConnectionInfo,
    parsed: Parsed,
    extensions: Extensions,
}

impl<M> Inbound<M> {
    /// A message received on `connection`, not parsed yet, with empty extensions.
    pub fn new(message: M, connection: ConnectionInfo) -> Self {
        Self {
            message,
            connection,
            parsed: None,
            extensions: Extensions::new(),
        }
    }

    /// The message.
    pub const fn message(&self) -> &M {
        &self.message
    }

    /// The message, mutably.
    pub fn message_mut(&mut self) -> &mut M {
        &mut self.message
    }

    /// The connection it arrived on.
    pub const fn connection(&self) -> &ConnectionInfo {
        &self.connection
    }

    /// The message as a guard parsed it, if one did and parsed it into a `T`.
    pub fn parsed<T: 'static>(&self) -> Option<&T> {
        self.parsed.as_deref()?.downcast_ref()
    }

    /// Sets the message's parsed form (a validator does this, so that the application does
    /// not parse the message again), replacing any earlier one.
    ///
    /// Unlike an extension, it costs one allocation and no map, and `T` need not be
    /// `Clone`.
    pub fn set_parsed<T: Send + Sync + 'static>(&mut self, value: T) {
        self.parsed = Some(Box::new(value));
    }

    /// Anything else the guards learned about this message.
    pub const fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The message's extensions, mutably.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// The message, dropping the rest.
    pub fn into_message(self) -> M {
        self.message
    }

    /// The message, its parsed form and its extensions, as the application receives them.
    pub fn into_admitted(self) -> Admitted<M> {
        Admitted {
            message: self.message,
            parsed: self.parsed,
            extensions: self.extensions,
        }
    }
}

impl<M: fmt::Debug> fmt::Debug for Inbound<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbound")
            .field("message", &self.message)
            .field("connection", &self.connection)
            .field("parsed", &self.parsed.is_some())
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// The response of the message plane: what the socket adapter does with a message.
///
/// See the [module docs](self) for an example.
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict<M> {
    /// Hand the message (and its extensions) to the application.
    Admit(Inbound<M>),
    /// Drop the message and send this frame (an error frame) to the peer instead, unless
    /// the connection already had its [`MAX_REPLIES_PER_SECOND`] refusal frames this second
    /// (then the message is dropped silently).
    Reply(M),
    /// Drop the message silently.
    Drop,
    /// Drop the message and close the socket with the rejection's close code.
    Close(Rejection),
}

impl<M> Verdict<M> {
    /// Whether the message is handed to the application.
    pub const fn is_admit(&self) -> bool {
        matches!(self, Self::Admit(_))
    }

    /// The rejection a [`Verdict::Close`] closes with.
    pub const fn close_rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Close(rejection) => Some(rejection),
            _ => None,
        }
    }
}

/// A message the plane admitted, with what the guards learned about it: its parsed form
/// (see [`Inbound::parsed`]) and its extensions.
///
/// See the [module docs](self) for an example.
pub struct Admitted<M> {
    message: M,
    parsed: Parsed,
    extensions: Extensions,
}

impl<M> Admitted<M> {
    /// A message not parsed, with empty extensions (the peer's close frame reaches the
    /// application this way).
    pub fn new(message: M) -> Self {
        Self {
            message,
            parsed: None,
            extensions: Extensions::new(),
        }
    }

    /// The message.
    pub const fn message(&self) -> &M {
        &self.message
    }

    /// The message, dropping the rest.
    pub fn into_message(self) -> M {
        self.message
    }

    /// The message as a guard parsed it (a validator's typed message), if it is a `T`.
    pub fn parsed<T: 'static>(&self) -> Option<&T> {
        self.parsed.as_deref()?.downcast_ref()
    }

    /// Takes the message's parsed form out, if it is a `T` (else leaves it).
    pub fn take_parsed<T: 'static>(&mut self) -> Option<T> {
        take_parsed(&mut self.parsed)
    }

    /// Anything else the guards left.
    pub const fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The extensions, mutably.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

/// Takes the value out of `parsed` if it is a `T`.
fn take_parsed<T: 'static>(parsed: &mut Parsed) -> Option<T> {
    if !parsed.as_deref()?.is::<T>() {
        return None;
    }
    let any: Box<dyn Any> = parsed.take()?;
    any.downcast().ok().map(|value| *value)
}

impl<M: fmt::Debug> fmt::Debug for Admitted<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted")
            .field("message", &self.message)
            .field("parsed", &self.parsed.is_some())
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// The innermost service of the message plane: admits every message.
///
/// See the [module docs](self) for an example.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admit;

impl<M> Service<Inbound<M>> for Admit {
    type Response = Verdict<M>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Verdict<M>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: Inbound<M>) -> Self::Future {
        std::future::ready(Ok(Verdict::Admit(req)))
    }
}

/// The text of the error frame that answers a refused message.
///
/// Implemented by [`JsonErrorFrame`] (the default of the plane's guards) and by any
/// `Fn(&Rejection) -> Option<String> + Clone`; `None` drops the message without an answer.
/// The frame must not echo the message: it is sent to whoever sent it, possibly a script
/// probing for reflected input.
pub trait ErrorFrame: Clone + Send + Sync + 'static {
    /// The frame answering a message refused for `rejection`, or `None` for no answer.
    fn error_frame(&self, rejection: &Rejection) -> Option<String>;
}

impl<F> ErrorFrame for F
where
    F: Fn(&Rejection) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn error_frame(&self, rejection: &Rejection) -> Option<String> {
        self(rejection)
    }
}

/// The default error frame: `{"type":"error","code":"<code>"}` with [`error_code`]'s code.
///
/// It says nothing about limits, counts or the message itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonErrorFrame;

impl ErrorFrame for JsonErrorFrame {
    fn error_frame(&self, rejection: &Rejection) -> Option<String> {
        Some(format!(
            r#"{{"type":"error","code":"{}"}}"#,
            error_code(rejection.reason())
        ))
    }
}

/// The code an error frame uses for `reason`: `rate_limited`, `invalid_message`,
/// `forbidden`, `message_too_large`, `unsupported_data`, or else [`Reason::as_str`].
///
/// Always `snake_case` ASCII, safe to put in JSON without escaping.
pub const fn error_code(reason: Reason) -> &'static str {
    match reason {
        Reason::RateExceeded => "rate_limited",
        other => other.as_str(),
    }
}

type NextAdmitted<S> =
    Option<Result<Admitted<<S as WsSocket>::Message>, <S as WsSocket>::SocketError>>;

/// Counts the refusal frames of the current one-second window.
#[derive(Debug, Clone, Copy)]
struct ReplyWindow {
    limit: u32,
    started: Option<Instant>,
    sent: u32,
}

impl ReplyWindow {
    const fn new(limit: u32) -> Self {
        Self {
            limit,
            started: None,
            sent: 0,
        }
    }

    /// Whether one more refusal frame may go out now.
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        let current = self
            .started
            .is_some_and(|started| now.duration_since(started) < Duration::from_secs(1));
        if !current {
            self.started = Some(now);
            self.sent = 0;
        }
        if self.sent < self.limit {
            self.sent += 1;
            true
        } else {
            false
        }
    }
}

/// A socket whose inbound data frames go through a message-plane service.
///
/// It is a `Stream` and a `Sink` of the same messages as the socket it wraps, so the
/// application code does not change, and other adapters of that shape stack inside or
/// outside it. See the [module docs](self) for what it does and an example.
///
/// It holds the [`Connection`] (and with it the guards of the handshake) until it is dropped.
pub struct GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>>,
{
    socket: S,
    service: Svc,
    // Allocated once per socket and reused for every message: no allocation per message,
    // and the adapter stays `Unpin` whatever the service's future is.
    in_flight: Pin<Box<Option<Svc::Future>>>,
    outbox: Option<S::Message>,
    needs_flush: bool,
    /// The token's expiry.
    timer: Option<Pin<Box<Sleep>>>,
    close_timeout: Duration,
    replies: ReplyWindow,
    /// The closing handshake, once the plane started one.
    closing: Option<Closing<S::Message>>,
    /// The stream ended (or the closing handshake is over).
    done: bool,
    rejection: Option<Rejection>,
    /// What the guards learned about the data message the `Stream` interface yielded last.
    last_parsed: Parsed,
    last: Extensions,
    info: ConnectionInfo,
    conn: Connection,
}

// No field is ever pinned in place (the service's future lives in its own box), so the
// adapter is `Unpin` whatever the service and its future are.
impl<S, Svc> Unpin for GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>>,
{
}

impl<S, Svc> fmt::Debug for GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedSocket")
            .field("closing", &self.closing)
            .field("done", &self.done)
            .field("deciding", &self.in_flight.is_some())
            .field("rejection", &self.rejection)
            .field("connection", &self.info)
            .finish_non_exhaustive()
    }
}

impl<S> GuardedSocket<S, Admit>
where
    S: WsSocket,
{
    /// Guards `socket` with the service `layer` builds over [`Admit`] for this connection.
    ///
    /// `layer` is typically a `tower::ServiceBuilder` or one guard's layer, built once and
    /// shared by every connection.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, when the connection has a
    /// token expiry (the plane's timers are tokio timers). The hand-offs always run the
    /// socket callback inside one.
    pub fn layered<L>(socket: S, conn: Connection, layer: &L) -> GuardedSocket<S, L::Service>
    where
        L: Layer<Admit>,
        L::Service: Service<Inbound<S::Message>, Response = Verdict<S::Message>>,
    {
        GuardedSocket::new(socket, conn, layer.layer(Admit))
    }
}

impl<S, Svc> GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>, Response = Verdict<S::Message>>,
{
    /// Guards `socket` with `service`, built for this connection.
    ///
    /// If the connection's token has already expired, the first poll closes the socket with
    /// 4440.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with the time driver enabled, when the connection has a
    /// token expiry (the plane's timers are tokio timers).
    pub fn new(socket: S, conn: Connection, service: Svc) -> Self {
        let info = ConnectionInfo::new(&conn);
        let mut this = Self {
            socket,
            service,
            in_flight: Box::pin(None),
            outbox: None,
            needs_flush: false,
            timer: None,
            close_timeout: CLOSE_TIMEOUT,
            replies: ReplyWindow::new(MAX_REPLIES_PER_SECOND),
            closing: None,
            done: false,
            rejection: None,
            last_parsed: None,
            last: Extensions::new(),
            info,
            conn,
        };
        if let Some(expiry) = this.info.token_expiry() {
            // The remaining lifetime is measured once against the wall clock, then kept by
            // a monotonic tokio timer (which also follows tokio's paused test clock).
            match expiry.duration_since(SystemTime::now()) {
                Ok(left) => {
                    if let Some(deadline) = Instant::now().checked_add(left) {
                        this.timer = Some(Box::pin(sleep_until(deadline)));
                    }
                }
                Err(_) => this.expire(),
            }
        }
        this
    }

    /// How long to wait for the peer's close frame after the plane closed the socket
    /// (default [`CLOSE_TIMEOUT`]); see [`close`](crate::close).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        if let Some(closing) = self.closing.take() {
            self.closing = Some(closing.timeout(timeout));
        }
        self
    }

    /// How many refusal frames ([`Verdict::Reply`]) go out per second at most (default
    /// [`MAX_REPLIES_PER_SECOND`]); the refusals beyond it are dropped without an answer.
    /// `0` answers no refusal.
    #[must_use]
    pub fn max_replies_per_second(mut self, replies: u32) -> Self {
        self.replies = ReplyWindow::new(replies);
        self
    }

    /// The connection this socket belongs to.
    pub const fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The shared handle on the connection that every [`Inbound`] carries.
    pub const fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The wrapped socket.
    pub const fn get_ref(&self) -> &S {
        &self.socket
    }

    /// The wrapped socket, mutably. Reading from it directly bypasses the plane.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// The service messages go through.
    pub const fn service(&self) -> &Svc {
        &self.service
    }

    /// Why the plane closed the socket, once it did.
    pub const fn rejection(&self) -> Option<&Rejection> {
        self.rejection.as_ref()
    }

    /// The parsed form of the data message the `Stream` interface yielded last, if it is a
    /// `T` (`None` after a control frame).
    pub fn take_parsed<T: 'static>(&mut self) -> Option<T> {
        take_parsed(&mut self.last_parsed)
    }

    /// The extensions of the data message the `Stream` interface yielded last (empty for
    /// control frames), leaving empty extensions behind.
    pub fn take_extensions(&mut self) -> Extensions {
        std::mem::take(&mut self.last)
    }

    /// The socket, the service and the connection.
    pub fn into_parts(self) -> (S, Svc, Connection) {
        (self.socket, self.service, self.conn)
    }

    /// The next admitted message with its extensions; `None` when the socket is done.
    pub fn next_admitted(&mut self) -> impl Future<Output = NextAdmitted<S>> + '_
    where
        Svc::Error: fmt::Display,
    {
        poll_fn(move |cx| self.poll_next_admitted(cx))
    }

    fn expire(&mut self) {
        tracing::debug!("token expired, closing the socket");
        telemetry::record_rejection("plane", Reason::TokenExpired);
        self.begin_close(Rejection::new(Reason::TokenExpired), true);
    }

    fn fail(&mut self, err: &dyn fmt::Display) {
        tracing::error!(error = %err, "message plane service failed, closing the socket");
        telemetry::record_rejection("plane", Reason::Internal);
        self.begin_close(Rejection::new(Reason::Internal), true);
    }

    /// Starts the closing handshake; `readable` says whether the socket can still be read.
    fn begin_close(&mut self, rejection: Rejection, readable: bool) {
        if self.closing.is_some() || self.done {
            return;
        }
        self.in_flight.set(None);
        self.timer = None;
        let closing = Closing::new(&rejection)
            .timeout(self.close_timeout)
            .after(self.outbox.take());
        self.closing = Some(if readable {
            closing
        } else {
            closing.unreadable()
        });
        self.rejection = Some(rejection);
    }

    /// Sends the queued frame (an application message or a reply).
    fn poll_send_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::SocketError>> {
        if self.outbox.is_some() {
            ready!(Pin::new(&mut self.socket).poll_ready(cx))?;
            if let Some(msg) = self.outbox.take() {
                Pin::new(&mut self.socket).start_send(msg)?;
                self.needs_flush = true;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Polls for the next admitted message: the core of the adapter.
    ///
    /// Every message but the peer's close frame is returned only once the service admitted
    /// it; the peer's close frame is returned as it is, with empty extensions.
    pub fn poll_next_admitted(&mut self, cx: &mut Context<'_>) -> Poll<NextAdmitted<S>>
    where
        Svc::Error: fmt::Display,
    {
        loop {
            if let Some(closing) = &mut self.closing {
                ready!(closing.poll_close(&mut self.socket, cx));
                self.closing = None;
                self.done = true;
            }
            if self.done {
                return Poll::Ready(None);
            }
            if let Some(timer) = &mut self.timer {
                if timer.as_mut().poll(cx).is_ready() {
                    self.expire();
                    continue;
                }
            }

            // Outbound first: a frame that cannot be sent stops the reading (a client that
            // does not read its error frames is not read either).
            if let Err(err) = ready!(self.poll_send_queued(cx)) {
                self.done = true;
                return Poll::Ready(Some(Err(err)));
            }
            if self.needs_flush {
                match Pin::new(&mut self.socket).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.needs_flush = false,
                    Poll::Ready(Err(err)) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(err)));
                    }
                    // The socket will wake us; reading may go on meanwhile.
                    Poll::Pending => {}
                }
            }

            if let Some(future) = self.in_flight.as_mut().as_pin_mut() {
                let verdict = ready!(future.poll(cx));
                self.in_flight.set(None);
                match verdict {
                    Ok(Verdict::Admit(inbound)) => {
                        return Poll::Ready(Some(Ok(inbound.into_admitted())))
                    }
                    Ok(Verdict::Reply(frame)) => {
                        if self.replies.allow() {
                            self.outbox = Some(frame);
                        } else {
                            tracing::trace!("refusal frame coalesced");
                        }
                    }
                    Ok(Verdict::Drop) => {}
                    Ok(Verdict::Close(rejection)) => self.begin_close(rejection, true),
                    Err(err) => self.fail(&err),
                }
                continue;
            }

            // Backpressure: the socket is read only when the service can take a message.
            match self.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => {
                    self.fail(&err);
                    continue;
                }
                Poll::Ready(Ok(())) => {}
            }

            match ready!(Pin::new(&mut self.socket).poll_next(cx)) {
                None => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(err)) => match err.close_reason() {
                    Some(reason) => {
                        tracing::debug!(
                            reason = reason.as_str(),
                            close_code = reason.close_code(),
                            peer = self.info.client_ip().map(tracing::field::display),
                            "the peer broke the socket's rules, closing the socket"
                        );
                        telemetry::record_rejection("plane", reason);
                        // The failed read leaves nothing more to read.
                        self.begin_close(Rejection::new(reason), false);
                    }
                    None => return Poll::Ready(Some(Err(err))),
                },
                Some(Ok(close)) if close.kind() == MessageKind::Close => {
                    return Poll::Ready(Some(Ok(Admitted::new(close))))
                }
                Some(Ok(msg)) => {
                    let future = self.service.call(Inbound::new(msg, self.info.clone()));
                    self.in_flight.set(Some(future));
                }
            }
        }
    }
}

impl<S, Svc> Stream for GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>, Response = Verdict<S::Message>>,
    Svc::Error: fmt::Display,
{
    type Item = Result<S::Message, S::SocketError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match ready!(this.poll_next_admitted(cx)) {
            Some(Ok(admitted)) => {
                this.last_parsed = admitted.parsed;
                this.last = admitted.extensions;
                Poll::Ready(Some(Ok(admitted.message)))
            }
            Some(Err(err)) => Poll::Ready(Some(Err(err))),
            None => Poll::Ready(None),
        }
    }
}

impl<S, Svc> Sink<S::Message> for GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>, Response = Verdict<S::Message>>,
{
    type Error = S::SocketError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.get_mut().poll_send_queued(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: S::Message) -> Result<(), Self::Error> {
        let this = self.get_mut();
        if let Some(earlier) = this.outbox.replace(item) {
            // `start_send` without a ready `poll_ready` first: keep the order anyway.
            Pin::new(&mut this.socket).start_send(earlier)?;
            this.needs_flush = true;
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.poll_send_queued(cx))?;
        ready!(Pin::new(&mut this.socket).poll_flush(cx))?;
        this.needs_flush = false;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        ready!(this.poll_send_queued(cx))?;
        Pin::new(&mut this.socket).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, AtomicUsize, Ordering},
            Mutex,
        },
        task::Waker,
    };

    use bytes::Bytes;
    use futures_util::{SinkExt, StreamExt};
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::{KeyExtractor, MessageKind, TokenExpiry, WsError};

    /// A message type of our own, so the plane is tested without axum or tungstenite.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Msg {
        Text(String),
        Binary(Vec<u8>),
        Ping(Bytes),
        Pong(Bytes),
        Close(u16),
    }

    impl WsMessage for Msg {
        fn kind(&self) -> MessageKind {
            match self {
                Self::Text(_) => MessageKind::Text,
                Self::Binary(_) => MessageKind::Binary,
                Self::Ping(_) => MessageKind::Ping,
                Self::Pong(_) => MessageKind::Pong,
                Self::Close(_) => MessageKind::Close,
            }
        }
        fn payload_len(&self) -> usize {
            match self {
                Self::Text(t) => t.len(),
                Self::Binary(b) => b.len(),
                Self::Ping(b) | Self::Pong(b) => b.len(),
                Self::Close(_) => 2,
            }
        }
        fn as_text(&self) -> Option<&str> {
            match self {
                Self::Text(t) => Some(t),
                _ => None,
            }
        }
        fn as_binary(&self) -> Option<&[u8]> {
            match self {
                Self::Binary(b) => Some(b),
                _ => None,
            }
        }
        fn text(text: String) -> Self {
            Self::Text(text)
        }
        fn ping(payload: Bytes) -> Self {
            Self::Ping(payload)
        }
        fn pong(payload: Bytes) -> Self {
            Self::Pong(payload)
        }
        fn close(rejection: &Rejection) -> Self {
            Self::Close(rejection.close_code().unwrap_or(1008))
        }
    }

    /// The mock socket's errors.
    #[derive(Debug)]
    enum Broken {
        /// The peer is gone.
        Gone,
        /// A message over the socket's own size limit.
        TooLarge,
    }

    impl WsError for Broken {
        fn is_too_large(&self) -> bool {
            matches!(self, Self::TooLarge)
        }
    }

    /// The server side of a socket: frames the peer sent come from `inbound`, frames the
    /// server sends go to `outbound`; `reads` counts the frames the adapter took.
    struct MockSocket {
        inbound: mpsc::UnboundedReceiver<Result<Msg, Broken>>,
        outbound: mpsc::UnboundedSender<Msg>,
        reads: Arc<AtomicUsize>,
    }

    impl Stream for MockSocket {
        type Item = Result<Msg, Broken>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let polled = self.inbound.poll_recv(cx);
            if let Poll::Ready(Some(_)) = &polled {
                self.reads.fetch_add(1, Ordering::SeqCst);
            }
            polled
        }
    }

    impl Sink<Msg> for MockSocket {
        type Error = Broken;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Broken>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Msg) -> Result<(), Broken> {
            self.outbound.send(item).map_err(|_| Broken::Gone)
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Broken>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Broken>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Peer {
        tx: mpsc::UnboundedSender<Result<Msg, Broken>>,
        rx: mpsc::UnboundedReceiver<Msg>,
        reads: Arc<AtomicUsize>,
    }

    impl Peer {
        fn send(&self, msg: Msg) {
            self.tx.send(Ok(msg)).unwrap();
        }
        async fn recv(&mut self) -> Msg {
            tokio::time::timeout(Duration::from_secs(600), self.rx.recv())
                .await
                .expect("a frame in time")
                .expect("socket open")
        }
    }

    fn socket() -> (MockSocket, Peer) {
        let (tx, inbound) = mpsc::unbounded_channel();
        let (outbound, rx) = mpsc::unbounded_channel();
        let reads = Arc::new(AtomicUsize::new(0));
        (
            MockSocket {
                inbound,
                outbound,
                reads: reads.clone(),
            },
            Peer { tx, rx, reads },
        )
    }

    fn connection(extensions: Extensions) -> Connection {
        let mut extensions = extensions;
        Connection::new(Uri::from_static("/ws"), &mut extensions)
    }

    /// A marker a guard leaves in the extensions of admitted messages.
    #[derive(Debug, Clone, PartialEq)]
    struct Seen(&'static str);

    /// Decides by the text: `ok`, `reply`, `drop`, `close`.
    #[derive(Clone)]
    struct ByText;

    impl Service<Inbound<Msg>> for ByText {
        type Response = Verdict<Msg>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Verdict<Msg>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, mut req: Inbound<Msg>) -> Self::Future {
            let verdict = match req.message().as_text() {
                Some("reply") => Verdict::Reply(Msg::text("refused".into())),
                Some("drop") => Verdict::Drop,
                Some("close") => Verdict::Close(Rejection::new(Reason::InvalidMessage)),
                _ => {
                    req.extensions_mut().insert(Seen("by-text"));
                    let parsed = format!("parsed {}", req.message().payload_len());
                    req.set_parsed(parsed);
                    Verdict::Admit(req)
                }
            };
            std::future::ready(Ok(verdict))
        }
    }

    #[tokio::test]
    async fn verdicts_admit_reply_drop_and_close() {
        let (sock, mut peer) = socket();
        let mut guarded = GuardedSocket::new(sock, connection(Extensions::new()), ByText);

        peer.send(Msg::text("reply".into()));
        peer.send(Msg::text("drop".into()));
        peer.send(Msg::Ping(Bytes::from_static(b"p")));
        peer.send(Msg::text("ok".into()));
        peer.send(Msg::Binary(vec![1, 2]));

        // The ping goes through the service like any message, before the message after it.
        let mut ping = guarded.next_admitted().await.unwrap().unwrap();
        assert_eq!(ping.message(), &Msg::Ping(Bytes::from_static(b"p")));
        assert_eq!(
            ping.extensions_mut().remove::<Seen>(),
            Some(Seen("by-text"))
        );
        assert_eq!(
            ping.parsed::<String>().map(String::as_str),
            Some("parsed 1")
        );
        assert_eq!(peer.recv().await, Msg::text("refused".into()));

        let mut ok = guarded.next_admitted().await.unwrap().unwrap();
        assert_eq!(ok.message(), &Msg::text("ok".into()));
        assert_eq!(ok.extensions_mut().remove::<Seen>(), Some(Seen("by-text")));
        // The parsed form is taken only as the type it has.
        assert_eq!(ok.take_parsed::<u32>(), None);
        assert_eq!(ok.parsed::<String>().map(String::as_str), Some("parsed 2"));
        assert_eq!(ok.take_parsed::<String>().as_deref(), Some("parsed 2"));
        assert_eq!(ok.take_parsed::<String>(), None, "taken once");

        // Through the plain `Stream` interface, the extensions wait in the adapter.
        assert_eq!(
            guarded.next().await.unwrap().unwrap(),
            Msg::Binary(vec![1, 2])
        );
        assert_eq!(
            guarded.take_extensions().get::<Seen>(),
            Some(&Seen("by-text"))
        );
        assert_eq!(guarded.take_parsed::<String>().as_deref(), Some("parsed 2"));

        // The application's own frames go out through the adapter.
        guarded.send(Msg::text("from app".into())).await.unwrap();
        assert_eq!(peer.recv().await, Msg::text("from app".into()));

        peer.send(Msg::text("close".into()));
        peer.send(Msg::text("ok".into()));
        let end = tokio::spawn(async move {
            let next = guarded.next().await;
            (next.is_none(), guarded.rejection().copied())
        });
        assert_eq!(peer.recv().await, Msg::Close(1007));
        // The peer answers the close; the adapter ends without yielding what came after.
        peer.send(Msg::Close(1007));
        drop(peer.tx);
        let (ended, rejection) = end.await.unwrap();
        assert!(ended);
        assert_eq!(rejection, Some(Rejection::new(Reason::InvalidMessage)));
    }

    // On tokio's paused clock: waiting for any timer would move the clock.
    #[tokio::test(start_paused = true)]
    async fn the_socket_size_limit_closes_with_1009_at_once() {
        let (sock, mut peer) = socket();
        let mut guarded = GuardedSocket::new(sock, connection(Extensions::new()), ByText);
        let start = Instant::now();
        peer.tx.send(Err(Broken::TooLarge)).unwrap();
        let app = tokio::spawn(async move {
            let next = guarded.next().await;
            (next.is_none(), Instant::now(), guarded.rejection().copied())
        });
        assert_eq!(peer.recv().await, Msg::Close(1009));
        // Nothing more can be read from the socket: the stream ends as soon as the close
        // frame is flushed, without waiting for the close timeout.
        let _ = peer.tx.send(Ok(Msg::text("ok".into())));
        let (ended, at, rejection) = app.await.unwrap();
        assert!(ended);
        assert_eq!(rejection, Some(Rejection::new(Reason::MessageTooLarge)));
        assert_eq!(at.duration_since(start), Duration::ZERO);
        assert_eq!(
            peer.reads.load(Ordering::SeqCst),
            1,
            "not read after the error"
        );
    }

    /// Refuses every message with an error frame, or drops it when it is a ping.
    #[derive(Clone)]
    struct RefuseAll;

    impl Service<Inbound<Msg>> for RefuseAll {
        type Response = Verdict<Msg>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Verdict<Msg>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Inbound<Msg>) -> Self::Future {
            std::future::ready(Ok(match req.message() {
                Msg::Ping(_) => Verdict::Drop,
                _ => Verdict::Reply(Msg::text("refused".into())),
            }))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refusal_frames_are_coalesced_per_second() {
        let (sock, mut peer) = socket();
        let mut guarded = GuardedSocket::new(sock, connection(Extensions::new()), RefuseAll);
        for _ in 0..50 {
            peer.send(Msg::text("flood".into()));
        }
        // A ping the service drops never reaches the application.
        peer.send(Msg::Ping(Bytes::from_static(b"p")));
        peer.send(Msg::Close(1000));
        let close = guarded.next_admitted().await.unwrap().unwrap();
        assert_eq!(close.message(), &Msg::Close(1000));
        let mut replies = 0;
        while peer.rx.try_recv().is_ok() {
            replies += 1;
        }
        assert_eq!(replies, MAX_REPLIES_PER_SECOND);

        // A new second, a new allowance.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..10 {
            peer.send(Msg::text("flood".into()));
        }
        peer.send(Msg::Close(1000));
        guarded.next_admitted().await.unwrap().unwrap();
        let mut replies = 0;
        while peer.rx.try_recv().is_ok() {
            replies += 1;
        }
        assert_eq!(replies, MAX_REPLIES_PER_SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closing_socket_discards_a_bounded_amount_then_ends() {
        let (sock, mut peer) = socket();
        let mut guarded = GuardedSocket::new(sock, connection(Extensions::new()), ByText);
        let start = Instant::now();
        peer.send(Msg::text("close".into()));
        // The peer goes on sending instead of answering: 200 x 64 KiB is over the bound.
        for _ in 0..200 {
            peer.send(Msg::Binary(vec![0; 65536]));
        }
        assert!(guarded.next().await.is_none());
        assert_eq!(peer.recv().await, Msg::Close(1007));
        assert_eq!(Instant::now().duration_since(start), Duration::ZERO);
        let read = peer.reads.load(Ordering::SeqCst);
        assert!(
            read > 1 && read < 1 + 200,
            "{read} frames read: some discarded, not all"
        );
        assert!((read - 2) * 65538 <= crate::close::MAX_DISCARD_BYTES);
    }

    #[tokio::test]
    async fn other_socket_errors_reach_the_application() {
        let (sock, peer) = socket();
        let mut guarded = GuardedSocket::new(sock, connection(Extensions::new()), ByText);
        peer.tx.send(Err(Broken::Gone)).unwrap();
        assert!(matches!(guarded.next().await, Some(Err(Broken::Gone))));
        assert_eq!(guarded.rejection(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn token_expiry_closes_an_idle_socket_on_time() {
        let mut ext = Extensions::new();
        ext.insert(TokenExpiry(SystemTime::now() + Duration::from_secs(60)));
        ext.insert(Principal::new("alice"));
        let (sock, mut peer) = socket();
        let start = Instant::now();
        let mut guarded = GuardedSocket::new(sock, connection(ext), Admit);
        assert_eq!(guarded.info().principal(), Some(&Principal::new("alice")));
        let app = tokio::spawn(async move {
            let next = guarded.next().await;
            (next.is_none(), Instant::now(), guarded.rejection().copied())
        });

        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(peer.rx.try_recv().is_err(), "still open after 59 s");
        assert_eq!(peer.recv().await, Msg::Close(4440));
        let closed_after = start.elapsed();
        assert!(
            closed_after > Duration::from_millis(59_900) && closed_after <= Duration::from_secs(60),
            "{closed_after:?}"
        );

        // A peer that never answers the close: the adapter gives up after CLOSE_TIMEOUT.
        let (ended, at, rejection) = app.await.unwrap();
        assert!(ended);
        assert_eq!(rejection, Some(Rejection::new(Reason::TokenExpired)));
        assert!(at.duration_since(start) >= closed_after + CLOSE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_closes_at_once() {
        let mut ext = Extensions::new();
        ext.insert(TokenExpiry(SystemTime::now() - Duration::from_secs(1)));
        let (sock, mut peer) = socket();
        let mut guarded = GuardedSocket::new(sock, connection(ext), Admit);
        peer.send(Msg::text("too late".into()));
        let app = tokio::spawn(async move { guarded.next().await.is_none() });
        assert_eq!(peer.recv().await, Msg::Close(4440));
        peer.send(Msg::Close(4440));
        drop(peer.tx);
        assert!(app.await.unwrap(), "nothing reaches the application");
    }

    /// A service whose readiness and answers the test controls.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
        answers: Arc<Mutex<Vec<oneshot::Receiver<()>>>>,
    }

    impl Gate {
        fn open(&self) {
            self.open.store(true, Ordering::SeqCst);
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
            }
        }
    }

    impl Service<Inbound<Msg>> for Gate {
        type Response = Verdict<Msg>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Verdict<Msg>, Infallible>> + Send>>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
        fn call(&mut self, req: Inbound<Msg>) -> Self::Future {
            let answer = self.answers.lock().unwrap().pop();
            Box::pin(async move {
                if let Some(answer) = answer {
                    let _ = answer.await;
                }
                Ok(Verdict::Admit(req))
            })
        }
    }

    // The paused clock makes every `sleep` here end only once all tasks are idle.
    #[tokio::test(start_paused = true)]
    async fn nothing_is_read_while_the_service_is_not_ready_or_deciding() {
        let gate = Gate::default();
        let (release, answer) = oneshot::channel();
        gate.answers.lock().unwrap().push(answer);
        let (sock, peer) = socket();
        let mut guarded = GuardedSocket::new(sock, connection(Extensions::new()), gate.clone());
        for i in 0..3 {
            peer.send(Msg::text(format!("m{i}")));
        }
        let (tx, mut admitted) = mpsc::unbounded_channel();
        let app = tokio::spawn(async move {
            while let Some(Ok(msg)) = guarded.next().await {
                tx.send(msg).unwrap();
            }
        });

        // Not ready: not a single frame is taken from the socket.
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(peer.reads.load(Ordering::SeqCst), 0);

        // Ready, but the first message is still being decided: nothing more is read.
        gate.open();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(peer.reads.load(Ordering::SeqCst), 1);
        assert!(admitted.try_recv().is_err());

        release.send(()).unwrap();
        for i in 0..3 {
            let msg = tokio::time::timeout(Duration::from_secs(5), admitted.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(msg, Msg::text(format!("m{i}")));
        }
        assert_eq!(peer.reads.load(Ordering::SeqCst), 3);
        drop(peer);
        tokio::time::timeout(Duration::from_secs(5), app)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn tower_layers_compose_and_a_failing_service_closes_with_1011() {
        // tower's timeout over a service that never answers: its error closes the socket.
        let gate = Gate::default();
        gate.open();
        let (_never, answer) = oneshot::channel::<()>();
        gate.answers.lock().unwrap().push(answer);
        let plane = tower::ServiceBuilder::new()
            .timeout(Duration::from_secs(2))
            .layer_fn(move |_: Admit| gate.clone());
        let (sock, mut peer) = socket();
        let mut guarded = GuardedSocket::layered(sock, connection(Extensions::new()), &plane);
        peer.send(Msg::text("slow".into()));
        let app = tokio::spawn(async move {
            let next = guarded.next().await;
            (next.is_none(), guarded.rejection().copied())
        });
        assert_eq!(peer.recv().await, Msg::Close(1011));
        peer.send(Msg::Close(1011));
        drop(peer.tx);
        let (ended, rejection) = app.await.unwrap();
        assert!(ended);
        assert_eq!(rejection, Some(Rejection::new(Reason::Internal)));
    }

    #[tokio::test]
    async fn adapters_stack_inside_and_outside() {
        // Another Stream + Sink adapter of the same messages (here, a second plane) can
        // wrap the guarded socket, or be wrapped by it.
        let (sock, mut peer) = socket();
        let inner = GuardedSocket::new(sock, connection(Extensions::new()), ByText);
        let upper = tower::service_fn(|req: Inbound<Msg>| async move {
            Ok::<_, Infallible>(match req.message().as_text() {
                Some("upper") => Verdict::Reply(Msg::text("UPPER".into())),
                _ => Verdict::Admit(req),
            })
        });
        let mut outer = GuardedSocket::new(inner, connection(Extensions::new()), upper);
        peer.send(Msg::text("reply".into())); // refused by the inner plane
        peer.send(Msg::text("upper".into())); // refused by the outer plane
        peer.send(Msg::Pong(Bytes::from_static(b"p")));
        peer.send(Msg::text("ok".into()));
        assert_eq!(
            outer.next().await.unwrap().unwrap(),
            Msg::Pong(Bytes::from_static(b"p"))
        );
        assert_eq!(outer.next().await.unwrap().unwrap(), Msg::text("ok".into()));
        assert_eq!(peer.recv().await, Msg::text("refused".into()));
        assert_eq!(peer.recv().await, Msg::text("UPPER".into()));
        outer.send(Msg::text("out".into())).await.unwrap();
        assert_eq!(peer.recv().await, Msg::text("out".into()));
    }

    #[test]
    fn the_info_handle_does_not_hold_the_guards() {
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let released = Arc::new(AtomicBool::new(false));
        let mut ext = Extensions::new();
        ConnectionScope::from_extensions(&mut ext).hold(Guard(released.clone()));
        ext.insert(crate::ClientIp("192.0.2.1".parse().unwrap()));
        let conn = connection(ext);
        let info = ConnectionInfo::new(&conn);
        drop(conn);
        assert!(released.load(Ordering::SeqCst));
        assert_eq!(info.client_ip(), Some("192.0.2.1".parse().unwrap()));
        assert!(info.extensions().get::<ConnectionScope>().is_none());
        assert_eq!(
            crate::key::ClientIpKey::new().extract(&info.head()),
            Ok(crate::Key::Ip("192.0.2.1".parse().unwrap()))
        );
    }

    #[test]
    fn the_default_error_frame_is_generic_json() {
        let frame = |reason| JsonErrorFrame.error_frame(&Rejection::new(reason)).unwrap();
        assert_eq!(
            frame(Reason::RateExceeded),
            r#"{"type":"error","code":"rate_limited"}"#
        );
        assert_eq!(
            frame(Reason::Forbidden),
            r#"{"type":"error","code":"forbidden"}"#
        );
        assert_eq!(
            frame(Reason::InvalidMessage),
            r#"{"type":"error","code":"invalid_message"}"#
        );
        let custom = |r: &Rejection| Some(format!("E{}", r.close_code().unwrap_or(0)));
        assert_eq!(
            custom.error_frame(&Rejection::new(Reason::RateExceeded)),
            Some("E4429".into())
        );
    }
}
