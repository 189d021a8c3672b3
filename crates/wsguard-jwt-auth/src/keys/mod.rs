//! Verification keys, by concept: a [`VerifyingKey`] bound to one algorithm (`key.rs`), a
//! [`KeySet`] chosen by `kid` (`set.rs`), a [`KeySetHandle`] swapped at run time
//! (`handle.rs`), a JWKS cache (`jwks.rs`, feature `jwks`), and the one trait they all
//! implement as a source of keys, with the public [`KeySource`] a layer is given
//! (`source.rs`).
//!
//! Imports run one way: `jwks.rs` -> `source.rs` -> `handle.rs` -> `set.rs` -> `key.rs`.

mod handle;
mod key;
mod set;
mod source;

#[cfg(feature = "jwks")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwks")))]
pub mod jwks;

pub use handle::KeySetHandle;
pub use key::VerifyingKey;
pub use set::KeySet;
pub use source::KeySource;
pub(crate) use source::KeyWait;
