//! Bytes per tracked key in the in-memory store, measured with a counting allocator. The
//! figures are printed (`cargo test -p wsguard-conn-limit --test memory -- --nocapture`) and
//! recorded in BENCHMARKS.md; the assertions are loose bounds that catch a regression in
//! kind (a per-key allocation that should not be there), not a timing.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
};

use wsguard_conn_limit::{InMemoryConnectionStore, Slot};
use wsguard_core::{Key, Principal};
use wsguard_test_kit::alloc::{live_bytes, CountingAllocator, Region};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator::system();

const KEYS: u32 = 20_000;

/// Live heap bytes per key while `KEYS` keys are held, and after they are released.
fn per_key(key: impl Fn(u32) -> Key) -> (f64, isize) {
    let store = InMemoryConnectionStore::new();
    let max = NonZeroU32::new(3).unwrap();
    // Build the keys (the connection's own data) outside the measured region.
    let slots: Vec<_> = (0..KEYS).map(|n| [Slot::new(0, key(n), max)]).collect();
    let region = Region::new(&GLOBAL);
    let leases: Vec<_> = slots
        .iter()
        .map(|s| store.try_acquire(s).unwrap())
        .collect();
    let held = region.change();
    assert_eq!(store.tracked_keys(), KEYS as usize);
    let held_bytes = live_bytes(&held);
    // The leases themselves (one per connection, not per key) are not the store's cost.
    let lease_bytes = leases.capacity() * std::mem::size_of_val(&leases[0]);
    let store_bytes = held_bytes - lease_bytes as isize;
    drop(leases);
    let after = region.change();
    assert_eq!(store.tracked_keys(), 0);
    (store_bytes as f64 / f64::from(KEYS), live_bytes(&after))
}

#[test]
fn bytes_per_tracked_key() {
    let (ip, ip_left) = per_key(|n| {
        Key::Ip(IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_u128 << 96 | u128::from(n),
        )))
    });
    let (principal, principal_left) =
        per_key(|n| Key::Principal(Principal::new(format!("user-{n:010}"))));
    println!("bytes per tracked key: ip {ip:.0}, 16-byte principal {principal:.0}");
    // Hash table entry with its share of spare capacity, the lease's copy of the key and the
    // lease's slot list. A principal's string is shared with the request (an Arc), not copied.
    assert!(ip < 200.0, "ip key: {ip} bytes");
    assert!(principal < 200.0, "principal key: {principal} bytes");
    // Everything except the hash tables' capacity (kept, like any HashMap) is given back.
    for left in [ip_left, principal_left] {
        assert!(left < 4 * 1024 * 1024, "{left} bytes left after release");
    }
}
