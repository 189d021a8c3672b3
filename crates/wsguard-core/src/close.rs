// The server side of the WebSocket closing handshake: one routine for every close that

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{Sink, Stream};
use tokio::time::{sleep, Sleep};

use crate::{MessageKind, Rejection, WsError, WsMessage};

/// A socket the wsguard adapters can guard (and close): a `Stream` of messages and a `Sink` for them, with one
/// error type, as axum's `WebSocket` and tokio-tungstenite's `WebSocketStream` are.
///
/// Implemented for every such type.
pub trait WsSocket:
    Stream<Item = Result<<Self as WsSocket>::Message, <Self as WsSocket>::SocketError>>
    + Sink<<Self as WsSocket>::Message, Error = <Self as WsSocket>::SocketError>
    + Unpin
{
    /// The message type.
    type Message: WsMessage;
    /// The error of both halves.
    type SocketError: WsError;
}

impl<S, M, E> WsSocket for S
where
    S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
    M: WsMessage,
    E: WsError,
{
    type Message = M;
    type SocketError = E;
}

/// How long a closing socket waits for the peer's close frame before it ends anyway, unless
/// configured otherwise (5 seconds).
///
/// A standard client answers at once; the wait only bounds what a peer that does not answer
/// can hold.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How much a closing socket reads and discards from the peer before it ends anyway:
/// 8 MiB, counting each frame's payload plus two bytes (the smallest frame header), so that
/// a stream of empty frames is bounded too.
///
/// Why that much: a client that floods has megabytes in flight (its send buffer and the
/// server's receive buffer) when the close frame reaches it. Closing a TCP connection with
/// unread data sends a reset, which can destroy the close frame before the client reads it;
/// reading what was in flight until the client's own close frame arrives lets the
/// connection end with a normal FIN, so even a flooding client learns its close code. The
/// bound caps what a peer that keeps sending can make the server parse.
pub const MAX_DISCARD_BYTES: usize = 8 * 1024 * 1024;

/// The closing handshake of one socket, started by the server.
///
/// Drive it with [`poll_close`](Self::poll_close) until it is ready, then drop the socket.
///
/// The server side of the WebSocket closing handshake: one routine for every close that
/// wsguard starts.
///
/// Whatever makes wsguard close a socket (a protocol error, a message over a limit, a rate
/// limit, hygiene, a deferred handshake rejection, shutdown), the socket goes through the
/// same steps, in the order of RFC 6455 section 7.1.2 (the server closes first):
///
/// 1. send the close frame with the [`Rejection`]'s close code, after the one frame that
///    was already queued (if any), and flush it;
/// 2. tell the socket that nothing more will be written ([`Sink::poll_close`]);
/// 3. if the socket can still be read, read and discard what the peer still sends, until its
///    close frame (or the end of the stream) arrives, at most [`MAX_DISCARD_BYTES`] bytes of
///    payload and frame overhead, and at most the close timeout ([`CLOSE_TIMEOUT`] unless
///    set); if it cannot be read (the read failed: a protocol error, a frame over the
///    size limit), stop at once, since waiting could only delay the peer;
/// 4. done: the owner ends the stream, the socket is dropped, the connection's guards (its
///    connection-limit slots) go with it.
///
/// A standard client reads the close code as soon as step 1 reaches it, answers with its own
/// close frame, and sees the connection end right after. Nothing in these steps waits on a
/// peer that does not cooperate for longer than the close timeout, or reads more than the
/// discard bound from it.
///
/// These steps work on messages: neither axum's `WebSocket` nor tokio-tungstenite exposes
/// the TCP stream's write side. The TCP connection itself is closed when the socket is
/// dropped; `wsguard::serve` (the facade's serving function) then shuts the write side and
/// reads what the peer still sends before it closes (a lingering close), so that a close
/// with unread data (step 3 skipped) does not end in a TCP reset.
///
/// [`Closing`] is that routine as a poll-based state machine, for socket adapters
/// (`GuardedSocket`, connection hygiene, your own); the hand-offs use it for close mode.
///
/// # Example
///
/// Closing a tokio-tungstenite socket with 4429 from an adapter of your own:
///
/// ```
/// # #[cfg(feature = "tokio-tungstenite")]
/// # async fn run(mut socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
/// use std::future::poll_fn;
/// use wsguard_core::{guard::Closing, Reason, Rejection};
///
/// let mut closing = Closing::new(&Rejection::new(Reason::RateExceeded));
/// poll_fn(|cx| closing.poll_close(&mut socket, cx)).await;
/// // The socket can be dropped now.
/// # }
/// ```
#[must_use = "a closing handshake does nothing unless polled"]
pub struct Closing<M> {
    /// A frame queued before the close (an application message, a reply), sent first.
    earlier: Option<M>,
    /// The close frame, until it is handed to the socket.
    frame: Option<M>,
    flushed: bool,
    sink_closed: bool,
    /// Whether the socket can still be read.
    readable: bool,
    discarded: usize,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
}

