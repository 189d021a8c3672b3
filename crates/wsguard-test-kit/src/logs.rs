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
//!
//! // For the test's thread, as long as the guard lives:
//! let _local = logs.set_local(tracing::Level::INFO);
//! tracing::info!(mode = "dry_run", "dry run: would refuse");
//! let dry = logs.lines_containing("dry run");
//! assert_eq!(dry.len(), 1, "{logs}");
//! assert!(dry[0].contains("dry_run"), "{logs}");
//! ```

use std::{
    fmt, io,
    sync::{Arc, Mutex, PoisonError},
};

use tracing::{subscriber::DefaultGuard, Level, Subscriber};

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

    /// Sets [`subscriber`](Self::subscriber) as the current thread's default until the guard
    /// drops: for tests on tokio's `current_thread` runtime (the `#[tokio::test]` default),
    /// whose servers and clients run on the test's thread.
    #[must_use = "the subscriber is the thread's only while the guard lives"]
    pub fn set_local(&self, max_level: Level) -> DefaultGuard {
        tracing::subscriber::set_default(self.subscriber(max_level))
    }

    /// The captured lines that contain `needle`.
    ///
    /// # Panics
    ///
    /// As [`text`](Self::text).
    pub fn lines_containing(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
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

/// Everything captured so far ([`Logs::text`]), for failure messages.
impl fmt::Display for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
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
