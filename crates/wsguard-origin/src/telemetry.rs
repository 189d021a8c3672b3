//! The metrics of the Origin check, in one place (feature `metrics`): the layer label it
//! counts under and what it registers at start; without the feature these do nothing. The
//! table is in the crate docs ([Metrics](crate#metrics)).

use wsguard_core::{guard, guard::Mode, Reason};

/// The `layer` label of this crate's refusals in `wsguard_rejections_total`.
pub(crate) const LAYER: &str = "origin";

/// Describes the metric this crate counts in and registers its series at zero:
/// `wsguard_rejections_total{layer="origin", reason="origin_not_allowed"}` in both modes
/// (`enforce`, `dry_run`).
///
/// Call it once at start, after installing the recorder (the `wsguard` facade's
/// `wsguard::metrics::describe()` does). Without the `metrics` feature this does nothing.
///
/// ```
/// wsguard_origin::describe_metrics();
/// ```
pub fn describe_metrics() {
    guard::describe_rejections(LAYER, &[Reason::OriginNotAllowed], Mode::ALL);
}

/// Counts one refusal (or, in dry-run mode, one origin let through that would have been
/// refused).
pub(crate) fn refused(mode: Mode) {
    guard::record_rejection_as(LAYER, Reason::OriginNotAllowed, mode);
}
