//! What the connection limit costs one handshake, in instructions: the service's call, its
//! response future, the store, the gauges and the release when the response (and with it
//! the connection's scope) is dropped, with the three limits of a typical deployment
//! (global, per IP, per principal) and keys that are new at each handshake (each count goes
//! from zero to one and back, as when a client connects, leaves and comes back).
//!
//! Built with the `metrics` feature and no recorder installed, as a server without an
//! exporter runs. Each handshake runs in a function of its own, so that callgrind can count
//! it alone:
//!
//! ```sh
//! cargo bench -p wsguard-conn-limit --features metrics --bench handshake --no-run
//! # BIN: the executable cargo names ("Executable benches/handshake.rs (...)").
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/guarded.out \
//!     --toggle-collect='handshake::guarded*' "$BIN" --bench
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/bare.out \
//!     --toggle-collect='handshake::bare*' "$BIN" --bench
//! ```
//!
//! Each of the two functions runs [`ROUNDS`] times, and each run collects only inside one
//! of them: the difference of the two totals ("Collected") divided by [`ROUNDS`] is the
//! connection limit's cost per handshake. Without valgrind, it prints the time per
//! handshake of each (a rough figure; the instruction count is the repeatable one).
//!
//! Measured (2026-12-01): bare 803 and 796 instructions per handshake (the two builds); with
//! the connection limit 11,323 before the metrics keys, hashing and future changes of issue
//! 16, 5,381 after (10,520 -> 4,585 net); 5,412 (4,616 net) with the store gauges through
//! wsguard-core's `StoreGauges` instead of this crate's own static keys (bare 796).

use std::{
    convert::Infallible,
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::Instant,
};

use futures_util::FutureExt;
use http::{Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};
use wsguard_conn_limit::ConnLimitLayer;
use wsguard_core::{ClientIp, Principal};

/// Handshakes per function.
const ROUNDS: u32 = 20_000;

fn request() -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))));
    req.extensions_mut().insert(Principal::new("alice"));
    req
}

/// One request through `svc`, its response dropped (which gives the slots back).
fn one<S>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().unwrap().unwrap();
    let res = ready.call(req).now_or_never().unwrap().unwrap();
    drop(black_box(res));
}

#[inline(never)]
fn bare<S>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    one(svc, req);
}

#[inline(never)]
fn guarded<S>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    one(svc, req);
}

fn main() {
    let handler = |_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) };
    let mut bare_svc = ServiceBuilder::new().service_fn(handler);
    let layer = ConnLimitLayer::builder()
        .global(10_000)
        .per_ip(100)
        .per_principal(3)
        .build()
        .unwrap();
    let mut guarded_svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service_fn(handler);

    let start = Instant::now();
    for _ in 0..ROUNDS {
        bare(&mut bare_svc, request());
    }
    let bare_ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(ROUNDS);
    let start = Instant::now();
    for _ in 0..ROUNDS {
        guarded(&mut guarded_svc, request());
    }
    let guarded_ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(ROUNDS);
    assert_eq!(layer.active("principal"), Some(0), "every slot came back");
    assert_eq!(layer.store().tracked_keys(), 0);
    println!(
        "{ROUNDS} handshakes each: bare {bare_ns:.0} ns, with the connection limit \
         {guarded_ns:.0} ns per handshake"
    );
}
