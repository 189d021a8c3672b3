//! Per-handshake cost of the layer against a bare `jsonwebtoken::decode` of the same token,
//! for HS256 and ES256, measured in the same run; and what live sessions add to a WebSocket
//! handshake (paired with the same layer without them).
//!
//! `cargo bench -p wsguard-jwt-auth --bench handshake -- --warm-up-time 1 --measurement-time 3`

use std::{convert::Infallible, fmt::Debug, hint::black_box, time::Instant};

use criterion::{
    criterion_group, criterion_main, measurement::WallTime, BenchmarkGroup, Criterion,
};
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use tower::{Service, ServiceBuilder};
use wsguard_core::{Access, RequestHead};
use wsguard_jwt_auth::{Claims, InMemoryRevocations, JwtAuthLayer, LiveSessions, VerifyingKey};

#[path = "../tests/common/mod.rs"]
mod common;

use common::{chat_token as token, provider, ChatClaims};

/// A handshake request bearing `authorization`.
fn request(authorization: &str) -> Request<()> {
    Request::builder()
        .uri("/ws")
        .header("authorization", black_box(authorization))
        .body(())
        .unwrap()
}

/// The inner service behind the layer: 200 once the layer has put the claims in.
async fn claims_required(req: Request<()>) -> Result<Response<String>, Infallible> {
    let ok = req.extensions().get::<Claims<ChatClaims>>().is_some();
    assert!(ok);
    Ok(Response::new(String::from(req.uri().path())))
}

/// `svc`'s answer to `req`, which it gives at once.
fn call_now<S>(svc: &mut S, req: Request<()>) -> Response<String>
where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: Debug,
{
    svc.call(req).now_or_never().unwrap().unwrap()
}

/// Benchmarks `svc`'s answer (200) to a request bearing `authorization`, as `id`.
fn bench_request<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    svc: &mut S,
    authorization: &str,
) where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: Debug,
{
    group.bench_function(id, |b| {
        b.iter(|| {
            let res = call_now(svc, request(authorization));
            assert_eq!(res.status(), 200);
            black_box(res);
        })
    });
}

