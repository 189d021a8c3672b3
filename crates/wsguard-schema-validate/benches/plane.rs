//! Per-message cost of the message plane over real sockets, against a bare echo measured in
//! the same run: 60-byte JSON messages through an axum server on 127.0.0.1, answered by
//! the same echo with no guard, with the `GuardedSocket` adapter alone, with
//! `wsguard-msg-rate`, with `wsguard-schema-validate`, and with both.
//!
//! Each iteration sends a batch of 64 messages at once and reads the 64 echoes, so the
//! figures are pipelined throughput (messages per second, both ends on one
//! current-thread runtime: a single core does all the work, client included). A second
//! group measures each layer's `call` alone, without sockets.

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    net::SocketAddr,
    pin::pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use axum::{
    extract::{
        ws::{Message, WebSocket},
        Request, WebSocketUpgrade,
    },
    middleware::{self, Next},
    response::Response,
    routing::get,
    serve::ListenerExt,
    Router,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::{SinkExt, StreamExt};
use http::{Extensions, Uri};
use serde::Deserialize;
use tokio::{
    net::{TcpListener, TcpStream},
    runtime::Runtime,
};
use tokio_tungstenite::{connect_async_with_config, tungstenite, MaybeTlsStream, WebSocketStream};
use tower::{Layer, Service, ServiceBuilder};
use wsguard_core::{
    axum::GuardedUpgrade, Admit, Connection, ConnectionInfo, GuardedSocket, Inbound, Principal,
    PrincipalKey, Verdict,
};
use wsguard_msg_rate::{rate, Budget, MessageRateLimitLayer};
use wsguard_schema_validate::ValidateMessageLayer;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(dead_code)]
enum Command {
    Ping,
    Subscribe { session_id: String },
    Unsubscribe { session_id: String },
}

/// 60 bytes of JSON.
const MESSAGE: &str = r#"{"type":"subscribe","session_id":"s-0123456789abcdef012345"}"#;
const BATCH: u64 = 64;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Budgets that never refuse here, so every check runs and every message is echoed.
fn rate_layer() -> MessageRateLimitLayer {
    let budget = Budget::new()
        .messages(rate(100_000_000).per(Duration::from_secs(1)))
        .bytes(rate(1_000_000_000).per(Duration::from_secs(1)));
    MessageRateLimitLayer::new()
        .per_connection(budget)
        .unwrap()
        .per_key(PrincipalKey::default(), budget)
        .unwrap()
}

fn schema_layer() -> ValidateMessageLayer<Command> {
    ValidateMessageLayer::new().typed::<Command>()
}

async fn bare_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Text(_)) && socket.send(msg).await.is_err() {
            break;
        }
    }
}

/// What an application without the validator does: parse each message itself.
async fn parsing_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        if let Message::Text(text) = &msg {
            let parsed: Result<Command, _> = serde_json::from_str(text.as_str());
            if black_box(parsed).is_err() {
                continue;
            }
            if socket.send(msg).await.is_err() {
                break;
            }
        }
    }
}

async fn guarded_echo<S>(mut socket: GuardedSocket<WebSocket, S>)
where
    S: Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible>,
{
    while let Some(Ok(msg)) = socket.next_admitted().await {
        black_box(msg.parsed::<Command>());
        let msg = msg.into_message();
        if matches!(msg, Message::Text(_)) && socket.send(msg).await.is_err() {
            break;
        }
    }
}

async fn principal(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Principal::new("bench-user"));
    next.run(req).await
}

async fn serve() -> SocketAddr {
    let rate = rate_layer();
    let schema = schema_layer();
    let both = ServiceBuilder::new()
        .layer(rate.clone())
        .layer(schema.clone());
    let app = Router::new()
        .route(
            "/bare",
            get(|ws: WebSocketUpgrade| async { ws.on_upgrade(bare_echo) }),
        )
        .route(
            "/parsing",
            get(|ws: WebSocketUpgrade| async { ws.on_upgrade(parsing_echo) }),
        )
        .route(
            "/plane",
            get(|up: GuardedUpgrade| async {
                up.on_upgrade(|s, c| guarded_echo(GuardedSocket::new(s, c, Admit)))
            }),
        )
        .route(
            "/rate",
            get(move |up: GuardedUpgrade| async move {
                up.on_upgrade(move |s, c| guarded_echo(GuardedSocket::layered(s, c, &rate)))
            }),
        )
        .route(
            "/schema",
            get(move |up: GuardedUpgrade| async move {
                up.on_upgrade(move |s, c| guarded_echo(GuardedSocket::layered(s, c, &schema)))
            }),
        )
        .route(
            "/both",
            get(move |up: GuardedUpgrade| async move {
                up.on_upgrade(move |s, c| guarded_echo(GuardedSocket::layered(s, c, &both)))
            }),
        )
        .layer(middleware::from_fn(principal));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // No Nagle: small frames go out at once, as a real-time server would send them.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn round_trips(client: &mut Client, batches: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..batches {
        for _ in 0..BATCH {
            client
                .feed(tungstenite::Message::text(MESSAGE))
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
        for _ in 0..BATCH {
            let echo = client.next().await.unwrap().unwrap();
            assert_eq!(echo.len(), MESSAGE.len());
        }
    }
    start.elapsed()
}

