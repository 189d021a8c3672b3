//! The message pre-scan (nesting depth, string length) and the typed parse of
//! `ValidateMessageLayer`, called as the message plane calls it: a tokio-tungstenite
//! `Message` in an `Inbound`, through the service the layer builds over `Admit`.
//!
//! Input: byte 0 is the depth limit (low 6 bits, so 0 to 63) and, in its top bit, whether the
//! layer parses into the seeds' `Command` enum instead of `serde_json::Value`; byte 1 is the
//! string limit (0 to 255 bytes); the rest is the message (a text frame when it is UTF-8, a
//! binary frame, with binary accepted, otherwise).
//!
//! Invariants checked beyond "no panic", with `serde_json` as the reference:
//! - an admitted message is valid JSON (of the typed command when typed), nested no deeper
//!   than the limit, with no string (keys included) longer than the limit once decoded, and
//!   the parsed value handed on equals `serde_json`'s;
//! - valid JSON (no duplicate keys) within the depth limit whose strings are short enough
//!   to be within the limit however they are escaped (6 raw bytes per decoded byte at
//!   most, or the whole message within the limit) is admitted (when typed: if it is a
//!   `Command`);
//! - valid JSON over a limit is refused;
//! - a refused message is answered with the generic error frame, never with the input.
#![no_main]

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use http::{Extensions, Uri};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tower::{Layer, Service};
use wsguard_core::{Admit, Connection, ConnectionInfo, Inbound, Verdict};
use wsguard_schema_validate::{Accept, ValidateMessageLayer};

/// The seeds' protocol, as in the crate docs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Ping,
    Subscribe { session_id: String },
    Unsubscribe { session_id: String },
}

const ERROR_FRAME: &str = r#"{"type":"error","code":"invalid_message"}"#;

fuzz_target!(|data: &[u8]| {
    let [config, strings, json @ ..] = data else {
        return;
    };
    let max_depth = usize::from(config & 0x3f);
    let max_string_len = usize::from(*strings);
    let typed = config & 0x80 != 0;
    let message = match std::str::from_utf8(json) {
        Ok(text) => Message::text(text),
        Err(_) => Message::binary(json.to_vec()),
    };

    let layer = ValidateMessageLayer::new()
        .accept(Accept::Both)
        .max_message_size(1 << 20)
        .max_depth(max_depth)
        .max_string_len(max_string_len);
    let verdict = if typed {
        decide(&layer.clone().typed::<Command>(), message)
    } else {
        decide(&layer, message)
    };

    let reference = serde_json::from_slice::<Value>(json).ok();
    let command = serde_json::from_slice::<Command>(json).ok();
    let depth_ok = reference.as_ref().map(|v| depth(v) <= max_depth);
    let longest = reference.as_ref().map(longest_string);

    match verdict {
        Verdict::Admit(inbound) => {
            let value = reference.expect("admitted invalid JSON");
            assert_eq!(depth_ok, Some(true), "admitted over the depth limit");
            assert!(
                longest.unwrap_or(0) <= max_string_len,
                "admitted a long string"
            );
            if typed {
                let parsed = inbound.parsed::<Command>().expect("parsed command");
                assert_eq!(Some(parsed), command.as_ref(), "parsed differently");
            } else {
                assert_eq!(
                    inbound.parsed::<Value>(),
                    Some(&value),
                    "parsed differently"
                );
            }
        }
        Verdict::Reply(frame) => {
            assert_eq!(
                frame,
                Message::text(ERROR_FRAME),
                "not the generic error frame"
            );
            // Duplicate keys hide values from `Value`, so the converse needs none.
            let unique = serde_json::from_slice::<UniqueKeys>(json).is_ok();
            if let (Some(true), Some(longest), true) = (depth_ok, longest, unique) {
                let surely_short =
                    json.len() <= max_string_len || longest.saturating_mul(6) <= max_string_len;
                let of_type = !typed || command.is_some();
                assert!(
                    !(surely_short && of_type),
                    "refused a valid message within limits"
                );
            }
        }
        other => panic!("unexpected verdict {other:?}"),
    }
});

/// One call of the service the layer builds for a fresh connection.
fn decide<L>(layer: &L, message: Message) -> Verdict<Message>
where
    L: Layer<Admit>,
    L::Service: Service<Inbound<Message>, Response = Verdict<Message>>,
    <L::Service as Service<Inbound<Message>>>::Error: std::fmt::Debug,
{
    let conn = Connection::new(Uri::from_static("/ws"), &mut Extensions::new());
    let mut service = layer.layer(Admit);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let inbound = Inbound::new(message, ConnectionInfo::new(&conn));
    let mut future = pin!(service.call(inbound));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result.expect("the validator does not fail"),
        Poll::Pending => panic!("the validator waited without an authorize hook"),
    }
}

/// Deserializes any JSON and fails on an object with a key twice.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// The nesting depth of a value: `[]` is 1, a scalar 0 (the crate's definition).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The longest string, keys included, in decoded UTF-8 bytes.
fn longest_string(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(longest_string).max().unwrap_or(0),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| k.len().max(longest_string(v)))
            .max()
            .unwrap_or(0),
        _ => 0,
    }
}
