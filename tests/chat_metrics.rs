//! The chat's `/metrics` when fresh, and the Grafana dashboard for it
//! (`examples/chat/grafana-dashboard.json`).
//!
//! Its own test binary: "fresh" means that no other chat of this process has served a
//! socket yet, and the Prometheus recorder is process-wide.
#![cfg(feature = "full")]
#![allow(dead_code, unreachable_pub)]

#[path = "../examples/chat/cli.rs"]
mod cli;
#[path = "../examples/chat/hub.rs"]
mod hub;
#[path = "../examples/chat/server.rs"]
mod server;
#[path = "../examples/chat/socket.rs"]
mod socket;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use clap::Parser;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

const WAIT: Duration = Duration::from_secs(10);

/// Every metric the wsguard crates describe (the table of `wsguard::metrics`), with its
/// Prometheus type, as the chat (feature `full`, no Redis) exports it.
const DESCRIBED: &[(&str, &str)] = &[
    ("wsguard_rejections_total", "counter"),
    ("wsguard_handshakes_accepted_total", "counter"),
    ("wsguard_messages_admitted_total", "counter"),
    ("wsguard_close_codes_total", "counter"),
    ("wsguard_connection_duration_seconds", "histogram"),
    ("wsguard_connections_active", "gauge"),
    ("wsguard_conn_limit_refusals_total", "counter"),
    ("wsguard_conn_limit_unclaimed_upgrades_total", "counter"),
    ("wsguard_store_keys", "gauge"),
    ("wsguard_store_keys_over_limit", "gauge"),
    ("wsguard_serve_closed_total", "counter"),
];

/// Series that a fresh chat must show at zero: one of each labelled family, among them the
/// dry-run ones and the limits' own.
const ZERO_SERIES: &[&str] = &[
    "wsguard_handshakes_accepted_total",
    "wsguard_messages_admitted_total",
    r#"wsguard_rejections_total{layer="origin",reason="origin_not_allowed",mode="enforce"}"#,
    r#"wsguard_rejections_total{layer="origin",reason="origin_not_allowed",mode="dry_run"}"#,
    r#"wsguard_rejections_total{layer="msg_rate",reason="rate_exceeded",mode="dry_run"}"#,
    r#"wsguard_rejections_total{layer="schema",reason="invalid_message",mode="dry_run"}"#,
    r#"wsguard_rejections_total{layer="jwt_auth",reason="token_expired",mode="enforce"}"#,
    r#"wsguard_rejections_total{layer="handshake_rate",reason="rate_exceeded",mode="dry_run"}"#,
    r#"wsguard_close_codes_total{code="4429",reason="rate_exceeded"}"#,
    r#"wsguard_connections_active{limit="principal"}"#,
    r#"wsguard_conn_limit_refusals_total{limit="principal",reason="too_many_connections",mode="dry_run"}"#,
    r#"wsguard_store_keys{store="connections"}"#,
    r#"wsguard_store_keys_over_limit{store="penalties"}"#,
    r#"wsguard_serve_closed_total{reason="header_read_timeout"}"#,
];

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    timeout(WAIT, tcp.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// The `# HELP` and `# TYPE` lines of a Prometheus text exposition: name -> help, name -> type.
fn described(text: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut help, mut kind) = (BTreeMap::new(), BTreeMap::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_owned(), text.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
            kind.insert(name.to_owned(), t.to_owned());
        }
    }
    (help, kind)
}

/// The value of the series `series` (name and labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[tokio::test]
async fn a_fresh_chat_shows_every_metric_described_and_every_series_at_zero() {
    let args = cli::Args::try_parse_from([
        "chat",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        "a test secret that is 32 bytes long!",
    ])
    .unwrap();
    let running = match server::start(&args).await {
        Ok(running) => running,
        Err(server::Fatal(message)) => panic!("chat did not start: {message}"),
    };
    let res = http_get(running.addr, "/metrics").await;
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let (help, kind) = described(&res);
    for &(name, expected) in DESCRIBED {
        assert!(
            help.get(name).is_some_and(|h| !h.trim().is_empty()),
            "no HELP for {name}:\n{res}"
        );
        assert_eq!(
            kind.get(name).map(String::as_str),
            Some(expected),
            "TYPE of {name}:\n{res}"
        );
    }
    // Nothing of wsguard's goes out undescribed: the list above is what the chat must
    // show; a build with more features (the workspace's `--all-features` turns on
    // wsguard-redis's metrics) may show more, each with its HELP and TYPE.
    for name in kind.keys().filter(|n| n.starts_with("wsguard_")) {
        assert!(
            help.get(name).is_some_and(|h| !h.trim().is_empty()),
            "{name} is exported without HELP:\n{res}"
        );
    }
    for series in ZERO_SERIES {
        assert_eq!(value(&res, series), Some(0.0), "{series}:\n{res}");
    }
    // No label value comes from a request: no address, user, origin or token.
    for line in res.lines().filter(|l| l.starts_with("wsguard_")) {
        assert!(!line.contains("127.0.0.1"), "{line}");
    }
    running.stop(WAIT).await.ok();
}

/// The metric names a PromQL expression reads: identifiers that start with `wsguard_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("wsguard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// A Prometheus histogram's series names: `_bucket`, `_sum` and `_count` of a described name.
fn exported(name: &str) -> bool {
    DESCRIBED.iter().any(|&(d, t)| {
        d == name
            || (t == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(d)))
    })
}

#[test]
fn the_grafana_dashboard_is_a_dashboard_of_described_metrics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/chat/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Grafana's own schema of its dashboard JSON model (tests/fixtures/grafana).
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/grafana/dashboard.jsonschema.json")).unwrap();
    let validator = jsonschema::draft7::new(&schema).expect("Grafana's schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&dashboard)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the dashboard breaks Grafana's schema:\n{}",
        errors.join("\n")
    );
    // And what the schema leaves optional but an importable, useful dashboard needs: a
    // title, a schema version, panels with a type, a title, a grid position and targets.
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    assert!(dashboard["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    // The data source is a variable, so that the dashboard imports into any Grafana.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a Prometheus data source variable");
    let variable = format!("${{{}}}", datasource["name"].as_str().unwrap());
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "two panels with one id"
        );
        let kind = panel["type"].as_str().unwrap();
        assert!(
            [
                "timeseries",
                "stat",
                "gauge",
                "bargauge",
                "table",
                "heatmap",
                "row"
            ]
            .contains(&kind),
            "{title}: unknown panel type {kind}"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if kind == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], variable.as_str(), "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            assert!(target["refId"].as_str().is_some(), "{title}: refId");
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} reads no wsguard metric");
            for name in names {
                assert!(exported(&name), "{title}: {name} is not a described metric");
                used.insert(name);
            }
        }
    }
    // Every described metric has a panel.
    for &(name, _) in DESCRIBED {
        assert!(
            used.iter()
                .any(|u| u == name || u.starts_with(&format!("{name}_"))),
            "no panel shows {name}"
        );
    }
}
