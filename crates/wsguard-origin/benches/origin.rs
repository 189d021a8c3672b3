//! Per-request cost of `OriginGuardLayer` against the bare service, in the same run.
//!
//! Every service here answers immediately, so each iteration is one `poll_ready`, one
//! `call` and one poll of the response future with a no-op waker; building the request is
//! not measured.

use std::{
    convert::Infallible,
    future::{ready, Future, Ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{header, HeaderValue, Request, Response};
use tower::{service_fn, Layer, Service};
use wsguard_origin::{AllowList, OriginGuardLayer};

fn bare(_: Request<()>) -> Ready<Result<Response<String>, Infallible>> {
    ready(Ok(Response::new(String::new())))
}

fn handshake(origin: &'static str, host: &'static str) -> Request<()> {
    let mut req = Request::new(());
    let headers = req.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_static(host));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        "sec-websocket-key",
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
    req
}

fn plain_get() -> Request<()> {
    let mut req = Request::new(());
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("chat.example.com"));
    req
}

fn run<S>(c: &mut Criterion, name: &str, mut svc: S, make: fn() -> Request<()>)
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function(name, |b| {
        b.iter_batched(
            make,
            |req| {
                assert!(svc.poll_ready(&mut cx).is_ready());
                let mut future = pin!(svc.call(black_box(req)));
                match future.as_mut().poll(&mut cx) {
                    Poll::Ready(res) => res,
                    Poll::Pending => unreachable!("every service here is immediate"),
                }
            },
            BatchSize::SmallInput,
        );
    });
}

fn allow_list() -> AllowList {
    // A realistic list: a few exact origins, a wildcard, local development ports.
    AllowList::new()
        .add_origins([
            "https://chat.example.com",
            "https://app.example.com",
            "https://admin.example.com",
            "https://*.customers.example.net",
            "http://localhost:{3000,5173,8080}",
            "http://[::1]:3000",
        ])
        .expect("valid patterns")
}

fn bench(c: &mut Criterion) {
    let layer = OriginGuardLayer::new(allow_list());
    let same_host = OriginGuardLayer::new(AllowList::new().allow_same_host(true));

    run(c, "bare service (handshake)", service_fn(bare), || {
        handshake("https://chat.example.com", "chat.example.com")
    });
    run(
        c,
        "origin: exact allowed",
        layer.layer(service_fn(bare)),
        || handshake("https://chat.example.com", "chat.example.com"),
    );
    run(
        c,
        "origin: wildcard allowed",
        layer.layer(service_fn(bare)),
        || {
            handshake(
                "https://shop.acme.customers.example.net",
                "chat.example.com",
            )
        },
    );
    run(
        c,
        "origin: same host allowed",
        same_host.layer(service_fn(bare)),
        || handshake("https://chat.example.com", "chat.example.com"),
    );
    run(
        c,
        "origin: rejected (403)",
        layer.layer(service_fn(bare)),
        || handshake("https://evil.example", "chat.example.com"),
    );
    run(c, "bare service (plain GET)", service_fn(bare), plain_get);
    run(
        c,
        "origin: plain GET (not checked)",
        layer.layer(service_fn(bare)),
        plain_get,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
