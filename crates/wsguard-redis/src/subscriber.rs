//! Revocations that reach the live sockets of every instance: [`RevocationSubscriber`], the
//! Pub/Sub subscriber of a [`RedisRevocations`] store.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    pin::{pin, Pin},
    sync::Weak,
    task::{Context, Poll},
    time::{Duration, UNIX_EPOCH},
};

use futures_util::{
    future::{select, Either},
    stream::{self, StreamExt},
};
use redis::{aio::ConnectionLike, Msg};
use tokio::{sync::watch, time::timeout};
use wsguard_core::Principal;
use wsguard_jwt_auth::{LiveSession, TokenId};

use crate::{
    fleet::Failure,
    revocation::{millis, Inner, Published, RedisRevocations},
};

/// The first wait before the subscriber connects again after losing its connection: 100 ms.
/// It doubles after each failed attempt, up to [`SUBSCRIBER_RETRY_MAX`].
pub const SUBSCRIBER_RETRY_MIN: Duration = Duration::from_millis(100);

/// The longest wait between two attempts of the subscriber to connect: 2 s.
pub const SUBSCRIBER_RETRY_MAX: Duration = Duration::from_secs(2);

/// How often the subscriber pings Redis on its connection, to find a connection that died
/// without being closed (a network partition): 5 s. A ping unanswered within
/// [`SUBSCRIBER_TIMEOUT`] counts as a lost connection.
pub const SUBSCRIBER_PING_EVERY: Duration = Duration::from_secs(5);

/// How long the subscriber waits for Redis to connect and confirm the subscription, or to
/// answer a ping: 2 s.
pub const SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(2);

/// How many Redis calls the re-check after a (re)subscription runs at once: 16.
const RECHECK_CONCURRENCY: usize = 16;

/// The subscriber of a [`RedisRevocations`] store: receives the revocations published by
/// every instance and closes the matching sockets of this one.
///
/// A future; it runs until every clone of the store is gone. Spawn it on the application's
/// tokio runtime (`tokio::spawn(subscriber)`), or use
/// [`RedisRevocations::spawn_subscriber`].
///
/// On each publication it drops the answers the revocation changed from this instance's
/// cache (so the next handshake asks Redis), and closes the matching connections registered
/// in the store's `LiveSessions` (see [`RedisRevocations::with_sessions`]) with 4403.
///
/// It keeps its own connection (Redis Pub/Sub needs a dedicated one: `redis::Client::get_async_pubsub`)
/// and connects again by itself after losing it, waiting [`SUBSCRIBER_RETRY_MIN`] first,
/// doubling up to [`SUBSCRIBER_RETRY_MAX`]. Pub/Sub does not keep messages for a
/// subscriber that is away, so after every (re)subscription it drops the whole cache and
/// checks each live connection against Redis again, closing those revoked meanwhile; a check
/// that cannot complete (Redis failing) drops the connection and starts over. A revocation
/// published while this instance was cut off from Redis therefore closes its sockets at most
/// one retry interval (2 s) after Redis is reachable again; one published while it was
/// connected, within one round trip.
///
/// Logs (target `wsguard_redis`): one warning when the subscription is lost, one info line
/// when it is back; never a subject or a token.
///
/// See the [crate docs](crate#revocation-that-reaches-live-sockets) for an example.
pub struct RevocationSubscriber {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl fmt::Debug for RevocationSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationSubscriber")
            .finish_non_exhaustive()
    }
}

impl Future for RevocationSubscriber {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.as_mut().poll(cx)
    }
}

impl<C> RedisRevocations<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// The subscriber that closes this instance's sockets when any instance revokes their
    /// token or subject, on its own connection from `client` (the Redis the fleet's
    /// connection talks to; with Redis Cluster, any node: publications reach every node).
    /// Spawn it (`tokio::spawn`); it ends by itself when every clone of this store is gone.
    pub fn subscriber(&self, client: redis::Client) -> RevocationSubscriber {
        RevocationSubscriber {
            inner: Box::pin(subscribe(
                self.downgrade(),
                self.alive(),
                client,
                self.channel().to_vec(),
            )),
        }
    }

    /// [`subscriber`](Self::subscriber), spawned on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn spawn_subscriber(&self, client: redis::Client) {
        tokio::spawn(self.subscriber(client));
    }
}

