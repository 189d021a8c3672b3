//! The GCRA script against published vectors, and against the in-memory store.

mod common;

use std::time::{Duration, Instant};

use wsguard_core::Key;
use wsguard_msg_rate::{rate, Budget, Cost, Decision, InMemoryKeyStore, KeyStore};
use wsguard_redis::{Fleet, Gcra, RedisKeyStore};

fn close(actual: Duration, expected_ms: u64, tolerance_ms: u64) -> bool {
    let actual = actual.as_millis() as i128;
    (actual - i128::from(expected_ms)).abs() <= i128::from(tolerance_ms)
}

/// brandur/redis-cell, `redis-cell-impl/src/lib.rs`, `it_rate_limits`: max_burst 4 (a limit
/// of 5 at once, our burst 5) at 1 per second, 15 steps at fixed offsets from the start.
/// Redis's clock cannot be set, so the steps run in real time (9.5 s); the start is taken
/// right after step 1, so every later step runs at or just after its offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cell_vectors() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let mut conn = server.connect().await;
    let gcra = Gcra::new(rate(1).per(Duration::from_secs(1)).burst(5)).unwrap();
    let key = b"test:cell";
    // (step, offset ms, quantity, limited, remaining, reset_after ms, retry_after ms or -1)
    let cases: [(u32, u64, u64, bool, u64, u64, i64); 15] = [
        // You can never make a request larger than the maximum.
        (0, 0, 6, true, 5, 0, -1),
        // Rate limit normal requests appropriately.
        (1, 0, 1, false, 4, 1000, -1),
        (2, 0, 1, false, 3, 2000, -1),
        (3, 0, 1, false, 2, 3000, -1),
        (4, 0, 1, false, 1, 4000, -1),
        (5, 0, 1, false, 0, 5000, -1),
        (6, 0, 1, true, 0, 5000, 1000),
        (7, 3000, 1, false, 2, 3000, -1),
        (8, 3100, 1, false, 1, 3900, -1),
        (9, 4000, 1, false, 1, 4000, -1),
        (10, 8000, 1, false, 4, 1000, -1),
        (11, 9500, 1, false, 4, 1000, -1),
        // Zero-volume request just peeks at the state.
        (12, 9500, 0, false, 4, 1000, -1),
        // High-volume request uses up more of the limit.
        (13, 9500, 2, false, 2, 3000, -1),
        // Large requests cannot exceed limits.
        (14, 9500, 5, true, 2, 3000, 3000),
    ];
    let mut start = Instant::now();
    for (step, offset, quantity, limited, remaining, reset_ms, retry_ms) in cases {
        let at = start + Duration::from_millis(offset);
        if offset > 0 {
            tokio::time::sleep_until(at.into()).await;
        }
        let out = gcra.apply(&mut conn, key, quantity).await.unwrap();
        assert_eq!(out.allowed(), !limited, "step {step}: {out:?}");
        assert_eq!(out.remaining(), remaining, "step {step}: {out:?}");
        assert!(
            close(out.reset_after(), reset_ms, 60),
            "step {step}: {out:?}"
        );
        match retry_ms {
            // redis-cell's -1 on a limited step: the request can never fit.
            -1 if limited => assert!(out.exceeds_burst(), "step {step}: {out:?}"),
            -1 => assert_eq!(out.retry_after(), None, "step {step}: {out:?}"),
            ms => {
                assert!(!out.exceeds_burst(), "step {step}");
                let retry = out.retry_after().expect("a retry");
                assert!(close(retry, ms as u64, 60), "step {step}: {out:?}");
            }
        }
        if step == 1 {
            start = Instant::now();
        }
    }
}

