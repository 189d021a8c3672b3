//! Key floods against the in-memory stores, in process (no socket): a million distinct
//! client IPv4 addresses, IPv6 /64 networks or principals through `wsguard-conn-limit`'s
//! `InMemoryConnectionStore` and `wsguard-msg-rate`'s `InMemoryKeyStore`, each with its
//! default cap (100,000 keys). Prints, per store and kind of key, the keys tracked at the end
//! (never more than the cap) and the process's RSS growth (`/proc/self/status`).
//!
//! ```text
//! cargo run --release --example key_flood
//! ```
//!
//! Each case runs in a fresh child process (the same binary with `--case`), so that memory
//! freed by one case cannot hide what the next one takes. `scripts/bench-e2e` runs it.
//!
//! - conn-limit, held: every key's connection stays open (an attacker holding sockets): the
//!   store tracks at most its cap and refuses new keys beyond it (`Refusal::TooManyKeys`,
//!   503); the leases of the admitted connections are counted in the RSS.
//! - conn-limit, churn: each connection closes at once: its key is forgotten with it.
//! - msg-rate: each key's connection sends one message and closes: the store keeps the key
//!   (its budget is not full again yet) and evicts beyond its cap.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::NonZeroU32,
    process::Command,
    time::{Duration, Instant},
};

use wsguard::{
    conn_limit::{InMemoryConnectionStore, Slot},
    msg_rate::{rate, Budget, Cost, InMemoryKeyStore},
    Key, Principal,
};

const KEYS: u32 = 1_000_000;
const CASES: [&str; 9] = [
    "conn-limit-held ipv4",
    "conn-limit-held ipv6",
    "conn-limit-held principal",
    "conn-limit-churn ipv4",
    "conn-limit-churn ipv6",
    "conn-limit-churn principal",
    "msg-rate ipv4",
    "msg-rate ipv6",
    "msg-rate principal",
];

fn key(kind: &str, n: u32) -> Key {
    match kind {
        // Distinct addresses across the IPv4 space (10.0.0.0 upwards, a million of them).
        "ipv4" => Key::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000_u32 + n))),
        // Distinct /64 networks (the key of an IPv6 client is its /64).
        "ipv6" => Key::Ip(IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_0000_0000_u128 + u128::from(n)) << 64,
        ))),
        _ => Key::Principal(Principal::new(format!("user-{n:010}"))),
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One case in this process: prints `keys tracked, cap, RSS growth, seconds`.
fn run_case(store: &str, kind: &str) {
    let before = rss_bytes();
    let start = Instant::now();
    // Bounded: a million keys, and a minute at most.
    let deadline = start + Duration::from_secs(60);
    let (tracked, cap, refused) = match store {
        "conn-limit-held" | "conn-limit-churn" => {
            let store_ = InMemoryConnectionStore::new();
            let max = NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN);
            let mut held = Vec::new();
            let mut refused = 0u32;
            for n in 0..KEYS {
                if n % 65_536 == 0 && Instant::now() > deadline {
                    break;
                }
                match store_.try_acquire(&[Slot::new(0, key(kind, n), max)]) {
                    Ok(lease) if store == "conn-limit-held" => held.push(lease),
                    Ok(lease) => drop(lease),
                    Err(_) => refused += 1,
                }
            }
            let tracked = store_.tracked_keys();
            (tracked, store_.max_keys(), refused)
        }
        _ => {
            let budget = Budget::new()
                .messages(rate(10).per(Duration::from_secs(1)))
                .bytes(rate(64 * 1024).per(Duration::from_secs(1)));
            let Ok(store_) = InMemoryKeyStore::new(budget) else {
                return;
            };
            for n in 0..KEYS {
                if n % 65_536 == 0 && Instant::now() > deadline {
                    break;
                }
                let prepared = store_.prepare(key(kind, n));
                std::hint::black_box(store_.decide(&prepared, Cost::message(60)));
            }
            (store_.len(), store_.max_keys(), 0)
        }
    };
    let growth = rss_bytes().saturating_sub(before);
    println!(
        "{tracked} {cap} {refused} {growth} {:.1}",
        start.elapsed().as_secs_f64()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--case" {
        run_case(&args[2], &args[3]);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    println!("| store, flood of {KEYS} keys | kind | keys tracked at the end | cap | refused | RSS growth | per cap key | seconds |");
    println!("|---|---|---|---|---|---|---|---|");
    for case in CASES {
        let (store, kind) = case.split_once(' ').unwrap_or((case, ""));
        let out = Command::new(&exe).args(["--case", store, kind]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 5 {
            println!("| {store} | {kind} | failed: {text} | | | | | |");
            continue;
        }
        let growth: f64 = f[3].parse().unwrap_or(0.0);
        let cap: f64 = f[1].parse().unwrap_or(1.0);
        println!(
            "| {store} | {kind} | {} | {} | {} | {:.1} MB | {:.0} B | {} |",
            f[0],
            f[1],
            f[2],
            growth / 1e6,
            growth / cap,
            f[4]
        );
    }
    Ok(())
}
