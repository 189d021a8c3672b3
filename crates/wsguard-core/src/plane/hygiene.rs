// Connection hygiene: idle timeout, maximum lifetime, server heartbeat and graceful

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use super::armed::Armed;
use crate::{
    close::{Closing, WsSocket},
    CloseHandle, Connection, MessageKind, Reason, Rejection, WsMessage,
};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::{
    sync::{watch, Notify},
    time::{Instant, Sleep},
};

/// The default maximum lifetime of a socket.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Far enough to mean "never" for a timer (it is re-armed if it ever fires), within the
/// range of tokio's timer wheel.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Connection hygiene rules. Cheap to clone.
///
/// Connection hygiene: idle timeout, maximum lifetime, server heartbeat and graceful
/// shutdown for upgraded sockets.
///
/// A connection limit only helps if slots come back: a socket whose client vanished without
/// a TCP reset, that sends nothing for hours, or that outlives the token it was opened with
/// holds its slot forever. [`Hygiene`] wraps the upgraded socket (axum's `WebSocket`,
/// tokio-tungstenite's `WebSocketStream`, or the message plane's `GuardedSocket`, inside or
/// outside it) in a [`HygieneSocket`] that closes it with the code of the core table when a
/// rule fires:
///
/// | rule | default | close code |
/// |---|---|---|
/// | no inbound data frame (text or binary) for the idle timeout | off | 4408 ([`Reason::IdleTimeout`]) |
/// | the socket reached its maximum lifetime | 1 hour | 4410 ([`Reason::LifetimeExceeded`]) |
/// | no frame (a pong or anything else) within the heartbeat's wait after a ping | off | 4504 ([`Reason::HeartbeatTimeout`]) |
/// | the [`Shutdown`] handle was triggered | none | 1001 ([`Reason::ShuttingDown`]) |
/// | the connection's [`CloseHandle`] was fired (a revocation), with [`Hygiene::wrap_connection`] | none | the request's (4403, [`Reason::Forbidden`], for a revocation) |
///
/// Closing goes through wsguard's one [closing handshake](crate::guard::Closing): the close
/// frame, a flush, then reading (and discarding, within bounds) until the peer answers or
/// [`CLOSE_TIMEOUT`](crate::CLOSE_TIMEOUT) passes; then the stream ends. The socket task then
/// ends, and with it the connection's [`Connection`](crate::Connection), whose scope
/// releases the connection-limit slots.
///
/// The adapter works while the socket is read: its timers and the shutdown signal are
/// looked at when the application polls the stream for the next message (as any
/// `while let Some(msg) = socket.next().await` loop does). An application that stops
/// reading for a long time (for example while it awaits something else) should read in a
/// `select!` next to that work.
///
/// Timers cost one `tokio::time::Sleep` per socket, reset only when a deadline is reached;
/// an inbound data frame moves the idle deadline without touching the timer.
///
/// # Example
///
/// ```
/// # #[cfg(feature = "axum")]
/// # {
/// use std::time::Duration;
/// use axum::{extract::ws::Message, routing::get, Router};
/// use futures_util::{SinkExt, StreamExt};
/// use wsguard_core::{Hygiene, Shutdown};
/// use wsguard_core::axum::GuardedUpgrade;
///
/// let shutdown = Shutdown::new();
/// let hygiene = Hygiene::new()
///     .idle_timeout(Duration::from_secs(300))
///     .max_lifetime(Some(Duration::from_secs(3600)))
///     .heartbeat(Duration::from_secs(30), Duration::from_secs(10))
///     .shutdown(shutdown.clone());
///
/// let app: Router = Router::new().route(
///     "/ws",
///     get(move |upgrade: GuardedUpgrade| async move {
///         upgrade.on_upgrade(move |socket, conn| async move {
///             let mut socket = hygiene.wrap(socket);
///             while let Some(Ok(msg)) = socket.next().await {
///                 if matches!(msg, Message::Text(_)) && socket.send(msg).await.is_err() {
///                     break;
///                 }
///             }
///             drop(conn); // the connection's slots are released here
///         })
///     }),
/// );
/// // On SIGTERM: `shutdown.trigger()`, then `shutdown.closed().await` (with a timeout).
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Hygiene {
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    heartbeat: Option<(Duration, Duration)>,
    shutdown: Option<Shutdown>,
}

