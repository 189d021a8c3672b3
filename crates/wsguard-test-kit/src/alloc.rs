//! The counting allocator: the system allocator with counters, for tests that measure the
//! bytes a store keeps per key or a layer allocates per message.
//!
//! A `#[global_allocator]` belongs to a binary, so each test binary declares its own (and
//! holds one test, so that nothing else allocates while it measures):
//!
//! ```
//! use wsguard_test_kit::alloc::{live_bytes, CountingAllocator, Region};
//!
//! #[global_allocator]
//! static ALLOC: CountingAllocator = CountingAllocator::system();
//!
//! let region = Region::new(&ALLOC);
//! let kept = vec![0u8; 4096];
//! assert!(live_bytes(&region.change()) >= 4096);
//! # drop(kept);
//! ```

pub use stats_alloc::{Region, Stats};

/// The system allocator, counting what it allocates and frees: declare it as the test
/// binary's `#[global_allocator]` with `CountingAllocator::system()`.
pub type CountingAllocator = stats_alloc::StatsAlloc<std::alloc::System>;

/// The heap bytes still live of what was allocated during a measurement: allocated minus
/// deallocated (negative if more was freed than allocated).
pub fn live_bytes(stats: &Stats) -> isize {
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}
