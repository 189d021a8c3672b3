//! The configuration a layer and its services share, the checks of each message, and the
//! log and count of each refusal.
//!
//! Below the layer, the service and the future: this module imports none of them.

use std::{
    fmt,
    sync::atomic::{AtomicU32, Ordering},
};

use serde::de::DeserializeOwned;
use wsguard_core::{
    guard::{foreign_connection, record_rejection, record_rejection_as, ConnectionBinding, Mode},
    ConnectionInfo, ErrorFrame, Inbound, MessageKind, Reason, Rejection, Verdict, WsMessage,
};

use crate::{
    scan::{self, Limits},
    telemetry::LAYER,
};

/// The default largest message: 64 KiB, wsguard's one default for the socket and the
/// validator alike.
pub use wsguard_core::DEFAULT_MAX_MESSAGE_SIZE;
/// The default deepest nesting of arrays and objects.
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// The default longest string: 16 KiB.
pub const DEFAULT_MAX_STRING_LEN: usize = 16 * 1024;
/// The default number of consecutive invalid messages that closes the socket.
pub const DEFAULT_MAX_INVALID: u32 = 5;

/// Which data frames are accepted; the others close the socket with 1003.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accept {
    /// Text messages only (the default).
    #[default]
    Text,
    /// Binary messages only (their payload is parsed as UTF-8 JSON all the same).
    Binary,
    /// Both.
    Both,
}

impl Accept {
    pub(crate) const fn text(self) -> bool {
        matches!(self, Self::Text | Self::Both)
    }

    pub(crate) const fn binary(self) -> bool {
        matches!(self, Self::Binary | Self::Both)
    }
}

/// What an [`Authorize`](crate::Authorize) denial does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDeny {
    /// Drop the message and answer with an error frame, `{"type":"error","code":"forbidden"}`
    /// by default (the default).
    #[default]
    Reply,
    /// Close the socket with 4403.
    Close,
}

/// A configuration that cannot work, returned when the layer is built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_invalid(0)`: a socket cannot be closed after zero invalid messages (1 closes
    /// at the first).
    ZeroMaxInvalid,
    /// The JSON Schema does not compile; the text is the `jsonschema` crate's message.
    #[cfg(feature = "json-schema")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json-schema")))]
    Schema(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroMaxInvalid => f.write_str("max_invalid must be at least 1"),
            #[cfg(feature = "json-schema")]
            Self::Schema(err) => write!(f, "invalid JSON Schema: {err}"),
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) struct Config<A, F> {
    pub(crate) max_size: usize,
    pub(crate) accept: Accept,
    pub(crate) limits: Limits,
    pub(crate) max_invalid: u32,
    pub(crate) on_deny: OnDeny,
    pub(crate) authorize: A,
    pub(crate) frame: F,
    /// Dry-run mode: refusals are logged and counted, and the raw message goes through.
    pub(crate) dry_run: bool,
    #[cfg(feature = "json-schema")]
    pub(crate) schema: Option<std::sync::Arc<jsonschema::Validator>>,
}

impl<A: Clone, F: Clone> Clone for Config<A, F> {
    fn clone(&self) -> Self {
        Self {
            max_size: self.max_size,
            accept: self.accept,
            limits: self.limits,
            max_invalid: self.max_invalid,
            on_deny: self.on_deny,
            authorize: self.authorize.clone(),
            frame: self.frame.clone(),
            dry_run: self.dry_run,
            #[cfg(feature = "json-schema")]
            schema: self.schema.clone(),
        }
    }
}

/// What one connection's service remembers between messages.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Invalid messages in a row.
    pub(crate) invalid: AtomicU32,
    /// The connection this state counts for.
    pub(crate) binding: ConnectionBinding,
}

/// What [`Config::check`] concluded about one message.
pub(crate) enum Check<T, M> {
    /// Not the validator's business (a control frame), or in dry-run mode a message it
    /// would refuse (logged and counted): straight to the inner service, unparsed.
    Pass,
    /// Refused: this verdict, without the inner service.
    Refuse(Verdict<M>),
    /// Valid, parsed into `T`: to the authorization hook, then the inner service.
    Parsed(T),
}

