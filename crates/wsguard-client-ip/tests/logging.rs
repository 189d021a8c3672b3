//! The events the layer logs and their levels.
//!
//! Alone in its own test binary: a test running on another thread could register the
//! callsites while no subscriber exists and race with the scoped subscriber used here.

mod common;

use common::{echo, loopback};
use http::Request;
use tower::{service_fn, Layer, ServiceExt};
use wsguard_client_ip::{ClientIpLayer, Source};
use wsguard_test_kit::{logs::Logs, service::request};

/// Runs one request through `layer` and returns what was logged, at every level.
fn logged(layer: ClientIpLayer, req: Request<String>) -> String {
    let logs = Logs::new();
    tracing::subscriber::with_default(logs.subscriber(tracing::Level::TRACE), || {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(layer.layer(service_fn(echo)).oneshot(req))
            .unwrap();
    });
    logs.text()
}

fn levels(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter_map(|line| {
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .into_iter()
                .find(|level| line.contains(level))
        })
        .collect()
}

#[test]
fn events_and_their_levels() {
    // A missing peer is an error.
    let logs = logged(loopback(), request(None, &[]));
    assert_eq!(levels(&logs), ["ERROR"], "{logs}");
    assert!(logs.contains("no peer address"), "{logs}");

    // A header from an untrusted peer is ignored at trace level; its content is not logged.
    let logs = logged(
        ClientIpLayer::new(),
        request(Some("203.0.113.50:1"), &[("x-forwarded-for", "6.6.6.6")]),
    );
    assert!(levels(&logs).iter().all(|l| *l == "TRACE"), "{logs}");
    assert!(logs.contains("untrusted peer ignored"), "{logs}");
    assert!(!logs.contains("6.6.6.6"), "{logs}");

    // A duplicated single-value header through a trusted proxy is a warning.
    let single = loopback().source(Source::x_real_ip()).unwrap();
    let logs = logged(
        single,
        request(
            Some("127.0.0.1:1"),
            &[("x-real-ip", "192.0.2.1"), ("x-real-ip", "192.0.2.2")],
        ),
    );
    assert_eq!(levels(&logs), ["WARN"], "{logs}");
    assert!(
        logs.contains("x-real-ip") && !logs.contains("192.0.2.1"),
        "{logs}"
    );

    // Garbage from a trusted proxy: debug, with the reason and the address used.
    let logs = logged(
        loopback(),
        request(Some("127.0.0.1:1"), &[("x-forwarded-for", "nonsense")]),
    );
    assert_eq!(levels(&logs), ["DEBUG"], "{logs}");
    assert!(logs.contains("unparsable element"), "{logs}");

    // A clean resolution: trace only.
    let logs = logged(
        loopback(),
        request(Some("127.0.0.1:1"), &[("x-forwarded-for", "192.0.2.1")]),
    );
    assert_eq!(levels(&logs), ["TRACE"], "{logs}");
    assert!(logs.contains("client_ip=192.0.2.1"), "{logs}");
}
