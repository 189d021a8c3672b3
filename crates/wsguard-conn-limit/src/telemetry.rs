//! The metrics of the connection limits, in one place (feature `metrics`): names, help texts,
//! units and label sets; without the feature these do nothing. The table is in the crate
//! docs ([Metrics](crate#metrics)).
//!
//! Labels come from fixed sets only: a limit's name (fixed when the layer is built), a
//! [`Reason::as_str`], a [`Mode::as_str`], a store name. Never a key, an address or a user. The store gauges are wsguard-core's
//! (`wsguard_store_keys`, `wsguard_store_keys_over_limit`).

#[cfg(feature = "metrics")]
use std::borrow::Cow;

use wsguard_core::{guard::Mode, Reason};

/// `wsguard_connections_active{limit}`.
#[cfg(feature = "metrics")]
const CONNECTIONS_ACTIVE: &str = "wsguard_connections_active";
/// `wsguard_conn_limit_refusals_total{limit, reason, mode}`.
#[cfg(feature = "metrics")]
const REFUSALS_TOTAL: &str = "wsguard_conn_limit_refusals_total";
/// `wsguard_conn_limit_unclaimed_upgrades_total`.
#[cfg(feature = "metrics")]
const UNCLAIMED_UPGRADES_TOTAL: &str = "wsguard_conn_limit_unclaimed_upgrades_total";

/// The `store` label of the in-memory connection store.
pub(crate) const CONNECTIONS_STORE: &str = "connections";
/// The `store` label of the failure penalty's records.
pub(crate) const PENALTIES_STORE: &str = "penalties";

/// The layer labels of this crate's refusals in `wsguard_rejections_total`.
pub(crate) const CONN_LIMIT: &str = "conn_limit";
pub(crate) const HANDSHAKE_RATE: &str = "handshake_rate";
pub(crate) const PENALTY: &str = "failure_penalty";

#[cfg(feature = "metrics")]
fn label(name: &str) -> Cow<'static, str> {
    Cow::Owned(name.to_owned())
}

/// Describes every metric of this crate (help text, unit), and registers at zero the series
/// whose labels are known without a layer: `wsguard_rejections_total` for the layers
/// `conn_limit`, `handshake_rate` and `failure_penalty` with each reason they can refuse
/// with, in both modes; `wsguard_conn_limit_unclaimed_upgrades_total`; `wsguard_store_keys`
/// and `wsguard_store_keys_over_limit` for the stores `connections` and `penalties`.
///
/// The series labelled by a limit's name (`wsguard_connections_active`,
/// `wsguard_conn_limit_refusals_total`) are registered at zero when a
/// [`ConnLimitLayer`](crate::ConnLimitLayer) is built: install the recorder before building
/// the layers. Call this once at start, after installing the recorder (the `wsguard`
/// facade's `wsguard::metrics::describe()` does). Without the `metrics` feature this does
/// nothing.
///
/// ```
/// wsguard_conn_limit::describe_metrics();
/// ```
pub fn describe_metrics() {
    use wsguard_core::guard::describe_rejections;
    describe_rejections(
        CONN_LIMIT,
        &[
            Reason::TooManyConnections,
            Reason::AtCapacity,
            Reason::BadRequest,
            Reason::Internal,
        ],
        Mode::ALL,
    );
    // Both modes: each layer has a dry run. The handshake rate answers a store that cannot
    // answer with `at_capacity`.
    describe_rejections(
        HANDSHAKE_RATE,
        &[
            Reason::RateExceeded,
            Reason::AtCapacity,
            Reason::BadRequest,
            Reason::Internal,
        ],
        Mode::ALL,
    );
    describe_rejections(
        PENALTY,
        &[Reason::RateExceeded, Reason::BadRequest, Reason::Internal],
        Mode::ALL,
    );
    #[cfg(feature = "metrics")]
    {
        metrics::describe_gauge!(
            CONNECTIONS_ACTIVE,
            metrics::Unit::Count,
            "Connections holding a slot of a connection limit now, by limit"
        );
        metrics::describe_counter!(
            REFUSALS_TOTAL,
            metrics::Unit::Count,
            "Connections a connection limit refused (mode enforce) or would have refused \
             (mode dry_run), by limit and reason"
        );
        metrics::describe_counter!(
            UNCLAIMED_UPGRADES_TOTAL,
            metrics::Unit::Count,
            "Upgrades answered without a wsguard hand-off, refused with 500 (a bug in the \
             application's wiring)"
        );
        metrics::counter!(UNCLAIMED_UPGRADES_TOTAL).increment(0);
    }
    wsguard_core::guard::describe_store(CONNECTIONS_STORE, true);
    wsguard_core::guard::describe_store(PENALTIES_STORE, true);
}

/// Registers the series of one limit at zero (when a layer is built).
pub(crate) fn register_limit(limit: &str, reasons: &[Reason]) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(CONNECTIONS_ACTIVE, "limit" => label(limit)).increment(0.0);
        for &reason in reasons {
            for &mode in Mode::ALL {
                metrics::counter!(
                    REFUSALS_TOTAL,
                    "limit" => label(limit),
                    "reason" => reason.as_str(),
                    "mode" => mode.as_str()
                )
                .increment(0);
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (limit, reasons);
}

pub(crate) fn opened(limit: &str) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(CONNECTIONS_ACTIVE, "limit" => label(limit)).increment(1.0);
    #[cfg(not(feature = "metrics"))]
    let _ = limit;
}

pub(crate) fn closed(limit: &str) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(CONNECTIONS_ACTIVE, "limit" => label(limit)).decrement(1.0);
    #[cfg(not(feature = "metrics"))]
    let _ = limit;
}

/// Counts a connection refused (or, in dry-run mode, let through) by `limit`.
pub(crate) fn refused(limit: &str, reason: Reason, mode: Mode) {
    wsguard_core::guard::record_rejection_as(CONN_LIMIT, reason, mode);
    #[cfg(feature = "metrics")]
    metrics::counter!(
        REFUSALS_TOTAL,
        "limit" => label(limit),
        "reason" => reason.as_str(),
        "mode" => mode.as_str()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = limit;
}

pub(crate) fn unclaimed_upgrade() {
    wsguard_core::guard::record_rejection(CONN_LIMIT, Reason::Internal);
    #[cfg(feature = "metrics")]
    metrics::counter!(UNCLAIMED_UPGRADES_TOTAL).increment(1);
}

/// `store` tracks `delta` more keys (or fewer).
pub(crate) fn store_keys(store: &'static str, delta: i64) {
    wsguard_core::guard::record_store_keys(store, delta);
}

/// `store` has `delta` more keys at or over their limit (or fewer).
pub(crate) fn keys_over_limit(store: &'static str, delta: i64) {
    wsguard_core::guard::record_keys_over_limit(store, delta);
}
