//! Bytes per tracked key of the in-memory store, measured with a counting allocator.
//!
//! Run with `--nocapture` to see the figures (documented on `InMemoryKeyStore`).

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use wsguard_core::{Key, Principal};
use wsguard_msg_rate::{rate, Budget, Cost, Decision, InMemoryKeyStore};
use wsguard_test_kit::alloc::{CountingAllocator, Region};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator::system();

const KEYS: u32 = 100_000;

fn bytes_per_key(make: impl Fn(u32) -> Key) -> f64 {
    let budget = Budget::new()
        .messages(rate(10).per(Duration::from_secs(1)))
        .bytes(rate(64 * 1024).per(Duration::from_secs(1)));
    // Room for every key: this measures entries, not evictions.
    let store = InMemoryKeyStore::new(budget)
        .unwrap()
        .with_max_keys(2 * KEYS as usize)
        .unwrap();
    let keys: Vec<Key> = (0..KEYS).map(make).collect();
    let region = Region::new(&GLOBAL);
    // Each key as a connection that sends one message and ends: the store keeps the key
    // (its budget is not full again yet), the connection's prepared key is gone.
    for key in &keys {
        let prepared = store.prepare(key.clone());
        assert_eq!(store.decide(&prepared, Cost::message(60)), Decision::Allow);
    }
    let change = region.change();
    assert_eq!(store.len(), KEYS as usize);
    // What the store's tables hold now, plus the keys' own heap (a principal's id), which
    // `keys` shares with the store through its `Arc`.
    let tables = change.bytes_allocated + change.bytes_reallocated.max(0) as usize
        - change.bytes_deallocated;
    let heap: usize = keys
        .iter()
        .map(|key| match key {
            // An `Arc<str>`: the string and two reference counts.
            Key::Principal(p) => p.as_str().len() + 2 * size_of::<usize>(),
            other => other.heap_size(),
        })
        .sum();
    (tables + heap) as f64 / f64::from(KEYS)
}

#[test]
fn bytes_per_key_stay_small() {
    let ip = bytes_per_key(|n| {
        Key::Ip(IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_0000_0000_0000_0000_0000_0000_u128 | u128::from(n),
        )))
    });
    // 16-byte ids, the size of a UUID in binary or a short user name.
    let principal = bytes_per_key(|n| Key::Principal(Principal::new(format!("user-{n:011}"))));
    println!("in-memory store: {ip:.0} bytes per IP key, {principal:.0} per principal key");
    assert!(ip <= 128.0, "{ip}");
    assert!(principal <= 192.0, "{principal}");
}
