//! Metrics of the Redis stores (feature `metrics`); without the feature these do nothing.
//! Every label is fixed: no key, user or address ever becomes a label.

/// A request that Redis did not answer, answered by the store's failure policy (`open` or
/// `closed`).
pub(crate) fn fallback(store: &'static str, policy: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "wsguard_redis_fallbacks_total",
        "store" => store,
        "policy" => policy
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (store, policy);
}

/// The circuit breaker changed state (`open` or `closed`).
pub(crate) fn circuit(to: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("wsguard_redis_circuit_transitions_total", "to" => to).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = to;
}