impl Default for Hygiene {
    fn default() -> Self {
        Self::new()
    }
}

impl Hygiene {
    /// No idle timeout, a lifetime of [`DEFAULT_MAX_LIFETIME`] (one hour), no heartbeat, no
    /// shutdown handle.
    pub const fn new() -> Self {
        Self {
            idle_timeout: None,
            max_lifetime: Some(DEFAULT_MAX_LIFETIME),
            heartbeat: None,
            shutdown: None,
        }
    }

    /// Closes with 4408 a socket that sent no text or binary message for `timeout`.
    /// Control frames (pings, pongs) do not count: a client that only answers pings is idle.
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Closes with 4410 a socket open for `lifetime`, whatever it does (`None`: never).
    /// Long-lived sockets should reconnect now and then, so that they re-authenticate and
    /// spread over new instances.
    pub const fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Sends a ping every `every` and closes with 4504 a socket that sends nothing (no pong,
    /// no other frame) `within` the wait after a ping. Finds peers that vanished without
    /// closing the TCP connection (a laptop lid, a NAT that forgot), and keeps idle
    /// connections alive through proxies that drop silent ones.
    pub const fn heartbeat(mut self, every: Duration, within: Duration) -> Self {
        self.heartbeat = Some((every, within));
        self
    }

    /// Closes with 1001 every socket wrapped by this configuration when `shutdown` is
    /// triggered.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Wraps the upgraded socket of `conn`: the rules of [`wrap`](Self::wrap), and the
    /// connection's close requests ([`CloseHandle`], fired for example when its token is
    /// revoked), which close the socket with the request's close code. Use it when the
    /// socket is not (also) under the message plane's `GuardedSocket`, which obeys them
    /// itself.
    pub fn wrap_connection<S: WsSocket>(&self, socket: S, conn: &Connection) -> HygieneSocket<S> {
        let mut wrapped = self.wrap(socket);
        wrapped.close = Some(conn.scope().close_handle());
        wrapped
    }

    /// Wraps an upgraded socket. Its lifetime is counted from now.
    pub fn wrap<S: WsSocket>(&self, socket: S) -> HygieneSocket<S> {
        let now = Instant::now();
        let heartbeat = self.heartbeat.map(|(every, within)| Heartbeat {
            every,
            within,
            next_ping: now + every,
            pong_deadline: None,
        });
        let mut this = HygieneSocket {
            socket,
            timer: Box::pin(tokio::time::sleep_until(now + NEVER)),
            lifetime_deadline: self.max_lifetime.map(|d| now + d),
            idle: self.idle_timeout.map(|d| (d, now + d)),
            heartbeat,
            shutdown: self.shutdown.as_ref().map(Shutdown::watch),
            close: None,
            ping: false,
            needs_flush: false,
            phase: Phase::Open,
            closed_by: None,
            armed: Armed::default(),
        };
        this.reset_timer();
        this
    }
}

/// Closes sockets with 1001 when the server shuts down, and says when they are all gone.
///
/// Give a clone to [`Hygiene::shutdown`]; call [`trigger`](Self::trigger) when the server
/// stops (axum's `with_graceful_shutdown` does not wait for upgraded sockets), then await
/// [`closed`](Self::closed) with a timeout. Cheap to clone; clones share the signal.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

struct ShutdownInner {
    signal: watch::Sender<bool>,
    active: AtomicUsize,
    drained: Notify,
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("active", &self.active())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(ShutdownInner {
                signal: watch::Sender::new(false),
                active: AtomicUsize::new(0),
                drained: Notify::new(),
            }),
        }
    }

    /// Closes every socket wrapped with this handle (and every one wrapped later) with 1001.
    pub fn trigger(&self) {
        self.inner.signal.send_replace(true);
    }

    /// Whether [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        *self.inner.signal.borrow()
    }

    /// How many sockets wrapped with this handle are alive.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Resolves when no socket wrapped with this handle is alive (at once if none is).
    pub async fn closed(&self) {
        loop {
            let notified = self.inner.drained.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn watch(&self) -> ShutdownWatch {
        self.inner.active.fetch_add(1, Ordering::AcqRel);
        let mut signal = self.inner.signal.subscribe();
        ShutdownWatch {
            signal: Box::pin(async move {
                // The sender lives in `inner`, which this socket keeps alive.
                let _ = signal.wait_for(|triggered| *triggered).await;
            }),
            inner: Arc::clone(&self.inner),
        }
    }
}

/// A socket's view of the shutdown signal; counts it as alive until dropped.
struct ShutdownWatch {
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    inner: Arc<ShutdownInner>,
}

impl ShutdownWatch {
    fn is_triggered(&self) -> bool {
        *self.inner.signal.borrow()
    }
}

impl Drop for ShutdownWatch {
    fn drop(&mut self) {
        if self.inner.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.drained.notify_waiters();
        }
    }
}

