//! Hostile messages are refused without large allocations: measured with a counting
//! allocator around the layer's work (this file is its own test binary, with one test, so
//! nothing else allocates meanwhile).

mod common;

use axum::extract::ws::Message;
use common::{hostile_messages, Command, INVALID};
use http::{Extensions, Uri};
use tower::{Layer, Service, ServiceExt};
use wsguard_core::{Admit, Connection, ConnectionInfo, Inbound, Verdict};
use wsguard_schema_validate::ValidateMessageLayer;
use wsguard_test_kit::alloc::{CountingAllocator, Region};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator::system();

#[tokio::test(flavor = "current_thread")]
async fn hostile_messages_are_refused_without_large_allocations() {
    let layer = ValidateMessageLayer::new()
        .typed::<Command>()
        .max_message_size(2 << 20)
        .max_string_len(64 * 1024)
        .max_invalid(100)
        .unwrap();
    let mut svc = layer.layer(Admit);
    let conn = ConnectionInfo::new(&Connection::new(
        Uri::from_static("/ws"),
        &mut Extensions::new(),
    ));

    // Measures the bytes allocated while the layer decides on `message`.
    async fn allocated<S>(
        svc: &mut S,
        conn: &ConnectionInfo,
        message: Message,
    ) -> (usize, Verdict<Message>)
    where
        S: Service<Inbound<Message>, Response = Verdict<Message>, Error = std::convert::Infallible>,
    {
        let req = Inbound::new(message, conn.clone());
        let ready = svc.ready().await.unwrap();
        let region = Region::new(&GLOBAL);
        let verdict = ready.call(req).await.unwrap();
        (region.change().bytes_allocated, verdict)
    }

    for (case, message) in hostile_messages() {
        let (bytes, verdict) = allocated(&mut svc, &conn, Message::text(message)).await;
        assert!(
            matches!(&verdict, Verdict::Reply(Message::Text(t)) if t.as_str() == INVALID),
            "{case}: {verdict:?}"
        );
        // The error frame (and a parser error for malformed input), nothing near the size
        // of the message: 20 KB for the nesting, 1 MiB for the string.
        assert!(bytes < 1024, "{case}: {bytes} bytes allocated");
    }

    // The measurement does see allocations: a valid message with a 60 KiB string is parsed
    // into a 60 KiB `String`.
    let big = format!(
        r#"{{"type":"subscribe","session_id":"{}"}}"#,
        "A".repeat(60 * 1024)
    );
    let (bytes, verdict) = allocated(&mut svc, &conn, Message::text(big)).await;
    assert!(verdict.is_admit());
    assert!(bytes >= 60 * 1024, "{bytes}");
}
