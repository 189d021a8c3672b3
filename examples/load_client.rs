//! The end-to-end benchmark's load client: starts `bench_server` variants in turn (a fresh
//! process per run), loads each over loopback with tokio-tungstenite, and reads the server's
//! CPU time (`/proc/PID/stat`, utime + stime) and RSS (`/proc/PID/status`).
//!
//! ```text
//! cargo build --release --example bench_server --example load_client
//! target/release/examples/load_client --server target/release/examples/bench_server \
//!     --mode handshakes --variants bare,handshake
//! ```
//!
//! Modes:
//! - `handshakes`: `--conns` workers each connect, upgrade and close, one after the other,
//!   for `--secs`; server CPU per handshake;
//! - `echo`: `--conns` connections, each with one message in flight at a time (send, wait
//!   for the echo), for `--secs`; server CPU per round trip and round-trip latency;
//! - `idle`: `--conns` connections opened and left idle; server RSS per connection (the
//!   server's RSS with them open, less before, divided by their number).
//!
//! Paired measurement: each round runs every variant once, in an order rotated from round to
//! round, and the first variant of `--variants` is the baseline: every other variant's figure
//! is divided by the baseline's of the same round, and the table shows the median of those
//! ratios with their range (min-max) and quartiles. Everything is bounded: each run by
//! `--secs` (and a hard deadline), the whole by `--rounds`; servers exit by themselves too.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    client_async,
    tungstenite::{client::IntoClientRequest, Message},
    MaybeTlsStream, WebSocketStream,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Handshakes,
    Echo,
    Idle,
}

#[derive(Debug, Parser)]
#[command(about = "The end-to-end benchmark's load client (loopback only)")]
struct Args {
    /// The `bench_server` binary.
    #[arg(long)]
    server: PathBuf,
    /// What to measure.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The variants, the first being the baseline of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "bare,handshake")]
    variants: Vec<String>,
    /// Rounds (each runs every variant once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Workers (`handshakes`) or connections (`echo`, `idle`).
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// Seconds of load per run (`handshakes`, `echo`).
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Read buffer size given to the server.
    #[arg(long, default_value_t = 4096)]
    read_buffer_size: usize,
    /// The HS256 secret the server was given.
    #[arg(long, default_value = "wsguard-bench-secret-0123456789abcdef")]
    jwt_secret: String,
    /// The Origin header sent.
    #[arg(long, default_value = "http://bench.localhost")]
    origin: String,
    /// Write the markdown table here as well as to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run each server under `valgrind --tool=callgrind` and report instructions per
    /// operation (counted from the end of the warm-up to the end of the run) instead of CPU
    /// time; its dumps go to this directory.
    #[arg(long)]
    callgrind: Option<PathBuf>,
}

