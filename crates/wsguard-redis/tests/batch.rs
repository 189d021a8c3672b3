//! What the local batch of `RedisKeyStore` costs and how accurate it is: figures printed
//! for the crate docs (`cargo test -p wsguard-redis --test batch -- --nocapture`), with
//! loose bounds asserted.

mod common;

use std::time::{Duration, Instant};

use wsguard_core::Key;
use wsguard_msg_rate::{rate, Budget, Cost, Decision, InMemoryKeyStore, KeyStore};
use wsguard_redis::{Fleet, RedisKeyStore};

async fn decide<K: KeyStore>(store: &K, key: &K::Prepared) -> Decision {
    match store.check_now(key, Cost::message(100)) {
        Some(decision) => decision,
        None => store.check(key, Cost::message(100)).await,
    }
}

/// Time per message, for a key far from its limit.
async fn per_message<K: KeyStore>(store: &K, messages: u32) -> Duration {
    let key = store.prepare(Key::custom("hot"));
    let started = Instant::now();
    for _ in 0..messages {
        assert_eq!(decide(store, &key).await, Decision::Allow);
    }
    started.elapsed() / messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_batch_cost_and_accuracy() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let fleet = Fleet::new(server.connect().await)
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    // Far from the limit: a budget no test reaches.
    let roomy = Budget::new().messages(rate(10_000_000).per(Duration::from_secs(1)));
    let memory = InMemoryKeyStore::new(roomy).unwrap();
    let n = 20_000;
    let base = per_message(&memory, n).await;
    println!("in-memory: {base:?} per message");
    for batch in [1, 8, 64, 1024] {
        let store = RedisKeyStore::new(fleet.clone().with_prefix(format!("b{batch}:")), roomy)
            .unwrap()
            .with_batch(batch)
            .with_batch_hold(Duration::from_secs(1));
        let took = per_message(&store, n).await;
        println!(
            "redis, batch {batch}: {took:?} per message ({:.1}x in-memory)",
            took.as_secs_f64() / base.as_secs_f64()
        );
    }

    // Accuracy: two instances flood one key for 2 s against 1000 messages/s, burst 100,
    // so at most 100 + 2 x 1000 = 2100 may pass.
    let tight = Budget::new().messages(rate(1000).per(Duration::from_secs(1)).burst(100));
    for batch in [1, 8, 64] {
        let stores: Vec<_> = (0..2)
            .map(|i| {
                RedisKeyStore::new(fleet.clone().with_prefix(format!("acc{batch}:")), tight)
                    .unwrap()
                    .with_batch(batch)
                    .with_batch_hold(Duration::from_millis(100))
                    .with_failure_policy(wsguard_redis::FailurePolicy::Closed)
                    .prepare_named(i)
            })
            .collect();
        let run = Duration::from_secs(2);
        let tasks: Vec<_> = stores
            .into_iter()
            .map(|(store, key)| {
                tokio::spawn(async move {
                    let (mut allowed, mut calls) = (0u64, 0u64);
                    let end = Instant::now() + run;
                    while Instant::now() < end {
                        match store.check_now(&key, Cost::message(1)) {
                            Some(Decision::Allow) => allowed += 1,
                            Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                            None => {
                                calls += 1;
                                if store.check(&key, Cost::message(1)).await == Decision::Allow {
                                    allowed += 1;
                                } else {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                        }
                    }
                    (allowed, calls)
                })
            })
            .collect();
        let (mut allowed, mut calls) = (0, 0);
        for task in tasks {
            let (a, c) = task.await.unwrap();
            allowed += a;
            calls += c;
        }
        println!(
            "accuracy, batch {batch}: {allowed} of at most 2100 allowed over 2 s by two \
             instances ({:.1}%), {calls} Redis calls",
            allowed as f64 / 21.0
        );
        assert!(
            allowed <= 2100 + 20,
            "never more than the budget: {allowed}"
        );
        assert!(allowed >= 1500, "not far below it: {allowed}");
    }
}

trait Named {
    fn prepare_named(self, i: usize) -> (Self, <Self as KeyStore>::Prepared)
    where
        Self: KeyStore + Sized;
}

impl<K: KeyStore> Named for K {
    fn prepare_named(self, _i: usize) -> (Self, K::Prepared) {
        let key = self.prepare(Key::custom("shared"));
        (self, key)
    }
}
