//! The metrics of the message budgets, in one place (feature `metrics`): the layer and store
//! labels this crate counts under, and what it registers at start; without the feature these
//! do nothing. The table is in the crate docs ([Metrics](crate#metrics)).

use std::sync::LazyLock;

use wsguard_core::{
    guard::{self, Mode, StoreGauges},
    Reason,
};

/// The `layer` label of this crate's refusals in `wsguard_rejections_total`.
pub(crate) const LAYER: &str = "msg_rate";

/// The gauges of [`InMemoryKeyStore`](crate::InMemoryKeyStore): `store="key_store"` in
/// `wsguard_store_keys`.
pub(crate) static KEY_STORE: LazyLock<StoreGauges> =
    LazyLock::new(|| StoreGauges::new("key_store"));

/// Describes the metrics this crate counts in and registers their series at zero:
/// `wsguard_rejections_total{layer="msg_rate"}` for each reason it can refuse with, in both
/// modes, and `wsguard_store_keys{store="key_store"}` (a GCRA store has no
/// `wsguard_store_keys_over_limit`: a key's budget refills with time alone, without an event
/// to count; the refusals counter shows keys over their budget).
///
/// Call it once at start, after installing the recorder (the `wsguard` facade's
/// `wsguard::metrics::describe()` does). Without the `metrics` feature this does nothing.
///
/// ```
/// wsguard_msg_rate::describe_metrics();
/// ```
pub fn describe_metrics() {
    guard::describe_rejections(
        LAYER,
        &[
            Reason::RateExceeded,
            Reason::MessageTooLarge,
            Reason::AtCapacity,
            Reason::BadRequest,
            Reason::Internal,
        ],
        Mode::ALL,
    );
    KEY_STORE.describe(false);
}