fn bench_alg(
    c: &mut Criterion,
    name: &str,
    alg: Algorithm,
    enc: EncodingKey,
    dec: DecodingKey,
    key: VerifyingKey,
) {
    let token = token(alg, &enc);
    let validation = Validation::new(alg);
    let mut group = c.benchmark_group(name);

    group.bench_function("jsonwebtoken_decode", |b| {
        b.iter(|| {
            let data =
                jsonwebtoken::decode::<ChatClaims>(black_box(&token), &dec, &validation).unwrap();
            black_box(data.claims);
        })
    });

    let authorization = format!("Bearer {token}");
    let mut bare = ServiceBuilder::new().service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(Response::new(String::from(req.uri().path())))
    });
    bench_request(
        &mut group,
        "request_without_layer",
        &mut bare,
        &authorization,
    );

    let mut svc = ServiceBuilder::new()
        .layer(JwtAuthLayer::<ChatClaims>::new(key.clone()))
        .service_fn(claims_required);
    bench_request(
        &mut group,
        "request_through_layer",
        &mut svc,
        &authorization,
    );

    // The same layer with the two per-handshake hooks configured: an in-memory revocation
    // store and an asynchronous claims predicate that allows (both answer at once).
    let mut hooked = ServiceBuilder::new()
        .layer(
            JwtAuthLayer::<ChatClaims>::new(key.clone())
                .with_revocation(InMemoryRevocations::new(1_000))
                .with_async_predicate(|_: &ChatClaims, _: &RequestHead<'_>| {
                    std::future::ready(Access::Allow)
                }),
        )
        .service_fn(claims_required);
    bench_request(
        &mut group,
        "request_through_layer_with_hooks",
        &mut hooked,
        &authorization,
    );
    group.finish();

    // A paired measurement, robust to the drift of a shared machine (criterion measures
    // the cases one after the other, minutes apart): short batches of the three cases in
    // turn, and the median over the rounds of (layer - bare request) / bare decode. Only
    // under `cargo bench` (criterion's test mode runs each case once).
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let batch = if alg == Algorithm::HS256 { 2_000 } else { 40 };
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_secs_f64()
    };
    // Live sessions: the same hooked layer on WebSocket handshakes, with and without a
    // registry (each handshake registers, and its entry leaves with the request's scope).
    let upgrade = || {
        let mut req = request(&authorization);
        let headers = req.headers_mut();
        headers.insert("connection", HeaderValue::from_static("upgrade"));
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
        headers.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        req
    };
    let sessions = LiveSessions::new();
    let hooked_layer = |sessions: Option<LiveSessions>| {
        let layer = JwtAuthLayer::<ChatClaims>::new(key.clone())
            .with_revocation(InMemoryRevocations::new(1_000).with_sessions(LiveSessions::new()));
        let layer = match sessions {
            Some(sessions) => layer.with_sessions(sessions),
            None => layer,
        };
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(String::new()))
            })
    };
    let mut unregistered = hooked_layer(None);
    let mut registered = hooked_layer(Some(sessions.clone()));
    let mut added_ns: Vec<f64> = (0..41)
        .map(|_| {
            let without = time(&mut || {
                black_box(call_now(&mut unregistered, upgrade()));
            });
            let with = time(&mut || {
                black_box(call_now(&mut registered, upgrade()));
            });
            (with - without) / f64::from(batch) * 1e9
        })
        .collect();
    assert!(sessions.is_empty(), "every entry left with its request");
    added_ns.sort_by(f64::total_cmp);
    println!(
        "{name}: live sessions, added per WebSocket handshake (register and unregister), \
         median of {} paired rounds: {:.0} ns (quartiles {:.0}-{:.0} ns)",
        added_ns.len(),
        added_ns[20],
        added_ns[10],
        added_ns[30]
    );

    let mut hooked_ratios = Vec::with_capacity(41);
    let mut ratios: Vec<f64> = (0..41)
        .map(|_| {
            let decode = time(&mut || {
                black_box(
                    jsonwebtoken::decode::<ChatClaims>(black_box(&token), &dec, &validation)
                        .unwrap(),
                );
            });
            let plain = time(&mut || {
                black_box(call_now(&mut bare, request(&authorization)));
            });
            let layered = time(&mut || {
                black_box(call_now(&mut svc, request(&authorization)));
            });
            let with_hooks = time(&mut || {
                black_box(call_now(&mut hooked, request(&authorization)));
            });
            hooked_ratios.push((with_hooks - plain) / decode);
            (layered - plain) / decode
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    hooked_ratios.sort_by(f64::total_cmp);
    println!(
        "{name}: layer (net of the bare request) / bare decode, median of {} paired rounds: \
         {:.2}x (quartiles {:.2}x-{:.2}x)",
        ratios.len(),
        ratios[20],
        ratios[10],
        ratios[30]
    );
    println!(
        "{name}: layer with revocation store and async predicate (net of the bare request) / \
         bare decode, median of {} paired rounds: {:.2}x (quartiles {:.2}x-{:.2}x)",
        hooked_ratios.len(),
        hooked_ratios[20],
        hooked_ratios[10],
        hooked_ratios[30]
    );
}

fn handshake(c: &mut Criterion) {
    // jsonwebtoken's `decode` uses the process-wide provider; pick the layer's.
    let _ = provider().install_default();
    let secret = [7u8; 32];
    bench_alg(
        c,
        "hs256",
        Algorithm::HS256,
        EncodingKey::from_secret(&secret),
        DecodingKey::from_secret(&secret),
        VerifyingKey::hmac(Algorithm::HS256, &secret).unwrap(),
    );
    let private = include_bytes!("../tests/keys/p256_private.pem");
    let public = include_bytes!("../tests/keys/p256_public.pem");
    bench_alg(
        c,
        "es256",
        Algorithm::ES256,
        EncodingKey::from_ec_pem(private).unwrap(),
        DecodingKey::from_ec_pem(public).unwrap(),
        VerifyingKey::ec_pem(Algorithm::ES256, public).unwrap(),
    );
}

criterion_group!(benches, handshake);
criterion_main!(benches);
