//! The plane's request, verdict and admitted message, and the innermost service.

use std::{
    any::Any,
    convert::Infallible,
    fmt,
    task::{Context, Poll},
};

use http::Extensions;
use tower_service::Service;

use crate::ConnectionInfo;
use crate::{telemetry, Reason, Rejection};

/// The parsed form of a message, of whatever type the guard that parsed it chose.
pub(super) type Parsed = Option<Box<dyn Any + Send + Sync>>;

/// The request of the message plane: one inbound data message and its connection.
///
/// Besides the message, it carries what the guards learned about it: the message as a
/// guard parsed it ([`parsed`](Self::parsed), one value, set by a validator) and
/// [`extensions`](Self::extensions) for anything else.
///
/// See the [`GuardedSocket`](crate::GuardedSocket) docs for an example.
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
/// See the [`GuardedSocket`](crate::GuardedSocket) docs for an example.
#[derive(Debug)]
#[non_exhaustive]
pub enum Verdict<M> {
    /// Hand the message (and its extensions) to the application.
    Admit(Inbound<M>),
    /// Drop the message and send this frame (an error frame) to the peer instead, unless
    /// the connection already had its [`MAX_REPLIES_PER_SECOND`](super::MAX_REPLIES_PER_SECOND) refusal frames this second
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
/// See the [`GuardedSocket`](crate::GuardedSocket) docs for an example.
pub struct Admitted<M> {
    pub(super) message: M,
    pub(super) parsed: Parsed,
    pub(super) extensions: Extensions,
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
pub(super) fn take_parsed<T: 'static>(parsed: &mut Parsed) -> Option<T> {
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
/// See the [`GuardedSocket`](crate::GuardedSocket) docs for an example.
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

/// The verdict for a message handed to another connection's service (see
/// [`ConnectionBinding`](super::ConnectionBinding)): logs an `error` event (a misconfiguration: a plane service built
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
