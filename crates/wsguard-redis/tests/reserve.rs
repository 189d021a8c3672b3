//! The local reservation never admits more than Redis debited: instances and connections
//! flooding one key whose budget does not refill during the test admit at most its burst,
//! whatever the reservations, refills ahead and expiries do.

mod common;

use std::time::{Duration, Instant};

use wsguard_core::Key;
use wsguard_msg_rate::{rate, Budget, Cost, Decision, KeyStore};
use wsguard_redis::{FailurePolicy, Fleet, RedisKeyStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_never_admit_more_than_redis_debited() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let fleet = Fleet::new(server.connect().await)
        .with_prefix("reserve:")
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    // 5000 at once, then one an hour: the test never sees a refill.
    let burst = 5_000;
    let budget = Budget::new().messages(rate(1).per(Duration::from_secs(3600)).burst(burst));
    let run = Duration::from_millis(1500);
    let mut tasks = Vec::new();
    // Two instances (stores), three connections each (prepared keys), a short hold so that
    // reservations also expire during the run.
    for _ in 0..2 {
        let store = RedisKeyStore::new(fleet.clone(), budget)
            .unwrap()
            .with_batch_hold(Duration::from_millis(20))
            .with_failure_policy(FailurePolicy::Closed);
        for _ in 0..3 {
            let store = store.clone();
            let key = store.prepare(Key::custom("flood"));
            tasks.push(tokio::spawn(async move {
                let (mut allowed, mut local) = (0u64, 0u64);
                let end = Instant::now() + run;
                while Instant::now() < end {
                    let decision = match store.check_now(&key, Cost::message(10)) {
                        Some(decision) => {
                            local += 1;
                            decision
                        }
                        None => store.check(&key, Cost::message(10)).await,
                    };
                    match decision {
                        Decision::Allow => allowed += 1,
                        Decision::Unavailable => panic!("redis answered throughout"),
                        _ => tokio::time::sleep(Duration::from_micros(200)).await,
                    }
                }
                (allowed, local)
            }));
        }
    }
    let (mut allowed, mut local) = (0, 0);
    for task in tasks {
        let (a, l) = task.await.unwrap();
        allowed += a;
        local += l;
    }
    println!(
        "reservations: {allowed} of a burst of {burst} admitted by 6 connections on 2 instances \
         ({local} locally, without a Redis call); {} left unspent in reservations",
        u64::from(burst).saturating_sub(allowed)
    );
    // At most the burst, plus one refilled cell should the hour's emission fall in the run.
    assert!(allowed <= u64::from(burst) + 1, "admitted {allowed}");
    assert!(local > 0, "the fast path was used");
}