// No field is ever pinned in place (frames are moved into the socket, the timer is boxed),
// so the handshake is `Unpin` whatever the message type is.
impl<M> Unpin for Closing<M> {}

impl<M> fmt::Debug for Closing<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closing")
            .field("frame_sent", &self.frame.is_none())
            .field("flushed", &self.flushed)
            .field("readable", &self.readable)
            .field("discarded", &self.discarded)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<M: WsMessage> Closing<M> {
    /// A closing handshake that sends `rejection`'s close code (1008 when it has none), with
    /// the default [`CLOSE_TIMEOUT`].
    ///
    /// The timeout starts when the handshake is first polled (a tokio timer: poll it inside
    /// a tokio runtime with the time driver enabled).
    ///
    /// Counts the close in `wsguard_close_codes_total` (feature `metrics`).
    pub fn new(rejection: &Rejection) -> Self {
        crate::telemetry::close_sent(rejection.reason());
        Self::with_frame(M::close(rejection))
    }

    /// A closing handshake that sends `frame`, which should be a close frame.
    pub fn with_frame(frame: M) -> Self {
        Self {
            earlier: None,
            frame: Some(frame),
            flushed: false,
            sink_closed: false,
            readable: true,
            discarded: 0,
            timeout: CLOSE_TIMEOUT,
            deadline: None,
            done: false,
        }
    }
}

impl<M> Closing<M> {
    /// How long to wait for the peer's close frame (default [`CLOSE_TIMEOUT`]), counted from
    /// the first poll. It also bounds how long the close frame may wait for a peer that does
    /// not read.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `frame` before the close frame (a frame that was queued when the close began).
    pub fn after(mut self, frame: Option<M>) -> Self {
        self.earlier = frame;
        self
    }

    /// Says that nothing more can be read from the socket (its last read failed): the
    /// handshake ends once the close frame is flushed.
    pub fn unreadable(mut self) -> Self {
        self.readable = false;
        self
    }

    /// Whether the handshake is over (the socket can be dropped).
    pub const fn is_done(&self) -> bool {
        self.done
    }

    /// Drives the closing handshake on `socket`; ready when it is over, whatever the peer
    /// did. Socket errors end it (there is nobody left to answer).
    pub fn poll_close<S, E>(&mut self, socket: &mut S, cx: &mut Context<'_>) -> Poll<()>
    where
        S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
        M: WsMessage,
    {
        if self.done {
            return Poll::Ready(());
        }
        let polled = self.poll_steps(socket, cx);
        if polled.is_ready() {
            self.finish();
            return Poll::Ready(());
        }
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            tracing::debug!("the peer did not complete the closing handshake in time");
            self.finish();
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn finish(&mut self) {
        self.done = true;
        self.earlier = None;
        self.frame = None;
        self.deadline = None;
    }

    fn poll_steps<S, E>(&mut self, socket: &mut S, cx: &mut Context<'_>) -> Poll<()>
    where
        S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
        M: WsMessage,
    {
        // 1. The frames, in order, then the flush.
        while self.earlier.is_some() || self.frame.is_some() {
            match Pin::new(&mut *socket).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
            let Some(next) = self.earlier.take().or_else(|| self.frame.take()) else {
                break;
            };
            if Pin::new(&mut *socket).start_send(next).is_err() {
                return Poll::Ready(());
            }
        }
        if !self.flushed {
            match Pin::new(&mut *socket).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flushed = true,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        // 2. Nothing more will be written.
        if !self.sink_closed {
            match Pin::new(&mut *socket).poll_close(cx) {
                Poll::Ready(_) => self.sink_closed = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        // 3. Read and discard until the peer's close frame, within the bounds.
        if !self.readable {
            return Poll::Ready(());
        }
        loop {
            match Pin::new(&mut *socket).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    if message.kind() == MessageKind::Close {
                        return Poll::Ready(());
                    }
                    self.discarded = self
                        .discarded
                        .saturating_add(message.payload_len().saturating_add(2));
                    if self.discarded > MAX_DISCARD_BYTES {
                        tracing::debug!(
                            "the peer kept sending after the close frame, closing anyway"
                        );
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Sends `rejection`'s close frame on `socket` and completes the closing handshake (see
/// [`Closing`]); the socket can be dropped when this returns.
pub async fn close<S, M, E>(socket: &mut S, rejection: &Rejection)
where
    S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
    M: WsMessage,
{
    close_with(socket, Closing::new(rejection)).await;
}

/// Completes `closing` on `socket`.
pub async fn close_with<S, M, E>(socket: &mut S, mut closing: Closing<M>)
where
    S: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
    M: WsMessage,
{
    std::future::poll_fn(|cx| closing.poll_close(socket, cx)).await;
}