/// Why a subscription ended.
enum Ended {
    /// The store is gone: the subscriber ends.
    StoreGone,
    /// The connection was lost (or a check failed): connect again.
    Lost,
}

async fn subscribe<C>(
    store: Weak<Inner<C>>,
    mut alive: watch::Receiver<()>,
    client: redis::Client,
    channel: Vec<u8>,
) where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let mut retry = SUBSCRIBER_RETRY_MIN;
    let mut lost_logged = false;
    loop {
        let connected = timeout(SUBSCRIBER_TIMEOUT, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        });
        let connected = match select(pin!(connected), pin!(alive.changed())).await {
            Either::Left((connected, _)) => connected,
            Either::Right(_) => return,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                if lost_logged {
                    tracing::info!(
                        target: "wsguard_redis",
                        "revocation subscriber connected again"
                    );
                }
                lost_logged = false;
                retry = SUBSCRIBER_RETRY_MIN;
                match listen(&store, &mut alive, pubsub).await {
                    Ended::StoreGone => return,
                    Ended::Lost => {}
                }
            }
            Ok(Err(error)) => tracing::debug!(
                target: "wsguard_redis",
                error = %Failure::Redis(error),
                "revocation subscriber could not subscribe"
            ),
            Err(_elapsed) => tracing::debug!(
                target: "wsguard_redis",
                "revocation subscriber: redis did not answer in time"
            ),
        }
        if !lost_logged {
            tracing::warn!(
                target: "wsguard_redis",
                "revocation subscriber lost redis: live sockets are checked again when it is back"
            );
            lost_logged = true;
        }
        let wait = pin!(tokio::time::sleep(retry));
        if let Either::Right(_) = select(wait, pin!(alive.changed())).await {
            return;
        }
        retry = (retry * 2).min(SUBSCRIBER_RETRY_MAX);
    }
}

/// Re-checks the live sessions, then applies the publications until the connection is lost
/// or the store is gone.
async fn listen<C>(
    store: &Weak<Inner<C>>,
    alive: &mut watch::Receiver<()>,
    pubsub: redis::aio::PubSub,
) -> Ended
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let (mut sink, mut messages) = pubsub.split();
    // Subscribed first, checked second: a revocation made in between is in both, never in
    // neither.
    match recheck(store).await {
        Some(true) => {}
        Some(false) => return Ended::Lost,
        None => return Ended::StoreGone,
    }
    let mut ping = tokio::time::interval(SUBSCRIBER_PING_EVERY);
    ping.tick().await;
    loop {
        let next = pin!(messages.next());
        let tick = pin!(ping.tick());
        let gone = pin!(alive.changed());
        match select(select(next, tick), gone).await {
            Either::Right(_) => return Ended::StoreGone,
            Either::Left((Either::Left((Some(msg), _)), _)) => {
                let Some(inner) = store.upgrade() else {
                    return Ended::StoreGone;
                };
                apply(&inner, &msg);
            }
            Either::Left((Either::Left((None, _)), _)) => return Ended::Lost,
            Either::Left((Either::Right(_), _)) => {
                let answered = timeout(SUBSCRIBER_TIMEOUT, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return Ended::Lost;
                }
            }
        }
    }
}

/// Applies one publication: forgets the cached answers it changed, closes the matching
/// sessions.
fn apply<C>(inner: &Inner<C>, msg: &Msg)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let Some(published) = Published::decode(msg.get_payload_bytes()) else {
        tracing::debug!(target: "wsguard_redis", "revocation channel: message ignored");
        return;
    };
    match published {
        Published::Token(id) => {
            inner.forget(&token_key(inner, id));
            if let Some(sessions) = &inner.sessions {
                sessions.close_token_id(id);
            }
        }
        Published::Subject { cutoff_ms, subject } => {
            inner.forget(&subject_key(inner, &subject));
            if let Some(sessions) = &inner.sessions {
                let cutoff = UNIX_EPOCH + Duration::from_millis(cutoff_ms);
                sessions.close_subject_before(&subject, cutoff);
            }
        }
    }
}

