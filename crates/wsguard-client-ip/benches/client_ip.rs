//! Per-request cost of `ClientIpLayer` against the bare service, in the same run.
//!
//! Every case builds the same request outside the measurement (headers and `PeerAddr`
//! included) and drives the service once, synchronously.

use std::{
    convert::Infallible,
    future::{ready, Future, Ready},
    hint::black_box,
    net::SocketAddr,
    pin::pin,
    task::{Context, Poll, Waker},
};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{header::FORWARDED, HeaderValue, Request, Response};
use tower::{service_fn, Layer, Service};
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
use wsguard_core::PeerAddr;

/// The client, two of the proxies' own hops, and the proxy that connected to us.
const XFF: &str = "198.51.100.1, 203.0.113.7, 10.0.0.9, 10.0.0.8";
const FWD: &str = "for=198.51.100.1, for=203.0.113.7;proto=https, for=10.0.0.9, for=10.0.0.8";

fn bare(_: Request<()>) -> Ready<Result<Response<String>, Infallible>> {
    ready(Ok(Response::new(String::new())))
}

fn request(peer: &str) -> Request<()> {
    let mut req = Request::new(());
    let headers = req.headers_mut();
    headers.insert("x-forwarded-for", HeaderValue::from_static(XFF));
    headers.insert(FORWARDED, HeaderValue::from_static(FWD));
    headers.insert("x-real-ip", HeaderValue::from_static("203.0.113.7"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    req.extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    req
}

fn run<S>(c: &mut Criterion, name: &str, mut svc: S, peer: &'static str)
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function(name, |b| {
        b.iter_batched(
            || request(peer),
            |req| {
                assert!(svc.poll_ready(&mut cx).is_ready());
                let mut future = pin!(svc.call(black_box(req)));
                match future.as_mut().poll(&mut cx) {
                    Poll::Ready(res) => res,
                    Poll::Pending => unreachable!("every service here is immediate"),
                }
            },
            BatchSize::SmallInput,
        )
    });
}

fn layer(source: Source) -> ClientIpLayer {
    ClientIpLayer::new()
        .trusted_proxies(TrustedProxies::private())
        .source(source)
        .unwrap()
}

fn benches(c: &mut Criterion) {
    run(c, "bare service", service_fn(bare), "10.0.0.2:4000");
    run(
        c,
        "untrusted peer, headers ignored",
        layer(Source::XForwardedFor).layer(service_fn(bare)),
        "203.0.113.9:4000",
    );
    run(
        c,
        "x-forwarded-for, 3 hops walked",
        layer(Source::XForwardedFor).layer(service_fn(bare)),
        "10.0.0.2:4000",
    );
    run(
        c,
        "x-forwarded-for, 3 fixed hops",
        layer(Source::XForwardedForHops(3)).layer(service_fn(bare)),
        "10.0.0.2:4000",
    );
    run(
        c,
        "forwarded, 3 hops walked",
        layer(Source::Forwarded).layer(service_fn(bare)),
        "10.0.0.2:4000",
    );
    run(
        c,
        "x-real-ip",
        layer(Source::x_real_ip()).layer(service_fn(bare)),
        "10.0.0.2:4000",
    );
}

/// The resolution alone, without building, calling or dropping anything.
fn resolve_only(c: &mut Criterion) {
    let req = request("10.0.0.2:4000");
    let peer = "10.0.0.2".parse().unwrap();
    for (name, source) in [
        (
            "resolve: x-forwarded-for, 3 hops walked",
            Source::XForwardedFor,
        ),
        ("resolve: forwarded, 3 hops walked", Source::Forwarded),
        ("resolve: x-real-ip", Source::x_real_ip()),
    ] {
        let layer = layer(source);
        c.bench_function(name, |b| {
            b.iter(|| layer.resolve(black_box(peer), black_box(req.headers())))
        });
    }
}

criterion_group!(group, benches, resolve_only);
criterion_main!(group);
