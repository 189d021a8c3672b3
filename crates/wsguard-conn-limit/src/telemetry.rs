//! Metrics of the connection limit (feature `metrics`); without the feature these do nothing.

#[cfg(feature = "metrics")]
use std::borrow::Cow;

use wsguard_core::Reason;

#[cfg(feature = "metrics")]
fn label(name: &str) -> Cow<'static, str> {
    Cow::Owned(name.to_owned())
}

pub(crate) fn opened(limit: &str) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("wsguard_connections_active", "limit" => label(limit)).increment(1.0);
    #[cfg(not(feature = "metrics"))]
    let _ = limit;
}

pub(crate) fn closed(limit: &str) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("wsguard_connections_active", "limit" => label(limit)).decrement(1.0);
    #[cfg(not(feature = "metrics"))]
    let _ = limit;
}

pub(crate) fn refused(limit: &str, reason: Reason) {
    wsguard_core::guard::record_rejection("conn_limit", reason);
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "wsguard_conn_limit_refusals_total",
        "limit" => label(limit),
        "reason" => reason.as_str()
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = limit;
}

pub(crate) fn unclaimed_upgrade() {
    wsguard_core::guard::record_rejection("conn_limit", Reason::Internal);
    #[cfg(feature = "metrics")]
    metrics::counter!("wsguard_conn_limit_unclaimed_upgrades_total").increment(1);
}
