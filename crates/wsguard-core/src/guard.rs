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
//! | [`record_rejection`] | counting a refusal in `wsguard_rejections_total` (feature `metrics`) |
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

pub use crate::close_mode::{finish_deferred, PendingRejection};
pub use crate::reject::respond;
pub use crate::telemetry::record_rejection;

#[cfg(feature = "close")]
#[cfg_attr(docsrs, doc(cfg(feature = "close")))]
pub use crate::close::{close, close_with, Closing, MAX_DISCARD_BYTES};

#[cfg(feature = "plane")]
#[cfg_attr(docsrs, doc(cfg(feature = "plane")))]
pub use crate::plane::{foreign_connection, ConnectionBinding};
