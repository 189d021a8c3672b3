//! The metrics of message validation, in one place (feature `metrics`): the layer label it
//! counts under and what it registers at start; without the feature these do nothing. The
//! table is in the crate docs ([Metrics](crate#metrics)).

use wsguard_core::{guard, guard::Mode, Reason};

/// The `layer` label of this crate's refusals in `wsguard_rejections_total`.
pub(crate) const LAYER: &str = "schema";

/// Describes the metric this crate counts in and registers its series at zero:
/// `wsguard_rejections_total{layer="schema"}` for each reason it can refuse with
/// (`invalid_message`, `message_too_large`, `unsupported_data`, `forbidden`, `internal`), in
/// both modes (`enforce`, `dry_run`).
///
/// Call it once at start, after installing the recorder (the `wsguard` facade's
/// `wsguard::metrics::describe()` does). Without the `metrics` feature this does nothing.
///
/// ```
/// wsguard_schema_validate::describe_metrics();
/// ```
pub fn describe_metrics() {
    guard::describe_rejections(
        LAYER,
        &[
            Reason::InvalidMessage,
            Reason::MessageTooLarge,
            Reason::UnsupportedData,
            Reason::Forbidden,
            Reason::Internal,
        ],
        Mode::ALL,
    );
}
