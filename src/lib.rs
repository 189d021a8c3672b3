//! wsguard: tower middleware that guards WebSocket endpoints.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use wsguard_core as core;
