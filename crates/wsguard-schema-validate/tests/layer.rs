//! The layer as a tower service: guards, typed validation, error frames, authorization.

mod common;

use std::convert::Infallible;

use axum::extract::ws::Message;
use common::{hostile_messages, Command, Sessions, FORBIDDEN, INVALID};
use http::{Extensions, Uri};
use tower::{Layer, Service, ServiceExt};
use wsguard_core::{Admit, Connection, ConnectionInfo, Inbound, Principal, Rejection, Verdict};
use wsguard_schema_validate::{Accept, ConfigError, OnDeny, ValidateMessageLayer};

fn info(principal: Option<&str>) -> ConnectionInfo {
    let mut ext = Extensions::new();
    if let Some(p) = principal {
        ext.insert(Principal::new(p));
    }
    ConnectionInfo::new(&Connection::new(Uri::from_static("/ws"), &mut ext))
}

async fn send<S>(svc: &mut S, conn: &ConnectionInfo, m: Message) -> Verdict<Message>
where
    S: Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible>,
{
    svc.ready()
        .await
        .unwrap()
        .call(Inbound::new(m, conn.clone()))
        .await
        .unwrap()
}

fn text(verdict: &Verdict<Message>) -> Option<&str> {
    match verdict {
        Verdict::Reply(Message::Text(t)) => Some(t.as_str()),
        _ => None,
    }
}

fn commands() -> ValidateMessageLayer<Command> {
    ValidateMessageLayer::new()
        .typed::<Command>()
        .max_message_size(2 << 20)
        .max_string_len(64 * 1024)
        .max_invalid(100)
        .unwrap()
}

