//! [`GuardedSocket`]: a socket whose messages go through a message-plane service.

use std::{
    fmt,
    future::{poll_fn, Future},
    pin::Pin,
    task::{ready, Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::{Sink, Stream};
use http::Extensions;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    armed::Armed,
    message::{take_parsed, Parsed},
    Admit, Admitted, Inbound, Verdict,
};
use crate::{
    close::{Closing, WsSocket, CLOSE_TIMEOUT},
    telemetry, CloseHandle, Connection, ConnectionInfo, MessageKind, Reason, Rejection, WsError,
    WsMessage,
};

/// How many refusal frames ([`Verdict::Reply`]) a [`GuardedSocket`] sends per second at
/// most, unless set with [`GuardedSocket::max_replies_per_second`]: 3. Refusals beyond it
/// are dropped without an answer.
pub const MAX_REPLIES_PER_SECOND: u32 = 3;

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
/// outside it.
///
/// It holds the [`Connection`] (and with it the guards of the handshake) until it is dropped.
///
/// The message plane: every inbound data frame of an upgraded socket goes through a tower
/// [`Service`](tower_service::Service).
///
/// After the upgrade, guards work per message rather than per request. The plane's request
/// is an [`Inbound`] (the message and a cheap handle on its [`ConnectionInfo`]: client IP,
/// principal, token expiry, the handshake's extensions) and its response a [`Verdict`]: hand
/// the message to the application, answer it with a reply frame, drop it, or close the
/// socket with a [`Rejection`](crate::Rejection)'s close code. Guards of the message plane (`wsguard-msg-rate`,
/// `wsguard-schema-validate`, your own) are ordinary tower [`Layer`](tower_layer::Layer)s over such a service,
/// so tower's own layers (timeouts, concurrency limits, `ServiceBuilder`) compose with them;
/// the innermost service is usually [`Admit`], which lets every message through.
///
/// [`GuardedSocket`] runs a socket through such a service. It wraps any
/// `Stream<Item = Result<M, E>> + Sink<M, Error = E>` of [`WsMessage`](crate::WsMessage)s (axum's `WebSocket`,
/// tokio-tungstenite's `WebSocketStream`, or another adapter of the same shape, such as the
/// connection [hygiene](crate::Hygiene) beside it (also re-exported by `wsguard-conn-limit`), inside or
/// outside it) and is itself one:
///
/// - every message but the peer's close frame is passed to the service: text, binary, and
///   the ping and pong control frames too (they cost the server as much as a small message,
///   so budgets must see them); only admitted messages reach the application, and a
///   [`Verdict::Close`] closes the socket through the [closing handshake](crate::guard::Closing)
///   (close frame, flush, read and discard what the peer still sends within bounds, end);
/// - a ping is answered by the socket itself (tungstenite queues one pong at a time, and a
///   newer ping replaces a pong that could not go out yet: RFC 6455 section 5.5.3), and a
///   ping the service does not admit is not seen by the application;
/// - refusal frames ([`Verdict::Reply`]) are coalesced: at most
///   [`MAX_REPLIES_PER_SECOND`] per connection (unless set), the others are dropped
///   silently, so that a flood of refused messages is never answered message for message;
/// - the peer's close frame reaches the application as it is (the socket answers it);
/// - backpressure: the socket is not read while the service is not ready or a message is
///   being decided, so a slow guard (or a rate limiter that waits) slows the client down
///   through TCP flow control instead of buffering its messages;
/// - token lifetime: when the connection's [`TokenExpiry`](crate::TokenExpiry) passes, the
///   socket is closed with 4440 ([`Reason::TokenExpired`](crate::Reason::TokenExpired)) by a timer, idle or not;
/// - close requests: when the connection's [`CloseHandle`] is fired (a revoked token or
///   subject, see `wsguard-jwt-auth`'s `LiveSessions`), the socket is closed with the
///   request's close code (4403 for a revocation), idle or not, and the request is taken, so
///   an inner `HygieneSocket` watching the same connection does not close it twice;
/// - the peer's faults: a message over the socket's own limit (which the hand-offs set, and
///   which tungstenite enforces while the message arrives) closes the socket with 1009
///   ([`Reason::MessageTooLarge`](crate::Reason::MessageTooLarge)), a text message that is not UTF-8 with 1007, a frame
///   that breaks RFC 6455's framing rules with 1002 ([`Reason::ProtocolError`](crate::Reason::ProtocolError)); see
///   [`WsError::close_reason`](crate::WsError::close_reason). The close frame goes out at once and the stream ends as soon
///   as it is flushed (nothing more can be read). Other socket errors reach the application.
///
/// The adapter does its work (the timers included) while the application polls it for the
/// next message, as a WebSocket loop does anyway: keep reading the socket, for example in a
/// `tokio::select!` beside the application's other sources, rather than only between long
/// pauses.
///
/// What a guard learned about a message travels with it in the [`Inbound`]: the message's
/// parsed form ([`Inbound::set_parsed`]: a validator's typed message) and its extensions
/// (anything else). Both reach the application as part of an [`Admitted`] message through
/// [`GuardedSocket::next_admitted`], so nothing is parsed twice. Through the plain `Stream`
/// interface the application gets the bare message, and what was learned about the message
/// it got last from [`GuardedSocket::take_parsed`] and [`GuardedSocket::take_extensions`].
///
/// The plane builds one service per connection ([`GuardedSocket::layered`] calls
/// [`Layer::layer`](tower_layer::Layer::layer) for each socket), so a guard keeps its per-connection state in the
/// service it builds and its shared state (per-user budgets) in its layer.
///
/// # Example
///
/// A plane that refuses binary messages with an error frame, under tower's timeout, in front
/// of an echo over axum:
///
/// ```
/// # #[cfg(feature = "axum")]
/// # {
/// use std::{convert::Infallible, time::Duration};
/// use axum::{extract::ws::Message, routing::get, Router};
/// use futures_util::SinkExt;
/// use tower::ServiceBuilder;
/// use wsguard_core::{axum::GuardedUpgrade, GuardedSocket, Inbound, Verdict};
///
/// async fn text_only(req: Inbound<Message>) -> Result<Verdict<Message>, Infallible> {
///     Ok(match req.message() {
///         Message::Binary(_) => {
///             Verdict::Reply(Message::text(r#"{"type":"error","code":"text_only"}"#))
///         }
///         _ => Verdict::Admit(req),
///     })
/// }
///
/// async fn ws(upgrade: GuardedUpgrade) -> axum::response::Response {
///     upgrade.on_upgrade(|socket, conn| async move {
///         let plane = ServiceBuilder::new()
///             .timeout(Duration::from_secs(5))
///             .service_fn(text_only);
///         let mut socket = GuardedSocket::new(socket, conn, plane);
///         while let Some(Ok(msg)) = socket.next_admitted().await {
///             if socket.send(msg.into_message()).await.is_err() {
///                 break;
///             }
///         }
///     })
/// }
///
/// let app: Router = Router::new().route("/ws", get(ws));
/// # }
/// ```
pub struct GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>>,
{
    // One allocation per socket: the adapter is one pointer wide, so the futures that hold
    // it (an async handler keeps its arguments twice, rust-lang/rust#62958) stay small.
    plane: Box<Plane<S, Svc>>,
}

/// The service's future for the message being decided, in a box of its own: the box is
/// allocated by the first message and reused for every later one (no allocation per message,
/// none for a socket that stays idle), and the plane's state can move (out of
/// [`GuardedSocket::into_parts`]) whatever the future is.
struct InFlight<F>(Option<Pin<Box<Option<F>>>>);

impl<F> Default for InFlight<F> {
    fn default() -> Self {
        Self(None)
    }
}

impl<F: Future> InFlight<F> {
    fn start(&mut self, future: F) {
        match &mut self.0 {
            Some(slot) => slot.set(Some(future)),
            None => self.0 = Some(Box::pin(Some(future))),
        }
    }

    /// Drops the future being polled, if any (the box stays for the next message).
    fn clear(&mut self) {
        if let Some(slot) = &mut self.0 {
            slot.set(None);
        }
    }

    fn get(&mut self) -> Option<Pin<&mut F>> {
        self.0.as_mut().and_then(|slot| slot.as_mut().as_pin_mut())
    }

    fn is_deciding(&self) -> bool {
        self.0.as_ref().is_some_and(|slot| slot.is_some())
    }
}

/// The state of a [`GuardedSocket`].
struct Plane<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>>,
{
    socket: S,
    service: Svc,
    in_flight: InFlight<Svc::Future>,
    outbox: Option<S::Message>,
    needs_flush: bool,
    /// The token's expiry.
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's close request (a revocation, ...).
    close: CloseHandle,
    close_timeout: Duration,
    replies: ReplyWindow,
    /// The closing handshake, once the plane started one.
    /// (Boxed: it is needed only at the end.)
    closing: Option<Box<Closing<S::Message>>>,
    /// The stream ended (or the closing handshake is over).
    done: bool,
    rejection: Option<Rejection>,
    /// What the guards learned about the data message the `Stream` interface yielded last.
    last_parsed: Parsed,
    last: Extensions,
    info: ConnectionInfo,
    conn: Connection,
    /// The token's timer and the close request are registered with the task.
    armed: Armed,
}

impl<S, Svc> fmt::Debug for GuardedSocket<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plane = &*self.plane;
        f.debug_struct("GuardedSocket")
            .field("closing", &plane.closing)
            .field("done", &plane.done)
            .field("deciding", &plane.in_flight.is_deciding())
            .field("rejection", &plane.rejection)
            .field("connection", &plane.info)
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
        let mut plane = Plane {
            socket,
            service,
            in_flight: InFlight::default(),
            outbox: None,
            needs_flush: false,
            timer: None,
            close: conn.scope().close_handle(),
            close_timeout: CLOSE_TIMEOUT,
            replies: ReplyWindow::new(MAX_REPLIES_PER_SECOND),
            closing: None,
            done: false,
            rejection: None,
            last_parsed: None,
            last: Extensions::new(),
            info,
            conn,
            armed: Armed::default(),
        };
        if let Some(expiry) = plane.info.token_expiry() {
            // The remaining lifetime is measured once against the wall clock, then kept by
            // a monotonic tokio timer (which also follows tokio's paused test clock).
            match expiry.duration_since(SystemTime::now()) {
                Ok(left) => {
                    if let Some(deadline) = Instant::now().checked_add(left) {
                        plane.timer = Some(Box::pin(sleep_until(deadline)));
                    }
                }
                Err(_) => plane.expire(),
            }
        }
        Self {
            plane: Box::new(plane),
        }
    }

    /// How long to wait for the peer's close frame after the plane closed the socket
    /// (default [`CLOSE_TIMEOUT`]); see [`Closing`](crate::guard::Closing).
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        let plane = &mut *self.plane;
        plane.close_timeout = timeout;
        if let Some(closing) = plane.closing.take() {
            plane.closing = Some(Box::new(closing.timeout(timeout)));
        }
        self
    }

    /// How many refusal frames ([`Verdict::Reply`]) go out per second at most (default
    /// [`MAX_REPLIES_PER_SECOND`]); the refusals beyond it are dropped without an answer.
    /// `0` answers no refusal.
    #[must_use]
    pub fn max_replies_per_second(mut self, replies: u32) -> Self {
        self.plane.replies = ReplyWindow::new(replies);
        self
    }

    /// The connection this socket belongs to.
    pub fn connection(&self) -> &Connection {
        &self.plane.conn
    }

    /// The shared handle on the connection that every [`Inbound`] carries.
    pub fn info(&self) -> &ConnectionInfo {
        &self.plane.info
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.plane.socket
    }

    /// The wrapped socket, mutably. Reading from it directly bypasses the plane.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.plane.socket
    }

    /// The service messages go through.
    pub fn service(&self) -> &Svc {
        &self.plane.service
    }

    /// Why the plane closed the socket, once it did.
    pub fn rejection(&self) -> Option<&Rejection> {
        self.plane.rejection.as_ref()
    }

    /// The parsed form of the data message the `Stream` interface yielded last, if it is a
    /// `T` (`None` after a control frame).
    pub fn take_parsed<T: 'static>(&mut self) -> Option<T> {
        take_parsed(&mut self.plane.last_parsed)
    }

    /// The extensions of the data message the `Stream` interface yielded last (empty for
    /// control frames), leaving empty extensions behind.
    pub fn take_extensions(&mut self) -> Extensions {
        std::mem::take(&mut self.plane.last)
    }

    /// The socket, the service and the connection.
    pub fn into_parts(self) -> (S, Svc, Connection) {
        let plane = *self.plane;
        (plane.socket, plane.service, plane.conn)
    }

    /// The next admitted message with its extensions; `None` when the socket is done.
    pub fn next_admitted(&mut self) -> impl Future<Output = NextAdmitted<S>> + '_
    where
        Svc::Error: fmt::Display,
    {
        poll_fn(move |cx| self.plane.poll_next_admitted(cx))
    }

    /// Polls for the next admitted message: the core of the adapter.
    ///
    /// Every message but the peer's close frame is returned only once the service admitted
    /// it; the peer's close frame is returned as it is, with empty extensions.
    pub fn poll_next_admitted(&mut self, cx: &mut Context<'_>) -> Poll<NextAdmitted<S>>
    where
        Svc::Error: fmt::Display,
    {
        self.plane.poll_next_admitted(cx)
    }
}