/// 60 bytes of JSON, a valid `Command`.
const MESSAGE: &str = r#"{"type":"subscribe","session_id":"s-0123456789abcdef012345"}"#;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One measured run of one variant.
#[derive(Debug, Clone, Default)]
struct Run {
    /// Server CPU per operation, µs (`handshakes`, `echo`), or RSS bytes per connection.
    per_op: f64,
    ops: u64,
    secs: f64,
    /// Latency percentiles in µs (p50, p90, p99) of the operations.
    latency: [f64; 3],
    /// Server CPU per operation in user space and in the kernel, µs (`handshakes` and
    /// `echo` without callgrind; `NaN` otherwise).
    split: [f64; 2],
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &Args, variant: &str) -> Result<Self, String> {
        let mut command = match &args.callgrind {
            Some(dir) => {
                let mut c = Command::new("valgrind");
                c.arg("--tool=callgrind")
                    .arg(format!(
                        "--callgrind-out-file={}/callgrind.%p",
                        dir.display()
                    ))
                    .arg(&args.server);
                c
            }
            None => Command::new(&args.server),
        };
        let mut child = command
            .args(["--variant", variant, "--listen", "127.0.0.1:0"])
            .args(["--read-buffer-size", &args.read_buffer_size.to_string()])
            .args(["--jwt-secret", &args.jwt_secret, "--origin", &args.origin])
            .args(["--max-seconds", "300"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.server.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("bench_server said {line:?}"))?;
        Ok(Self { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Instructions the callgrind-run server `pid` executed since the last zeroing (`-z`), read
/// from a dump (`-d`) in `dir`; zeroes the counters again.
fn callgrind_instructions(dir: &std::path::Path, pid: u32) -> f64 {
    let status = Command::new("callgrind_control")
        .args(["-d", &pid.to_string()])
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("load_client: callgrind_control -d {pid} failed");
        return f64::NAN;
    }
    // The dumps are callgrind.PID.1, .2, ...: the newest holds this interval.
    let prefix = format!("callgrind.{pid}.");
    let newest = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u32 = name.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n);
    let Some((_, path)) = newest else {
        return f64::NAN;
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn callgrind_zero(pid: u32) {
    let _ = Command::new("callgrind_control")
        .args(["-z", &pid.to_string()])
        .stdout(Stdio::null())
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime and stime of a process, in seconds (`/proc/PID/stat`, fields 14 and 15).
fn cpu_split(pid: u32) -> [f64; 2] {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).
    [ticks(11) as f64 / 100.0, ticks(12) as f64 / 100.0]
}

/// Resident set size of a process, in bytes (`VmRSS` of `/proc/PID/status`).
fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

fn token(secret: &str, user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let claims = serde_json::json!({ "sub": user, "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Opens one WebSocket with the Origin and the worker's token (sent to every variant: the
/// bare ones ignore them).
async fn connect(addr: SocketAddr, origin: &str, token: &str) -> Result<Client, String> {
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    headers.insert("origin", origin.parse().map_err(|_| "origin")?);
    headers.insert(
        "authorization",
        format!("Bearer {token}").parse().map_err(|_| "token")?,
    );
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (ws, _) = client_async(request, MaybeTlsStream::Plain(tcp))
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Closes the socket and waits (bounded) for the server's close and the end of the stream.
async fn close(mut ws: Client) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn percentiles(mut samples: Vec<u32>) -> [f64; 3] {
    if samples.is_empty() {
        return [0.0; 3];
    }
    samples.sort_unstable();
    let at = |q: f64| f64::from(samples[((samples.len() - 1) as f64 * q) as usize]);
    [at(0.50), at(0.90), at(0.99)]
}

/// The server's CPU seconds now, or, under callgrind, zeroes its instruction counters.
fn start_counting(args: &Args, server: &Server) -> [f64; 2] {
    match &args.callgrind {
        Some(_) => {
            callgrind_zero(server.pid());
            [0.0; 2]
        }
        None => cpu_split(server.pid()),
    }
}

/// What the server spent since `start_counting`: CPU seconds, or millions of instructions
/// under callgrind (so that "per op, µs" reads "per op, instructions" once multiplied); and
/// the CPU seconds in user space and in the kernel (`NaN` under callgrind).
fn counted(args: &Args, server: &Server, cpu0: [f64; 2]) -> (f64, [f64; 2]) {
    match &args.callgrind {
        Some(dir) => (
            callgrind_instructions(dir, server.pid()) / 1e6,
            [f64::NAN; 2],
        ),
        None => {
            let [user, system] = cpu_split(server.pid());
            let split = [user - cpu0[0], system - cpu0[1]];
            (split[0] + split[1], split)
        }
    }
}

/// Handshakes (connect, upgrade, close) by `workers` workers for `secs`.
async fn handshakes(args: &Args, server: &Server, secs: f64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = start_counting(args, server);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for w in 0..args.conns {
        let (addr, origin, stop) = (server.addr, args.origin.clone(), Arc::clone(&stop));
        let token = token(&args.jwt_secret, &format!("user-{w}"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            // Bounded by the deadline and by a count.
            while Instant::now() < deadline
                && !stop.load(Ordering::Relaxed)
                && latencies.len() < 1_000_000
            {
                let t = Instant::now();
                match connect(addr, &origin, &token).await {
                    Ok(ws) => {
                        latencies.push(t.elapsed().as_micros() as u32);
                        close(ws).await;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 10 {
                            eprintln!("load_client: handshakes failing: {e}");
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap_or_default());
    }
    let secs = start.elapsed().as_secs_f64();
    // Let the server finish the last closes before reading its CPU time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cpu, split) = counted(args, server, cpu0);
    let ops = latencies.len() as u64;
    Run {
        per_op: cpu / ops.max(1) as f64 * 1e6,
        ops,
        secs,
        latency: percentiles(latencies),
        split: split.map(|s| s / ops.max(1) as f64 * 1e6),
    }
}

/// `conns` connections, one message in flight each, for `secs`.
async fn echo(args: &Args, server: &Server, secs: f64) -> Run {
    let mut clients = Vec::new();
    for c in 0..args.conns {
        let token = token(&args.jwt_secret, &format!("user-{c}"));
        match connect(server.addr, &args.origin, &token).await {
            Ok(ws) => clients.push(ws),
            Err(e) => {
                eprintln!("load_client: echo connect failed: {e}");
                return Run::default();
            }
        }
    }
    let cpu0 = start_counting(args, server);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for mut ws in clients {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline && latencies.len() < 10_000_000 {
                let t = Instant::now();
                if ws.send(Message::text(MESSAGE)).await.is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
                    Ok(Some(Ok(Message::Text(_)))) => {
                        latencies.push(t.elapsed().as_micros() as u32);
                    }
                    other => {
                        eprintln!("load_client: echo answered {other:?}");
                        break;
                    }
                }
            }
            (latencies, ws)
        }));
    }
    let mut latencies = Vec::new();
    let mut sockets = Vec::new();
    for task in tasks {
        if let Ok((l, ws)) = task.await {
            latencies.extend(l);
            sockets.push(ws);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (cpu, split) = counted(args, server, cpu0);
    for ws in sockets {
        close(ws).await;
    }
    let ops = latencies.len() as u64;
    Run {
        per_op: cpu / ops.max(1) as f64 * 1e6,
        ops,
        secs,
        latency: percentiles(latencies),
        split: split.map(|s| s / ops.max(1) as f64 * 1e6),
    }
}

/// `conns` idle connections: the server's RSS with them open, less before, per connection.
async fn idle(args: &Args, server: &Server) -> Run {
    // Warm up: a few connections opened and closed, so that the runtime's and the guards'
    // one-time allocations are made before the baseline reading.
    for c in 0..8 {
        if let Ok(ws) = connect(
            server.addr,
            &args.origin,
            &token(&args.jwt_secret, &format!("warm-{c}")),
        )
        .await
        {
            close(ws).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A user per connection, as in `echo` (the per-user limit would refuse more).
    let tokens: Vec<String> = (0..args.conns)
        .map(|c| token(&args.jwt_secret, &format!("user-{c}")))
        .collect();
    let rss0 = rss_bytes(server.pid());
    let start = Instant::now();
    let mut clients = Vec::with_capacity(args.conns);
    for token in &tokens {
        match connect(server.addr, &args.origin, token).await {
            Ok(ws) => clients.push(ws),
            Err(e) => {
                eprintln!("load_client: idle connect failed: {e}");
                break;
            }
        }
    }
    // Every socket's task has started and read nothing yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_bytes(server.pid());
    let secs = start.elapsed().as_secs_f64();
    let ops = clients.len() as u64;
    drop(clients);
    Run {
        per_op: (rss1 - rss0) / ops.max(1) as f64,
        ops,
        secs,
        latency: [0.0; 3],
        split: [f64::NAN; 2],
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.variants.is_empty() || args.rounds == 0 || args.conns == 0 {
        return Err("need variants, rounds and connections".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    let n = args.variants.len();
    // runs[variant][round]
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); n];
    let hard_deadline = Instant::now() + Duration::from_secs(600);
    for round in 0..args.rounds {
        for k in 0..n {
            let v = (round + k) % n;
            if Instant::now() > hard_deadline {
                return Err("load_client: 10 minutes passed, stopping".into());
            }
            let server = Server::start(&args, &args.variants[v])?;
            let run = runtime.block_on(async {
                // Warm-up: the same load, short, not counted.
                match args.mode {
                    Mode::Handshakes => {
                        handshakes(&args, &server, 0.3).await;
                        handshakes(&args, &server, args.secs).await
                    }
                    Mode::Echo => {
                        echo(&args, &server, 0.3).await;
                        echo(&args, &server, args.secs).await
                    }
                    Mode::Idle => idle(&args, &server).await,
                }
            });
            eprintln!(
                "round {round} {:>9}: {:>10.2} per op, {} ops in {:.1} s",
                args.variants[v], run.per_op, run.ops, run.secs
            );
            runs[v].push(run);
            drop(server);
        }
    }
    let table = table(&args, &runs);
    print!("{table}");
    if let Some(path) = &args.out {
        std::fs::write(path, &table)?;
    }
    Ok(())
}

fn table(args: &Args, runs: &[Vec<Run>]) -> String {
    use std::fmt::Write;
    let unit = match (args.mode, args.callgrind.is_some()) {
        (Mode::Handshakes, true) => "server instructions per handshake",
        (Mode::Echo, true) => "server instructions per round trip",
        (Mode::Handshakes, false) => "server CPU per handshake (µs)",
        (Mode::Echo, false) => "server CPU per round trip (µs)",
        (Mode::Idle, _) => "server RSS per idle connection (bytes)",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mode {:?}, {} rounds, {} {}, read buffer {} B; ratios paired against `{}` in each round: median (min-max) [quartiles]\n",
        args.mode,
        args.rounds,
        args.conns,
        if args.mode == Mode::Handshakes { "workers" } else { "connections" },
        args.read_buffer_size,
        args.variants[0],
    );
    let latency = args.mode != Mode::Idle;
    let split = latency && args.callgrind.is_none();
    let _ = writeln!(
        out,
        "| variant | {unit}, median (min-max) | vs `{}`, ratio | vs `{}`, difference | ops per run{}{} |",
        args.variants[0],
        args.variants[0],
        if latency { " | latency p50 / p90 / p99 (µs)" } else { "" },
        if split {
            " | user / kernel CPU per op, µs, median (paired ratio, median)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|{}{}",
        if latency { "---|" } else { "" },
        if split { "---|" } else { "" }
    );
    for (v, name) in args.variants.iter().enumerate() {
        let per = sorted(runs[v].iter().map(|r| r.per_op).collect());
        let ratios = sorted(
            runs[v]
                .iter()
                .zip(&runs[0])
                .map(|(r, b)| r.per_op / b.per_op)
                .collect(),
        );
        let diffs = sorted(
            runs[v]
                .iter()
                .zip(&runs[0])
                .map(|(r, b)| r.per_op - b.per_op)
                .collect(),
        );
        let ops = sorted(runs[v].iter().map(|r| r.ops as f64).collect());
        let lat = |i: usize| quantile(&sorted(runs[v].iter().map(|r| r.latency[i]).collect()), 0.5);
        let digits = if args.mode == Mode::Idle || args.callgrind.is_some() {
            0
        } else {
            1
        };
        let _ = write!(
            out,
            "| {name} | {:.digits$} ({:.digits$}-{:.digits$}) | {:.3}x ({:.3}-{:.3}) [{:.3}-{:.3}] | {:+.digits$} ({:+.digits$} to {:+.digits$}) | {:.0} |",
            quantile(&per, 0.5),
            quantile(&per, 0.0),
            quantile(&per, 1.0),
            quantile(&ratios, 0.5),
            quantile(&ratios, 0.0),
            quantile(&ratios, 1.0),
            quantile(&ratios, 0.25),
            quantile(&ratios, 0.75),
            quantile(&diffs, 0.5),
            quantile(&diffs, 0.0),
            quantile(&diffs, 1.0),
            quantile(&ops, 0.5),
        );
        if latency {
            let _ = write!(out, " {:.0} / {:.0} / {:.0} |", lat(0), lat(1), lat(2));
        }
        if split {
            let part =
                |i: usize| quantile(&sorted(runs[v].iter().map(|r| r.split[i]).collect()), 0.5);
            let ratio = |i: usize| {
                quantile(
                    &sorted(
                        runs[v]
                            .iter()
                            .zip(&runs[0])
                            .map(|(r, b)| r.split[i] / b.split[i])
                            .collect(),
                    ),
                    0.5,
                )
            };
            let _ = write!(
                out,
                " {:.1} / {:.1} ({:.3}x / {:.3}x) |",
                part(0),
                part(1),
                ratio(0),
                ratio(1)
            );
        }
        out.push('\n');
    }
    out
}
