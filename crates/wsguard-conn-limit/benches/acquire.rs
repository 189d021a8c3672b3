//! Acquire+release cost of a connection slot, against tower's `ConcurrencyLimit` (and the
//! tokio semaphore under it) measured in the same run.
//!
//! `cargo bench -p wsguard-conn-limit --bench acquire -- --warm-up-time 1 --measurement-time 3`
//!
//! - `service/*`: one request through a bare service, through tower's `ConcurrencyLimit`
//!   and through `ConnLimit` with one per-IP limit (the slot is released when the response
//!   is dropped, as for a plain response);
//! - `store/*`: the in-memory store alone with one key and with 100,000 live keys, next to a
//!   tokio `Semaphore` permit;
//! - `contention/*`: two threads acquiring and releasing at once, on one shared key and on
//!   distinct keys, next to two threads on one semaphore.

use std::{
    convert::Infallible,
    hint::black_box,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::{NonZeroU32, NonZeroUsize},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::{Request, Response};
use tower::{limit::ConcurrencyLimitLayer, Service, ServiceBuilder, ServiceExt};
use wsguard_conn_limit::{ConnLimitLayer, InMemoryConnectionStore, Slot};
use wsguard_core::{ClientIp, Key};

fn request() -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))));
    req
}

fn call<S>(svc: &mut S) -> S::Response
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().unwrap().unwrap();
    ready.call(request()).now_or_never().unwrap().unwrap()
}

fn service(c: &mut Criterion) {
    let handler = |_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) };
    let mut group = c.benchmark_group("service");
    let mut bare = ServiceBuilder::new().service_fn(handler);
    group.bench_function("bare", |b| b.iter(|| black_box(call(&mut bare))));
    let mut tower_limit = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(1_000))
        .service_fn(handler);
    group.bench_function("tower_concurrency_limit", |b| {
        b.iter(|| black_box(call(&mut tower_limit)))
    });
    let layer = ConnLimitLayer::builder().per_ip(1_000).build().unwrap();
    let mut conn_limit = ServiceBuilder::new().layer(layer).service_fn(handler);
    group.bench_function("conn_limit_per_ip", |b| {
        b.iter(|| black_box(call(&mut conn_limit)))
    });
    group.finish();

    // A paired measurement, robust to the drift of a shared machine (criterion measures the
    // three services a few seconds apart): short batches of each in turn, and the median
    // over the rounds of the time per request. Only under `cargo bench`.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    const ROUNDS: usize = 41;
    const BATCH: u32 = 20_000;
    fn time<S>(svc: &mut S) -> f64
    where
        S: Service<Request<()>>,
        S::Error: std::fmt::Debug,
    {
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(call(svc));
        }
        start.elapsed().as_secs_f64() * 1e9 / f64::from(BATCH)
    }
    let mut rounds: Vec<[f64; 3]> = (0..ROUNDS)
        .map(|_| {
            [
                time(&mut bare),
                time(&mut tower_limit),
                time(&mut conn_limit),
            ]
        })
        .collect();
    let median = |rounds: &mut Vec<[f64; 3]>, f: &dyn Fn(&[f64; 3]) -> f64| {
        rounds.sort_by(|a, b| f(a).total_cmp(&f(b)));
        f(&rounds[ROUNDS / 2])
    };
    let bare_ns = median(&mut rounds, &|r| r[0]);
    let tower_ns = median(&mut rounds, &|r| r[1]);
    let conn_ns = median(&mut rounds, &|r| r[2]);
    let ratio = median(&mut rounds, &|r| r[2] / r[1]);
    let own = median(&mut rounds, &|r| (r[2] - r[0]) / (r[1] - r[0]));
    println!(
        "service, median of {ROUNDS} paired rounds: bare {bare_ns:.0} ns, \
         ConcurrencyLimit {tower_ns:.0} ns, ConnLimit {conn_ns:.0} ns per request; \
         ConnLimit / ConcurrencyLimit {ratio:.2}x, their own costs (net of bare) {own:.2}x"
    );
}

fn max(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn ip_key(n: u32) -> Key {
    Key::Ip(IpAddr::V6(Ipv6Addr::from(
        0x2001_0db8_u128 << 96 | u128::from(n),
    )))
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let semaphore = Arc::new(tokio::sync::Semaphore::new(1_000));
    group.bench_function("tokio_semaphore", |b| {
        b.iter(|| black_box(Arc::clone(&semaphore).try_acquire_owned().unwrap()))
    });
    // Room for the 100,000 live keys and the measured ones.
    let store = InMemoryConnectionStore::with_max_keys(NonZeroUsize::new(200_000).unwrap());
    let slot = [Slot::new(0, ip_key(0), max(1_000))];
    group.bench_function("one_key", |b| {
        b.iter(|| black_box(store.try_acquire(black_box(&slot)).unwrap()))
    });
    let live: Vec<_> = (1..=100_000)
        .map(|n| {
            store
                .try_acquire(&[Slot::new(0, ip_key(n), max(10))])
                .unwrap()
        })
        .collect();
    group.bench_function("one_key_among_100k_live", |b| {
        b.iter(|| black_box(store.try_acquire(black_box(&slot)).unwrap()))
    });
    let new_slot = [Slot::new(1, ip_key(7), max(1_000))];
    group.bench_function("new_key_among_100k_live", |b| {
        // The key is created and removed each time.
        b.iter(|| black_box(store.try_acquire(black_box(&new_slot)).unwrap()))
    });
    drop(live);
    group.finish();
}

/// Runs `op` on two threads at once, `iters` times each; the time of the slower thread.
fn two_threads(iters: u64, op: impl Fn(usize) + Send + Sync + 'static) -> Duration {
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|thread| {
            let (op, barrier) = (Arc::clone(&op), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    op(thread);
                }
                start.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .max()
        .unwrap_or_default()
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("contention");
    let semaphore = Arc::new(tokio::sync::Semaphore::new(1_000));
    group.bench_function("tokio_semaphore_two_threads", |b| {
        b.iter_custom(|iters| {
            let semaphore = Arc::clone(&semaphore);
            two_threads(iters, move |_| {
                drop(black_box(
                    Arc::clone(&semaphore).try_acquire_owned().unwrap(),
                ));
            })
        })
    });
    let store = InMemoryConnectionStore::new();
    let shared = Arc::new([Slot::new(0, ip_key(0), max(1_000))]);
    group.bench_function("one_key_two_threads", |b| {
        b.iter_custom(|iters| {
            let (store, shared) = (store.clone(), Arc::clone(&shared));
            two_threads(iters, move |_| {
                drop(black_box(store.try_acquire(&shared[..]).unwrap()));
            })
        })
    });
    let distinct = Arc::new([
        [Slot::new(0, ip_key(1), max(1_000))],
        [Slot::new(0, ip_key(2), max(1_000))],
    ]);
    group.bench_function("distinct_keys_two_threads", |b| {
        b.iter_custom(|iters| {
            let (store, distinct) = (store.clone(), Arc::clone(&distinct));
            two_threads(iters, move |thread| {
                drop(black_box(store.try_acquire(&distinct[thread]).unwrap()));
            })
        })
    });
    group.finish();
}

criterion_group!(benches, service, store, contention);
criterion_main!(benches);
