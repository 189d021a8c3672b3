//! Connection hygiene (idle timeout, maximum lifetime, heartbeat, graceful shutdown):
//! re-exported from [`wsguard_core`], where it lives beside the message plane's
//! `GuardedSocket`, so that every close after the upgrade goes through one family of
//! adapters and one closing handshake.
//!
//! ```
//! use std::time::Duration;
//! use wsguard_conn_limit::{Hygiene, Shutdown};
//!
//! let shutdown = Shutdown::new();
//! let hygiene = Hygiene::new()
//!     .idle_timeout(Duration::from_secs(300))
//!     .shutdown(shutdown.clone());
//! # let _ = hygiene;
//! ```

pub use wsguard_core::{Hygiene, HygieneSocket, Shutdown, CLOSE_TIMEOUT, DEFAULT_MAX_LIFETIME};
