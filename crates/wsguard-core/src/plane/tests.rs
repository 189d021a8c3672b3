//! Unit tests of the plane on a socket of our own.

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

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures_util::{Sink, Stream};
use http::{Extensions, Uri};
use tokio::time::Instant;
use tower_service::Service;

use super::*;
use crate::{
    Connection, ConnectionInfo, ConnectionScope, KeyExtractor, MessageKind, Principal, Reason,
    Rejection, TokenExpiry, WsError, WsMessage, CLOSE_TIMEOUT,
};

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

#[tokio::test]
async fn a_close_request_closes_an_idle_socket_once_through_nested_adapters() {
    // Both adapters watch the connection's request: hygiene inside the plane, as the
    // facade stacks them. The plane takes it, and the socket sees one close frame.
    let (sock, mut peer) = socket();
    let conn = connection(Extensions::new());
    let handle = conn.scope().close_handle();
    let inner = Hygiene::new().wrap_connection(sock, &conn);
    let mut guarded = GuardedSocket::new(inner, conn, Admit);
    peer.send(Msg::text("before".into()));
    assert_eq!(
        guarded.next().await.unwrap().unwrap(),
        Msg::text("before".into())
    );
    let app = tokio::spawn(async move {
        let next = guarded.next().await;
        let closed_by = guarded.get_ref().closed_by();
        (next.is_none(), guarded.rejection().copied(), closed_by)
    });
    tokio::task::yield_now().await;
    assert!(handle.close(Rejection::new(Reason::Forbidden)));
    assert_eq!(peer.recv().await, Msg::Close(4403));
    peer.send(Msg::Close(4403));
    let (ended, rejection, closed_by) = tokio::time::timeout(Duration::from_secs(5), app)
        .await
        .expect("the stream ends once the peer answered")
        .unwrap();
    assert!(ended);
    assert_eq!(rejection, Some(Rejection::new(Reason::Forbidden)));
    assert_eq!(
        closed_by, None,
        "the inner adapter did not close it a second time"
    );
    assert!(
        peer.rx.try_recv().is_err(),
        "one close frame, nothing after it"
    );
    assert!(!handle.close(Rejection::new(Reason::ShuttingDown)), "taken");
}

#[tokio::test]
async fn hygiene_alone_obeys_the_connection_close_request() {
    let (sock, mut peer) = socket();
    let conn = connection(Extensions::new());
    let mut hygienic = Hygiene::new().wrap_connection(sock, &conn);
    // Requested before the first poll: the adapter closes at once.
    assert!(conn
        .scope()
        .close_handle()
        .close(Rejection::new(Reason::Forbidden)));
    peer.send(Msg::text("too late".into()));
    let app = tokio::spawn(async move {
        let next = hygienic.next().await;
        (next.is_none(), hygienic.closed_by())
    });
    assert_eq!(peer.recv().await, Msg::Close(4403));
    peer.send(Msg::Close(4403));
    let (ended, closed_by) = tokio::time::timeout(Duration::from_secs(5), app)
        .await
        .expect("the stream ends once the peer answered")
        .unwrap();
    assert!(ended, "nothing reaches the application");
    assert_eq!(closed_by, Some(Reason::Forbidden));
    drop(conn);

    // Without the connection, hygiene does not watch it.
    let (sock, peer) = socket();
    let conn = connection(Extensions::new());
    let mut unwatched = Hygiene::new().wrap(sock);
    conn.scope()
        .close_handle()
        .close(Rejection::new(Reason::Forbidden));
    peer.send(Msg::text("still open".into()));
    assert_eq!(
        unwatched.next().await.unwrap().unwrap(),
        Msg::text("still open".into())
    );
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl CountingWaker {
    fn woken(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The adapters skip re-registering their wake-ups while the task's waker stays the same;
/// a poll from another task (another waker) must register them again, so that the timers
/// and the close request wake the task that polls now.
#[tokio::test(start_paused = true)]
async fn wake_ups_follow_the_waker_of_the_latest_poll() {
    fn poll_with<St: Stream + Unpin>(stream: &mut St, waker: &Arc<CountingWaker>) -> bool {
        let waker = Waker::from(Arc::clone(waker));
        stream
            .poll_next_unpin(&mut Context::from_waker(&waker))
            .is_pending()
    }

    // Hygiene: the idle timer.
    let (sock, mut peer) = socket();
    let mut hygienic = Hygiene::new()
        .idle_timeout(Duration::from_secs(10))
        .wrap(sock);
    let (first, second) = (Arc::default(), Arc::default());
    assert!(poll_with(&mut hygienic, &first));
    assert!(poll_with(&mut hygienic, &first), "armed: nothing to do");
    assert!(poll_with(&mut hygienic, &second));
    tokio::time::advance(Duration::from_secs(11)).await;
    tokio::task::yield_now().await;
    assert!(second.woken() > 0, "the idle timer wakes the latest poller");
    assert!(poll_with(&mut hygienic, &second), "closing");
    assert_eq!(peer.recv().await, Msg::Close(4408));

    // The plane and hygiene under it: the close request.
    let (sock, mut peer) = socket();
    let conn = connection(Extensions::new());
    let handle = conn.scope().close_handle();
    let mut guarded = GuardedSocket::new(Hygiene::new().wrap(sock), conn, Admit);
    let (first, second) = (Arc::default(), Arc::default());
    assert!(poll_with(&mut guarded, &first));
    assert!(poll_with(&mut guarded, &second));
    assert!(handle.close(Rejection::new(Reason::Forbidden)));
    assert_eq!(first.woken(), 0, "the first task is no longer registered");
    assert_eq!(
        second.woken(),
        1,
        "the close request wakes the latest poller"
    );
    assert!(poll_with(&mut guarded, &second), "closing");
    assert_eq!(peer.recv().await, Msg::Close(4403));

    // Armed with one waker, a request still wakes it and is obeyed.
    let (sock, mut peer) = socket();
    let conn = connection(Extensions::new());
    let handle = conn.scope().close_handle();
    let mut guarded = GuardedSocket::new(sock, conn, Admit);
    let only = Arc::default();
    for _ in 0..3 {
        assert!(poll_with(&mut guarded, &only));
    }
    assert!(handle.close(Rejection::new(Reason::Forbidden)));
    assert_eq!(only.woken(), 1);
    assert!(poll_with(&mut guarded, &only), "closing");
    assert_eq!(peer.recv().await, Msg::Close(4403));
}