fn token_key<C>(inner: &Inner<C>, id: TokenId) -> Vec<u8>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    inner.fleet.key(&[b"rv", b"jti", id.to_string().as_bytes()])
}

fn subject_key<C>(inner: &Inner<C>, subject: &str) -> Vec<u8>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    inner.fleet.key(&[b"rv", b"sub", subject.as_bytes()])
}

/// Checks every live session against Redis, closing the revoked ones: `Some(true)` when
/// every answer came, `Some(false)` when one failed (check again later), `None` when the
/// store is gone.
async fn recheck<C>(store: &Weak<Inner<C>>) -> Option<bool>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let inner = store.upgrade()?;
    inner.forget_all();
    let Some(sessions) = inner.sessions.clone() else {
        return Some(true);
    };
    let live = sessions.sessions();
    if live.is_empty() {
        return Some(true);
    }
    let subjects: HashSet<Principal> = live.iter().map(|s| s.subject().clone()).collect();
    let tokens: HashSet<TokenId> = live.iter().filter_map(LiveSession::token).collect();
    let get = |key: Vec<u8>| {
        let inner = &inner;
        async move {
            let mut conn = inner.fleet.conn.clone();
            let mut cmd = redis::cmd("GET");
            cmd.arg(key);
            inner
                .fleet
                .call(async move { cmd.query_async::<Option<u64>>(&mut conn).await })
                .await
        }
    };
    let mut complete = true;
    let cutoffs: HashMap<Principal, Option<u64>> = stream::iter(subjects)
        .map(|subject| {
            let key = subject_key(&inner, subject.as_str());
            let get = get(key);
            async move { (subject, get.await) }
        })
        .buffer_unordered(RECHECK_CONCURRENCY)
        .filter_map(|(subject, answer)| {
            let kept = answer.ok().map(|cutoff| (subject, cutoff));
            complete &= kept.is_some();
            std::future::ready(kept)
        })
        .collect()
        .await;
    let revoked: HashSet<TokenId> = stream::iter(tokens)
        .map(|id| {
            let get = get(token_key(&inner, id));
            async move { (id, get.await) }
        })
        .buffer_unordered(RECHECK_CONCURRENCY)
        .filter_map(|(id, answer)| {
            let kept = match answer {
                Ok(Some(_)) => Some(id),
                Ok(None) => None,
                Err(_) => {
                    complete = false;
                    None
                }
            };
            std::future::ready(kept)
        })
        .collect()
        .await;
    let mut closed = 0usize;
    for session in &live {
        let token_revoked = session.token().is_some_and(|id| revoked.contains(&id));
        let subject_revoked = cutoffs
            .get(session.subject())
            .copied()
            .flatten()
            .is_some_and(|cutoff| session.issued_at().is_none_or(|iat| millis(iat) < cutoff));
        if (token_revoked || subject_revoked) && session.close() {
            closed += 1;
        }
    }
    if closed > 0 || !complete {
        tracing::debug!(
            target: "wsguard_redis",
            live = live.len(),
            closed,
            complete,
            "revocation subscriber: live sessions checked again"
        );
    }
    Some(complete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::jti_part;

    #[test]
    fn publications_round_trip_and_name_the_stored_keys() {
        let token = Published::Token(TokenId::of("token-42"));
        assert_eq!(Published::decode(&token.encode()), Some(token));
        let subject = Published::Subject {
            cutoff_ms: 1_700_000_000_123,
            subject: "user:with:colons".to_owned(),
        };
        assert_eq!(subject.encode(), b"s:1700000000123:user:with:colons");
        assert_eq!(Published::decode(&subject.encode()), Some(subject));
        for junk in [
            &b""[..],
            b"t:",
            b"t:xyz",
            b"s:12",
            b"s:x:alice",
            b"q:1",
            b"\xff\xfe",
        ] {
            assert_eq!(Published::decode(junk), None, "{junk:?}");
        }
        // The token id a publication carries names the key the store wrote.
        assert_eq!(
            TokenId::of("token-42").to_string().as_bytes(),
            jti_part("token-42").as_slice()
        );
    }
}