impl<S, Svc> Plane<S, Svc>
where
    S: WsSocket,
    Svc: Service<Inbound<S::Message>, Response = Verdict<S::Message>>,
{
    fn expire(&mut self) {
        tracing::debug!("token expired, closing the socket");
        telemetry::record_rejection("plane", Reason::TokenExpired);
        self.begin_close(Rejection::new(Reason::TokenExpired), true);
    }

    /// Obeys the connection's close request ([`CloseHandle`]).
    fn close_on_request(&mut self, rejection: Rejection) {
        tracing::debug!(
            reason = rejection.reason().as_str(),
            close_code = rejection.close_code(),
            "close requested for the connection, closing the socket"
        );
        telemetry::record_rejection("plane", rejection.reason());
        self.begin_close(rejection, true);
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
        self.in_flight.clear();
        self.timer = None;
        let closing = Closing::new(&rejection)
            .timeout(self.close_timeout)
            .after(self.outbox.take());
        self.closing = Some(Box::new(if readable {
            closing
        } else {
            closing.unreadable()
        }));
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

    fn poll_next_admitted(&mut self, cx: &mut Context<'_>) -> Poll<NextAdmitted<S>>
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
            let may_have_fired = self.close.is_requested()
                || self.timer.as_ref().is_some_and(|timer| timer.is_elapsed());
            if !self.armed.holds(cx) || may_have_fired {
                if let Some(timer) = &mut self.timer {
                    if timer.as_mut().poll(cx).is_ready() {
                        self.expire();
                        continue;
                    }
                }
                if let Poll::Ready(rejection) = self.close.poll_take(cx) {
                    self.close_on_request(rejection);
                    continue;
                }
                self.armed.arm(cx);
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

            if let Some(future) = self.in_flight.get() {
                let verdict = ready!(future.poll(cx));
                self.in_flight.clear();
                match verdict {
                    Ok(Verdict::Admit(inbound)) => {
                        telemetry::message_admitted();
                        return Poll::Ready(Some(Ok(inbound.into_admitted())));
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
                    self.in_flight.start(future);
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
        let this = &mut *self.get_mut().plane;
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
        self.get_mut().plane.poll_send_queued(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: S::Message) -> Result<(), Self::Error> {
        let this = &mut *self.get_mut().plane;
        if let Some(earlier) = this.outbox.replace(item) {
            // `start_send` without a ready `poll_ready` first: keep the order anyway.
            Pin::new(&mut this.socket).start_send(earlier)?;
            this.needs_flush = true;
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = &mut *self.get_mut().plane;
        ready!(this.poll_send_queued(cx))?;
        ready!(Pin::new(&mut this.socket).poll_flush(cx))?;
        this.needs_flush = false;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = &mut *self.get_mut().plane;
        ready!(this.poll_send_queued(cx))?;
        Pin::new(&mut this.socket).poll_close(cx)
    }
}
