// The metrics of wsguard-core, in one place (behind the `metrics` feature): their names, help
// texts, units and label sets. Without the feature every function here does nothing.
//
// Every label value comes from a fixed set: a layer name (a `&'static str` chosen by the
// crate that counts), a `Reason::as_str`, a `Mode::as_str`, a close code of the table. Never
// an address, a user, an origin, a path or a token.

#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
use std::time::Duration;

use crate::Reason;

/// `wsguard_rejections_total{layer, reason, mode}`.
#[cfg(feature = "metrics")]
pub(crate) const REJECTIONS_TOTAL: &str = "wsguard_rejections_total";
/// `wsguard_handshakes_accepted_total`.
#[cfg(feature = "metrics")]
pub(crate) const HANDSHAKES_ACCEPTED_TOTAL: &str = "wsguard_handshakes_accepted_total";
/// `wsguard_messages_admitted_total`.
#[cfg(feature = "metrics")]
pub(crate) const MESSAGES_ADMITTED_TOTAL: &str = "wsguard_messages_admitted_total";
/// `wsguard_close_codes_total{code, reason}`.
#[cfg(feature = "metrics")]
pub(crate) const CLOSE_CODES_TOTAL: &str = "wsguard_close_codes_total";
/// `wsguard_connection_duration_seconds`.
#[cfg(feature = "metrics")]
pub(crate) const CONNECTION_DURATION_SECONDS: &str = "wsguard_connection_duration_seconds";
/// `wsguard_store_keys{store}`.
#[cfg(feature = "metrics")]
pub(crate) const STORE_KEYS: &str = "wsguard_store_keys";
/// `wsguard_store_keys_over_limit{store}`.
#[cfg(feature = "metrics")]
pub(crate) const STORE_KEYS_OVER_LIMIT: &str = "wsguard_store_keys_over_limit";

/// Whether a limit refuses what it would refuse ([`Mode::Enforce`]) or only counts and logs
/// it ([`Mode::DryRun`]): the `mode` label of `wsguard_rejections_total`.
///
/// Every limit of the wsguard crates has a `dry_run` builder option; in dry-run mode a
/// request or message that would be refused goes through, and its refusal is logged and
/// counted with `mode="dry_run"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Refusals are enforced (the default): `mode="enforce"`.
    Enforce,
    /// Refusals are only counted and logged: `mode="dry_run"`.
    DryRun,
}

impl Mode {
    /// Both modes, for registering every series.
    pub const ALL: &'static [Self] = &[Self::Enforce, Self::DryRun];

    /// [`Mode::DryRun`] when `dry_run`, else [`Mode::Enforce`].
    pub const fn from_dry_run(dry_run: bool) -> Self {
        if dry_run {
            Self::DryRun
        } else {
            Self::Enforce
        }
    }

    /// Whether this is [`Mode::DryRun`].
    pub const fn is_dry_run(self) -> bool {
        matches!(self, Self::DryRun)
    }

    /// The label value: `enforce` or `dry_run`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry_run",
        }
    }
}

/// Counts one enforced rejection by `layer` (for example `"origin"`) for `reason` in
/// `wsguard_rejections_total{layer, reason, mode="enforce"}` (feature `metrics`).
///
/// `layer` is a fixed name chosen by the guard (the wsguard layers use `client_ip`,
/// `origin`, `jwt_auth`, `conn_limit`, `handshake_rate`, `failure_penalty`, `msg_rate`,
/// `schema`, `plane`); never build it from request data. Without the `metrics`
/// feature this does nothing and costs nothing.
#[inline]
pub fn record_rejection(layer: &'static str, reason: Reason) {
    record_rejection_as(layer, reason, Mode::Enforce);
}

/// Counts one rejection by `layer` for `reason` in `wsguard_rejections_total{layer, reason,
/// mode}`: `mode` says whether it was enforced or only would have been ([`Mode::DryRun`]).
///
/// Without the `metrics` feature this does nothing and costs nothing.
#[inline]
pub fn record_rejection_as(layer: &'static str, reason: Reason, mode: Mode) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        REJECTIONS_TOTAL,
        "layer" => layer,
        "reason" => reason.as_str(),
        "mode" => mode.as_str()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (layer, reason, mode);
}

