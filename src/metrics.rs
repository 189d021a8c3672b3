//! Every wsguard metric, described and present from the start (feature `metrics`).
//!
//! The layers count through the [`metrics`](https://docs.rs/metrics) facade, so any
//! exporter works. [`describe`] gives each metric its help text and unit (a Prometheus
//! exporter then shows `HELP` and `TYPE`) and registers every series with a fixed label set
//! at zero, so that dashboards and alerts see them before the first event. Call it once at
//! start, after installing the recorder and before building the layers (a connection
//! limit registers the series of its limits when it is built).
//!
//! Names follow the Prometheus conventions (`_total` for counters, `_seconds` for
//! durations); label values come only from fixed sets (a layer, a reason, a mode, a limit's
//! name, a store, a close code): never an address, a user, an origin, a path or a token.
//!
//! | metric | type | labels | from |
//! |---|---|---|---|
//! | `wsguard_handshakes_accepted_total` | counter | none | the hand-offs ([`guard`](crate::guard#metrics)) |
//! | `wsguard_rejections_total` | counter | `layer`, `reason`, `mode` (`enforce`, `dry_run`) | every layer ([`guard`](crate::guard#metrics)): refused handshakes (`client_ip`, `origin`, `jwt_auth`, `conn_limit`, `handshake_rate`, `failure_penalty`), refused messages (`msg_rate`, `schema`), closes of the plane (`plane`) |
//! | `wsguard_messages_admitted_total` | counter | none | the message plane ([`guard`](crate::guard#metrics)) |
//! | `wsguard_close_codes_total` | counter | `code`, `reason` | every close the server starts ([`guard`](crate::guard#metrics)) |
//! | `wsguard_connection_duration_seconds` | histogram | none | the hand-offs ([`guard`](crate::guard#metrics)) |
//! | `wsguard_connections_active` | gauge | `limit` | `wsguard-conn-limit` |
//! | `wsguard_conn_limit_refusals_total` | counter | `limit`, `reason`, `mode` | `wsguard-conn-limit` |
//! | `wsguard_conn_limit_unclaimed_upgrades_total` | counter | none | `wsguard-conn-limit` |
//! | `wsguard_store_keys` | gauge | `store` (`connections`, `penalties`, `key_store`) | the in-memory stores |
//! | `wsguard_store_keys_over_limit` | gauge | `store` (`connections`, `penalties`) | the in-memory stores |
//! | `wsguard_redis_fallbacks_total` | counter | `store`, `policy` | `wsguard-redis` (feature `redis`): store errors answered by the failure policy (`open` is a fail-open) |
//! | `wsguard_redis_circuit_transitions_total` | counter | `to` | `wsguard-redis` (feature `redis`) |
//! | `wsguard_serve_closed_total` | counter | `reason` | [`serve`](crate::serve) (feature `serve`) |
//!
//! Each crate's docs list its own in detail. `examples/chat/grafana-dashboard.json` is a
//! Grafana dashboard for these metrics.
//!
//! # Example
//!
//! ```
//! // After installing the recorder (for example metrics-exporter-prometheus's):
//! wsguard::metrics::describe();
//! ```

#[cfg(any(feature = "client-ip", feature = "jwt-auth"))]
use wsguard_core::{guard::Mode, Reason};

/// Describes every metric of the enabled crates and registers each series with a fixed
/// label set at zero (see the [module docs](self)).
///
/// Calling it again does no harm: descriptions are replaced and zero is added to zero.
pub fn describe() {
    wsguard_core::guard::describe_metrics();
    #[cfg(feature = "client-ip")]
    wsguard_core::guard::describe_rejections("client_ip", &[Reason::Internal], &[Mode::Enforce]);
    #[cfg(feature = "origin")]
    wsguard_origin::describe_metrics();
    #[cfg(feature = "jwt-auth")]
    wsguard_core::guard::describe_rejections(
        "jwt_auth",
        &[
            Reason::CredentialsMissing,
            Reason::TokenInvalid,
            Reason::TokenExpired,
            Reason::Forbidden,
            Reason::BadRequest,
            Reason::AtCapacity,
            Reason::Internal,
        ],
        &[Mode::Enforce],
    );
    #[cfg(feature = "conn-limit")]
    wsguard_conn_limit::describe_metrics();
    #[cfg(feature = "msg-rate")]
    wsguard_msg_rate::describe_metrics();
    #[cfg(feature = "schema-validate")]
    wsguard_schema_validate::describe_metrics();
    #[cfg(feature = "redis")]
    wsguard_redis::describe_metrics();
    #[cfg(feature = "serve")]
    crate::serve::describe_metrics();
}
