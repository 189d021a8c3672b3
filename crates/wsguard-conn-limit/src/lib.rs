//! Connection limits that hold for a WebSocket's whole life, and connection hygiene.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod future;
pub mod hygiene;
mod layer;
mod service;
pub mod store;
mod telemetry;

pub use future::ResponseFuture;
pub use hygiene::{Hygiene, HygieneSocket, Shutdown};
pub use layer::{
    ConfigError, ConnLimitBuilder, ConnLimitLayer, Limit, DEFAULT_RETRY_AFTER, MAX_LIMITS,
};
pub use service::ConnLimit;
pub use store::{ConnectionStore, InMemoryLease, InMemoryStore, Refusal, Slot};
