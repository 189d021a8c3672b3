//! The metrics of the connection limits, in one place (feature `metrics`): names, help texts,
//! units and label sets; without the feature these do nothing. The table is in the crate
//! docs ([Metrics](crate#metrics)).
//!
//! Labels come from fixed sets only: a limit's name (fixed when the layer is built), a
//! [`Reason::as_str`], a [`Mode::as_str`], a store name. Never a key, an address or a user.
//! The store gauges (`wsguard_store_keys`, `wsguard_store_keys_over_limit`) are
//! wsguard-core's [`StoreGauges`].
//!
//! The calls made for every connection (a limit's gauge up and down, a store's key counts)
//! use metric keys built once, a limit's when the layer is built and a store's at its first
//! use, so that a connection allocates nothing and hashes no key for its metrics: with no
//! recorder installed such a call costs a thread-local read and a call that does nothing.

use std::{borrow::Cow, sync::LazyLock};

use wsguard_core::{
    guard::{Mode, StoreGauges},
    Reason,
};

/// `wsguard_connections_active{limit}`.
#[cfg(feature = "metrics")]
const CONNECTIONS_ACTIVE: &str = "wsguard_connections_active";
/// `wsguard_conn_limit_refusals_total{limit, reason, mode}`.
#[cfg(feature = "metrics")]
const REFUSALS_TOTAL: &str = "wsguard_conn_limit_refusals_total";
/// `wsguard_conn_limit_unclaimed_upgrades_total`.
#[cfg(feature = "metrics")]
const UNCLAIMED_UPGRADES_TOTAL: &str = "wsguard_conn_limit_unclaimed_upgrades_total";

/// What the `metrics` macros give a registration as metadata, built once.
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The gauges of the in-memory connection store: `store="connections"`.
pub(crate) static CONNECTIONS_STORE: LazyLock<StoreGauges> =
    LazyLock::new(|| StoreGauges::new("connections"));
/// The gauges of the failure penalty's records: `store="penalties"`.
pub(crate) static PENALTIES_STORE: LazyLock<StoreGauges> =
    LazyLock::new(|| StoreGauges::new("penalties"));

/// The gauge `wsguard_connections_active{limit}` of one limit, its key built once when the
/// layer is built.
pub(crate) struct ActiveGauge {
    #[cfg(feature = "metrics")]
    key: metrics::Key,
}

impl ActiveGauge {
    pub(crate) fn new(limit: Cow<'static, str>) -> Self {
        #[cfg(feature = "metrics")]
        {
            let labels = vec![metrics::Label::new("limit", limit)];
            Self {
                key: metrics::Key::from_parts(CONNECTIONS_ACTIVE, labels),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = limit;
            Self {}
        }
    }
}

/// `delta` connections more (`1.0`: one opened) or fewer (`-1.0`: one closed) hold a slot
/// of each limit of `gauges` (one look-up of the recorder for all of them).
pub(crate) fn connections_moved<'a>(gauges: impl Iterator<Item = &'a ActiveGauge>, delta: f64) {
    #[cfg(feature = "metrics")]
    metrics::with_recorder(|r| {
        for gauge in gauges {
            r.register_gauge(&gauge.key, &METADATA).increment(delta);
        }
    });
    #[cfg(not(feature = "metrics"))]
    let _ = (gauges, delta);
}

/// The layer labels of this crate's refusals in `wsguard_rejections_total`.
pub(crate) const CONN_LIMIT: &str = "conn_limit";
pub(crate) const HANDSHAKE_RATE: &str = "handshake_rate";
pub(crate) const PENALTY: &str = "failure_penalty";

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
    CONNECTIONS_STORE.describe(true);
    PENALTIES_STORE.describe(true);
}

/// Registers the series of one limit at zero (when a layer is built).
pub(crate) fn register_limit(limit: Cow<'static, str>, reasons: &[Reason]) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!(CONNECTIONS_ACTIVE, "limit" => limit.clone()).increment(0.0);
        for &reason in reasons {
            for &mode in Mode::ALL {
                metrics::counter!(
                    REFUSALS_TOTAL,
                    "limit" => limit.clone(),
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

/// Counts a connection refused (or, in dry-run mode, let through) by `limit`.
pub(crate) fn refused(limit: Cow<'static, str>, reason: Reason, mode: Mode) {
    wsguard_core::guard::record_rejection_as(CONN_LIMIT, reason, mode);
    #[cfg(feature = "metrics")]
    metrics::counter!(
        REFUSALS_TOTAL,
        "limit" => limit,
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
