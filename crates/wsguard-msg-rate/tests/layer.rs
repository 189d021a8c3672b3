//! The layer as a tower service, on tokio's paused clock: bursts, refills, both scopes,
//! every action on excess.

use std::{convert::Infallible, future::Future, pin::Pin, time::Duration};

use axum::extract::ws::Message;
use http::{Extensions, Uri};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use wsguard_core::{
    Admit, ClientIp, ClientIpKey, Connection, ConnectionInfo, Inbound, Key, Principal,
    PrincipalKey, Reason, Rejection, Verdict,
};
use wsguard_msg_rate::{
    rate, Budget, Cost, Decision, InMemoryKeyStore, KeyStore, MessageRateLimitLayer, OnExcess,
    PreparedKey,
};

const RATE_LIMITED: &str = r#"{"type":"error","code":"rate_limited"}"#;

fn ten_per_second() -> Budget {
    Budget::new().messages(rate(10).per(Duration::from_secs(1)).burst(10))
}

fn info(principal: Option<&str>) -> ConnectionInfo {
    let mut ext = Extensions::new();
    if let Some(p) = principal {
        ext.insert(Principal::new(p));
    }
    ext.insert(ClientIp("192.0.2.1".parse().unwrap()));
    ConnectionInfo::new(&Connection::new(Uri::from_static("/ws"), &mut ext))
}

fn msg(text: &str) -> Message {
    Message::text(text)
}

#[derive(Debug, PartialEq)]
enum Seen {
    Admitted,
    Replied(String),
    Dropped,
    Closed(u16),
}

async fn send<S>(svc: &mut S, conn: &ConnectionInfo, m: Message) -> Seen
where
    S: Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible>,
{
    let verdict = svc
        .ready()
        .await
        .unwrap()
        .call(Inbound::new(m, conn.clone()))
        .await
        .unwrap();
    match verdict {
        Verdict::Admit(_) => Seen::Admitted,
        Verdict::Reply(Message::Text(t)) => Seen::Replied(t.to_string()),
        Verdict::Drop => Seen::Dropped,
        Verdict::Close(r) => Seen::Closed(r.close_code().unwrap()),
        other => panic!("unexpected {other:?}"),
    }
}

async fn flood<S>(svc: &mut S, conn: &ConnectionInfo, n: usize) -> (usize, Vec<Seen>)
where
    S: Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible>,
{
    let mut admitted = 0;
    let mut refused = Vec::new();
    for i in 0..n {
        match send(svc, conn, msg(&format!("m{i}"))).await {
            Seen::Admitted => admitted += 1,
            other => refused.push(other),
        }
    }
    (admitted, refused)
}

#[tokio::test(start_paused = true)]
async fn by_default_sustained_excess_closes_with_4429() {
    use wsguard_msg_rate::{DEFAULT_CLOSE_AFTER, DEFAULT_CLOSE_WINDOW};
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap();
    let mut svc = layer.layer(Admit);
    let conn = info(None);
    let mut seen = Vec::new();
    for i in 0..100 {
        let answer = send(&mut svc, &conn, msg(&format!("m{i}"))).await;
        let closed = matches!(answer, Seen::Closed(_));
        seen.push(answer);
        if closed {
            break;
        }
    }
    // The burst, then the tolerated refusals, then the close: a flood is cut.
    let tolerated = usize::try_from(DEFAULT_CLOSE_AFTER).unwrap();
    assert_eq!(seen.len(), 10 + tolerated + 1, "{seen:?}");
    assert!(seen[..10].iter().all(|s| *s == Seen::Admitted));
    assert!(seen[10..10 + tolerated]
        .iter()
        .all(|s| *s == Seen::Replied(RATE_LIMITED.into())));
    assert_eq!(seen.last(), Some(&Seen::Closed(4429)));

    // The tolerance refills at DEFAULT_CLOSE_AFTER per DEFAULT_CLOSE_WINDOW: an occasional
    // excess is forgiven.
    let mut svc = layer.layer(Admit);
    for round in 0..5 {
        let (admitted, refused) = flood(&mut svc, &conn, 11).await;
        assert_eq!((admitted, refused.len()), (10, 1), "round {round}");
        assert!(
            refused
                .iter()
                .all(|s| *s == Seen::Replied(RATE_LIMITED.into())),
            "round {round}: {refused:?}"
        );
        tokio::time::advance(DEFAULT_CLOSE_WINDOW).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_flood_gets_the_burst_then_the_stated_rate() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .never_close();
    let mut svc = layer.layer(Admit);
    let conn = info(None);

    // 100 messages at once: exactly the burst of 10 passes, 90 get the error frame.
    let (admitted, refused) = flood(&mut svc, &conn, 100).await;
    assert_eq!(admitted, 10);
    assert_eq!(refused.len(), 90);
    assert!(refused
        .iter()
        .all(|s| *s == Seen::Replied(RATE_LIMITED.into())));

    // 10 per second is one every 100 ms: one passes after 100 ms, not after 99.
    tokio::time::advance(Duration::from_millis(99)).await;
    assert_eq!(flood(&mut svc, &conn, 5).await.0, 0);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(flood(&mut svc, &conn, 5).await.0, 1);
    // Over the next second, at a steady pace, exactly 10 pass.
    let mut passed = 0;
    for _ in 0..10 {
        tokio::time::advance(Duration::from_millis(100)).await;
        passed += flood(&mut svc, &conn, 3).await.0;
    }
    assert_eq!(passed, 10);
    // A quiet second refills the whole burst, and no more.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(flood(&mut svc, &conn, 30).await.0, 10);
}

#[tokio::test(start_paused = true)]
async fn each_connection_has_its_own_budget_and_clones_share_it() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap();
    let conn = info(None);
    let mut first = layer.layer(Admit);
    let mut clone = first.clone();
    assert_eq!(flood(&mut first, &conn, 6).await.0, 6);
    assert_eq!(
        flood(&mut clone, &conn, 6).await.0,
        4,
        "a clone does not reset the budget"
    );
    let mut second = layer.layer(Admit);
    assert_eq!(flood(&mut second, &conn, 12).await.0, 10);
}

