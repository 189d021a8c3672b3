//! Every close the server starts completes the closing handshake at once, over real
//! sockets, through both hand-offs, for a real tokio-tungstenite client: the peer's faults
//! (RFC 6455 framing errors, invalid UTF-8, a message over the socket's limit) and every
//! close a message-plane service decides.
//!
//! The server's close timeout is set to 30 s: a connection that ends within a few seconds
//! proves the server did not wait for it. The measured times are printed (`--nocapture`);
//! on loopback they are well under 100 ms.
#![cfg(all(feature = "plane", feature = "axum", feature = "tokio-tungstenite"))]

use std::{
    fmt,
    future::{ready, Ready},
    net::SocketAddr,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    sync::mpsc,
    time::{timeout, Instant},
};
use tokio_tungstenite::{client_async, tungstenite::Message, WebSocketStream};
use tower_service::Service;
use wsguard_core::{
    Connection, GuardedSocket, Inbound, Reason, Rejection, Verdict, WsMessage, WsSocket,
};
use wsguard_test_kit::{
    client,
    handoff::{self, HandOff, SocketHandler, Upgrade},
};

const WAIT: Duration = Duration::from_secs(10);
/// Far longer than any close here may take.
const SERVER_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A close that waited for no timeout ends well within this.
const PROMPTLY: Duration = Duration::from_secs(3);
const LIMIT: usize = 4096;

/// Every reason a close can carry: all but `OriginNotAllowed`, which is never answered
/// after an upgrade.
fn reasons() -> impl Iterator<Item = Reason> {
    Reason::ALL
        .iter()
        .copied()
        .filter(|reason| reason.close_code().is_some())
}

#[derive(Debug)]
struct Failed;

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the test service failed")
    }
}

/// Closes with the reason named by a text `close:<reason>`, fails on `fail`, admits the
/// rest.
#[derive(Clone)]
struct Decide;

impl<M: WsMessage> Service<Inbound<M>> for Decide {
    type Response = Verdict<M>;
    type Error = Failed;
    type Future = Ready<Result<Verdict<M>, Failed>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Inbound<M>) -> Self::Future {
        let text = req.message().as_text().unwrap_or_default();
        if text == "fail" {
            return ready(Err(Failed));
        }
        if let Some(name) = text.strip_prefix("close:") {
            if let Some(reason) = reasons().find(|r| r.as_str() == name) {
                return ready(Ok(Verdict::Close(Rejection::new(reason))));
            }
        }
        ready(Ok(Verdict::Admit(req)))
    }
}

/// Echoes what the plane admits; says on `ended` when the socket task is over (and with it
/// the connection and its guards).
#[derive(Clone)]
struct Echo {
    ended: mpsc::UnboundedSender<()>,
}

impl SocketHandler for Echo {
    async fn handle<S>(self, socket: S, conn: Connection)
    where
        S: WsSocket + Send + 'static,
        S::SocketError: Send + fmt::Debug,
    {
        let mut socket =
            GuardedSocket::new(socket, conn, Decide).close_timeout(SERVER_CLOSE_TIMEOUT);
        while let Some(Ok(msg)) = socket.next().await {
            if msg.kind().is_data() && socket.send(msg).await.is_err() {
                break;
            }
        }
        drop(socket);
        let _ = self.ended.send(());
    }
}

/// The echo behind `hand_off`, with the socket's size limits at [`LIMIT`].
async fn server(hand_off: HandOff, ended: mpsc::UnboundedSender<()>) -> SocketAddr {
    let limits = Upgrade {
        max_message_size: Some(LIMIT),
        max_frame_size: Some(LIMIT),
    };
    handoff::serve(hand_off, limits, |_| {}, Echo { ended }).await
}

/// A masked client frame: `first` is the FIN/RSV/opcode byte.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | u8::try_from(len).unwrap()),
        len @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&u64::try_from(len).unwrap().to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// What a case sends after the handshake.
enum Input {
    /// Raw bytes, written to the TCP stream under the client.
    Raw(Vec<u8>),
    /// A message, sent by the client.
    Message(Message),
}

