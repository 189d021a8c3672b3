//! Per-request cost of `ClientIpLayer` against the bare service, in the same run.

use std::{
    convert::Infallible,
    future::{ready, Future, Ready},
    hint::black_box,
    net::SocketAddr,
    pin::pin,
    task::{Context, Poll, Waker},
};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use tower::{service_fn, Layer, Service};
use wsguard_client_ip::{ClientIpLayer, Source, TrustedProxies};
use wsguard_core::PeerAddr;

fn bare(_: Request<()>) -> Ready<Result<Response<String>, Infallible>> {
    ready(Ok(Response::new(String::new())))
}

fn request(xff: Option<&'static str>, peer: &str) -> Request<()> {
    let mut req = Request::new(());
    if let Some(xff) = xff {
        req.headers_mut()
            .insert("x-forwarded-for", http::HeaderValue::from_static(xff));
    }
    req.extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    req
}

fn run<S>(c: &mut Criterion, name: &str, mut svc: S, make: impl Fn() -> Request<()>)
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    c.bench_function(name, |b| {
        b.iter_batched(
            &make,
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

fn benches(c: &mut Criterion) {
    let xff = Some("198.51.100.1, 203.0.113.7, 10.0.0.9, 10.0.0.8");
    run(c, "bare service", service_fn(bare), || {
        request(xff, "10.0.0.2:4000")
    });
    let layer = ClientIpLayer::new()
        .trusted_proxies(TrustedProxies::private())
        .source(Source::XForwardedFor)
        .unwrap();
    run(
        c,
        "xff, 3 hops walked",
        layer.layer(service_fn(bare)),
        || request(xff, "10.0.0.2:4000"),
    );
    run(
        c,
        "untrusted peer, header ignored",
        layer.layer(service_fn(bare)),
        || request(xff, "203.0.113.9:4000"),
    );
    let forwarded = ClientIpLayer::new()
        .trusted_proxies(TrustedProxies::private())
        .source(Source::Forwarded)
        .unwrap();
    run(
        c,
        "forwarded, 3 hops walked",
        forwarded.layer(service_fn(bare)),
        || {
            let mut req = request(None, "10.0.0.2:4000");
            req.headers_mut().insert(
                http::header::FORWARDED,
                http::HeaderValue::from_static(
                    "for=198.51.100.1, for=203.0.113.7;proto=https, for=10.0.0.9, for=10.0.0.8",
                ),
            );
            req
        },
    );
}

criterion_group!(group, benches);
criterion_main!(group);
