//! The message plane fed raw client bytes: the input is written, as the client, into an
//! in-memory `tokio::io::duplex` pipe whose server side is a real tokio-tungstenite
//! `WebSocketStream` (`from_raw_socket`, server role, 4 KiB message and frame limits)
//! guarded by `GuardedSocket` with `ValidateMessageLayer` (3 invalid messages in a row
//! close). The application echoes every admitted message. Then the client side shuts its
//! writing half and reads what the server sent until the server drops the socket.
//!
//! Runs on a current-thread runtime with a paused clock (the close timeout passes at once
//! when nothing else can happen), under a virtual 10-minute deadline and a bound on the
//! number of messages, so every input ends in bounded time.
//!
//! Invariants checked beyond "no panic":
//! - the session ends (no hang): the deadline is never reached;
//! - the server's bytes are whole, unmasked, well-formed frames (RSV bits clear, known
//!   opcodes, control frames final and at most 125 bytes);
//! - at most one close frame, and it is the last frame: the output ends with a close frame
//!   or simply ends; a close code sent is one a peer may send (RFC 6455 section 7.4);
//! - the text frames the server sent are the generic error frame or, in order, exactly the
//!   messages the plane admitted, each valid JSON whose parsed form is `serde_json`'s.
#![no_main]

use std::time::Duration;

use futures_util::SinkExt;
use http::{Extensions, Uri};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::{
    tungstenite::{
        protocol::{Role, WebSocketConfig},
        Message,
    },
    WebSocketStream,
};
use wsguard_core::{Connection, GuardedSocket};
use wsguard_schema_validate::ValidateMessageLayer;

const LIMIT: usize = 4096;
/// More than any input can hold: every frame takes at least two bytes.
const MAX_MESSAGES: usize = 1 << 16;
const ERROR_FRAME: &str = r#"{"type":"error","code":"invalid_message"}"#;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let (output, admitted) = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(600), session(data))
            .await
            .expect("the session did not end")
    });
    check_output(&output, &admitted);
});

/// One connection: the input in, the server's bytes and the admitted messages out.
async fn session(input: &[u8]) -> (Vec<u8>, Vec<String>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let config = WebSocketConfig::default()
        .max_message_size(Some(LIMIT))
        .max_frame_size(Some(LIMIT));
    let ws = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
    let conn = Connection::new(Uri::from_static("/ws"), &mut Extensions::new());
    let layer = ValidateMessageLayer::new()
        .max_message_size(LIMIT)
        .max_invalid(3)
        .expect("max_invalid");
    let mut socket = GuardedSocket::layered(ws, conn, &layer).close_timeout(Duration::from_secs(1));

    let app = async move {
        let mut admitted = Vec::new();
        for _ in 0..MAX_MESSAGES {
            let Some(Ok(mut msg)) = socket.next_admitted().await else {
                return admitted;
            };
            let parsed = msg.take_parsed::<Value>();
            let message = msg.into_message();
            if let Message::Text(text) = &message {
                let reference: Value = serde_json::from_str(text).expect("admitted invalid JSON");
                assert_eq!(parsed.as_ref(), Some(&reference), "parsed differently");
                admitted.push(text.to_string());
                if socket.send(message).await.is_err() {
                    return admitted;
                }
            }
        }
        panic!("more messages than the input can hold");
    };

    let (mut read, mut write) = tokio::io::split(client);
    let writer = async move {
        // The server may stop reading (and drop the pipe) at any point.
        let _ = write.write_all(input).await;
        let _ = write.shutdown().await;
        write
    };
    let reader = async move {
        let mut output = Vec::new();
        read.read_to_end(&mut output).await.expect("in-memory read");
        output
    };
    let (admitted, _write, output) = tokio::join!(app, writer, reader);
    (output, admitted)
}

/// Parses the server's bytes into frames and checks them.
fn check_output(mut out: &[u8], admitted: &[String]) {
    let mut closed = false;
    let mut texts = Vec::new();
    let mut partial: Option<Vec<u8>> = None;
    while !out.is_empty() {
        assert!(!closed, "a frame after the close frame");
        let (fin, opcode, payload, rest) = frame(out);
        out = rest;
        match opcode {
            0x8 => {
                closed = true;
                if let [hi, lo, reason @ ..] = payload {
                    let code = u16::from_be_bytes([*hi, *lo]);
                    assert!(
                        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                        "close code {code} may not be sent"
                    );
                    assert!(
                        std::str::from_utf8(reason).is_ok(),
                        "close reason not UTF-8"
                    );
                } else {
                    assert!(payload.is_empty(), "a one-byte close payload");
                }
            }
            0x9 | 0xA => {}
            0x0..=0x2 => {
                let mut data = match (opcode, partial.take()) {
                    (0x0, Some(started)) => started,
                    (0x0, None) => panic!("a continuation frame without a start"),
                    (_, None) => Vec::new(),
                    (_, Some(_)) => panic!("a new message inside a fragmented one"),
                };
                data.extend_from_slice(payload);
                if fin {
                    texts.push(String::from_utf8(data).expect("the server sends text only"));
                } else {
                    partial = Some(data);
                }
            }
            other => panic!("opcode {other:#x}"),
        }
    }
    let echoed: Vec<&String> = texts.iter().filter(|t| *t != ERROR_FRAME).collect();
    assert!(
        echoed.len() <= admitted.len() && echoed.iter().zip(admitted).all(|(e, a)| *e == a),
        "the server sent text the plane did not admit"
    );
}

/// One server frame: (fin, opcode, payload, rest). Panics on anything malformed.
fn frame(bytes: &[u8]) -> (bool, u8, &[u8], &[u8]) {
    let [b0, b1, rest @ ..] = bytes else {
        panic!("a truncated frame header");
    };
    assert_eq!(b0 & 0x70, 0, "RSV bits set");
    assert_eq!(b1 & 0x80, 0, "a masked frame from the server");
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    let (len, rest) = match b1 & 0x7f {
        126 => {
            let (n, rest) = rest.split_at_checked(2).expect("truncated length");
            (usize::from(u16::from_be_bytes([n[0], n[1]])), rest)
        }
        127 => {
            let (n, rest) = rest.split_at_checked(8).expect("truncated length");
            let n = u64::from_be_bytes(n.try_into().expect("8 bytes"));
            (usize::try_from(n).expect("length"), rest)
        }
        n => (usize::from(n), rest),
    };
    if opcode >= 0x8 {
        assert!(fin && len <= 125, "a fragmented or long control frame");
    }
    let (payload, rest) = rest.split_at_checked(len).expect("a truncated payload");
    (fin, opcode, payload, rest)
}
