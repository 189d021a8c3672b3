//! The clock of the limiters: tokio's, so that tests can pause and advance it.

use governor::{clock::Clock, nanos::Nanos};
use tokio::time::Instant;

/// Nanoseconds since the clock was made, read from `tokio::time::Instant` (which is
/// `std::time::Instant` unless tokio's test clock is paused).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaneClock {
    origin: Instant,
}

impl PlaneClock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    pub(crate) fn nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Clock for PlaneClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.nanos())
    }
}
