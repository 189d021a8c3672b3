//! The per-connection service.

use std::{
    fmt,
    marker::PhantomData,
    mem,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use serde::de::DeserializeOwned;
use tower_service::Service;
use wsguard_core::{
    plane::{foreign_connection, ConnectionBinding, ConnectionInfo, ErrorFrame, Inbound, Verdict},
    telemetry, MessageKind, Reason, Rejection, WsMessage,
};

use crate::{
    authorize::Authorize,
    future::ResponseFuture,
    layer::{Config, OnDeny},
    scan,
};

const LAYER: &str = "schema";

/// What one connection's service remembers between messages.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Invalid messages in a row.
    invalid: AtomicU32,
    /// The connection this state counts for.
    binding: ConnectionBinding,
}

/// The message-plane service of [`ValidateMessageLayer`](crate::ValidateMessageLayer), for
/// one connection.
///
/// Clones share the connection's count of invalid messages, and serve that connection only:
/// a message from another connection is refused with 1011 and an `error` event (see
/// [`ConnectionBinding`](wsguard_core::plane::ConnectionBinding)). See the [crate docs](crate)
/// for an example.
pub struct ValidateMessage<
    S,
    T = serde_json::Value,
    A = crate::AllowAll,
    F = wsguard_core::plane::JsonErrorFrame,
> {
    inner: S,
    config: Arc<Config<A, F>>,
    conn: Arc<ConnState>,
    _type: PhantomData<fn() -> T>,
}

impl<S, T, A, F> ValidateMessage<S, T, A, F> {
    pub(crate) fn new(inner: S, config: Arc<Config<A, F>>, conn: Arc<ConnState>) -> Self {
        Self {
            inner,
            config,
            conn,
            _type: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, dropping this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, T, A, F> Clone for ValidateMessage<S, T, A, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            conn: self.conn.clone(),
            _type: PhantomData,
        }
    }
}

impl<S: fmt::Debug, T, A, F> fmt::Debug for ValidateMessage<S, T, A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateMessage")
            .field("inner", &self.inner)
            .field("type", &std::any::type_name::<T>())
            .field(
                "invalid_in_a_row",
                &self.conn.invalid.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl<S, M, T, A, F> Service<Inbound<M>> for ValidateMessage<S, T, A, F>
where
    S: Service<Inbound<M>, Response = Verdict<M>> + Clone,
    M: WsMessage,
    T: DeserializeOwned + Send + Sync + 'static,
    A: Authorize<T>,
    F: ErrorFrame,
{
    type Response = Verdict<M>;
    type Error = S::Error;
    type Future = ResponseFuture<S, M, T, A, F>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Inbound<M>) -> Self::Future {
        if !self.conn.binding.check(req.connection()) {
            return ResponseFuture::done(foreign_connection(LAYER));
        }
        let config = &*self.config;
        let message = req.message();
        // Cheapest first: the frame type, the size, the bounded scan, then the parser.
        let json = match message.kind() {
            MessageKind::Text if config.accept.text() => message.as_text().map(Json::Text),
            MessageKind::Binary if config.accept.binary() => message.as_binary().map(Json::Bytes),
            MessageKind::Text | MessageKind::Binary => {
                return ResponseFuture::done(close(req.connection(), Reason::UnsupportedData))
            }
            // Control frames are not the validator's business.
            _ => return ResponseFuture::inner(self.inner.call(req)),
        };
        let Some(json) = json else {
            return ResponseFuture::done(close(req.connection(), Reason::UnsupportedData));
        };
        if json.bytes().len() > config.max_size {
            return ResponseFuture::done(close(req.connection(), Reason::MessageTooLarge));
        }
        if let Err(exceeded) = scan::check(json.bytes(), &config.limits) {
            return ResponseFuture::done(self.invalid(req.connection(), exceeded.as_str()));
        }
        let parsed: T = match parse(json, config) {
            Ok(parsed) => parsed,
            Err(why) => return ResponseFuture::done(self.invalid(req.connection(), why)),
        };
        self.conn.invalid.store(0, Ordering::Relaxed);

        if config.authorize.allows_all() {
            req.set_parsed(parsed);
            return ResponseFuture::inner(self.inner.call(req));
        }
        let asking = config.authorize.authorize(req.connection(), &parsed);
        // The answer takes time: the future takes the ready service, a clone stays here.
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture::authorizing(asking, inner, req, parsed, self.config.clone())
    }
}