/// Registers the series `wsguard_rejections_total{layer, reason, mode}` at zero for each of
/// `reasons` and `modes`, so that they appear in an exporter before the first rejection.
/// Each crate's `describe_metrics` calls it with the reasons its layers can refuse with.
///
/// Without the `metrics` feature this does nothing.
pub fn describe_rejections(layer: &'static str, reasons: &[Reason], modes: &[Mode]) {
    #[cfg(feature = "metrics")]
    {
        describe_rejection_counter();
        for &reason in reasons {
            for &mode in modes {
                metrics::counter!(
                    REJECTIONS_TOTAL,
                    "layer" => layer,
                    "reason" => reason.as_str(),
                    "mode" => mode.as_str()
                )
                .increment(0);
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (layer, reasons, modes);
}

#[cfg(feature = "metrics")]
fn describe_rejection_counter() {
    metrics::describe_counter!(
        REJECTIONS_TOTAL,
        metrics::Unit::Count,
        "Handshakes, messages and connections refused, by layer, reason and mode \
         (enforce, or dry_run: counted and logged but let through)"
    );
}

/// The gauges of one key store: `wsguard_store_keys{store}`, the keys it tracks now, and
/// `wsguard_store_keys_over_limit{store}`, its keys at or over their limit now (feature
/// `metrics`). Counts, never the keys.
///
/// `store` is a fixed name for the kind of store (the wsguard stores use `connections`,
/// `key_store` and `penalties`); stores of one kind add up. The two metric keys are built
/// once, by [`new`](Self::new): moving a gauge allocates nothing and builds no key, so a
/// store whose key count moves with every connection can call it each time. Each call goes
/// to the recorder installed at that moment (the process's, or the thread's local one), as
/// the `metrics` macros do. Without the `metrics` feature every method does nothing.
///
/// ```
/// use std::sync::LazyLock;
/// use wsguard_core::guard::StoreGauges;
///
/// static GAUGES: LazyLock<StoreGauges> = LazyLock::new(|| StoreGauges::new("sessions"));
///
/// // At start, after installing the recorder: describe both series, register them at zero.
/// GAUGES.describe(true);
/// // A key is tracked, and is at its limit; later it goes.
/// GAUGES.keys(1);
/// GAUGES.over_limit(1);
/// GAUGES.over_limit(-1);
/// GAUGES.keys(-1);
/// ```
#[derive(Clone, Debug)]
pub struct StoreGauges {
    #[cfg(feature = "metrics")]
    keys: metrics::Key,
    #[cfg(feature = "metrics")]
    over_limit: metrics::Key,
    #[cfg(not(feature = "metrics"))]
    _store: &'static str,
}

/// What the `metrics` macros give a registration as metadata, built once.
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl StoreGauges {
    /// The gauges of the store named `store` (a fixed name: a label value).
    pub fn new(store: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let key = |name: &'static str| {
                metrics::Key::from_parts(
                    name,
                    vec![metrics::Label::from_static_parts("store", store)],
                )
            };
            Self {
                keys: key(STORE_KEYS),
                over_limit: key(STORE_KEYS_OVER_LIMIT),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self { _store: store }
    }

    /// Moves `wsguard_store_keys{store}` by `delta` keys (a `delta` of zero does nothing).
    #[inline]
    pub fn keys(&self, delta: i64) {
        #[cfg(feature = "metrics")]
        move_gauge(&self.keys, delta);
        #[cfg(not(feature = "metrics"))]
        let _ = delta;
    }

    /// Moves `wsguard_store_keys_over_limit{store}` by `delta` keys (a `delta` of zero does
    /// nothing).
    #[inline]
    pub fn over_limit(&self, delta: i64) {
        #[cfg(feature = "metrics")]
        move_gauge(&self.over_limit, delta);
        #[cfg(not(feature = "metrics"))]
        let _ = delta;
    }

    /// Describes `wsguard_store_keys` and `wsguard_store_keys_over_limit` (help text, unit)
    /// and registers this store's `wsguard_store_keys` at zero, and its
    /// `wsguard_store_keys_over_limit` too when the store `counts_over_limit` (moves
    /// [`over_limit`](Self::over_limit)). Call it at start, after installing the recorder.
    pub fn describe(&self, counts_over_limit: bool) {
        #[cfg(feature = "metrics")]
        {
            metrics::describe_gauge!(
                STORE_KEYS,
                metrics::Unit::Count,
                "Keys a store tracks now, by kind of store (a count, never the keys)"
            );
            metrics::describe_gauge!(
                STORE_KEYS_OVER_LIMIT,
                metrics::Unit::Count,
                "Keys of a store at or over their limit now, by kind of store: keys whose \
                 connection count is at its maximum, addresses under a failure penalty (a \
                 count, never the keys)"
            );
            metrics::with_recorder(|r| {
                r.register_gauge(&self.keys, &METADATA).increment(0.0);
                if counts_over_limit {
                    r.register_gauge(&self.over_limit, &METADATA).increment(0.0);
                }
            });
        }
        #[cfg(not(feature = "metrics"))]
        let _ = counts_over_limit;
    }
}

/// Moves the gauge `key` by `delta`, through the recorder installed now.
#[cfg(feature = "metrics")]
#[inline]
fn move_gauge(key: &metrics::Key, delta: i64) {
    if delta != 0 {
        metrics::with_recorder(|r| r.register_gauge(key, &METADATA).increment(delta as f64));
    }
}

/// Describes the metrics of wsguard-core (help text, unit) and registers each of their
/// series at zero: see the table in [`guard`](crate::guard#metrics).
///
/// Call it once at start, after installing the recorder (an exporter such as
/// `metrics-exporter-prometheus`), so that a fresh process shows every series. The
/// `wsguard` facade's `wsguard::metrics::describe()` calls it and every enabled crate's
/// `describe_metrics`. Without the `metrics` feature this does nothing.
pub fn describe_metrics() {
    #[cfg(feature = "metrics")]
    {
        describe_rejection_counter();
        metrics::describe_counter!(
            HANDSHAKES_ACCEPTED_TOTAL,
            metrics::Unit::Count,
            "WebSocket handshakes that every layer accepted and the hand-off upgraded"
        );
        metrics::describe_counter!(
            MESSAGES_ADMITTED_TOTAL,
            metrics::Unit::Count,
            "Messages the message plane admitted to the application"
        );
        metrics::describe_counter!(
            CLOSE_CODES_TOTAL,
            metrics::Unit::Count,
            "Close frames the server sent, by close code and reason"
        );
        metrics::describe_histogram!(
            CONNECTION_DURATION_SECONDS,
            metrics::Unit::Seconds,
            "How long upgraded connections lived, from the upgrade to the end of the handler"
        );
        metrics::counter!(HANDSHAKES_ACCEPTED_TOTAL).increment(0);
        metrics::counter!(MESSAGES_ADMITTED_TOTAL).increment(0);
        for &reason in Reason::ALL {
            metrics::counter!(
                CLOSE_CODES_TOTAL,
                "code" => close_code_label(reason),
                "reason" => reason.as_str()
            )
            .increment(0);
        }
        // Registers the histogram (an exporter may show it only once it has a sample).
        let _ = metrics::histogram!(CONNECTION_DURATION_SECONDS);
        // The plane closes for any reason a `CloseHandle` asks for.
        describe_rejections("plane", Reason::ALL, &[Mode::Enforce]);
    }
}

/// Counts one upgraded handshake.
#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
pub(crate) fn handshake_accepted() {
    #[cfg(feature = "metrics")]
    metrics::counter!(HANDSHAKES_ACCEPTED_TOTAL).increment(1);
}

/// Records how long an upgraded connection lived.
#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
pub(crate) fn connection_ended(lived: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(CONNECTION_DURATION_SECONDS).record(lived.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = lived;
}

/// Counts one admitted message.
#[cfg(feature = "plane")]
pub(crate) fn message_admitted() {
    #[cfg(feature = "metrics")]
    metrics::counter!(MESSAGES_ADMITTED_TOTAL).increment(1);
}

/// Counts one close frame sent for `reason`.
#[cfg(feature = "close")]
pub(crate) fn close_sent(reason: Reason) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        CLOSE_CODES_TOTAL,
        "code" => close_code_label(reason),
        "reason" => reason.as_str()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// The close code of `reason` as a label (1008 for a reason without one, as the close frames
/// send). An exhaustive match, so that a new reason cannot miss its label.
#[cfg(feature = "metrics")]
const fn close_code_label(reason: Reason) -> &'static str {
    match reason {
        Reason::OriginNotAllowed | Reason::BadRequest => "1008",
        Reason::CredentialsMissing | Reason::TokenInvalid => "4401",
        Reason::TokenExpired => "4440",
        Reason::Forbidden => "4403",
        Reason::TooManyConnections | Reason::RateExceeded => "4429",
        Reason::AtCapacity => "1013",
        Reason::MessageTooLarge => "1009",
        Reason::InvalidMessage => "1007",
        Reason::UnsupportedData => "1003",
        Reason::IdleTimeout => "4408",
        Reason::LifetimeExceeded => "4410",
        Reason::HeartbeatTimeout => "4504",
        Reason::ShuttingDown => "1001",
        Reason::ProtocolError => "1002",
        Reason::Internal => "1011",
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use wsguard_test_kit::metrics::Metrics;

    use super::*;

    #[test]
    fn close_code_labels_are_the_close_codes() {
        for &reason in Reason::ALL {
            let code = reason.close_code().unwrap_or(1008);
            assert_eq!(close_code_label(reason), code.to_string(), "{reason:?}");
        }
    }

    #[test]
    fn store_gauges_move_the_series_describe_registers() {
        let metrics = Metrics::new();
        let _local = metrics.set_local();
        let (counting, plain) = (StoreGauges::new("penalties"), StoreGauges::new("key_store"));
        counting.describe(true);
        plain.describe(false);
        for (name, store, registered) in [
            (STORE_KEYS, "penalties", true),
            (STORE_KEYS_OVER_LIMIT, "penalties", true),
            (STORE_KEYS, "key_store", true),
            (STORE_KEYS_OVER_LIMIT, "key_store", false),
        ] {
            let labels = [("store", store)];
            assert_eq!(
                metrics.has_series(name, &labels),
                registered,
                "{name}{labels:?}: {metrics}"
            );
            assert_eq!(metrics.gauge(name, &labels), 0.0, "{metrics}");
        }
        let render = metrics.render();
        for name in [STORE_KEYS, STORE_KEYS_OVER_LIMIT] {
            assert_eq!(
                render.matches(&format!("# TYPE {name} gauge")).count(),
                1,
                "{render}"
            );
            assert_eq!(
                render.matches(&format!("# HELP {name} ")).count(),
                1,
                "{render}"
            );
        }

        counting.keys(3);
        counting.over_limit(1);
        counting.keys(-1);
        counting.over_limit(0);
        plain.keys(2);
        assert_eq!(
            metrics.gauge(STORE_KEYS, &[("store", "penalties")]),
            2.0,
            "{metrics}"
        );
        assert_eq!(
            metrics.gauge(STORE_KEYS_OVER_LIMIT, &[("store", "penalties")]),
            1.0
        );
        assert_eq!(metrics.gauge(STORE_KEYS, &[("store", "key_store")]), 2.0);
        // A clone moves the same series.
        counting.clone().keys(-2);
        assert_eq!(metrics.gauge(STORE_KEYS, &[("store", "penalties")]), 0.0);
    }
}
