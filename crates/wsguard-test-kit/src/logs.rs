//! Captured `tracing` events: a subscriber that writes formatted events into memory, for
//! tests that check what a layer logs (and, above all, what it never logs).
//!
//! `tracing` caches each callsite's interest per process: a test running on another thread
//! that hits a callsite while no subscriber is set can make a scoped subscriber miss its
//! events. A test that captures logs therefore lives alone in its own test binary.
//!
//! ```
//! use wsguard_test_kit::logs::Logs;
//!
//! let logs = Logs::new();
//! tracing::subscriber::with_default(logs.subscriber(tracing::Level::INFO), || {
//!     tracing::info!(reason = "origin_not_allowed", "refused");
//!     tracing::debug!("not captured above INFO");
//! });
//! assert_eq!(logs.text().lines().count(), 1);
//! ```

use std::{
    io,
    sync::{Arc, Mutex, PoisonError},
};

use tracing::{Level, Subscriber};

/// Formatted log lines, kept in memory; clones share them.
#[derive(Clone, Debug, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Empty logs.
    pub fn new() -> Self {
        Self::default()
    }

    /// A subscriber that formats every event up to `max_level` (without colours) into these
    /// logs. Set it with `tracing::subscriber::with_default` or `set_default`.
    pub fn subscriber(&self, max_level: Level) -> impl Subscriber + Send + Sync + 'static {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(max_level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
    }

    /// Everything captured so far.
    ///
    /// # Panics
    ///
    /// If what was captured is not UTF-8.
    pub fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8(bytes).expect("formatted events are UTF-8")
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
