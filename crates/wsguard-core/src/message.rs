// One view of a WebSocket message over axum's and tungstenite's `Message` types.

use bytes::Bytes;

use crate::{Reason, Rejection};

/// The kind of a WebSocket message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageKind {
    /// A UTF-8 text message.
    Text,
    /// A binary message.
    Binary,
    /// A ping control frame.
    Ping,
    /// A pong control frame.
    Pong,
    /// A close control frame.
    Close,
    /// A raw frame (only seen when reading raw frames).
    Frame,
}

impl MessageKind {
    /// Whether the message carries application data (text or binary).
    pub const fn is_data(self) -> bool {
        matches!(self, Self::Text | Self::Binary)
    }
}

/// A WebSocket message as the wsguard socket adapters see it.
///
/// One view of a WebSocket message over axum's and tungstenite's `Message` types.
///
/// Socket adapters (connection hygiene, the message plane) are written once against
/// [`WsMessage`] and work over axum's `WebSocket` (feature `axum`) and tokio-tungstenite's
/// `WebSocketStream` (feature `tokio-tungstenite`) alike.
pub trait WsMessage: Sized + Send + 'static {
    /// The message's kind.
    fn kind(&self) -> MessageKind;

    /// The payload's length in bytes.
    fn payload_len(&self) -> usize;

    /// The text of a text message.
    fn as_text(&self) -> Option<&str>;

    /// The payload of a binary message.
    fn as_binary(&self) -> Option<&[u8]>;

    /// A text message.
    fn text(text: String) -> Self;

    /// A ping with `payload` (at most 125 bytes).
    fn ping(payload: Bytes) -> Self;

    /// A pong answering a ping with `payload`.
    fn pong(payload: Bytes) -> Self;

    /// A close frame for `rejection` (1008 "policy violation" when it has no close code).
    fn close(rejection: &Rejection) -> Self;
}

/// What the wsguard socket adapters need to know of a socket's errors.
pub trait WsError {
    /// Whether the socket refused an incoming message or frame over its own size limit
    /// (tungstenite's `max_message_size` and `max_frame_size`, which the hand-offs set).
    /// The message plane then closes the socket with 1009, as it does for a message over a
    /// layer's limit.
    fn is_too_large(&self) -> bool;

    /// The reason to close the socket with, when this error is the peer's fault and the
    /// socket can still send a close frame (RFC 6455 section 7.1.7, "Fail the WebSocket
    /// Connection"); `None` for errors that leave nobody to answer (the connection is gone)
    /// or that are not the peer's doing.
    ///
    /// For tungstenite's errors (also inside axum's): a message or frame over the size limit
    /// gives [`Reason::MessageTooLarge`] (1009), a text message that is not UTF-8
    /// [`Reason::InvalidMessage`] (1007, section 8.1), a frame that breaks the framing rules
    /// of section 5 (an unmasked client frame, a control frame over 125 bytes or fragmented,
    /// reserved bits or opcodes, a continuation out of place, a malformed close frame)
    /// [`Reason::ProtocolError`] (1002). The default says [`Reason::MessageTooLarge`] when
    /// [`is_too_large`](Self::is_too_large) does.
    fn close_reason(&self) -> Option<Reason> {
        self.is_too_large().then_some(Reason::MessageTooLarge)
    }
}

/// The close reason for one of tungstenite's errors; see [`WsError::close_reason`].
#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
fn tungstenite_close_reason(err: &tokio_tungstenite::tungstenite::Error) -> Option<Reason> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error, ProtocolError as P};
    match err {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => Some(Reason::MessageTooLarge),
        Error::Utf8(_) => Some(Reason::InvalidMessage),
        Error::Protocol(
            P::UnmaskedFrameFromClient
            | P::NonZeroReservedBits
            | P::FragmentedControlFrame
            | P::ControlFrameTooBig
            | P::UnknownControlFrameType(_)
            | P::UnknownDataFrameType(_)
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::InvalidCloseSequence
            | P::InvalidOpcode(_),
        ) => Some(Reason::ProtocolError),
        _ => None,
    }
}

#[cfg(feature = "tokio-tungstenite")]
impl WsError for tokio_tungstenite::tungstenite::Error {
    fn is_too_large(&self) -> bool {
        self.close_reason() == Some(Reason::MessageTooLarge)
    }

    fn close_reason(&self) -> Option<Reason> {
        tungstenite_close_reason(self)
    }
}

#[cfg(feature = "axum")]
impl WsError for axum::Error {
    fn is_too_large(&self) -> bool {
        self.close_reason() == Some(Reason::MessageTooLarge)
    }

    fn close_reason(&self) -> Option<Reason> {
        use tokio_tungstenite::tungstenite::Error;
        // axum's socket errors carry tungstenite's: the same crate, as axum depends on it.
        std::error::Error::source(self)
            .and_then(|source| source.downcast_ref::<Error>())
            .and_then(tungstenite_close_reason)
    }
}

#[cfg(feature = "axum")]
impl WsMessage for axum::extract::ws::Message {
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
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b.len(),
            Self::Close(c) => c.as_ref().map_or(0, |c| 2 + c.reason.len()),
        }
    }

    fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t.as_str()),
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
        Self::Text(text.into())
    }

    fn ping(payload: Bytes) -> Self {
        Self::Ping(payload)
    }

    fn pong(payload: Bytes) -> Self {
        Self::Pong(payload)
    }

    fn close(rejection: &Rejection) -> Self {
        Self::Close(crate::axum::close_frame(rejection))
    }
}

#[cfg(feature = "tokio-tungstenite")]
impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn kind(&self) -> MessageKind {
        match self {
            Self::Text(_) => MessageKind::Text,
            Self::Binary(_) => MessageKind::Binary,
            Self::Ping(_) => MessageKind::Ping,
            Self::Pong(_) => MessageKind::Pong,
            Self::Close(_) => MessageKind::Close,
            Self::Frame(_) => MessageKind::Frame,
        }
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t.as_str()),
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
        Self::Text(text.into())
    }

    fn ping(payload: Bytes) -> Self {
        Self::Ping(payload)
    }

    fn pong(payload: Bytes) -> Self {
        Self::Pong(payload)
    }

    fn close(rejection: &Rejection) -> Self {
        Self::Close(Some(crate::tungstenite::close_frame(rejection)))
    }
}