/// go-redis/redis_rate v10, `rate_test.go`, `TestAllow` (10 per second, burst 10) and
/// `TestAllowN_IncrementZero`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rate_vectors() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let mut conn = server.connect().await;
    let limit = Gcra::new(rate(10).per(Duration::from_secs(1)).burst(10)).unwrap();

    let out = limit.apply(&mut conn, b"test_id", 1).await.unwrap();
    assert!(out.allowed());
    assert_eq!(out.remaining(), 9);
    assert_eq!(out.retry_after(), None);
    assert!(close(out.reset_after(), 100, 10), "{out:?}");

    let out = limit.apply(&mut conn, b"test_id", 2).await.unwrap();
    assert!(out.allowed());
    assert_eq!(out.remaining(), 7);
    assert!(close(out.reset_after(), 300, 10), "{out:?}");

    let out = limit.apply(&mut conn, b"test_id", 7).await.unwrap();
    assert!(out.allowed());
    assert_eq!(out.remaining(), 0);
    assert!(close(out.reset_after(), 999, 10), "{out:?}");

    let out = limit.apply(&mut conn, b"test_id", 1000).await.unwrap();
    assert!(!out.allowed());
    assert_eq!(out.remaining(), 0);
    let retry = out.retry_after().expect("a retry");
    assert!(close(retry, 99_000, 1000), "{out:?}");
    assert!(close(out.reset_after(), 999, 10), "{out:?}");
    assert!(out.exceeds_burst());

    // TestAllowN_IncrementZero: a peek at a key that is not there, then after one.
    let out = limit.apply(&mut conn, b"test_zero", 0).await.unwrap();
    assert_eq!(out.remaining(), 10);
    assert_eq!(out.reset_after(), Duration::ZERO);
    let out = limit.apply(&mut conn, b"test_zero", 1).await.unwrap();
    assert_eq!(out.remaining(), 9);
    let out = limit.apply(&mut conn, b"test_zero", 0).await.unwrap();
    assert_eq!(out.remaining(), 9);
    assert!(close(out.reset_after(), 100, 10), "{out:?}");
}

/// A state more than one burst ahead of Redis's clock (written by a server whose clock ran
/// ahead, then read after a failover) is capped: the key waits one burst, not forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_far_ahead_is_capped() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let mut conn = server.connect().await;
    let now_us = {
        let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
        s * 1_000_000 + us
    };
    let ahead = now_us + 3_600 * 1_000_000;
    let _: () = redis::cmd("HSET")
        .arg("test:ahead")
        .arg("t")
        .arg(ahead.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let limit = Gcra::new(rate(10).per(Duration::from_secs(1)).burst(10)).unwrap();
    let out = limit.apply(&mut conn, b"test:ahead", 1).await.unwrap();
    assert!(!out.allowed());
    let retry = out.retry_after().unwrap();
    assert!(
        retry <= Duration::from_millis(150),
        "capped to one burst: {out:?}"
    );
}

/// The same quota gives the same answers as the in-memory store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_store_answers_as_the_in_memory_store() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let budget = Budget::new()
        .messages(rate(10).per(Duration::from_secs(1)).burst(5))
        .bytes(rate(1000).per(Duration::from_secs(1)).burst(2000));
    let fleet = Fleet::new(server.connect().await)
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let redis = RedisKeyStore::new(fleet, budget).unwrap().with_batch(1);
    let memory = InMemoryKeyStore::new(budget).unwrap();
    let key = Key::custom("same-answers");
    let (rk, mk) = (redis.prepare(key.clone()), memory.prepare(key));
    for i in 0..7 {
        let cost = Cost::message(10);
        let a = redis.check(&rk, cost).await;
        let b = memory.decide(&mk, cost);
        match (a, b) {
            (Decision::Allow, Decision::Allow) => assert!(i < 5),
            (Decision::Deny { retry_after: x }, Decision::Deny { retry_after: y }) => {
                assert!(i >= 5);
                assert!(close(x, y.as_millis() as u64, 20), "{x:?} {y:?}");
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
    // Larger than the byte burst: never fits, in both, even with the message budget spent.
    let big = Cost::message(2001);
    assert_eq!(redis.check(&rk, big).await, Decision::TooLarge);
    let fresh = Key::custom("fresh");
    assert_eq!(
        redis.check(&redis.prepare(fresh.clone()), big).await,
        Decision::TooLarge
    );
    assert_eq!(
        memory.decide(&memory.prepare(fresh), big),
        Decision::TooLarge
    );
}
