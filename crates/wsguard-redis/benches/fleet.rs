//! What fleet mode costs against the in-memory stores, measured in the same run: a private
//! `redis-server` on a loopback port (no persistence, as the tests start it), release build.
//!
//! `cargo bench -p wsguard-redis --bench fleet` (figures in BENCHMARKS.md). Without
//! `--bench` (`cargo test --benches`) every case runs a few iterations, as a smoke test.
//!
//! - **handshakes**: requests through `ConnLimitLayer` (one per-IP limit, and the stack of
//!   global, per-IP and per-principal limits) with the in-memory store and with
//!   `RedisConnectionStore`, the response dropped at once (the lease released). Paired
//!   rounds, the two stores in turn: wall time and CPU time per handshake with 16 handshakes
//!   in flight (the CPU of this process and of `redis-server`, from `/proc`), and the latency
//!   of one handshake at a time, p50 and p99.
//! - **messages**: one message of a key far from its limit through `MessageRateLimitLayer`
//!   (a per-key message and byte budget) with `InMemoryKeyStore` and with `RedisKeyStore`.
//!   Paired rounds: time per message and the median of the ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    convert::Infallible,
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Request, Response};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use wsguard_conn_limit::ConnLimitLayer;
use wsguard_core::{
    Admit, ClientIp, Connection, ConnectionInfo, Inbound, MessageKind, Principal, PrincipalKey,
    Rejection, Verdict, WsMessage,
};
use wsguard_msg_rate::{rate, Budget, MessageRateLimitLayer};
use wsguard_redis::{Fleet, RedisConnectionStore, RedisKeyStore};

/// Whether this is `cargo bench` (else a smoke run).
fn full() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn main() {
    let Some(server) = common::redis_server() else {
        return;
    };
    let cases: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| cases.is_empty() || cases.iter().any(|c| name.contains(c.as_str()));
    if wants("handshakes") {
        // One thread, as a server's runtime thread: the requests, the connection to Redis
        // and the lease driver share it (redis-server has the other core).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (fleet, redis_pid) = fleet(&server).await;
            handshakes(&fleet, redis_pid).await;
        });
    }
    if wants("messages") {
        // The messages are checked on this thread; the connection to Redis and the
        // background refills run on the runtime's one worker.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (fleet, _) = fleet(&server).await;
            messages(&fleet).await;
        });
    }
}

/// A fleet on the bench's server, and redis-server's process id.
async fn fleet(server: &common::RedisServer) -> (Fleet<redis::aio::ConnectionManager>, u32) {
    let conn = server.connect().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn.clone())
        .await
        .expect("INFO");
    let redis_pid = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .expect("redis-server's pid");
    let fleet = Fleet::new(conn)
        .with_deadline(Duration::from_secs(1))
        .expect("a deadline");
    (fleet, redis_pid)
}

/// CPU seconds used so far by process `pid` (every thread), from the schedulers' own
/// accounting in nanoseconds (`/proc/<pid>/task/*/schedstat`).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn quartiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 4], values[3 * values.len() / 4])
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[at]
}

fn handshake_request(n: u32) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))));
    req.extensions_mut()
        .insert(Principal::new(if n.is_multiple_of(2) {
            "alice"
        } else {
            "bob"
        }));
    req
}

async fn handshake<S, B>(svc: &mut S, n: u32) -> bool
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    let ready = svc.ready().await.unwrap_or_else(|e| match e {});
    let response = ready
        .call(handshake_request(n))
        .await
        .unwrap_or_else(|e| match e {});
    // Dropping the response releases the slots, as the end of a connection does.
    black_box(response).status().is_success()
}

/// One run of [`in_flight`]: wall, CPU here, CPU in redis-server (µs per handshake), and
/// whether every handshake was admitted.
type Run = (f64, f64, f64, bool);

/// `tasks` loops of `each` handshakes at once; the wall time and the CPU time (this process
/// and redis-server) per handshake, in µs, and whether every one was admitted.
async fn in_flight<S, B>(svc: &S, tasks: u32, each: u32, redis_pid: &str) -> Run
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
{
    let (cpu0, redis0) = (cpu_seconds("self"), cpu_seconds(redis_pid));
    let started = Instant::now();
    let admitted = join_all((0..tasks).map(|t| {
        let mut svc = svc.clone();
        async move {
            let mut all = true;
            for i in 0..each {
                all &= handshake(&mut svc, t + i).await;
            }
            all
        }
    }))
    .await;
    let n = f64::from(tasks * each);
    let wall = started.elapsed().as_secs_f64() * 1e6 / n;
    let cpu = (cpu_seconds("self") - cpu0) * 1e6 / n;
    let redis = (cpu_seconds(redis_pid) - redis0) * 1e6 / n;
    (wall, cpu, redis, admitted.into_iter().all(|a| a))
}

