//! Building blocks for writing a guard of your own: what the wsguard crates use between
//! themselves, gathered in one place.
//!
//! An application that only stacks the wsguard layers never needs this module. A crate that
//! adds a protection (a handshake layer or a message-plane service) uses it to answer,
//! count and defer exactly as the wsguard layers do, so that its refusals look the same to
//! clients, metrics and the hand-offs.
//!
//! | item | for |
//! |---|---|
//! | [`respond`] | a handshake refusal through the layer's [`OnRejection`](crate::OnRejection) policy |
//! | [`record_rejection`], [`record_rejection_as`], [`Mode`] | counting a refusal (enforced or dry-run) in `wsguard_rejections_total` (feature `metrics`) |
//! | [`StoreGauges`] | the gauges of a key store (feature `metrics`) |
//! | [`describe_metrics`], [`describe_rejections`], [`StoreGauges::describe`] | describing the metrics and registering their series at zero (feature `metrics`) |
//! | [`PendingRejection`], [`finish_deferred`] | close mode: a refusal decided on the handshake, delivered as a close frame after the upgrade |
//! | [`ConnectionBinding`], [`foreign_connection`] | a plane service built for one connection that refuses another's messages (feature `plane`) |
//! | [`Closing`], [`close`], [`close_with`], [`MAX_DISCARD_BYTES`] | the closing handshake of a socket adapter of your own (feature `close`) |
//!
//! Two methods belong here too but stay on their types: [`ConnectionScope::claim`] and
//! [`is_claimed`](crate::ConnectionScope::is_claimed), which a hand-off uses to say that it
//! took a connection's scope over, and [`PendingRejection::mark_delivered`], which it calls
//! once the close frame of a deferred rejection is on its way.
//!
//! [`ConnectionScope::claim`]: crate::ConnectionScope::claim
//!
//! # Example
//!
//! A handshake layer's refusal, answered and counted the way every wsguard layer does it:
//!
//! ```
//! use http::StatusCode;
//! use wsguard_core::{guard, HttpRejection, Reason, Rejection};
//!
//! fn refuse(policy: &HttpRejection) -> http::Response<String> {
//!     guard::record_rejection("my_guard", Reason::Forbidden);
//!     guard::respond(policy, Rejection::new(Reason::Forbidden))
//! }
//!
//! let res = refuse(&HttpRejection);
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(
//!     res.extensions().get::<Rejection>().map(Rejection::reason),
//!     Some(Reason::Forbidden),
//! );
//! ```
//!
//! # Metrics
//!
//! With the `metrics` feature, through the [`metrics`](https://docs.rs/metrics) facade.
//! [`describe_metrics`] describes each one (help text and unit, so that a Prometheus exporter
//! shows `HELP` and `TYPE`) and registers every series at zero. Label values come from fixed
//! sets only: never an address, a user, an origin, a path or a token.
//!
//! | metric | type | unit | labels | counts |
//! |---|---|---|---|---|
//! | `wsguard_rejections_total` | counter | count | `layer`, `reason` ([`Reason::as_str`](crate::Reason::as_str)), `mode` ([`Mode::as_str`]: `enforce` or `dry_run`) | refusals of every layer: handshakes (layers `client_ip`, `origin`, `jwt_auth`, `conn_limit`, `handshake_rate`, `failure_penalty`), messages (`msg_rate`, `schema`) and closes of the plane (`plane`) |
//! | `wsguard_handshakes_accepted_total` | counter | count | none | handshakes upgraded by a hand-off (every layer let them through) |
//! | `wsguard_messages_admitted_total` | counter | count | none | messages a `GuardedSocket` admitted to the application |
//! | `wsguard_close_codes_total` | counter | count | `code` (the close code, `1008` when the reason has none), `reason` | close frames the server sent (the plane's closes, the hygiene's, close-mode refusals) |
//! | `wsguard_connection_duration_seconds` | histogram | seconds | none | the life of an upgraded connection, from the upgrade to the end of the handler |
//! | `wsguard_store_keys` | gauge | count | `store` | keys a store tracks now ([`StoreGauges::keys`]; registered by [`StoreGauges::describe`]) |
//! | `wsguard_store_keys_over_limit` | gauge | count | `store` | keys of a store at or over their limit now ([`StoreGauges::over_limit`]) |
//!
//! The other crates add their own (connections active, store keys, the Redis fallbacks),
//! each listed in its crate docs; the `wsguard` facade's `wsguard::metrics::describe()`
//! describes them all.

pub use crate::close_mode::{finish_deferred, PendingRejection};
pub use crate::reject::respond;
pub use crate::telemetry::{
    describe_metrics, describe_rejections, record_rejection, record_rejection_as, Mode, StoreGauges,
};

#[cfg(feature = "close")]
#[cfg_attr(docsrs, doc(cfg(feature = "close")))]
pub use crate::close::{close, close_with, Closing, MAX_DISCARD_BYTES};

#[cfg(feature = "plane")]
#[cfg_attr(docsrs, doc(cfg(feature = "plane")))]
pub use crate::plane::{foreign_connection, ConnectionBinding};
