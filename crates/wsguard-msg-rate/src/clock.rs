//! The clock of the limiters: tokio's, so that tests can pause and advance it, read once per
//! message.

use std::cell::Cell;

use governor::{clock::Clock, nanos::Nanos};
use tokio::time::Instant;

thread_local! {
    /// The instant of the message being checked on this thread, if any.
    static FROZEN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with the clock read once: every limiter checked inside sees the same instant,
/// and a message costs one clock read however many budgets it is checked against.
pub(crate) fn read_once<R>(f: impl FnOnce() -> R) -> R {
    struct Thaw(Option<Instant>);
    impl Drop for Thaw {
        fn drop(&mut self) {
            FROZEN.with(|frozen| frozen.set(self.0));
        }
    }
    let outer = FROZEN.with(|frozen| {
        let outer = frozen.get();
        if outer.is_none() {
            frozen.set(Some(Instant::now()));
        }
        outer
    });
    let _thaw = Thaw(outer);
    f()
}

fn now() -> Instant {
    FROZEN.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Nanoseconds since the clock was made, read from `tokio::time::Instant` (which is
/// `std::time::Instant` unless tokio's test clock is paused).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaneClock {
    origin: Instant,
}

impl PlaneClock {
    pub(crate) fn new() -> Self {
        Self { origin: now() }
    }

    pub(crate) fn nanos(&self) -> u64 {
        let elapsed = now().saturating_duration_since(self.origin);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Clock for PlaneClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.nanos())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_reading_per_scope() {
        let clock = PlaneClock::new();
        tokio::time::advance(Duration::from_millis(5)).await;
        read_once(|| {
            let first = clock.nanos();
            std::thread::sleep(Duration::from_millis(1));
            assert_eq!(clock.nanos(), first);
            read_once(|| assert_eq!(clock.nanos(), first));
            assert_eq!(first, 5_000_000);
        });
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(clock.nanos(), 10_000_000, "read afresh outside");
    }
}
