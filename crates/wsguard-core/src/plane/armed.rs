//! Skipping the re-registration of wake-ups that are already registered.

use std::task::{Context, Waker};

/// Whether an adapter's own wake-up sources (timers, the close request, the shutdown signal)
/// are registered with the waker of the current poll.
///
/// A socket adapter polls its wake-up sources on every poll of the socket, which registers
/// the task's waker with each of them again (a tokio `Sleep` poll and an atomic waker
/// registration cost several hundred instructions per message). Once every source returned
/// `Pending` to one waker, it stays registered until that source fires, and a fired source
/// says so cheaply (`Sleep::is_elapsed`, an atomic load). So while the task's waker is the
/// same (`Waker::will_wake`) and no source says it fired, the adapter skips the polls.
#[derive(Debug, Default)]
pub(crate) struct Armed {
    waker: Option<Waker>,
}

impl Armed {
    /// Whether every source was registered with a waker that wakes the same task as `cx`'s.
    pub(crate) fn holds(&self, cx: &Context<'_>) -> bool {
        self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
    }

    /// Every source returned `Pending` to `cx`'s waker.
    pub(crate) fn arm(&mut self, cx: &Context<'_>) {
        if !self.holds(cx) {
            self.waker = Some(cx.waker().clone());
        }
    }

    /// A source changed (a timer was reset): poll them all next time.
    pub(crate) fn disarm(&mut self) {
        self.waker = None;
    }
}