impl<S, T, A, F> ValidateMessage<S, T, A, F>
where
    F: ErrorFrame,
{
    /// An invalid message: a generic error frame, or 1007 when too many came in a row.
    fn invalid<M: WsMessage>(&self, info: &ConnectionInfo, why: &'static str) -> Verdict<M> {
        telemetry::record_rejection(LAYER, Reason::InvalidMessage);
        let in_a_row = self
            .conn
            .invalid
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if in_a_row >= self.config.max_invalid {
            tracing::warn!(
                reason = Reason::InvalidMessage.as_str(),
                why,
                in_a_row,
                peer = info.client_ip().map(tracing::field::display),
                "too many invalid messages in a row, closing the socket"
            );
            return Verdict::Close(Rejection::new(Reason::InvalidMessage));
        }
        tracing::debug!(
            reason = Reason::InvalidMessage.as_str(),
            why,
            peer = info.client_ip().map(tracing::field::display),
            "invalid message refused"
        );
        reply(&self.config.frame, Rejection::new(Reason::InvalidMessage))
    }
}

/// The error frame for `rejection`, or a silent drop.
pub(crate) fn reply<M: WsMessage, F: ErrorFrame>(frame: &F, rejection: Rejection) -> Verdict<M> {
    match frame.error_frame(&rejection) {
        Some(text) => Verdict::Reply(M::text(text)),
        None => Verdict::Drop,
    }
}

fn close<M>(info: &ConnectionInfo, reason: Reason) -> Verdict<M> {
    tracing::debug!(
        reason = reason.as_str(),
        peer = info.client_ip().map(tracing::field::display),
        "message refused, closing the socket"
    );
    telemetry::record_rejection(LAYER, reason);
    Verdict::Close(Rejection::new(reason))
}

/// A denied message: a `forbidden` error frame, or 4403.
pub(crate) fn denied<M: WsMessage, A, F: ErrorFrame>(
    config: &Config<A, F>,
    info: &ConnectionInfo,
) -> Verdict<M> {
    telemetry::record_rejection(LAYER, Reason::Forbidden);
    tracing::info!(
        reason = Reason::Forbidden.as_str(),
        authenticated = info.principal().is_some(),
        peer = info.client_ip().map(tracing::field::display),
        "message denied by the authorization hook"
    );
    match config.on_deny {
        OnDeny::Reply => reply(&config.frame, Rejection::new(Reason::Forbidden)),
        OnDeny::Close => Verdict::Close(Rejection::new(Reason::Forbidden)),
    }
}

/// A message's JSON: text frames are UTF-8 already (tungstenite checked), so the parser
/// need not check it again; binary frames are bytes.
#[derive(Clone, Copy)]
enum Json<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Json<'a> {
    fn bytes(self) -> &'a [u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }

    fn deserialize<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        match self {
            Self::Text(text) => serde_json::from_str(text),
            Self::Bytes(bytes) => serde_json::from_slice(bytes),
        }
    }
}

/// Parses a message that passed the scan. Errors name the kind of failure only: serde's
/// and jsonschema's messages can quote the input.
fn parse<T, A, F>(json: Json<'_>, config: &Config<A, F>) -> Result<T, &'static str>
where
    T: DeserializeOwned,
{
    #[cfg(feature = "json-schema")]
    if let Some(schema) = &config.schema {
        let value: serde_json::Value = json.deserialize().map_err(category)?;
        if !schema.is_valid(&value) {
            return Err("schema");
        }
        return serde_json::from_value(value).map_err(category);
    }
    #[cfg(not(feature = "json-schema"))]
    let _ = config;
    json.deserialize().map_err(category)
}

fn category(err: serde_json::Error) -> &'static str {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax => "syntax",
        Category::Data => "data",
        Category::Eof => "eof",
        Category::Io => "io",
    }
}
