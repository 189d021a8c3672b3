//! Waiting for what another task changes (a counter, a gauge, a store's size), polled and
//! bounded by [`WAIT`].
//!
//! ```
//! use std::sync::{atomic::{AtomicUsize, Ordering}, Arc};
//! use wsguard_test_kit::poll;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let done = Arc::new(AtomicUsize::new(0));
//! let task = Arc::clone(&done);
//! tokio::spawn(async move { task.store(3, Ordering::SeqCst) });
//! poll::until_eq("tasks done", || done.load(Ordering::SeqCst), 3).await;
//! # }
//! ```

use std::{fmt, time::Duration};

use tokio::time::{sleep, Instant};

use crate::WAIT;

/// How often [`until_eq`] looks.
pub const INTERVAL: Duration = Duration::from_millis(5);

/// Waits until `now()` equals `expected`, looking every [`INTERVAL`] (on tokio's clock, so a
/// paused clock advances to the next look).
///
/// # Panics
///
/// If it does not within [`WAIT`]: the message names `what`, its last value and `expected`.
pub async fn until_eq<T, F>(what: impl fmt::Display, mut now: F, expected: T)
where
    T: PartialEq + fmt::Debug,
    F: FnMut() -> T,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let current = now();
        if current == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {current:?} after {WAIT:?}, waited for {expected:?}"
        );
        sleep(INTERVAL).await;
    }
}