#[tokio::test]
async fn valid_messages_carry_their_parsed_value() {
    let mut svc = commands().layer(Admit);
    let conn = info(None);
    let verdict = send(
        &mut svc,
        &conn,
        Message::text(r#"{"type":"subscribe","session_id":"s-1"}"#),
    )
    .await;
    let Verdict::Admit(inbound) = verdict else {
        panic!("{verdict:?}")
    };
    let mut admitted = inbound.into_admitted();
    assert_eq!(
        admitted.take_parsed::<Command>(),
        Some(Command::Subscribe {
            session_id: "s-1".into()
        })
    );
    assert!(send(&mut svc, &conn, Message::text(r#"{"type":"ping"}"#))
        .await
        .is_admit());
}

/// A message type that is not `Clone` (it owns a socket-side resource, say).
#[derive(Debug, serde::Deserialize)]
struct Owned {
    id: u32,
}

#[tokio::test]
async fn types_need_not_be_clone() {
    let mut svc = ValidateMessageLayer::new().typed::<Owned>().layer(Admit);
    let verdict = send(&mut svc, &info(None), Message::text(r#"{"id":7}"#)).await;
    let Verdict::Admit(inbound) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(
        inbound.into_admitted().take_parsed::<Owned>().map(|o| o.id),
        Some(7)
    );
}

#[tokio::test]
async fn hostile_messages_get_a_generic_frame_without_their_text() {
    let conn = info(None);
    for (case, input) in hostile_messages() {
        let mut svc = commands().layer(Admit);
        let verdict = send(&mut svc, &conn, Message::text(input)).await;
        let frame = text(&verdict).unwrap_or_else(|| panic!("{case}: {verdict:?}"));
        assert_eq!(frame, INVALID, "{case}");
        assert!(!frame.contains("EVIL"), "{case}");
    }
}

#[tokio::test]
async fn consecutive_invalid_messages_close_with_1007() {
    let layer = ValidateMessageLayer::new()
        .typed::<Command>()
        .max_invalid(3)
        .unwrap();
    let mut svc = layer.layer(Admit);
    let conn = info(None);
    let bad = || Message::text("nope");
    let good = || Message::text(r#"{"type":"ping"}"#);
    assert_eq!(text(&send(&mut svc, &conn, bad()).await), Some(INVALID));
    assert_eq!(text(&send(&mut svc, &conn, bad()).await), Some(INVALID));
    // A valid message starts the count again.
    assert!(send(&mut svc, &conn, good()).await.is_admit());
    assert_eq!(text(&send(&mut svc, &conn, bad()).await), Some(INVALID));
    assert_eq!(text(&send(&mut svc, &conn, bad()).await), Some(INVALID));
    let verdict = send(&mut svc, &conn, bad()).await;
    assert_eq!(
        verdict.close_rejection().and_then(Rejection::close_code),
        Some(1007)
    );
    // Another connection has its own count.
    let mut other = layer.layer(Admit);
    assert_eq!(text(&send(&mut other, &conn, bad()).await), Some(INVALID));
}

#[tokio::test]
async fn a_service_shared_by_two_connections_refuses_the_second_with_1011() {
    let layer = ValidateMessageLayer::new()
        .typed::<Command>()
        .max_invalid(3)
        .unwrap();
    let shared = layer.layer(Admit);
    let (mut for_alice, mut for_bob) = (shared.clone(), shared);
    let (alice, bob) = (info(Some("alice")), info(Some("bob")));
    assert_eq!(
        text(&send(&mut for_alice, &alice, Message::text("nope")).await),
        Some(INVALID)
    );
    let verdict = send(&mut for_bob, &bob, Message::text(r#"{"type":"ping"}"#)).await;
    assert_eq!(
        verdict.close_rejection().and_then(Rejection::close_code),
        Some(1011),
        "another connection's message is refused, not counted"
    );
}

#[tokio::test]
async fn size_and_frame_type_are_checked_first() {
    let layer = ValidateMessageLayer::new()
        .typed::<Command>()
        .max_message_size(32);
    let conn = info(None);
    let close_code = |v: Verdict<Message>| v.close_rejection().and_then(Rejection::close_code);
    let mut svc = layer.layer(Admit);
    assert_eq!(
        close_code(
            send(
                &mut svc,
                &conn,
                Message::text(format!(r#"{{"type":"ping","x":"{}"}}"#, "a".repeat(32)))
            )
            .await
        ),
        Some(1009)
    );
    assert_eq!(
        close_code(
            send(
                &mut svc,
                &conn,
                Message::binary(&b"{\"type\":\"ping\"}"[..])
            )
            .await
        ),
        Some(1003)
    );
    // Binary accepted: its payload is validated as JSON all the same.
    let mut binary = layer.clone().accept(Accept::Binary).layer(Admit);
    assert!(send(
        &mut binary,
        &conn,
        Message::binary(&b"{\"type\":\"ping\"}"[..])
    )
    .await
    .is_admit());
    assert_eq!(
        text(&send(&mut binary, &conn, Message::binary(&b"\xff\xfe"[..])).await),
        Some(INVALID)
    );
    assert_eq!(
        close_code(send(&mut binary, &conn, Message::text(r#"{"type":"ping"}"#)).await),
        Some(1003)
    );
    // Control frames pass untouched.
    assert!(send(&mut svc, &conn, Message::Ping(Default::default()))
        .await
        .is_admit());
}

#[tokio::test]
async fn authorization_allows_owned_sessions_and_denies_foreign_ones() {
    let sessions = Sessions::new(&[("s-alice", "alice"), ("s-bob", "bob")]);
    let layer = commands().authorize(sessions.authorize());
    let alice = info(Some("alice"));
    let mut svc = layer.layer(Admit);
    let subscribe =
        |s: &str| Message::text(format!(r#"{{"type":"subscribe","session_id":"{s}"}}"#));

    let verdict = send(&mut svc, &alice, subscribe("s-alice")).await;
    let Verdict::Admit(inbound) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(
        inbound.parsed::<Command>(),
        Some(&Command::Subscribe {
            session_id: "s-alice".into()
        })
    );
    assert_eq!(
        text(&send(&mut svc, &alice, subscribe("s-bob")).await),
        Some(FORBIDDEN)
    );
    assert_eq!(
        text(&send(&mut svc, &alice, subscribe("s-nobody")).await),
        Some(FORBIDDEN)
    );
    assert!(send(&mut svc, &alice, Message::text(r#"{"type":"ping"}"#))
        .await
        .is_admit());
    // Denials are not invalid messages: they never add up to a 1007.
    for _ in 0..200 {
        assert_eq!(
            text(&send(&mut svc, &alice, subscribe("s-bob")).await),
            Some(FORBIDDEN)
        );
    }

    let closing = layer.on_deny(OnDeny::Close);
    let verdict = send(&mut closing.layer(Admit), &alice, subscribe("s-bob")).await;
    assert_eq!(
        verdict.close_rejection().and_then(Rejection::close_code),
        Some(4403)
    );
}

#[tokio::test]
async fn the_error_frame_is_the_applications_choice() {
    let layer =
        commands().error_frame(|r: &Rejection| Some(format!("E{}", r.close_code().unwrap_or(0))));
    let verdict = send(&mut layer.layer(Admit), &info(None), Message::text("x")).await;
    assert_eq!(text(&verdict), Some("E1007"));
}

#[test]
fn zero_invalid_messages_is_a_configuration_error() {
    assert_eq!(
        ValidateMessageLayer::new().max_invalid(0).unwrap_err(),
        ConfigError::ZeroMaxInvalid
    );
}

#[cfg(feature = "json-schema")]
mod json_schema {
    use serde_json::{json, Value};

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": { "enum": ["ping", "subscribe", "unsubscribe"] },
                "session_id": { "type": "string", "pattern": "^s-[a-z]+$", "maxLength": 64 }
            },
            "additionalProperties": false
        })
    }

    #[tokio::test]
    async fn messages_are_checked_against_the_schema() {
        let layer = ValidateMessageLayer::new().json_schema(&schema()).unwrap();
        let mut svc = layer.layer(Admit);
        let conn = info(None);
        let verdict = send(
            &mut svc,
            &conn,
            Message::text(r#"{"type":"subscribe","session_id":"s-abc"}"#),
        )
        .await;
        let Verdict::Admit(inbound) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(inbound.parsed::<Value>().unwrap()["session_id"], "s-abc");
        for bad in [
            r#"{"type":"subscribe","session_id":"EVIL"}"#,
            r#"{"type":"EVIL"}"#,
            r#"{"type":"ping","EVIL":1}"#,
            r#"["EVIL"]"#,
        ] {
            let verdict = send(&mut svc, &conn, Message::text(bad)).await;
            assert_eq!(text(&verdict), Some(INVALID), "{bad}");
        }
    }

    #[tokio::test]
    async fn schema_and_type_together() {
        let layer = ValidateMessageLayer::new()
            .typed::<Command>()
            .json_schema(&schema())
            .unwrap();
        let mut svc = layer.layer(Admit);
        let verdict = send(
            &mut svc,
            &info(None),
            Message::text(r#"{"type":"unsubscribe","session_id":"s-x"}"#),
        )
        .await;
        let Verdict::Admit(inbound) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(
            inbound.parsed::<Command>(),
            Some(&Command::Unsubscribe {
                session_id: "s-x".into()
            })
        );
    }

    #[test]
    fn a_bad_schema_is_a_configuration_error() {
        let err = ValidateMessageLayer::new()
            .json_schema(&json!({"type": 12}))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Schema(_)), "{err:?}");
        // Lookaround needs a backtracking engine, which attacker strings could stall.
        let err = ValidateMessageLayer::new()
            .json_schema(&json!({"type": "string", "pattern": "(?=a)a"}))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Schema(_)), "{err:?}");
    }
}
