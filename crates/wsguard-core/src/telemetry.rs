// Metrics shared by the wsguard layers (behind the `metrics` feature).

use crate::Reason;

/// Counts one rejection by `layer` (for example `"origin"`) for `reason`.
///
/// Metrics shared by the wsguard layers (behind the `metrics` feature).
///
/// | metric | type | labels |
/// |---|---|---|
/// | `wsguard_rejections_total` | counter | `layer`, `reason` ([`Reason::as_str`]) |
///
/// Without the `metrics` feature these functions do nothing and cost nothing.
#[inline]
pub fn record_rejection(layer: &'static str, reason: Reason) {
    #[cfg(feature = "metrics")]
    metrics::counter!("wsguard_rejections_total", "layer" => layer, "reason" => reason.as_str())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (layer, reason);
}
