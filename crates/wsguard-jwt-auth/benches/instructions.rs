//! Instructions per HS256 handshake through the layer, for callgrind: the same WebSocket
//! handshake request (a bearer token, as `examples/bench_server --variant handshake` sends)
//! through a bare service and through [`JwtAuthLayer`] in front of it. Each runs in a
//! function of its own, so that callgrind can count it alone:
//!
//! ```sh
//! cargo bench -p wsguard-jwt-auth --bench instructions --no-run
//! # BIN: the executable cargo names ("Executable benches/instructions.rs (...)").
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/guarded.out \
//!     --toggle-collect='instructions::guarded*' "$BIN" --bench
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/bare.out \
//!     --toggle-collect='instructions::bare*' "$BIN" --bench
//! callgrind_annotate --inclusive=yes /tmp/guarded.out | grep -E 'Verifier|ResponseFuture'
//! ```
//!
//! Each of the two functions runs [`ROUNDS`] times, and each run collects only inside one of
//! them: the difference of the two totals ("Collected") divided by [`ROUNDS`] is the layer's
//! cost per handshake; `callgrind_annotate --inclusive=yes` on the guarded run gives the
//! verification's share (`wsguard_jwt_auth::verify::Verifier<C>::verify`) and the response
//! future's (`ResponseFuture::new`). Without valgrind, it prints the time per handshake of
//! each (a rough figure; the instruction count is the repeatable one).
//!
//! Measured (2026-12-01, issue 16; bare 1,299 instructions per handshake): through the layer
//! 40,289 with jsonwebtoken's HMAC (38,990 net, the verification 35,066), 32,702 with the HMAC
//! state keyed once per key (31,403 net, the verification 27,498), 32,461 with the payload
//! decoded on the stack (31,162 net, the verification 27,257), 32,422 with one segment decoder
//! for header and payload and no tag-length pre-check (31,123 net). All with the default
//! features (RustCrypto; under `aws-lc-rs` the HMAC is RustCrypto's too, not measured here).
//! Of those, `ResponseFuture::new` is 1,551, nearly all of it `admit`'s four
//! `Extensions::insert` (a box each, and the map's allocation and growth). Valgrind hides the
//! SHA extensions: SHA-256 weighs more here than in time.

use std::{convert::Infallible, hint::black_box, time::Instant};

use futures_util::FutureExt;
use http::{Request, Response};
use jsonwebtoken::{Algorithm, EncodingKey};
use tower::{Service, ServiceBuilder, ServiceExt};
use wsguard_jwt_auth::{Claims, JwtAuthLayer, VerifyingKey};

/// Handshakes per function.
const ROUNDS: u32 = 10_000;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{chat_token, ChatClaims};

/// A WebSocket handshake request bearing `authorization`.
fn request(authorization: &str) -> Request<()> {
    Request::builder()
        .uri("/ws")
        .header("host", "127.0.0.1")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("authorization", authorization)
        .body(())
        .unwrap()
}

/// One request through `svc`, its response dropped.
fn one<S>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: std::fmt::Debug,
{
    let ready = svc.ready().now_or_never().unwrap().unwrap();
    let res = ready.call(req).now_or_never().unwrap().unwrap();
    assert_eq!(res.status(), 200);
    drop(black_box(res));
}

#[inline(never)]
fn bare<S>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: std::fmt::Debug,
{
    one(svc, req);
}

#[inline(never)]
fn guarded<S>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: std::fmt::Debug,
{
    one(svc, req);
}

fn main() {
    let secret = [7u8; 32];
    let authorization = format!(
        "Bearer {}",
        chat_token(Algorithm::HS256, &EncodingKey::from_secret(&secret))
    );
    let key = VerifyingKey::hmac(Algorithm::HS256, &secret).unwrap();
    let handler = |req: Request<()>| async move {
        // The same work in both: the claims are looked up (absent without the layer).
        black_box(req.extensions().get::<Claims<ChatClaims>>().is_some());
        Ok::<_, Infallible>(Response::new(String::new()))
    };
    let mut bare_svc = ServiceBuilder::new().service_fn(handler);
    let mut guarded_svc = ServiceBuilder::new()
        .layer(JwtAuthLayer::<ChatClaims>::new(key))
        .service_fn(handler);

    let start = Instant::now();
    for _ in 0..ROUNDS {
        bare(&mut bare_svc, request(&authorization));
    }
    let bare_ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(ROUNDS);
    let start = Instant::now();
    for _ in 0..ROUNDS {
        guarded(&mut guarded_svc, request(&authorization));
    }
    let guarded_ns = start.elapsed().as_secs_f64() * 1e9 / f64::from(ROUNDS);
    println!(
        "{ROUNDS} HS256 handshakes each: bare {bare_ns:.0} ns, through the JWT layer \
         {guarded_ns:.0} ns per handshake"
    );
}
