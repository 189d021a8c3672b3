//! The metrics of the Redis stores, in one place (feature `metrics`): names, help texts,
//! units and label sets; without the feature these do nothing. Every label is fixed: no key,
//! user or address ever becomes a label.
//!
//! | metric | type | unit | labels | counts |
//! |---|---|---|---|---|
//! | `wsguard_redis_fallbacks_total` | counter | count | `store` (`conn_limit`, `msg_rate`, `revocation`), `policy` (`open`: fail-open to the local store; `closed`: refused) | requests Redis did not answer in time (a store error or an open circuit), answered by the store's failure policy |
//! | `wsguard_redis_circuit_transitions_total` | counter | count | `to` (`open`, `closed`) | changes of the circuit breaker's state |

/// `wsguard_redis_fallbacks_total{store, policy}`.
#[cfg(feature = "metrics")]
const FALLBACKS_TOTAL: &str = "wsguard_redis_fallbacks_total";
/// `wsguard_redis_circuit_transitions_total{to}`.
#[cfg(feature = "metrics")]
const CIRCUIT_TRANSITIONS_TOTAL: &str = "wsguard_redis_circuit_transitions_total";

/// The `store` labels.
#[cfg(feature = "metrics")]
const STORES: [&str; 3] = ["conn_limit", "msg_rate", "revocation"];
/// The `policy` and `to` labels.
#[cfg(feature = "metrics")]
const STATES: [&str; 2] = ["open", "closed"];

/// Describes the metrics of the Redis stores (help text, unit) and registers every series at
/// zero: `wsguard_redis_fallbacks_total{store, policy}` for each store (`conn_limit`,
/// `msg_rate`, `revocation`) and policy (`open`, `closed`), and
/// `wsguard_redis_circuit_transitions_total{to}` for `open` and `closed`.
///
/// Call it once at start, after installing the recorder (the `wsguard` facade's
/// `wsguard::metrics::describe()` does, with its `redis` feature). Without the `metrics`
/// feature this does nothing.
///
/// ```
/// wsguard_redis::describe_metrics();
/// ```
pub fn describe_metrics() {
    #[cfg(feature = "metrics")]
    {
        metrics::describe_counter!(
            FALLBACKS_TOTAL,
            metrics::Unit::Count,
            "Requests Redis did not answer in time (store error, timeout or open circuit), \
             answered by the store's failure policy: open (fail-open to the local store) or \
             closed (refused)"
        );
        metrics::describe_counter!(
            CIRCUIT_TRANSITIONS_TOTAL,
            metrics::Unit::Count,
            "Changes of the Redis circuit breaker's state, by the state it entered"
        );
        for store in STORES {
            for policy in STATES {
                metrics::counter!(FALLBACKS_TOTAL, "store" => store, "policy" => policy)
                    .increment(0);
            }
        }
        for to in STATES {
            metrics::counter!(CIRCUIT_TRANSITIONS_TOTAL, "to" => to).increment(0);
        }
    }
}

/// A request that Redis did not answer, answered by the store's failure policy (`open` or
/// `closed`).
pub(crate) fn fallback(store: &'static str, policy: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(FALLBACKS_TOTAL, "store" => store, "policy" => policy).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (store, policy);
}

/// The circuit breaker changed state (`open` or `closed`).
pub(crate) fn circuit(to: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(CIRCUIT_TRANSITIONS_TOTAL, "to" => to).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = to;
}