/// One handshake at a time: the latency of each, in µs.
async fn latencies<S, B>(svc: &mut S, n: u32, into: &mut Vec<f64>) -> bool
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
{
    let mut all = true;
    for i in 0..n {
        let started = Instant::now();
        all &= handshake(svc, i).await;
        into.push(started.elapsed().as_secs_f64() * 1e6);
    }
    all
}

async fn handshakes(fleet: &Fleet<redis::aio::ConnectionManager>, redis_pid: u32) {
    let redis_pid = redis_pid.to_string();
    let handler = |_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) };
    for stack in ["one per-IP limit", "global + per-IP + per-principal"] {
        let build = |b: wsguard_conn_limit::ConnLimitBuilder| match stack {
            "one per-IP limit" => b.per_ip(1_000_000),
            _ => b
                .global(1_000_000)
                .per_ip(1_000_000)
                .per_principal(1_000_000),
        };
        let memory = ServiceBuilder::new()
            .layer(build(ConnLimitLayer::builder()).build().expect("a layer"))
            .service_fn(handler);
        let store = RedisConnectionStore::builder(fleet.clone().with_prefix("bench-hs:"))
            .build_and_spawn()
            .expect("a store");
        let redis_layer = build(ConnLimitLayer::builder())
            .store(store)
            .build()
            .expect("a layer");
        let redis = ServiceBuilder::new().layer(redis_layer).service_fn(handler);

        let (rounds, tasks, each, one) = if full() {
            (21, 16, 125, 2_000)
        } else {
            (1, 4, 5, 20)
        };
        // Warm-up: scripts loaded, connections and tables made.
        in_flight(&memory, tasks, each, &redis_pid).await;
        in_flight(&redis, tasks, each, &redis_pid).await;
        let mut rows = Vec::new();
        let mut all = true;
        for round in 0..rounds {
            // Alternate which store goes first.
            let (m, r) = if round % 2 == 0 {
                let m = in_flight(&memory, tasks, each, &redis_pid).await;
                (m, in_flight(&redis, tasks, each, &redis_pid).await)
            } else {
                let r = in_flight(&redis, tasks, each, &redis_pid).await;
                (in_flight(&memory, tasks, each, &redis_pid).await, r)
            };
            all &= m.3 && r.3;
            rows.push((m, r));
        }
        let col = |f: &dyn Fn(&(Run, Run)) -> f64| {
            let mut v: Vec<f64> = rows.iter().map(f).collect();
            let m = median(&mut v);
            let (q1, q3) = quartiles(&mut v);
            (m, q1, q3)
        };
        let (mw, ..) = col(&|r| r.0 .0);
        let (rw, ..) = col(&|r| r.1 .0);
        let (tp, tq1, tq3) = col(&|r| r.0 .0 / r.1 .0);
        // The in-memory case never sleeps, so the scheduler's accounting lags (it is updated
        // at ticks): its CPU time is its wall time (one thread, always busy).
        let (mc, ..) = col(&|r| r.0 .0);
        let (rc, ..) = col(&|r| r.1 .1);
        let (rs, ..) = col(&|r| r.1 .2);
        println!(
            "handshakes, {stack}, {tasks} in flight, median of {rounds} paired rounds: \
             wall {mw:.2} µs (in-memory) vs {rw:.2} µs (redis) per handshake, throughput \
             redis / in-memory {tp:.3}x ({tq1:.3}-{tq3:.3}); CPU per handshake: in-memory \
             {mc:.2} µs, redis {rc:.2} µs in this process + {rs:.2} µs in redis-server \
             (all admitted: {all})"
        );
        for cpu in [80.0, 110.0] {
            println!(
                "  with a handshake of {cpu:.0} µs of server CPU: projected CPU-bound throughput \
                 redis / in-memory {:.3}x (redis-server on the same machine), {:.3}x (elsewhere)",
                (cpu + mc) / (cpu + rc + rs),
                (cpu + mc) / (cpu + rc),
            );
        }

        // Latency, one handshake at a time, the stores in turn.
        let (mut memory, mut redis) = (memory, redis);
        let (mut lm, mut lr) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            all &= latencies(&mut memory, one / rounds as u32, &mut lm).await;
            all &= latencies(&mut redis, one / rounds as u32, &mut lr).await;
        }
        let (m50, m99) = (percentile(&mut lm, 0.5), percentile(&mut lm, 0.99));
        let (r50, r99) = (percentile(&mut lr, 0.5), percentile(&mut lr, 0.99));
        println!(
            "latency, {stack}, one at a time ({} each): in-memory p50 {m50:.2} µs p99 {m99:.2} \
             µs; redis p50 {r50:.1} µs p99 {r99:.1} µs; added p50 {:.1} µs, p99 {:.1} µs \
             (all admitted: {all})",
            lm.len(),
            r50 - m50,
            r99 - m99
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message type of our own, so the bench needs neither axum nor tungstenite.
#[derive(Debug, Clone)]
struct Msg(String);

impl WsMessage for Msg {
    fn kind(&self) -> MessageKind {
        MessageKind::Text
    }
    fn payload_len(&self) -> usize {
        self.0.len()
    }
    fn as_text(&self) -> Option<&str> {
        Some(&self.0)
    }
    fn as_binary(&self) -> Option<&[u8]> {
        None
    }
    fn text(text: String) -> Self {
        Self(text)
    }
    fn ping(_: Bytes) -> Self {
        Self(String::new())
    }
    fn pong(_: Bytes) -> Self {
        Self(String::new())
    }
    fn close(_: &Rejection) -> Self {
        Self(String::new())
    }
}

/// 60 bytes, as the message-plane bench sends.
const MESSAGE: &str = r#"{"type":"subscribe","session_id":"s-0123456789abcdef012345"}"#;

/// `n` messages through `svc`: the time per message, in ns.
async fn per_message<S>(svc: &mut S, info: &ConnectionInfo, n: u32) -> f64
where
    S: Service<Inbound<Msg>, Response = Verdict<Msg>, Error = Infallible>,
{
    let message = Msg(MESSAGE.to_owned());
    let started = Instant::now();
    for _ in 0..n {
        let req = Inbound::new(message.clone(), info.clone());
        let ready = svc.ready().await.unwrap_or_else(|e| match e {});
        let verdict = ready.call(req).await.unwrap_or_else(|e| match e {});
        assert!(verdict.is_admit(), "a key far from its limit is admitted");
        black_box(verdict);
    }
    started.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

async fn messages(fleet: &Fleet<redis::aio::ConnectionManager>) {
    // Far from the limit: budgets no run reaches.
    let roomy = Budget::new()
        .messages(rate(100_000_000).per(Duration::from_secs(1)))
        .bytes(rate(1_000_000_000).per(Duration::from_secs(1)));
    let mut ext = http::Extensions::new();
    ext.insert(Principal::new("bench-user"));
    let conn = Connection::new(http::Uri::from_static("/ws"), &mut ext);
    let info = ConnectionInfo::new(&conn);
    let mut memory = MessageRateLimitLayer::new()
        .per_key(PrincipalKey::default(), roomy)
        .expect("a budget")
        .layer(Admit);
    let store =
        RedisKeyStore::new(fleet.clone().with_prefix("bench-msg:"), roomy).expect("a budget");
    let mut redis = MessageRateLimitLayer::new()
        .per_key_store(PrincipalKey::default(), store)
        .layer(Admit);
    let (rounds, n) = if full() { (41, 50_000) } else { (1, 100) };
    per_message(&mut memory, &info, n).await;
    per_message(&mut redis, &info, n).await;
    let mut rows = Vec::new();
    for round in 0..rounds {
        let (m, r) = if round % 2 == 0 {
            let m = per_message(&mut memory, &info, n).await;
            (m, per_message(&mut redis, &info, n).await)
        } else {
            let r = per_message(&mut redis, &info, n).await;
            (per_message(&mut memory, &info, n).await, r)
        };
        rows.push((m, r));
    }
    let mut m: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let mut r: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let mut ratio: Vec<f64> = rows.iter().map(|r| r.1 / r.0).collect();
    let (q1, q3) = quartiles(&mut ratio);
    println!(
        "messages, median of {rounds} paired rounds of {n}: in-memory {:.0} ns, redis {:.0} ns \
         per message; redis / in-memory {:.3}x ({q1:.3}-{q3:.3})",
        median(&mut m),
        median(&mut r),
        median(&mut ratio),
    );
}
