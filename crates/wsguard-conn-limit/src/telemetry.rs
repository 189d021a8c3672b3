//! The metrics of the connection limits, in one place (feature `metrics`): names, help texts,
//! units and label sets; without the feature these do nothing. The table is in the crate
//! docs ([Metrics](crate#metrics)).
//!
//! Labels come from fixed sets only: a limit's name (fixed when the layer is built), a
//! [`Reason::as_str`], a [`Mode::as_str`], a store name. Never a key, an address or a user. The store gauges are wsguard-core's
//! (`wsguard_store_keys`, `wsguard_store_keys_over_limit`).
//!
//! The calls made for every connection (a limit's gauge up and down, a store's key counts)
//! use metric keys built once, a limit's when the layer is built and a store's as statics,
//! so that a connection allocates nothing and hashes no key for its metrics: with no
//! recorder installed such a call costs a thread-local read and a call that does nothing.

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

/// wsguard-core's `wsguard_store_keys{store}` (its `record_store_keys`), spelled here so that
/// this crate's keys can be static; `describe_store` registers the same series, which a
/// test checks.
#[cfg(feature = "metrics")]
const STORE_KEYS: &str = "wsguard_store_keys";
/// wsguard-core's `wsguard_store_keys_over_limit{store}` (its `record_keys_over_limit`).
#[cfg(feature = "metrics")]
const STORE_KEYS_OVER_LIMIT: &str = "wsguard_store_keys_over_limit";

/// What the `metrics` macros give a registration as metadata, built once.
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// A store of this crate, with the metric keys of its gauges (static: no allocation and no
/// hashing per call).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Store {
    /// The in-memory connection store: `store="connections"`.
    Connections,
    /// The failure penalty's records: `store="penalties"`.
    Penalties,
}

/// The `store` label of the in-memory connection store.
pub(crate) const CONNECTIONS_STORE: Store = Store::Connections;
/// The `store` label of the failure penalty's records.
pub(crate) const PENALTIES_STORE: Store = Store::Penalties;

#[cfg(feature = "metrics")]
mod store_keys {
    use metrics::{Key, Label};

    static CONNECTIONS: [Label; 1] = [Label::from_static_parts("store", "connections")];
    static PENALTIES: [Label; 1] = [Label::from_static_parts("store", "penalties")];
    pub(super) static KEYS_CONNECTIONS: Key =
        Key::from_static_parts(super::STORE_KEYS, &CONNECTIONS);
    pub(super) static KEYS_PENALTIES: Key = Key::from_static_parts(super::STORE_KEYS, &PENALTIES);
    pub(super) static OVER_CONNECTIONS: Key =
        Key::from_static_parts(super::STORE_KEYS_OVER_LIMIT, &CONNECTIONS);
    pub(super) static OVER_PENALTIES: Key =
        Key::from_static_parts(super::STORE_KEYS_OVER_LIMIT, &PENALTIES);
}

impl Store {
    /// The `store` label.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Penalties => "penalties",
        }
    }

    #[cfg(feature = "metrics")]
    const fn keys(self) -> &'static metrics::Key {
        match self {
            Self::Connections => &store_keys::KEYS_CONNECTIONS,
            Self::Penalties => &store_keys::KEYS_PENALTIES,
        }
    }

    #[cfg(feature = "metrics")]
    const fn over_limit(self) -> &'static metrics::Key {
        match self {
            Self::Connections => &store_keys::OVER_CONNECTIONS,
            Self::Penalties => &store_keys::OVER_PENALTIES,
        }
    }
}

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

/// One more connection holds a slot of each limit of `gauges` (one look-up of the recorder
/// for all of them).
pub(crate) fn opened<'a>(gauges: impl Iterator<Item = &'a ActiveGauge>) {
    #[cfg(feature = "metrics")]
    metrics::with_recorder(|r| {
        for gauge in gauges {
            r.register_gauge(&gauge.key, &METADATA).increment(1.0);
        }
    });
    #[cfg(not(feature = "metrics"))]
    let _ = gauges;
}

/// One connection fewer holds a slot of each limit of `gauges`.
pub(crate) fn closed<'a>(gauges: impl Iterator<Item = &'a ActiveGauge>) {
    #[cfg(feature = "metrics")]
    metrics::with_recorder(|r| {
        for gauge in gauges {
            r.register_gauge(&gauge.key, &METADATA).decrement(1.0);
        }
    });
    #[cfg(not(feature = "metrics"))]
    let _ = gauges;
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
    wsguard_core::guard::describe_store(CONNECTIONS_STORE.name(), true);
    wsguard_core::guard::describe_store(PENALTIES_STORE.name(), true);
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

/// `store` tracks `delta` more keys (or fewer): what wsguard-core's `record_store_keys`
/// does, with a static key.
#[inline]
pub(crate) fn store_keys(store: Store, delta: i64) {
    #[cfg(feature = "metrics")]
    if delta != 0 {
        metrics::with_recorder(|r| {
            r.register_gauge(store.keys(), &METADATA)
                .increment(delta as f64);
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (store, delta);
}

/// `store` has `delta` more keys at or over their limit (or fewer): what wsguard-core's
/// `record_keys_over_limit` does, with a static key.
#[inline]
pub(crate) fn keys_over_limit(store: Store, delta: i64) {
    #[cfg(feature = "metrics")]
    if delta != 0 {
        metrics::with_recorder(|r| {
            r.register_gauge(store.over_limit(), &METADATA)
                .increment(delta as f64);
        });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (store, delta);
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        num::NonZeroU32,
    };

    use metrics_exporter_prometheus::PrometheusBuilder;
    use wsguard_core::Key;

    use crate::{InMemoryConnectionStore, Slot};

    /// The static keys name the series that wsguard-core's `describe_store` registers, and
    /// the gauges move: a typo would make a second series and leave these at zero.
    #[test]
    fn the_static_store_keys_are_wsguard_cores_series() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            super::describe_metrics();
            let store = InMemoryConnectionStore::new();
            let key = Key::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
            let slot = [Slot::new(0, key, NonZeroU32::MIN)];
            let lease = store.try_acquire(&slot).unwrap();
            let text = handle.render();
            for series in [
                r#"wsguard_store_keys{store="connections"} 1"#,
                r#"wsguard_store_keys_over_limit{store="connections"} 1"#,
                r#"wsguard_store_keys{store="penalties"} 0"#,
            ] {
                assert!(text.lines().any(|l| l == series), "{series}: {text}");
            }
            drop(lease);
            let text = handle.render();
            assert!(
                text.lines()
                    .any(|l| l == r#"wsguard_store_keys{store="connections"} 0"#),
                "{text}"
            );
            assert_eq!(
                text.matches("# TYPE wsguard_store_keys gauge").count(),
                1,
                "{text}"
            );
        });
    }
}
