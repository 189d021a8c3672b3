//! The three stores on a Redis Cluster (three masters on loopback ports, started by
//! `tests/common`): the same shared limits as on one server, with the users' keys spread
//! over the nodes. Each script touches one key, so no hash tag is needed. The cluster
//! connection comes from redis's `cluster-async` feature, a dev-dependency feature only.

mod common;

use std::{
    num::NonZeroU32,
    time::{Duration, Instant, SystemTime},
};

use common::eventually;
use wsguard_conn_limit::{ConnectionStore, Refusal, Slot};
use wsguard_core::{Key, Principal};
use wsguard_jwt_auth::{Revocation, RevocationQuery, RevocationStatus};
use wsguard_msg_rate::{rate, Budget, Cost, Decision, KeyStore};
use wsguard_redis::{Fleet, RedisConnectionStore, RedisKeyStore, RedisLease, RedisRevocations};

type Conn = redis::cluster_async::ClusterConnection;

/// Users whose keys land in different slots, so on different nodes.
const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

async fn connect(cluster: &common::RedisCluster) -> Conn {
    let client = redis::cluster::ClusterClient::new(cluster.urls()).expect("cluster URLs");
    tokio::time::timeout(Duration::from_secs(5), client.get_async_connection())
        .await
        .expect("connects within 5 s")
        .expect("connects")
}

fn slot(key: &str, max: u32) -> Slot {
    Slot::new(
        0,
        Key::Principal(Principal::new(key)),
        NonZeroU32::new(max).unwrap(),
    )
}

async fn acquire(
    store: &RedisConnectionStore<Conn>,
    slots: &[Slot],
) -> Result<RedisLease, Refusal> {
    match store.acquire_now(slots) {
        Some(answer) => answer,
        None => store.acquire(slots).await,
    }
}

async fn decide<K: KeyStore>(store: &K, key: &K::Prepared) -> Decision {
    match store.check_now(key, Cost::message(1)) {
        Some(decision) => decision,
        None => store.check(key, Cost::message(1)).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_stores_share_their_limits_on_a_cluster() {
    let Some(cluster) = common::redis_cluster() else {
        return;
    };
    let fleet = Fleet::new(connect(&cluster).await)
        .with_deadline(Duration::from_secs(1))
        .unwrap();

    // Connection leases: 3 per user across two instances, the 4th refused on either.
    let instance = || {
        RedisConnectionStore::builder(fleet.clone())
            .build_and_spawn()
            .unwrap()
    };
    let (a, b) = (instance(), instance());
    let mut held = Vec::new();
    for user in USERS {
        let limit = [slot(user, 3)];
        held.push(acquire(&a, &limit).await.unwrap());
        held.push(acquire(&a, &limit).await.unwrap());
        held.push(acquire(&b, &limit).await.unwrap());
        assert!(held.iter().all(RedisLease::is_shared), "{user}: from Redis");
        for store in [&a, &b] {
            assert_eq!(
                acquire(store, &limit).await.err(),
                Some(Refusal::Full { slot: 0 }),
                "{user}: the 4th"
            );
        }
    }
    // A lease dropped on A frees its slot for B.
    drop(held.remove(0));
    assert!(
        eventually(Duration::from_secs(3), || {
            let b = b.clone();
            async move { acquire(&b, &[slot(USERS[0], 3)]).await.is_ok() }
        })
        .await,
        "the released slot is free within 3 s"
    );

    // Message budgets: a burst of 10 (then 1 a second) per user, spent alternately on two
    // instances, each with its own local batch: about 10 in all, not 20.
    let budget = Budget::new().messages(rate(1).per(Duration::from_secs(1)).burst(10));
    let (x, y) = (
        RedisKeyStore::new(fleet.clone(), budget).unwrap(),
        RedisKeyStore::new(fleet.clone(), budget).unwrap(),
    );
    for user in USERS {
        let started = Instant::now();
        let (kx, ky) = (x.prepare(Key::custom(user)), y.prepare(Key::custom(user)));
        let mut allowed = 0;
        for round in 0..15 {
            for (store, key) in [(&x, &kx), (&y, &ky)] {
                match decide(store, key).await {
                    Decision::Allow => allowed += 1,
                    Decision::Deny { .. } => {}
                    other => panic!("{user} round {round}: {other:?}"),
                }
            }
        }
        let refill = started.elapsed().as_secs() as usize + 1;
        assert!(
            (10..=10 + refill).contains(&allowed),
            "{user}: {allowed} of 30 allowed"
        );
    }

    // Revocation: a token and a subject revoked on one instance are refused on another.
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let (p, q) = (
        RedisRevocations::new(fleet.clone()),
        RedisRevocations::new(fleet.clone()).with_cache(Duration::ZERO, 0),
    );
    for user in USERS {
        let token = |jti: &str| {
            RevocationQuery::new(Principal::new(user), now)
                .with_jti(jti)
                .with_issued_at(now - Duration::from_secs(5))
                .with_expires_at(now + hour)
        };
        let jti = format!("{user}-token");
        assert_eq!(
            q.check(&token(&jti)).await.unwrap(),
            RevocationStatus::Active
        );
        p.revoke_token(&jti, now + hour).await.unwrap();
        assert_eq!(
            q.check(&token(&jti)).await.unwrap(),
            RevocationStatus::Revoked
        );
        assert_eq!(
            q.check(&token("another")).await.unwrap(),
            RevocationStatus::Active
        );
        p.revoke_subject_before(user, now, now + hour)
            .await
            .unwrap();
        assert_eq!(
            q.check(&token("another")).await.unwrap(),
            RevocationStatus::Revoked
        );
    }

    // The keys really are spread: at least two of the three nodes hold some.
    let holding = cluster
        .ports()
        .iter()
        .filter(|port| {
            let size = common::run_bounded(
                "redis-cli",
                &["-h", "127.0.0.1", "-p", &port.to_string(), "dbsize"],
                Duration::from_secs(5),
            );
            size.trim().parse::<u64>().unwrap_or(0) > 0
        })
        .count();
    assert!(holding >= 2, "keys on {holding} node(s)");
}
