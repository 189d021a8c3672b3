//! Fleet mode for wsguard: connection limits, message budgets and token revocation shared
//! by every instance of a service through Redis.
//!
//! A WebSocket service runs several instances behind a load balancer, and every in-process
//! limit multiplies by their number: a user limited to 3 connections gets 3 per instance, a
//! per-user message budget is spent once per instance, and a token revoked on one node keeps
//! working on the others. This crate implements the store traits of the wsguard crates on
//! Redis, the engine such fleets already run:
//!
//! | store | trait | what Redis holds |
//! |---|---|---|
//! | [`RedisConnectionStore`] | `wsguard_conn_limit::ConnectionStore` | a sorted set of leases per limited key, renewed while the socket lives |
//! | [`RedisKeyStore`] | `wsguard_msg_rate::KeyStore` | the GCRA state of each key's message and byte budgets ([`Gcra`]) |
//! | [`RedisRevocations`] | `wsguard_jwt_auth::Revocation` | revoked `jti`s (hashed) and per-subject cutoffs; revocations published to every instance's [`RevocationSubscriber`], which closes the live sockets |
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use wsguard_conn_limit::ConnLimitLayer;
//! use wsguard_core::PrincipalKey;
//! use wsguard_msg_rate::{rate, Budget, MessageRateLimitLayer};
//! use wsguard_redis::{FailurePolicy, Fleet, RedisConnectionStore, RedisKeyStore, RedisRevocations};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The connection the application already has: it reconnects by itself.
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! let conn = redis::aio::ConnectionManager::new(client).await?;
//! let fleet = Fleet::new(conn).with_prefix("chat:").with_deadline(Duration::from_millis(50))?;
//!
//! // 3 sockets per user across the fleet; the lease driver runs on this runtime.
//! let leases = RedisConnectionStore::builder(fleet.clone())
//!     .with_failure_policy(FailurePolicy::Closed) // 503 + Retry-After while Redis is down
//!     .build_and_spawn()?;
//! let conn_limit = ConnLimitLayer::builder().per_principal(3).store(leases).build()?;
//!
//! // 10 messages a second per user, over all of their sockets and instances.
//! let budgets = RedisKeyStore::new(
//!     fleet.clone(),
//!     Budget::new().messages(rate(10).per(Duration::from_secs(1)).burst(20)),
//! )?;
//! let rate_limit = MessageRateLimitLayer::new().per_key_store(PrincipalKey::default(), budgets);
//!
//! // Revocation for wsguard-jwt-auth's `JwtAuthLayer::with_revocation` (see below for
//! // closing the live sockets of what is revoked).
//! let revocations = RedisRevocations::new(fleet);
//! revocations
//!     .revoke_subject_before("mallory", std::time::SystemTime::now(),
//!         std::time::SystemTime::now() + Duration::from_secs(86_400))
//!     .await?;
//! # let _ = (conn_limit, rate_limit);
//! # Ok(())
//! # }
//! ```
//!
//! # Keys
//!
//! Every key starts with the [`Fleet`]'s prefix (default `wsguard:`): `cl:<limit>:<class>:<value>`
//! for connection leases, `mr:<class>:<value>` for budgets, `rv:jti:<sha-256 of the jti, 128
//! bits>` and `rv:sub:<subject>` for revocation. The `<value>` of an address, a network or a
//! principal is readable; that of a header key (an API key id, say) or a custom key is the
//! SHA-256 of the value, 128 bits in hex, so a secret never shows in `KEYS` or `MONITOR`.
//! User ids and addresses appear only inside key names, never in an error text, a metric
//! label or a log line above debug level; no key holds a token. Each script touches exactly one key, so every store works on Redis Cluster
//! without hash tags (the lease renewals and releases of several keys are separate commands
//! sent together); `tests/cluster.rs` runs the three stores' shared limits on a three-node
//! cluster through redis's cluster connection (`cluster-async`, enabled by the application).
//!
//! # Deadlines and the circuit
//!
//! Every Redis call runs under wsguard's own deadline (default 50 ms,
//! [`Fleet::with_deadline`]), because a client's own timeouts do not cover its reconnect
//! path (redis-rs: a command waits for the whole reconnect): a dead, frozen (SIGSTOP) or slow
//! Redis never holds a handshake or a message longer than the deadline. The deadline is
//! tokio's timer: redis 1.x's async connections need a runtime feature, and this crate
//! enables `tokio-comp`, so the stores run inside a tokio runtime, like the connection.
//!
//! After 3 consecutive failures ([`Fleet::with_circuit`]) the circuit opens: for 1 s no
//! call is made and every store answers by its failure policy at once (synchronously, in the
//! stores' `*_now` methods), so a dead Redis does not cost the deadline on every request.
//! Then one call probes Redis; the circuit closes when a call succeeds. The stores built
//! from clones of one `Fleet` share its circuit.
//!
//! # Failure policy
//!
//! Each store says what it does when Redis cannot answer, set in its builder with
//! `with_failure_policy`:
//!
//! | store | default | why |
//! |---|---|---|
//! | [`RedisConnectionStore`] | [`FailurePolicy::Open`]: the in-memory `InMemoryConnectionStore` answers, limits per instance | a Redis outage must not take every WebSocket down; each instance stays bounded by its own limits |
//! | [`RedisKeyStore`] | [`FailurePolicy::Open`]: the in-memory `InMemoryKeyStore` of the same budget answers | the per-connection budgets stay in front anyway; closing every socket (1013) on a Redis blip would be the bigger outage |
//! | [`RedisRevocations`] | [`FailurePolicy::Closed`]: a `RevocationError`, which `wsguard-jwt-auth` refuses by default | a revoked token must not work again because Redis is down; this matches the layer's own default |
//!
//! Fail-closed answers: `Refusal::Unavailable` (503 with `Retry-After` before the upgrade),
//! `Decision::Unavailable` (close 1013 "try again later" after it), and a `RevocationError`.
//! Every answer by policy is counted in `wsguard_redis_fallbacks_total{store, policy}`
//! (feature `metrics`); each store logs one warning when it starts answering by policy and
//! one info line when Redis answers again, never one per request. The circuit counts its
//! transitions in `wsguard_redis_circuit_transitions_total{to}`. [`describe_metrics`]
//! describes both (help text, unit) and registers every series at zero.
//!
//! # Revocation that reaches live sockets
//!
//! A revoked token is refused at its next handshake on every instance; the sockets it opened
//! before are closed too, on every instance, within a round trip:
//!
//! 1. each instance registers its authenticated connections in a
//!    `wsguard_jwt_auth::LiveSessions` (`JwtAuthLayer::with_sessions`), and gives the same
//!    registry to its store ([`RedisRevocations::with_sessions`]);
//! 2. [`RedisRevocations::revoke_token`] and [`RedisRevocations::revoke_subject_before`]
//!    store the revocation, close the matching sockets of this instance at once, and
//!    `PUBLISH` it on the channel `<prefix>rv:closed` (`wsguard:rv:closed` by default) as
//!    `t:<token id>` (the first 128 bits of the SHA-256 of the `jti`, in hex, the name its
//!    key uses) or `s:<cutoff in ms since the epoch>:<subject>`: never a token, never a raw
//!    `jti`;
//! 3. each instance's [`RevocationSubscriber`] (a future on its own Pub/Sub connection,
//!    [`RedisRevocations::spawn_subscriber`]) drops the cached answers the revocation changed
//!    and closes its matching sockets.
//!
//! Sockets close with **4403** (`Reason::Forbidden`: the answer the revoked token gets at a
//! handshake, 403 or 4403 in close mode) through the one closing handshake, when they are
//! served through the message plane (`wsguard_core::GuardedSocket`, the facade's
//! `SocketGuard`) or wrapped with `wsguard_core::Hygiene::wrap_connection`.
//!
//! Pub/Sub delivers a message only to subscribers connected at that moment. A subscriber
//! that lost its connection connects again by itself ([`SUBSCRIBER_RETRY_MIN`] doubling up
//! to [`SUBSCRIBER_RETRY_MAX`], 2 s; a ping every [`SUBSCRIBER_PING_EVERY`] finds a
//! connection that died silently) and then checks every live session of its instance against
//! Redis again, closing those revoked meanwhile, and drops its whole cache; a check that
//! cannot complete starts over with the next connection. So a revocation never leaves a
//! socket open for longer than Redis is unreachable from that instance plus one retry
//! interval. The check costs one `GET` per distinct subject and one per distinct token of
//! the instance's live connections, 16 at a time.
//!
//! ```no_run
//! use std::time::{Duration, SystemTime};
//! use wsguard_jwt_auth::{JwtAuthLayer, LiveSessions, NoClaims, VerifyingKey, Algorithm};
//! use wsguard_redis::{Fleet, RedisRevocations};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1/")?;
//! let fleet = Fleet::new(redis::aio::ConnectionManager::new(client.clone()).await?);
//!
//! let sessions = LiveSessions::new();
//! let revocations = RedisRevocations::new(fleet).with_sessions(sessions.clone());
//! revocations.spawn_subscriber(client); // its own Pub/Sub connection
//! let auth = JwtAuthLayer::<NoClaims>::new(VerifyingKey::hmac(Algorithm::HS256, &[42; 32])?)
//!     .with_revocation(revocations.clone())
//!     .with_sessions(sessions);
//!
//! // On any instance: alice's sockets close with 4403 on every instance.
//! let now = SystemTime::now();
//! revocations.revoke_subject_before("alice", now, now + Duration::from_secs(86_400)).await?;
//! # let _ = auth;
//! # Ok(())
//! # }
//! ```
//!
//! # Connection leases
//!
//! A lease is a member of the limited key's sorted set: this instance's random id and a
//! counter (never a timestamp), scored with its expiry computed from Redis `TIME` inside the
//! script. Acquiring drops expired members, counts, adds if under the maximum and keeps the
//! key alive as long as its longest lease, in one script per key; a stack of limits sends
//! its keys' scripts together (one round trip), and what was taken is given back when a key
//! is full. The
//! [`LeaseDriver`] renews every live lease of the instance once per renewal interval
//! (default 10 s) and releases dropped leases as they come: a lease's `Drop` only sends to
//! it, never blocks. A lease that is not renewed (a crashed instance) expires within the
//! TTL (default 30 s). After a Redis restart without persistence the next renewal adds the
//! live leases back. The driver is a plain future: spawn it on any executor, or use
//! [`RedisConnectionStoreBuilder::build_and_spawn`] on tokio.
//!
//! # Measured
//!
//! Release build, `redis-server` on loopback on the same 2-core machine, every figure against
//! the in-memory store measured in the same run (`benches/fleet.rs`, paired rounds; details
//! in the repository's BENCHMARKS.md, 2026-11-30):
//!
//! - **A message of a key far from its limit** ([`RedisKeyStore`], the local reservation):
//!   116-120 ns against 117 ns in memory, **0.99x and 1.03x** in two runs (quartiles
//!   0.95-1.08x). Before the local reservation was spent with atomics and refilled ahead,
//!   2,475 ns (9.5x): every 64th message waited for a round trip, which is where the time
//!   went (perf: the process mostly waiting in the kernel's socket wake-ups).
//! - **A handshake's lease** ([`RedisConnectionStore`]): one script per limited key, sent
//!   together. With one per-IP limit, 4.8-5.2 µs of CPU in the process and 7.6 µs in
//!   `redis-server` per handshake; with global, per-IP and per-principal limits, 11.2 µs and
//!   23 µs. Against a whole handshake of 80-110 µs of server CPU, a CPU-bound instance keeps
//!   **0.87-0.90x** of its handshake throughput with one limit and **0.70-0.77x** with three
//!   (0.95x and 0.88-0.91x when Redis runs on another machine). Added latency, one
//!   handshake at a time: one round trip, p50 27-111 µs, p99 150-260 µs on this shared
//!   machine.
//!
//! Accuracy (`tests/batch.rs`, `--nocapture` prints the figures; debug build): two instances
//! flooding one key of 1000 messages/s (burst 100) for 2 s passed 2094 to 2099 of the 2100
//! allowed with batch caps of 1, 8 and 64: near the limit the reservation shrinks to nothing
//! (a quarter of what is left), so accuracy there is that of one call per message, and never
//! above the budget. `tests/reserve.rs`: six connections on two instances flooding a budget
//! that does not refill admit exactly its burst (5000 of 5000), 99% of them without a Redis
//! call, never more. In the same debug build a message far from its limit costs 166 ns in
//! memory, 230 µs with one Redis call per message (`with_batch(1)`), 2.3 µs with a cap of
//! 64 and 359 ns with 1024 (the default cap is 4096).
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `metrics` | fallback and circuit counters through the `metrics` facade |
//!
//! # Contributor notes
//!
//! - **One way through.** `subscriber.rs` (the Pub/Sub subscriber of the revocation store)
//!   uses `revocation.rs`. `conn.rs`, `budget.rs` and `revocation.rs` (one store each) use
//!   `gcra.rs` (the GCRA script) and `keys.rs` (key names), which use `fleet.rs` (the
//!   connection, deadline, circuit, policy and errors) and `telemetry.rs`. Nothing imports
//!   upwards.
//! - **Scripts** live next to their store as `LazyLock<redis::Script>`; `invoke_async`
//!   loads them again after a `SCRIPT FLUSH` or a restart. Each touches one key, and reads
//!   time only from `TIME`.
//! - **Tests** start their own `redis-server` (`tests/common`; `redis_cluster` starts three
//!   `--cluster-enabled` nodes and joins them with `redis-cli --cluster create`); with `CI`
//!   set a missing binary fails them. Every loop and wait in them is bounded in count and
//!   time.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod conn;
mod fleet;
mod gcra;
mod keys;
mod revocation;
mod subscriber;
mod telemetry;

pub use budget::{CheckFuture, RedisKeyStore, RedisPreparedKey, DEFAULT_BATCH, DEFAULT_BATCH_HOLD};
pub use conn::{
    AcquireFuture, LeaseDriver, RedisConnectionStore, RedisConnectionStoreBuilder, RedisLease,
    DEFAULT_LEASE_TTL, DEFAULT_RENEW_EVERY,
};
pub use fleet::{
    CircuitState, ConfigError, FailurePolicy, Fleet, DEFAULT_CIRCUIT_FAILURES,
    DEFAULT_CIRCUIT_OPEN_FOR, DEFAULT_DEADLINE, DEFAULT_PREFIX,
};
pub use gcra::{Gcra, GcraOutcome};
pub use revocation::{
    RedisRevocations, RevocationFuture, DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL,
};
pub use subscriber::{
    RevocationSubscriber, SUBSCRIBER_PING_EVERY, SUBSCRIBER_RETRY_MAX, SUBSCRIBER_RETRY_MIN,
    SUBSCRIBER_TIMEOUT,
};
pub use telemetry::describe_metrics;