impl<A, F> Config<A, F>
where
    F: ErrorFrame,
{
    /// Checks one message of `conn`'s connection, cheapest first: the connection, the frame
    /// type, the size, the bounded scan, then the parser. Logs and counts every refusal.
    pub(crate) fn check<T, M>(&self, conn: &ConnState, req: &Inbound<M>) -> Check<T, M>
    where
        T: DeserializeOwned,
        M: WsMessage,
    {
        if !conn.binding.check(req.connection()) {
            return Check::Refuse(foreign_connection(LAYER));
        }
        let message = req.message();
        let json = match message.kind() {
            MessageKind::Text if self.accept.text() => message.as_text().map(Json::Text),
            MessageKind::Binary if self.accept.binary() => message.as_binary().map(Json::Bytes),
            MessageKind::Text | MessageKind::Binary => {
                return self.close(req.connection(), Reason::UnsupportedData)
            }
            // Control frames are not the validator's business.
            _ => return Check::Pass,
        };
        let Some(json) = json else {
            return self.close(req.connection(), Reason::UnsupportedData);
        };
        if json.bytes().len() > self.max_size {
            return self.close(req.connection(), Reason::MessageTooLarge);
        }
        if let Err(exceeded) = scan::check(json.bytes(), &self.limits) {
            return self.invalid(conn, req.connection(), exceeded.as_str());
        }
        let parsed: T = match parse(json, self) {
            Ok(parsed) => parsed,
            Err(why) => return self.invalid(conn, req.connection(), why),
        };
        conn.invalid.store(0, Ordering::Relaxed);
        Check::Parsed(parsed)
    }
}

impl<A, F> Config<A, F>
where
    F: ErrorFrame,
{
    /// An invalid message: a generic error frame, or 1007 when too many came in a row; in
    /// dry-run mode, logged and counted, and let through unparsed.
    fn invalid<T, M: WsMessage>(
        &self,
        conn: &ConnState,
        info: &ConnectionInfo,
        why: &'static str,
    ) -> Check<T, M> {
        if self.dry_run {
            would_refuse(Reason::InvalidMessage, why);
            return Check::Pass;
        }
        record_rejection(LAYER, Reason::InvalidMessage);
        let in_a_row = conn
            .invalid
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if in_a_row >= self.max_invalid {
            tracing::warn!(
                reason = Reason::InvalidMessage.as_str(),
                why,
                in_a_row,
                peer = info.client_ip().map(tracing::field::display),
                "too many invalid messages in a row, closing the socket"
            );
            return Check::Refuse(Verdict::Close(Rejection::new(Reason::InvalidMessage)));
        }
        tracing::debug!(
            reason = Reason::InvalidMessage.as_str(),
            why,
            peer = info.client_ip().map(tracing::field::display),
            "invalid message refused"
        );
        Check::Refuse(reply(&self.frame, Rejection::new(Reason::InvalidMessage)))
    }

    /// A message refused with a close (wrong frame type, too large); in dry-run mode,
    /// logged and counted, and let through unparsed.
    fn close<T, M>(&self, info: &ConnectionInfo, reason: Reason) -> Check<T, M> {
        if self.dry_run {
            would_refuse(reason, reason.as_str());
            return Check::Pass;
        }
        tracing::debug!(
            reason = reason.as_str(),
            peer = info.client_ip().map(tracing::field::display),
            "message refused, closing the socket"
        );
        record_rejection(LAYER, reason);
        Check::Refuse(Verdict::Close(Rejection::new(reason)))
    }
}

/// Dry run: logs (`INFO`, `mode = "dry_run"`, the reason and its category, never the
/// message or the peer) and counts with `mode="dry_run"` a message that enforce mode would
/// refuse for `reason`.
fn would_refuse(reason: Reason, why: &'static str) {
    record_rejection_as(LAYER, reason, Mode::DryRun);
    tracing::info!(
        target: "wsguard_schema_validate",
        reason = reason.as_str(),
        why,
        mode = Mode::DryRun.as_str(),
        "dry run: message let through unparsed that would be refused"
    );
}

/// The error frame for `rejection`, or a silent drop.
fn reply<M: WsMessage, F: ErrorFrame>(frame: &F, rejection: Rejection) -> Verdict<M> {
    match frame.error_frame(&rejection) {
        Some(text) => Verdict::Reply(M::text(text)),
        None => Verdict::Drop,
    }
}

/// A denied message: a `forbidden` error frame, or 4403; in dry-run mode `None` (logged
/// and counted): the message goes on to the inner service, unparsed.
pub(crate) fn denied<M: WsMessage, A, F: ErrorFrame>(
    config: &Config<A, F>,
    info: &ConnectionInfo,
) -> Option<Verdict<M>> {
    if config.dry_run {
        would_refuse(Reason::Forbidden, "authorize");
        return None;
    }
    record_rejection(LAYER, Reason::Forbidden);
    tracing::info!(
        reason = Reason::Forbidden.as_str(),
        authenticated = info.principal().is_some(),
        peer = info.client_ip().map(tracing::field::display),
        "message denied by the authorization hook"
    );
    Some(match config.on_deny {
        OnDeny::Reply => reply(&config.frame, Rejection::new(Reason::Forbidden)),
        OnDeny::Close => Verdict::Close(Rejection::new(Reason::Forbidden)),
    })
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