#[tokio::test(start_paused = true)]
async fn a_service_shared_by_two_connections_refuses_the_second_with_1011() {
    // The misuse: the plane built once and cloned for every socket. Before, bob's messages
    // spent alice's connection budget and were charged to alice's key.
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .per_key(PrincipalKey::default(), ten_per_second())
        .unwrap();
    let shared = layer.layer(Admit);
    let (mut for_alice, mut for_bob) = (shared.clone(), shared);
    let (alice, bob) = (info(Some("alice")), info(Some("bob")));
    assert_eq!(flood(&mut for_alice, &alice, 3).await.0, 3);
    assert_eq!(
        send(&mut for_bob, &bob, msg("hi")).await,
        Seen::Closed(1011)
    );
    // Nothing of bob's was charged: alice has the rest of her burst...
    assert_eq!(flood(&mut for_alice, &alice, 7).await.0, 7);
    // ...and bob, on a service of his own, his whole budget.
    let mut own = layer.layer(Admit);
    assert_eq!(flood(&mut own, &bob, 10).await.0, 10);
}

#[tokio::test(start_paused = true)]
async fn one_principal_shares_its_budget_across_connections() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(Budget::new().messages(rate(100).per(Duration::from_secs(1))))
        .unwrap()
        .per_key(PrincipalKey::default(), ten_per_second())
        .unwrap();
    let alice = info(Some("alice"));
    let (mut a1, mut a2) = (layer.layer(Admit), layer.layer(Admit));
    assert_eq!(flood(&mut a1, &alice, 7).await.0, 7);
    let (admitted, refused) = flood(&mut a2, &alice, 7).await;
    assert_eq!(admitted, 3, "the second socket of alice gets what is left");
    assert!(refused
        .iter()
        .all(|s| *s == Seen::Replied(RATE_LIMITED.into())));
    let bob = info(Some("bob"));
    assert_eq!(flood(&mut layer.layer(Admit), &bob, 12).await.0, 10);
    assert_eq!(layer.store().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn backpressure_delays_instead_of_refusing() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .on_excess(OnExcess::Backpressure);
    let mut svc = layer.layer(Admit);
    let conn = info(None);
    let start = Instant::now();
    for i in 0..13 {
        assert_eq!(
            send(&mut svc, &conn, msg(&format!("m{i}"))).await,
            Seen::Admitted
        );
    }
    // 10 at once, then one each 100 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn backpressure_on_a_shared_key_waits_for_the_key() {
    let layer = MessageRateLimitLayer::new()
        .per_key(PrincipalKey::default(), ten_per_second())
        .unwrap()
        .on_excess(OnExcess::Backpressure);
    let alice = info(Some("alice"));
    let (mut a1, mut a2) = (layer.layer(Admit), layer.layer(Admit));
    assert_eq!(flood(&mut a1, &alice, 10).await.0, 10);
    let start = Instant::now();
    assert_eq!(send(&mut a2, &alice, msg("late")).await, Seen::Admitted);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn sustained_abuse_closes_with_4429() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .close_after(5, Duration::from_secs(10))
        .unwrap();
    let mut svc = layer.layer(Admit);
    let conn = info(None);
    let (admitted, refused) = flood(&mut svc, &conn, 16).await;
    assert_eq!(admitted, 10);
    // Five refusals are tolerated, the sixth within the window closes.
    assert_eq!(refused.len(), 6);
    assert!(refused[..5]
        .iter()
        .all(|s| *s == Seen::Replied(RATE_LIMITED.into())));
    assert_eq!(refused[5], Seen::Closed(4429));

    // Refusals no denser than 5 per 10 s are forgiven, however long they go on.
    let mut svc = layer.layer(Admit);
    assert_eq!(flood(&mut svc, &conn, 10).await.0, 10);
    for _ in 0..20 {
        // Every 2 s, a burst of 11: the refilled burst of 10 passes, one is refused.
        tokio::time::advance(Duration::from_secs(2)).await;
        let (admitted, refused) = flood(&mut svc, &conn, 11).await;
        assert_eq!(admitted, 10);
        assert_eq!(refused, vec![Seen::Replied(RATE_LIMITED.into())]);
    }
    // close_after(0, ..) closes at once.
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .close_after(0, Duration::from_secs(1))
        .unwrap();
    let (admitted, refused) = flood(&mut layer.layer(Admit), &conn, 11).await;
    assert_eq!((admitted, refused), (10, vec![Seen::Closed(4429)]));
}