#[derive(Debug)]
struct Heartbeat {
    every: Duration,
    within: Duration,
    next_ping: Instant,
    /// Set while a ping waits for an answer.
    pong_deadline: Option<Instant>,
}

enum Phase<M> {
    Open,
    /// The closing handshake is under way (boxed: it is needed only at the end).
    Closing(Box<Closing<M>>),
    Done,
}

/// An upgraded socket under [`Hygiene`] rules; a `Stream` and a `Sink` of the same
/// messages as the socket it wraps.
pub struct HygieneSocket<S: WsSocket> {
    socket: S,
    timer: Pin<Box<Sleep>>,
    lifetime_deadline: Option<Instant>,
    idle: Option<(Duration, Instant)>,
    heartbeat: Option<Heartbeat>,
    shutdown: Option<ShutdownWatch>,
    /// The connection's close request, with [`Hygiene::wrap_connection`].
    close: Option<CloseHandle>,
    /// A heartbeat ping waits to go out.
    ping: bool,
    needs_flush: bool,
    phase: Phase<S::Message>,
    closed_by: Option<Reason>,
    /// The timer, the shutdown signal and the close request are registered with the task.
    armed: Armed,
}

impl<S: fmt::Debug + WsSocket> fmt::Debug for HygieneSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HygieneSocket")
            .field("socket", &self.socket)
            .field(
                "phase",
                &match &self.phase {
                    Phase::Open => "open",
                    Phase::Closing(_) => "closing",
                    Phase::Done => "done",
                },
            )
            .field("closed_by", &self.closed_by)
            .finish_non_exhaustive()
    }
}

impl<S: WsSocket> HygieneSocket<S> {
    /// The wrapped socket.
    pub const fn get_ref(&self) -> &S {
        &self.socket
    }

    /// The wrapped socket, mutably. Reading from it directly bypasses the rules.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// The wrapped socket, without the rules.
    pub fn into_inner(self) -> S {
        self.socket
    }

    /// The rule that closed the socket (or the reason of the close request it obeyed), once
    /// one did.
    pub const fn closed_by(&self) -> Option<Reason> {
        self.closed_by
    }

    /// The earliest deadline of the open phase.
    fn next_deadline(&self) -> Instant {
        let mut next = Instant::now() + NEVER;
        let deadlines = [
            self.lifetime_deadline,
            self.idle.map(|(_, at)| at),
            self.heartbeat
                .as_ref()
                .map(|h| h.pong_deadline.unwrap_or(h.next_ping)),
        ];
        for at in deadlines.into_iter().flatten() {
            next = next.min(at);
        }
        next
    }

    fn reset_timer(&mut self) {
        let next = self.next_deadline();
        self.timer.as_mut().reset(next);
        self.armed.disarm();
    }

    /// Whether a wake-up source may have fired since it was registered.
    fn may_have_fired(&self) -> bool {
        self.timer.is_elapsed()
            || self.shutdown.as_ref().is_some_and(|w| w.is_triggered())
            || self.close.as_ref().is_some_and(CloseHandle::is_requested)
    }

    fn start_close(&mut self, reason: Reason) {
        self.start_close_with(Rejection::new(reason));
    }

