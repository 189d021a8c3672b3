//! Connection leases and revocation shared by two instances on one real Redis, and what
//! the stores do when Redis stops, freezes and comes back.

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
use wsguard_redis::{
    CircuitState, FailurePolicy, Fleet, RedisConnectionStore, RedisKeyStore, RedisLease,
    RedisRevocations,
};

fn slot(limit: u16, key: &str, max: u32) -> Slot {
    Slot::new(
        limit,
        Key::Principal(Principal::new(key)),
        NonZeroU32::new(max).unwrap(),
    )
}

type Conn = redis::aio::ConnectionManager;

/// An "instance": a store with its own driver, spawned.
fn instance(fleet: &Fleet<Conn>, ttl: Duration, renew: Duration) -> RedisConnectionStore<Conn> {
    RedisConnectionStore::builder(fleet.clone())
        .with_lease_ttl(ttl)
        .with_renew_every(renew)
        .build_and_spawn()
        .unwrap()
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

/// Tries every 50 ms until a lease is had or `within` has passed.
async fn acquire_within(
    store: &RedisConnectionStore<Conn>,
    slots: &[Slot],
    within: Duration,
) -> Option<RedisLease> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(lease) = acquire(store, slots).await {
            return Some(lease);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_connection_limit() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let fleet = Fleet::new(server.connect().await)
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let a = instance(&fleet, Duration::from_secs(30), Duration::from_secs(10));
    let b = instance(&fleet, Duration::from_secs(30), Duration::from_secs(10));
    let alice = [slot(0, "alice", 3)];
    let a1 = acquire(&a, &alice).await.unwrap();
    let _a2 = acquire(&a, &alice).await.unwrap();
    let _b1 = acquire(&b, &alice).await.unwrap();
    assert!(a1.is_shared());
    // The fourth, on either instance, is refused.
    assert_eq!(
        acquire(&a, &alice).await.err(),
        Some(Refusal::Full { slot: 0 })
    );
    assert_eq!(
        acquire(&b, &alice).await.err(),
        Some(Refusal::Full { slot: 0 })
    );
    // Another user and another limit are counted apart.
    let _bob = acquire(&b, &[slot(0, "bob", 3)]).await.unwrap();
    let _other_limit = acquire(&b, &[slot(1, "alice", 3)]).await.unwrap();
    // A dropped lease is released through the driver, without blocking: B gets the slot.
    drop(a1);
    assert!(
        acquire_within(&b, &alice, Duration::from_secs(3))
            .await
            .is_some(),
        "the released slot is free within 3 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_slots_are_all_or_nothing() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let conn = server.connect().await;
    let fleet = Fleet::new(conn.clone())
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let a = instance(&fleet, Duration::from_secs(30), Duration::from_secs(10));
    let _held = acquire(&a, &[slot(1, "carol", 1)]).await.unwrap();
    let slots = [slot(0, "everyone", 10), slot(1, "carol", 1)];
    assert_eq!(
        acquire(&a, &slots).await.err(),
        Some(Refusal::Full { slot: 1 })
    );
    // The first slot, taken before the refusal, is given back.
    let mut conn = conn;
    let key = b"wsguard:cl:0:principal:everyone".to_vec();
    assert!(
        eventually(Duration::from_secs(3), || {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move {
                let n: i64 = redis::cmd("ZCARD")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                n == 0
            }
        })
        .await
    );
    // Leases never hold a timestamp or a token: members are instance id + counter.
    let _x = acquire(&a, &[slot(0, "everyone", 10)]).await.unwrap();
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members.len(), 1);
    let (instance, counter) = members[0].split_once(':').unwrap();
    assert_eq!(instance.len(), 16);
    assert!(counter.parse::<u64>().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_live_while_renewed_and_expire_when_their_instance_is_gone() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let fleet = Fleet::new(server.connect().await)
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let ttl = Duration::from_millis(1000);
    let dave = [slot(0, "dave", 2)];
    // The "crashing" instance: its driver is a task we abort.
    let (doomed, driver) = RedisConnectionStore::builder(fleet.clone())
        .with_lease_ttl(ttl)
        .with_renew_every(Duration::from_millis(250))
        .build()
        .unwrap();
    let driver = tokio::spawn(driver);
    let l1 = acquire(&doomed, &dave).await.unwrap();
    let l2 = acquire(&doomed, &dave).await.unwrap();
    let other = instance(&fleet, ttl, Duration::from_millis(250));
    // Renewed: still held after two TTLs.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(
        acquire(&other, &dave).await.err(),
        Some(Refusal::Full { slot: 0 })
    );
    // The instance dies without releasing: no driver, leases never dropped.
    driver.abort();
    std::mem::forget((l1, l2));
    drop(doomed);
    let started = Instant::now();
    assert!(
        acquire_within(&other, &dave, Duration::from_secs(3))
            .await
            .is_some(),
        "the crashed instance's slots free within the TTL"
    );
    // Bounded by the lease TTL (not the 3 s of polling), with room for a loaded machine.
    assert!(started.elapsed() <= ttl * 2, "{:?}", started.elapsed());
}

/// A handshake that aborts after its acquire script reached Redis (client gone, outer
/// timeout) gives its slot back at once, not after the lease TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_acquire_gives_its_slot_back() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let fleet = Fleet::new(server.connect().await)
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let ttl = Duration::from_secs(60);
    let a = instance(&fleet, ttl, Duration::from_secs(20));
    let b = instance(&fleet, ttl, Duration::from_secs(20));
    // Loads the script, so the abandoned acquire needs a single round trip.
    drop(acquire(&a, &[slot(0, "warm", 1)]).await.unwrap());
    let carol = [slot(0, "carol", 1)];
    // Redis busy for 400 ms with a script of its own: the acquire below is sent but not
    // answered while the handshake is abandoned, and runs once Redis is free again.
    let mut stats = server.connect().await;
    let zadds_before = zadd_calls(&mut stats).await;
    let mut busy = server.connect().await;
    let blocker = tokio::spawn(async move {
        redis::cmd("EVAL")
            .arg("local t = redis.call('TIME'); local s = t[1] * 1000000 + t[2]; repeat local n = redis.call('TIME'); until n[1] * 1000000 + n[2] - s > 400000; return 1")
            .arg(0)
            .query_async::<i64>(&mut busy)
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut pending = a.acquire(&carol);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut pending)
            .await
            .is_err(),
        "the acquire is still waiting for the busy Redis"
    );
    drop(pending);
    assert!(
        acquire_within(&b, &carol, Duration::from_secs(5))
            .await
            .is_some(),
        "the abandoned acquire's slot is free well before the 60 s TTL"
    );
    assert_eq!(blocker.await.unwrap().unwrap(), 1);
    // The abandoned acquire did reach Redis and take the slot (its script's ZADD ran).
    assert!(zadd_calls(&mut stats).await > zadds_before);
}