#[tokio::test(start_paused = true)]
async fn the_error_frame_is_the_applications_choice() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .error_frame(|r: &Rejection| {
            Some(format!(
                r#"{{"error":"slow down","retry_ms":{}}}"#,
                r.retry_after().unwrap_or_default().as_millis()
            ))
        });
    let conn = info(None);
    let (_, refused) = flood(&mut layer.layer(Admit), &conn, 11).await;
    assert_eq!(
        refused,
        vec![Seen::Replied(
            r#"{"error":"slow down","retry_ms":100}"#.into()
        )]
    );

    let silent = MessageRateLimitLayer::new()
        .per_connection(ten_per_second())
        .unwrap()
        .error_frame(|_: &Rejection| None);
    let (_, refused) = flood(&mut silent.layer(Admit), &conn, 11).await;
    assert_eq!(refused, vec![Seen::Dropped]);
}

#[tokio::test(start_paused = true)]
async fn byte_budgets_count_payload_bytes() {
    let layer = MessageRateLimitLayer::new()
        .per_connection(Budget::new().bytes(rate(1000).per(Duration::from_secs(1)).burst(1000)))
        .unwrap();
    let mut svc = layer.layer(Admit);
    let conn = info(None);
    let hundred = "x".repeat(100);
    assert_eq!(flood_with(&mut svc, &conn, &hundred, 12).await, 10);
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(flood_with(&mut svc, &conn, &hundred, 2).await, 1);
    // A message larger than the burst can never pass: 1009.
    assert_eq!(
        send(&mut svc, &conn, msg(&"x".repeat(1001))).await,
        Seen::Closed(1009)
    );
}

async fn flood_with<S>(svc: &mut S, conn: &ConnectionInfo, text: &str, n: usize) -> usize
where
    S: Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible>,
{
    let mut admitted = 0;
    for _ in 0..n {
        if send(svc, conn, msg(text)).await == Seen::Admitted {
            admitted += 1;
        }
    }
    admitted
}

#[tokio::test(start_paused = true)]
async fn a_missing_identity_is_a_configuration_error() {
    let layer = MessageRateLimitLayer::new()
        .per_key(PrincipalKey::default(), ten_per_second())
        .unwrap();
    let anonymous = info(None);
    assert_eq!(
        send(&mut layer.layer(Admit), &anonymous, msg("x")).await,
        Seen::Closed(Rejection::new(Reason::Internal).close_code().unwrap())
    );
    // Keyed by client IP instead, the same connection is counted.
    let layer = MessageRateLimitLayer::new()
        .per_key(ClientIpKey::new(), ten_per_second())
        .unwrap();
    assert_eq!(flood(&mut layer.layer(Admit), &anonymous, 11).await.0, 10);
}

/// A store that answers later, as a networked one would.
#[derive(Clone)]
struct SlowStore(InMemoryKeyStore);

impl KeyStore for SlowStore {
    type Prepared = PreparedKey;
    type Future = Pin<Box<dyn Future<Output = Decision> + Send>>;

    fn prepare(&self, key: Key) -> PreparedKey {
        self.0.prepare(key)
    }

    fn check(&self, key: &PreparedKey, cost: Cost) -> Self::Future {
        let (store, key) = (self.0.clone(), key.clone());
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            store.decide(&key, cost)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn another_key_store_plugs_in() {
    let store = SlowStore(InMemoryKeyStore::new(ten_per_second()).unwrap());
    let layer = MessageRateLimitLayer::new().per_key_store(PrincipalKey::default(), store);
    let alice = info(Some("alice"));
    let start = Instant::now();
    let (admitted, refused) = flood(&mut layer.layer(Admit), &alice, 11).await;
    assert_eq!(admitted, 10);
    assert_eq!(refused, vec![Seen::Replied(RATE_LIMITED.into())]);
    assert_eq!(start.elapsed(), Duration::from_millis(55));
}

#[test]
fn bad_configurations_fail_at_build_time() {
    use wsguard_msg_rate::ConfigError;
    let err = MessageRateLimitLayer::new()
        .per_connection(Budget::new())
        .unwrap_err();
    assert_eq!(err, ConfigError::EmptyBudget);
    let err = MessageRateLimitLayer::new()
        .per_connection(Budget::new().messages(rate(10).per(Duration::ZERO)))
        .unwrap_err();
    assert_eq!(err, ConfigError::ZeroRate("message"));
    let err = MessageRateLimitLayer::new()
        .close_after(3, Duration::ZERO)
        .unwrap_err();
    assert_eq!(err, ConfigError::ZeroRate("refusal"));
    assert!(!err.to_string().is_empty());
}