/// The peer's faults, each a kind of RFC 6455 violation, and what the server must answer.
fn peer_faults() -> Vec<(&'static str, Input, u16)> {
    let mut invalid_fragments = frame(0x01, &[b'a', 0xC3]); // text, not final
    invalid_fragments.extend(frame(0x80, &[0x28])); // continuation: C3 28 is not UTF-8
    vec![
        // Section 5.1: a client MUST mask every frame.
        (
            "unmasked frame",
            Input::Raw(vec![0x81, 0x02, b'h', b'i']),
            1002,
        ),
        // Section 5.5: control frames carry at most 125 bytes...
        (
            "ping of 126 bytes",
            Input::Raw(frame(0x89, &[7; 126])),
            1002,
        ),
        // ...and are never fragmented.
        ("fragmented ping", Input::Raw(frame(0x09, b"p")), 1002),
        // Section 5.2: reserved bits without an extension, reserved opcodes.
        ("RSV1 set", Input::Raw(frame(0xC1, b"x")), 1002),
        ("reserved opcode 3", Input::Raw(frame(0x83, b"x")), 1002),
        (
            "reserved control opcode 11",
            Input::Raw(frame(0x8B, b"")),
            1002,
        ),
        // Section 5.4: a continuation with nothing to continue.
        ("orphan continuation", Input::Raw(frame(0x80, b"x")), 1002),
        // Section 8.1: text that is not UTF-8, in one frame or across fragments.
        (
            "invalid UTF-8 text",
            Input::Raw(frame(0x81, &[0xff, 0xfe])),
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            Input::Raw(invalid_fragments),
            1007,
        ),
        // Over the socket's size limit, in one frame or across fragments.
        (
            "message over the limit",
            Input::Message(Message::text("x".repeat(LIMIT + 904))),
            1009,
        ),
        (
            "fragments over the limit",
            Input::Raw({
                let mut raw = frame(0x01, &[b'y'; LIMIT / 2 + 1]);
                raw.extend(frame(0x80, &[b'y'; LIMIT / 2 + 1]));
                raw
            }),
            1009,
        ),
    ]
}

/// Closes decided by the plane's service: every reason with a close code, and a failing
/// service (1011).
fn service_closes() -> Vec<(String, Input, u16)> {
    let mut cases: Vec<_> = reasons()
        .map(|reason| {
            (
                format!("service closes for {reason}"),
                Input::Message(Message::text(format!("close:{}", reason.as_str()))),
                reason.close_code().unwrap(),
            )
        })
        .collect();
    cases.push((
        "service fails".to_owned(),
        Input::Message(Message::text("fail")),
        1011,
    ));
    cases
}

struct Timing {
    code: Duration,
    end: Duration,
}

/// Connects, sends `input`, and returns the close code the client read, when it read it and
/// when the connection ended, checking that the server's socket task ended too.
async fn run_case(
    addr: SocketAddr,
    ended: &mut mpsc::UnboundedReceiver<()>,
    input: Input,
) -> (u16, Timing) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut ws, _): (WebSocketStream<TcpStream>, _) =
        timeout(WAIT, client_async(format!("ws://{addr}/ws"), tcp))
            .await
            .unwrap()
            .unwrap();
    // The socket works before the fault.
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap(),
        Message::text("hello")
    );

    let start = Instant::now();
    match input {
        Input::Raw(bytes) => ws.get_mut().write_all(&bytes).await.unwrap(),
        Input::Message(msg) => ws.send(msg).await.unwrap(),
    }
    let code = u16::from(client::close_frame(&mut ws).await.code);
    let at_code = start.elapsed();
    // The client answered the close; the connection ends without waiting.
    client::until_end(&mut ws).await;
    let at_end = start.elapsed();
    timeout(WAIT, ended.recv())
        .await
        .expect("the server's socket task ended")
        .unwrap();
    (
        code,
        Timing {
            code: at_code,
            end: at_end,
        },
    )
}

async fn every_close_completes_at_once(hand_off: HandOff) {
    let (tx, mut ended) = mpsc::unbounded_channel();
    let addr = server(hand_off, tx).await;
    let cases = peer_faults()
        .into_iter()
        .map(|(name, input, code)| (name.to_owned(), input, code))
        .chain(service_closes());
    let mut slowest = Duration::ZERO;
    for (name, input, expected) in cases {
        let (code, timing) = run_case(addr, &mut ended, input).await;
        assert_eq!(code, expected, "{hand_off}: {name}");
        assert!(
            timing.end < PROMPTLY,
            "{hand_off}: {name}: ended after {:?}, the server waited",
            timing.end
        );
        eprintln!(
            "{hand_off}: {name}: close {code} after {:?}, ended after {:?}",
            timing.code, timing.end
        );
        slowest = slowest.max(timing.end);
    }
    eprintln!("{hand_off}: slowest close {slowest:?}");
}

#[tokio::test]
async fn axum_every_close_completes_at_once() {
    every_close_completes_at_once(HandOff::Axum).await;
}

#[tokio::test]
async fn hyper_every_close_completes_at_once() {
    every_close_completes_at_once(HandOff::Hyper).await;
}
