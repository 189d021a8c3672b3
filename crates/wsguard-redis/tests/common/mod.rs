//! A private `redis-server` per test: on a free loopback port, no persistence, killed on
//! drop. Without the binary the test is skipped with a loud message, or fails when `CI` is
//! set (`scripts/setup` installs it).

#![allow(dead_code, unreachable_pub)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use redis::aio::ConnectionManager;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

/// Starts a server, or returns `None` (skip) when `redis-server` is missing outside CI.
pub fn redis_server() -> Option<RedisServer> {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("redis-server is not installed and CI is set: run scripts/setup");
        }
        eprintln!(
            "\n*** SKIPPED: redis-server is not installed; run scripts/setup \
             (apt-get install -y redis-server) to run the Redis tests ***\n"
        );
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server = RedisServer { child: None, port };
    server.start();
    Some(server)
}

impl RedisServer {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (or restarts) the server on its port and waits until it answers PING.
    pub fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not answer within 10 s");
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Kills the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A connection that reconnects by itself (what a fleet uses in production).
    pub async fn connect(&self) -> ConnectionManager {
        let client = redis::Client::open(self.url()).expect("a valid URL");
        tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
            .await
            .expect("connects within 5 s")
            .expect("connects")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 50 ms until it is true or `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `program` runs here; without it the test is skipped with a loud message, or fails
/// when `CI` is set.
fn installed(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{program} is not installed and CI is set: run scripts/setup");
        }
        eprintln!(
            "\n*** SKIPPED: {program} is not installed; run scripts/setup \
             (apt-get install -y redis-server, which brings redis-tools) to run the Redis tests ***\n"
        );
    }
    found
}

/// A free loopback port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (P, P + 10000) in 100 tries");
}

/// Runs `program` with `args`, killed after `within`; its stdout, or a panic with its output.
pub fn run_bounded(program: &str, args: &[&str], within: Duration) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait().expect("the child can be waited for") {
            Some(_) => break,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {args:?} did not finish within {within:?}");
            }
            None => std::thread::sleep(Duration::from_millis(25)),
        }
    }
    let output = child.wait_with_output().expect("its output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A private Redis Cluster: three masters (no replicas) on free loopback ports, no
/// persistence, their cluster files in a temporary directory; killed and removed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
}

/// Starts a cluster, or returns `None` (skip) when `redis-server` or `redis-cli` is missing
/// outside CI. Every wait is bounded: 10 s per node to answer, 30 s for `redis-cli --cluster
/// create`, 20 s for every node to report `cluster_state:ok`.
pub fn redis_cluster() -> Option<RedisCluster> {
    if !installed("redis-server") || !installed("redis-cli") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!(
        "wsguard-redis-cluster-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let mut cluster = RedisCluster {
        nodes: Vec::new(),
        dir,
    };
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_cluster_port(&ports);
        ports.push(port);
        let config = cluster.dir.join(format!("nodes-{port}.conf"));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args([
                "--cluster-config-file",
                config.to_str().expect("a UTF-8 path"),
            ])
            .args(["--dir", cluster.dir.to_str().expect("a UTF-8 path")])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let node = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.ping() {
            assert!(
                Instant::now() < deadline,
                "cluster node {port} did not answer within 10 s"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        cluster.nodes.push(node);
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    run_bounded("redis-cli", &create, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = ports.iter().all(|port| {
            run_bounded(
                "redis-cli",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "cluster",
                    "info",
                ],
                Duration::from_secs(5),
            )
            .contains("cluster_state:ok")
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster did not report cluster_state:ok within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(cluster)
}

impl RedisCluster {
    /// The nodes' URLs, for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
