//! The clock of the limiters: tokio's, so that tests can pause and advance it, read once per
//! message.

use std::{cell::Cell, sync::OnceLock, time::Duration};

use governor::{clock::Clock, nanos::Nanos};
use tokio::time::Instant;

thread_local! {
    /// The reading (on the plane's timeline) of the message being checked on this thread,
    /// if any.
    static FROZEN: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `f` with the clock read once: every limiter checked inside sees the same instant,
/// and a message costs one clock reading and one conversion however many budgets it is
/// checked against.
pub(crate) fn read_once<R>(f: impl FnOnce() -> R) -> R {
    struct Thaw(Option<u64>);
    impl Drop for Thaw {
        fn drop(&mut self) {
            FROZEN.with(|frozen| frozen.set(self.0));
        }
    }
    let outer = FROZEN.with(|frozen| {
        let outer = frozen.get();
        if outer.is_none() {
            frozen.set(Some(read()));
        }
        outer
    });
    let _thaw = Thaw(outer);
    f()
}

/// Where the plane's timeline puts the epoch: 2^62 ns (146 years) from either end of a
/// `u64`, so that readings before the epoch (tokio's paused test clocks, one per runtime,
/// can be behind the first reading of another) stay ordered and nothing saturates.
const EPOCH_NANOS: u64 = 1 << 62;

/// Reads the clock: nanoseconds on a process-wide timeline, from `tokio::time::Instant`
/// (which is `std::time::Instant` unless tokio's test clock is paused).
fn read() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let now = Instant::now();
    on_timeline(now, *EPOCH.get_or_init(|| now))
}

/// `now` on the timeline whose epoch is `epoch`.
fn on_timeline(now: Instant, epoch: Instant) -> u64 {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    match now.checked_duration_since(epoch) {
        Some(since) => EPOCH_NANOS.saturating_add(nanos(since)),
        None => EPOCH_NANOS.saturating_sub(nanos(epoch.duration_since(now))),
    }
}

fn now() -> u64 {
    FROZEN.with(Cell::get).unwrap_or_else(read)
}

/// The limiters' clock: every limiter reads the same process-wide timeline, so the reading
/// taken once per message serves every budget.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlaneClock;

impl PlaneClock {
    /// Nanoseconds on the plane's timeline (only differences mean anything).
    pub(crate) fn nanos(self) -> u64 {
        now()
    }
}

impl Clock for PlaneClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_reading_per_scope() {
        let clock = PlaneClock;
        let origin = clock.nanos();
        tokio::time::advance(Duration::from_millis(5)).await;
        read_once(|| {
            let first = clock.nanos();
            std::thread::sleep(Duration::from_millis(1));
            assert_eq!(clock.nanos(), first);
            read_once(|| assert_eq!(clock.nanos(), first));
            assert_eq!(first - origin, 5_000_000);
        });
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(clock.nanos() - origin, 10_000_000, "read afresh outside");
    }

    #[test]
    fn instants_before_the_epoch_stay_ordered() {
        // Instants are only added to: the monotonic clock may have started less than an
        // hour ago.
        let hour = Duration::from_secs(3600);
        let early = Instant::now();
        let epoch = early + hour;
        let before = on_timeline(early, epoch);
        let after = on_timeline(epoch + hour, epoch);
        assert_eq!(on_timeline(epoch, epoch), EPOCH_NANOS);
        assert!(before < EPOCH_NANOS && EPOCH_NANOS < after);
        assert_eq!(after - before, 7_200_000_000_000);
        assert_eq!(EPOCH_NANOS - before, 3_600_000_000_000);
    }
}