fn sockets(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(serve());
    let mut clients: Vec<Client> = ROUTES
        .iter()
        .map(|route| {
            rt.block_on(async {
                connect_async_with_config(format!("ws://{addr}/{route}"), None, true)
                    .await
                    .unwrap()
                    .0
            })
        })
        .collect();
    let mut group = c.benchmark_group("socket_echo_60B");
    group.throughput(Throughput::Elements(BATCH));
    for (route, client) in ROUTES.iter().zip(&mut clients) {
        group.bench_function(*route, |b| {
            b.iter_custom(|iters| rt.block_on(round_trips(client, iters)));
        });
    }
    group.finish();
    paired(&rt, &mut clients);
}

const ROUTES: [&str; 6] = ["bare", "parsing", "plane", "rate", "schema", "both"];

/// A paired measurement, robust to the drift of a shared machine (criterion measures the
/// routes one after the other, a minute apart): rounds of a few batches on every route in
/// turn (starting from a different route each round), and per route the median over the
/// rounds of its throughput divided by the bare echo's in the same round. Only under
/// `cargo bench` (criterion's test mode runs each case once).
fn paired(rt: &Runtime, clients: &mut [Client]) {
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    const ROUNDS: usize = 101;
    const BATCHES: u64 = 16;
    let mut ratios = vec![Vec::with_capacity(ROUNDS); ROUTES.len()];
    // Both guards against the application that parses the messages itself: what the guards
    // cost beyond the parse (which the validator does, and hands on).
    let mut beyond_parse = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let mut elapsed = [0.0f64; ROUTES.len()];
        for turn in 0..ROUTES.len() {
            let route = (round + turn) % ROUTES.len();
            elapsed[route] = rt
                .block_on(round_trips(&mut clients[route], BATCHES))
                .as_secs_f64();
        }
        for (route, time) in elapsed.iter().enumerate() {
            // Throughput ratio: bare time / route time.
            ratios[route].push(elapsed[0] / time);
        }
        beyond_parse.push(elapsed[1] / elapsed[5]);
    }
    let report = |name: &str, ratios: &mut Vec<f64>| {
        ratios.sort_by(f64::total_cmp);
        println!(
            "socket_echo_60B/{name}, median of {ROUNDS} paired rounds: {:.3} (quartiles \
             {:.3}-{:.3})",
            ratios[ROUNDS / 2],
            ratios[ROUNDS / 4],
            ratios[3 * ROUNDS / 4]
        );
    };
    for (route, ratios) in ROUTES.iter().zip(&mut ratios) {
        report(&format!("{route}: throughput / bare"), ratios);
    }
    report("both: throughput / parsing", &mut beyond_parse);
}

fn call_once<S>(svc: &mut S, req: Inbound<Message>, cx: &mut Context<'_>) -> Verdict<Message>
where
    S: Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible>,
{
    assert!(svc.poll_ready(cx).is_ready());
    let mut future = pin!(svc.call(req));
    match future.as_mut().poll(cx) {
        Poll::Ready(Ok(verdict)) => verdict,
        _ => unreachable!("every service here answers at once"),
    }
}

fn services(c: &mut Criterion, rt: &Runtime) {
    let _guard = rt.enter();
    let mut ext = Extensions::new();
    ext.insert(Principal::new("bench-user"));
    let conn = Connection::new(Uri::from_static("/ws"), &mut ext);
    let info = ConnectionInfo::new(&conn);
    let message = Message::text(MESSAGE);
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("service_call_60B");
    group.throughput(Throughput::Elements(1));

    fn run<S>(
        group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        name: &str,
        mut svc: S,
        info: &ConnectionInfo,
        message: &Message,
        cx: &mut Context<'_>,
    ) where
        S: Service<Inbound<Message>, Response = Verdict<Message>, Error = Infallible>,
    {
        group.bench_function(name, |b| {
            b.iter(|| {
                let req = Inbound::new(message.clone(), info.clone());
                let verdict = call_once(&mut svc, black_box(req), cx);
                assert!(verdict.is_admit());
                verdict
            });
        });
    }

    // The floor of typed validation: serde's parse alone, as the application would do it.
    group.bench_function("parse_only", |b| {
        b.iter(|| serde_json::from_str::<Command>(black_box(MESSAGE)).unwrap());
    });
    run(&mut group, "admit", Admit, &info, &message, &mut cx);
    run(
        &mut group,
        "rate",
        rate_layer().layer(Admit),
        &info,
        &message,
        &mut cx,
    );
    run(
        &mut group,
        "schema",
        schema_layer().layer(Admit),
        &info,
        &message,
        &mut cx,
    );
    let both = ServiceBuilder::new()
        .layer(rate_layer())
        .layer(schema_layer())
        .service(Admit);
    run(&mut group, "both", both, &info, &message, &mut cx);
    group.finish();
}

fn all(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    services(c, &rt);
    sockets(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
