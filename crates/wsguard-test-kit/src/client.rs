//! Real clients: tokio-tungstenite for WebSockets, a raw HTTP/1.1 request for the rest.
//! Every wait is bounded by [`WAIT`]; every read loop by [`MAX_MESSAGES`] too.
//!
//! ```
//! use wsguard_test_kit::{client, handoff::{self, HandOff, Upgrade}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let addr = handoff::serve(HandOff::Axum, Upgrade::default(), |_| {}, handoff::Echo).await;
//! let mut ws = client::connect(addr, "/ws").await;
//! client::round_trip(&mut ws, "ping").await;
//! client::close(ws).await;
//! # }
//! ```

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tokio_tungstenite::{
    tungstenite::{self, client::IntoClientRequest, protocol::CloseFrame, Message},
    MaybeTlsStream, WebSocketStream,
};

use crate::{MAX_MESSAGES, WAIT};

/// The client's socket.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A refused handshake: its status and `Retry-After`.
pub type Refusal = (StatusCode, Option<String>);

/// Opens a WebSocket to `ws://{addr}{path}`.
///
/// # Panics
///
/// If the handshake fails or takes longer than [`WAIT`].
pub async fn connect(addr: SocketAddr, path: &str) -> Client {
    match try_connect(format!("ws://{addr}{path}")).await {
        Ok(client) => client,
        Err((status, _)) => panic!("handshake refused with {status}"),
    }
}

/// Opens a WebSocket for `request`: the socket, or the status and `Retry-After` of a refusal.
///
/// # Panics
///
/// If the handshake fails otherwise or takes longer than [`WAIT`].
pub async fn try_connect(request: impl IntoClientRequest + Unpin) -> Result<Client, Refusal> {
    match timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("an answer to the handshake in time")
    {
        Ok((client, _)) => Ok(client),
        Err(tungstenite::Error::Http(res)) => Err((
            res.status(),
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        )),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// Sends `text` and expects it back: the socket is open end to end.
///
/// # Panics
///
/// If the echo does not come back within [`WAIT`].
pub async fn round_trip<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    let echo = timeout(WAIT, ws.next())
        .await
        .expect("an echo in time")
        .expect("an echo, not the end")
        .expect("an echo, not an error");
    assert_eq!(echo, Message::text(text));
}

/// The next message (answering pings, as tungstenite does while reading).
///
/// # Panics
///
/// If the stream ends or fails first, or no message comes within [`WAIT`].
pub async fn next<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .expect("a message, not the end")
        .expect("a message, not an error")
}

/// Reads (answering pings, as tungstenite does while reading) until the server's close
/// frame: the frame.
///
/// # Panics
///
/// If the stream ends or fails first, if the frame has no code, or after [`WAIT`] or
/// [`MAX_MESSAGES`] messages.
pub async fn close_frame<S>(ws: &mut WebSocketStream<S>) -> CloseFrame
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = async {
        for _ in 0..MAX_MESSAGES {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
        panic!("no close frame in {MAX_MESSAGES} messages")
    };
    timeout(WAIT, read).await.expect("a close frame in time")
}

/// The code and reason of the server's close frame, see [`close_frame`].
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> (u16, String)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = close_frame(ws).await;
    (u16::from(frame.code), frame.reason.as_str().to_owned())
}

/// Reads until the connection ends (the closing handshake, once the client has answered a
/// close frame).
///
/// # Panics
///
/// After [`WAIT`] or [`MAX_MESSAGES`] messages.
pub async fn until_end<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let read = async {
        for _ in 0..MAX_MESSAGES {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
        panic!("the connection still talks after {MAX_MESSAGES} messages")
    };
    timeout(WAIT, read).await.expect("the end in time");
}

/// Closes `ws` from the client's side and reads until the server's answer ends it.
///
/// # Panics
///
/// If the close cannot be sent, or see [`until_end`].
pub async fn close<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.close(None).await.unwrap();
    until_end(&mut ws).await;
}

/// Sends one raw `GET {path}` (HTTP/1.1, `Connection: close`) with `headers` to `addr`: the
/// status and the body.
///
/// # Panics
///
/// If the exchange fails or takes longer than [`WAIT`], or the answer is not HTTP.
pub async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut stream = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connected in time")
        .unwrap();
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    timeout(WAIT, stream.read_to_string(&mut raw))
        .await
        .expect("the answer in time")
        .unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 "),
        "not an HTTP/1.1 answer: {raw}"
    );
    let status = raw
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw}"));
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}