    fn start_close_with(&mut self, rejection: Rejection) {
        let reason = rejection.reason();
        tracing::debug!(
            reason = reason.as_str(),
            close_code = reason.close_code(),
            "closing the socket"
        );
        self.closed_by = Some(reason);
        self.ping = false;
        self.phase = Phase::Closing(Box::new(Closing::new(&rejection)));
    }

    /// Applies the rules whose deadline passed; queues a ping when one is due.
    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.lifetime_deadline.is_some_and(|at| now >= at) {
            return self.start_close(Reason::LifetimeExceeded);
        }
        if let Some(heartbeat) = &mut self.heartbeat {
            if heartbeat.pong_deadline.is_some_and(|at| now >= at) {
                return self.start_close(Reason::HeartbeatTimeout);
            }
            if heartbeat.pong_deadline.is_none() && now >= heartbeat.next_ping {
                heartbeat.pong_deadline = Some(now + heartbeat.within);
                heartbeat.next_ping = now + heartbeat.every;
                self.ping = true;
            }
        }
        if self.idle.is_some_and(|(_, at)| now >= at) {
            return self.start_close(Reason::IdleTimeout);
        }
        self.reset_timer();
    }

    /// Records an inbound frame.
    fn on_inbound(&mut self, kind: MessageKind) {
        if let Some(heartbeat) = &mut self.heartbeat {
            // Any frame proves the peer is there.
            heartbeat.pong_deadline = None;
        }
        if kind.is_data() {
            if let Some((timeout, at)) = &mut self.idle {
                // Moves the deadline only; the timer notices when it fires.
                *at = Instant::now() + *timeout;
            }
        }
    }
}

impl<S: WsSocket> HygieneSocket<S> {
    /// Sends the heartbeat ping, if one is due, and flushes. `Err` when the socket failed.
    fn poll_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::SocketError>> {
        if self.ping {
            ready!(Pin::new(&mut self.socket).poll_ready(cx))?;
            self.ping = false;
            Pin::new(&mut self.socket).start_send(S::Message::ping(Bytes::new()))?;
            self.needs_flush = true;
        }
        if self.needs_flush {
            ready!(Pin::new(&mut self.socket).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: WsSocket> Stream for HygieneSocket<S> {
    type Item = Result<S::Message, S::SocketError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Closing(closing) => {
                    ready!(closing.poll_close(&mut this.socket, cx));
                    this.phase = Phase::Done;
                }
                Phase::Open => {
                    if !this.armed.holds(cx) || this.may_have_fired() {
                        if let Some(watch) = &mut this.shutdown {
                            if watch.signal.as_mut().poll(cx).is_ready() {
                                this.start_close(Reason::ShuttingDown);
                                continue;
                            }
                        }
                        if let Some(close) = &this.close {
                            if let Poll::Ready(rejection) = close.poll_take(cx) {
                                this.start_close_with(rejection);
                                continue;
                            }
                        }
                        if this.timer.as_mut().poll(cx).is_ready() {
                            this.on_timer();
                            // Poll the new deadline (or the close) so that it wakes us.
                            continue;
                        }
                        this.armed.arm(cx);
                    }
                    if let Poll::Ready(Err(error)) = this.poll_outgoing(cx) {
                        this.phase = Phase::Done;
                        return Poll::Ready(Some(Err(error)));
                    }
                    let polled = ready!(Pin::new(&mut this.socket).poll_next(cx));
                    if let Some(Ok(message)) = &polled {
                        this.on_inbound(message.kind());
                    }
                    return Poll::Ready(polled);
                }
            }
        }
    }
}

impl<S: WsSocket> Sink<S::Message> for HygieneSocket<S> {
    type Error = S::SocketError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        // Our own control frame goes first, so the sink's single slot is free for the
        // application's message afterwards.
        ready!(this.poll_outgoing(cx))?;
        Pin::new(&mut this.socket).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: S::Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.get_mut().socket).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        this.needs_flush = false;
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().socket).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_resolves_when_every_wrapped_socket_is_gone() {
        let shutdown = Shutdown::new();
        shutdown.closed().await;
        let a = shutdown.watch();
        let b = shutdown.watch();
        assert_eq!(shutdown.active(), 2);
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.closed().await }
        });
        drop(a);
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        assert!(shutdown.is_triggered());
    }
}
