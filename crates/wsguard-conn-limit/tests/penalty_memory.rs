//! Bytes per key tracked by the failure penalty, measured with a counting allocator (one
//! test in its own binary, so that no other test allocates meanwhile). The figure is printed
//! (`-- --nocapture`) and recorded in BENCHMARKS.md; the assertion is a loose bound that
//! catches a regression in kind, not a timing.

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv6Addr},
};

use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceExt};
use wsguard_conn_limit::penalty::FailurePenaltyLayer;
use wsguard_core::ClientIp;
use wsguard_test_kit::alloc::{live_bytes, CountingAllocator, Region};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator::system();

const KEYS: u32 = 20_000;

/// Live heap bytes after `KEYS` requests from distinct /64 networks answered `status`.
fn live_after(status: StatusCode) -> (isize, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let penalty = FailurePenaltyLayer::per_ip();
    let mut svc = penalty.layer(service_fn(move |_req: Request<()>| async move {
        let mut res = Response::new(String::new());
        *res.status_mut() = status;
        Ok::<_, Infallible>(res)
    }));
    let requests: Vec<_> = (0..KEYS)
        .map(|n| {
            let mut req = Request::new(());
            let ip = Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(n) << 64);
            req.extensions_mut().insert(ClientIp(IpAddr::V6(ip)));
            req
        })
        .collect();
    let region = Region::new(&GLOBAL);
    runtime.block_on(async {
        for req in requests {
            let res = svc.ready().await.unwrap().call(req).await.unwrap();
            assert_eq!(res.status(), status);
        }
    });
    let change = region.change();
    let live = live_bytes(&change);
    (live, penalty.tracked())
}

#[test]
fn bytes_per_penalty_record() {
    // The same requests answered 200 (not counted: no record) are the baseline; what 401
    // answers leave beyond it is the records.
    let (baseline, none) = live_after(StatusCode::OK);
    let (counted, tracked) = live_after(StatusCode::UNAUTHORIZED);
    assert_eq!((none, tracked), (0, KEYS as usize));
    let per_key = (counted - baseline) as f64 / f64::from(KEYS);
    println!("bytes per penalty record (IP key): {per_key:.0}");
    assert!(
        (16.0..250.0).contains(&per_key),
        "{per_key} bytes per record"
    );
}