/// How many times Redis has run ZADD (scripts' calls included), from `INFO commandstats`.
async fn zadd_calls(conn: &mut redis::aio::ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_zadd:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// Every store, both policies, with Redis frozen (SIGSTOP), then stopped and restarted
/// with an empty script cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_by_policy_within_the_deadline_and_heals() {
    let Some(mut server) = common::redis_server() else {
        return;
    };
    let deadline = Duration::from_millis(100);
    let bound = deadline + Duration::from_secs(1);
    let fleet = Fleet::new(server.connect().await)
        .with_deadline(deadline)
        .unwrap()
        .with_circuit(2, Duration::from_millis(300))
        .unwrap();
    let ttl = Duration::from_millis(1500);
    let build = |policy| {
        RedisConnectionStore::builder(fleet.clone())
            .with_lease_ttl(ttl)
            .with_renew_every(Duration::from_millis(300))
            .with_failure_policy(policy)
            .build_and_spawn()
            .unwrap()
    };
    let (open, closed) = (build(FailurePolicy::Open), build(FailurePolicy::Closed));
    let budget = Budget::new().messages(rate(100).per(Duration::from_secs(1)));
    let budgets_open = RedisKeyStore::new(fleet.clone(), budget)
        .unwrap()
        .with_batch(1);
    let budgets_closed = budgets_open
        .clone()
        .with_failure_policy(FailurePolicy::Closed);
    let revoked_open = RedisRevocations::new(fleet.clone())
        .with_cache(Duration::ZERO, 0)
        .with_failure_policy(FailurePolicy::Open);
    let revoked_closed = RedisRevocations::new(fleet.clone()).with_cache(Duration::ZERO, 0);
    let erin = [slot(0, "erin", 3)];
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(acquire(&open, &erin).await.unwrap());
    }
    assert!(leases.iter().all(RedisLease::is_shared));
    let (mk_open, mk_closed) = (
        budgets_open.prepare(Key::custom("erin")),
        budgets_closed.prepare(Key::custom("erin")),
    );
    let query = RevocationQuery::new(Principal::new("erin"), SystemTime::now()).with_jti("j1");

    for phase in ["frozen", "stopped"] {
        if phase == "frozen" {
            server.freeze();
        } else {
            server.stop();
        }
        for round in 0..4 {
            let t = Instant::now();
            let lease = acquire(&open, &erin).await.expect("fail-open serves");
            assert!(
                !lease.is_shared(),
                "{phase} {round}: from the in-memory fallback"
            );
            assert!(t.elapsed() <= bound, "{phase} {round}: {:?}", t.elapsed());
            let t = Instant::now();
            assert_eq!(
                acquire(&closed, &erin).await.err(),
                Some(Refusal::Unavailable)
            );
            assert!(t.elapsed() <= bound);
            let t = Instant::now();
            let d = match budgets_closed.check_now(&mk_closed, Cost::message(1)) {
                Some(d) => d,
                None => budgets_closed.check(&mk_closed, Cost::message(1)).await,
            };
            assert_eq!(d, Decision::Unavailable);
            let d = match budgets_open.check_now(&mk_open, Cost::message(1)) {
                Some(d) => d,
                None => budgets_open.check(&mk_open, Cost::message(1)).await,
            };
            assert_eq!(d, Decision::Allow);
            assert!(revoked_closed.check(&query).await.is_err());
            assert_eq!(
                revoked_open.check(&query).await.unwrap(),
                RevocationStatus::Active
            );
            assert!(t.elapsed() <= bound * 4);
        }
        assert_ne!(
            fleet.circuit_state(),
            CircuitState::Closed,
            "{phase}: the circuit opened"
        );
        // While open, answers come at once, with no Redis call.
        let t = Instant::now();
        assert_eq!(
            acquire(&closed, &erin).await.err(),
            Some(Refusal::Unavailable)
        );
        assert!(t.elapsed() < deadline, "{phase}: {:?}", t.elapsed());

        if phase == "frozen" {
            server.thaw();
        } else {
            server.start();
            let mut conn = server.connect().await;
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        // The shared limit resumes by itself: the leases held all along are renewed (and
        // re-added after the restart), so erin's limit of 3 is full again fleet-wide.
        assert!(
            eventually(Duration::from_secs(5), || {
                let closed = closed.clone();
                async move {
                    matches!(
                        acquire(&closed, &[slot(0, "erin", 3)]).await.err(),
                        Some(Refusal::Full { slot: 0 })
                    )
                }
            })
            .await,
            "{phase}: the shared limit is back"
        );
        assert_eq!(fleet.circuit_state(), CircuitState::Closed);
        let lease = acquire(&open, &[slot(0, "frank", 3)]).await.unwrap();
        assert!(lease.is_shared(), "{phase}: shared again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_round_trip_and_cache() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let fleet = Fleet::new(server.connect().await)
        .with_deadline(Duration::from_secs(1))
        .unwrap();
    let a = RedisRevocations::new(fleet.clone());
    let b = RedisRevocations::new(fleet.clone()).with_cache(Duration::from_millis(500), 100);
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let token = RevocationQuery::new(Principal::new("gina"), now)
        .with_jti("token-1")
        .with_issued_at(now - Duration::from_secs(5))
        .with_expires_at(now + hour);
    // B asks first and caches "active".
    assert_eq!(b.check(&token).await.unwrap(), RevocationStatus::Active);
    a.revoke_token("token-1", now + hour).await.unwrap();
    // A sees it at once; B within its cache TTL.
    assert_eq!(a.check(&token).await.unwrap(), RevocationStatus::Revoked);
    assert_eq!(
        b.check(&token).await.unwrap(),
        RevocationStatus::Active,
        "cached"
    );
    assert!(
        eventually(Duration::from_secs(2), || {
            let (b, token) = (b.clone(), token.clone());
            async move { b.check(&token).await.unwrap() == RevocationStatus::Revoked }
        })
        .await
    );
    // The key holds no raw jti.
    let mut conn = fleet.connection().clone();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().all(|k| !k.contains("token-1")), "{keys:?}");

    // Log out everywhere: tokens issued before the cutoff, or without iat, are revoked.
    a.revoke_subject_before("gina", now, now + hour)
        .await
        .unwrap();
    let gina = |iat: Option<SystemTime>| {
        let q = RevocationQuery::new(Principal::new("gina"), now).with_jti("token-2");
        match iat {
            Some(iat) => q.with_issued_at(iat),
            None => q,
        }
    };
    let c = RedisRevocations::new(fleet.clone());
    assert_eq!(
        c.check(&gina(Some(now - Duration::from_secs(1))))
            .await
            .unwrap(),
        RevocationStatus::Revoked
    );
    assert_eq!(
        c.check(&gina(Some(now + Duration::from_secs(1))))
            .await
            .unwrap(),
        RevocationStatus::Active
    );
    assert_eq!(
        c.check(&gina(None)).await.unwrap(),
        RevocationStatus::Revoked
    );
    let harry = RevocationQuery::new(Principal::new("harry"), now);
    assert_eq!(c.check(&harry).await.unwrap(), RevocationStatus::Active);
}
