//! The chat server as a function, so that tests can start it in-process.

use std::{
    future::IntoFuture,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use wsguard::{
    axum::GuardedUpgrade,
    client_ip::{ClientIpLayer, TrustedProxies},
    conn_limit::{
        handshake_rate::HandshakeRateLimitLayer, penalty::FailurePenaltyLayer, ConnLimitLayer,
        ConnectionStore, Hygiene, InMemoryConnectionStore, Shutdown,
    },
    jwt_auth::{
        jwks::{Jwks, JwksBuilder},
        Algorithm, JwtAuthLayer, KeySource, LiveSessions, NoClaims, TokenSource, VerifyingKey,
    },
    msg_rate::{rate, Budget, InMemoryKeyStore, KeyStore, MessageRateLimitLayer},
    origin::{AllowList, OriginGuardLayer},
    schema_validate::ValidateMessageLayer,
    serve::{serve, ServeConfig},
    Access, ConnectionInfo, PrincipalKey, SocketGuard,
};
use wsguard_redis::{FailurePolicy, Fleet, RedisConnectionStore, RedisKeyStore, RedisRevocations};

use crate::{
    cli::{Args, RedisFailure, RejectMode},
    hub::{ClientMsg, ErrorCode, Hub},
};

/// Per-message authorization: only members of a dialog may subscribe to it. Unknown dialogs
/// pass, so that the application can answer `not_found`.
#[derive(Debug, Clone)]
pub struct Members(Arc<Hub>);

impl wsguard::schema_validate::Authorize<ClientMsg> for Members {
    type Future = std::future::Ready<Access>;

    fn authorize(&self, conn: &ConnectionInfo, message: &ClientMsg) -> Self::Future {
        let ClientMsg::Subscribe(dialog) = message else {
            return std::future::ready(Access::Allow);
        };
        let user = conn.principal().map_or("", |p| p.as_str());
        std::future::ready(match self.0.may_join(user, &dialog.dialog_id) {
            Err(ErrorCode::Forbidden) => Access::Deny,
            _ => Access::Allow,
        })
    }
}

/// What guards each chat socket: the message budget (its per-user budgets kept in `K`),
/// typed validation with per-message authorization, hygiene and the size limit.
pub type ChatSockets<K = InMemoryKeyStore> =
    SocketGuard<MessageRateLimitLayer<K>, ValidateMessageLayer<ClientMsg, Arc<Members>>>;

/// The handshake's protections, outermost first: the client IP (everything after keys on
/// it), the handshake rate per IP, the penalty for failed attempts (which watches what the
/// Origin check and authentication answer), the Origin check, authentication, and the
/// connection limit (which counts only the handshakes that got this far). The connection
/// counts live in `St`.
pub struct Handshake<St = InMemoryConnectionStore> {
    client_ip: ClientIpLayer,
    rate: HandshakeRateLimitLayer,
    penalty: FailurePenaltyLayer,
    origin: OriginGuardLayer,
    auth: JwtAuthLayer<NoClaims>,
    conn_limit: ConnLimitLayer<St>,
}

#[derive(Clone)]
struct App<K = InMemoryKeyStore> {
    sockets: ChatSockets<K>,
    keys: Arc<[KeySource]>,
    hub: Arc<Hub>,
    page: Arc<str>,
    metrics: PrometheusHandle,
}

/// Where the limits keep their counts: this process's memory (the default), or, in fleet
/// mode (`--redis-url`), Redis, shared by every instance using it. The handshake rate and
/// the failure penalty per client IP stay in each instance's memory in both modes.
pub struct Stores<St, K> {
    /// The connection counts (global, per IP, per user).
    connections: St,
    /// The message budgets per user.
    messages: K,
    /// Revoked tokens and subjects, in fleet mode, and the open sockets a revocation closes
    /// (on this instance directly, on the others through Redis pub/sub, with 4403).
    revocations: Option<(RedisRevocations<ConnectionManager>, LiveSessions)>,
}

/// The message budget per user (`--msg-rate`, `--msg-burst`).
fn message_budget(args: &Args) -> Budget {
    Budget::new().messages(
        rate(args.msg_rate)
            .per(Duration::from_secs(1))
            .burst(args.msg_burst),
    )
}

/// Every count in this process's memory.
fn memory_stores(args: &Args) -> Result<Stores<InMemoryConnectionStore, InMemoryKeyStore>, Fatal> {
    Ok(Stores {
        connections: InMemoryConnectionStore::new(),
        messages: InMemoryKeyStore::new(message_budget(args))
            .map_err(|e| Fatal(format!("--msg-rate: {e}")))?,
        revocations: None,
    })
}

/// The fleet's stores on one Redis.
type FleetStores =
    Stores<RedisConnectionStore<ConnectionManager>, RedisKeyStore<ConnectionManager>>;

/// Fleet mode: every store on the Redis at `url`, under wsguard-redis's deadline (50 ms
/// per call) and circuit breaker, each with `--redis-failure` or its own default policy.
///
/// The connection is made lazily and re-made in the background (at most a second between
/// attempts) whenever it is lost, so a Redis that is down at start does not stop the chat:
/// it serves by the failure policy until Redis answers, then the shared limits take over.
async fn fleet_stores(args: &Args, url: &str) -> Result<FleetStores, Fatal> {
    // The URL may hold a password: it is never printed, not even in this error.
    let client = redis::Client::open(url).map_err(|_| {
        Fatal(
            "--redis-url: not a usable Redis URL (redis://[:PASSWORD@]HOST[:PORT][/DB])".to_owned(),
        )
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_max_delay(Duration::from_secs(1));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| Fatal(format!("--redis-url: {e}")))?;
    // One round trip at start, only to say what happens: nothing waits for Redis.
    let mut probe = conn.clone();
    let ping_cmd = redis::cmd("PING");
    let ping = ping_cmd.query_async::<String>(&mut probe);
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => tracing::info!("fleet mode: limits, budgets and revocations shared through Redis"),
        Ok(Err(error)) => tracing::warn!(
            %error,
            "fleet mode: Redis unreachable; answering by the failure policy and reconnecting in the background"
        ),
        Err(_) => tracing::warn!(
            "fleet mode: Redis did not answer within 2 s; answering by the failure policy and reconnecting in the background"
        ),
    }
    let fleet = Fleet::new(conn).with_prefix("wsguard:chat:");
    let policy = args.redis_failure.map(|failure| match failure {
        RedisFailure::Open => FailurePolicy::Open,
        RedisFailure::Closed => FailurePolicy::Closed,
    });
    let mut connections = RedisConnectionStore::builder(fleet.clone());
    let mut messages = RedisKeyStore::new(fleet.clone(), message_budget(args))
        .map_err(|e| Fatal(format!("--msg-rate: {e}")))?;
    let sessions = LiveSessions::new();
    let mut revocations = RedisRevocations::new(fleet).with_sessions(sessions.clone());
    if let Some(policy) = policy {
        connections = connections.with_failure_policy(policy);
        messages = messages.with_failure_policy(policy);
        revocations = revocations.with_failure_policy(policy);
        if policy == FailurePolicy::Open {
            // Said once, at start: during an outage a token revoked on another instance
            // works here again until Redis answers.
            tracing::warn!(
                "--redis-failure open: while Redis cannot answer, tokens revoked on other \
                 instances are accepted here (revocation falls back to this instance's memory)"
            );
        }
    }
    Ok(Stores {
        // The lease driver (renewals, releases) runs on this runtime.
        connections: connections.build_and_spawn()?,
        messages,
        revocations: Some({
            // Revocations published by any instance (or an operator's tool on the same Redis
            // and prefix) close the matching sockets here; its own Pub/Sub connection,
            // re-made with back-off, re-checking the live sockets after each reconnect.
            revocations.spawn_subscriber(client);
            (revocations, sessions)
        }),
    })
}

/// A startup error: printed, and the process exits with code 2 before anything listens.
pub struct Fatal(pub String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

/// The chat's key sources, and, in demo mode, the secret that signs the demo tokens.
struct Keys {
    sources: Vec<KeySource>,
    demo_secret: Option<Vec<u8>>,
}

/// The key sources the options name. Demo mode (a random HS256 secret) only when no key
/// option at all is given: a server told to trust an identity provider must never accept
/// tokens it signed itself and printed to its log.
fn keys(args: &Args) -> Result<Keys, Fatal> {
    if !args.has_key_option() {
        let mut secret = vec![0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| Fatal(format!("no randomness: {e}")))?;
        let key = VerifyingKey::hmac(Algorithm::HS256, &secret)?;
        return Ok(Keys {
            sources: vec![key.into()],
            demo_secret: Some(secret),
        });
    }
    let mut sources = Vec::new();
    if let Some(secret) = &args.jwt_secret {
        let key = VerifyingKey::hmac(Algorithm::HS256, secret.as_bytes())
            .map_err(|e| Fatal(format!("--jwt-secret: {e}")))?;
        sources.push(key.into());
    }
    if let Some(path) = &args.jwt_public_key {
        let pem = std::fs::read(path)
            .map_err(|e| Fatal(format!("--jwt-public-key {}: {e}", path.display())))?;
        let key = public_key(&pem, args.jwt_alg.as_deref())
            .map_err(|e| Fatal(format!("--jwt-public-key {}: {e}", path.display())))?;
        sources.push(key.into());
    }
    // Built, a cache starts fetching at once; until its first fetch succeeds, tokens get 503
    // and /readyz says not ready.
    let cooldown = Duration::from_secs(args.jwks_cooldown);
    let remote = |builder: JwksBuilder| {
        builder
            .refresh_interval(Duration::from_secs(args.jwks_refresh))
            .cooldown(cooldown)
            .retry_interval(cooldown)
            .build()
    };
    if let Some(url) = &args.jwks_url {
        let jwks = Jwks::from_url(url)
            .and_then(remote)
            .map_err(|e| Fatal(format!("--jwks-url: {e}")))?;
        sources.push(jwks.into());
    }
    if let Some(issuer) = &args.oidc_issuer {
        // OpenID Connect discovery; the source pins `iss` to the issuer.
        let jwks = Jwks::from_issuer(issuer)
            .and_then(remote)
            .map_err(|e| Fatal(format!("--oidc-issuer: {e}")))?;
        sources.push(jwks.into());
    }
    Ok(Keys {
        sources,
        demo_secret: None,
    })
}

/// A PEM public key; the algorithm follows from the key unless `alg` names one.
fn public_key(pem: &[u8], alg: Option<&str>) -> Result<VerifyingKey, String> {
    let alg = alg
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|_| format!("unknown algorithm `{a}`"))
        })
        .transpose()?;
    let text = String::from_utf8_lossy(pem);
    let result = match alg {
        Some(
            alg @ (Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512),
        ) => VerifyingKey::rsa_pem(alg, pem),
        Some(alg @ (Algorithm::ES256 | Algorithm::ES384)) => VerifyingKey::ec_pem(alg, pem),
        Some(Algorithm::EdDSA) => VerifyingKey::ed_pem(pem),
        Some(other) => return Err(format!("{other:?} is not a public-key algorithm")),
        None if text.contains("BEGIN RSA PUBLIC KEY") => {
            VerifyingKey::rsa_pem(Algorithm::RS256, pem)
        }
        None => VerifyingKey::ed_pem(pem)
            .or_else(|_| VerifyingKey::ec_pem(Algorithm::ES256, pem))
            .or_else(|_| VerifyingKey::ec_pem(Algorithm::ES384, pem))
            .or_else(|_| VerifyingKey::rsa_pem(Algorithm::RS256, pem)),
    };
    result.map_err(|e| e.to_string())
}

/// The guard, from the arguments, the bound address and the stores.
fn guard<St, K>(
    args: &Args,
    keys: Vec<KeySource>,
    addr: SocketAddr,
    hub: &Arc<Hub>,
    shutdown: &Shutdown,
    stores: Stores<St, K>,
) -> Result<(Handshake<St>, ChatSockets<K>), Fatal>
where
    St: ConnectionStore,
    K: KeyStore,
{
    let close_mode = args.reject_mode == RejectMode::Close;

    let trusted = args
        .trusted_proxies
        .iter()
        .fold(TrustedProxies::new(), |t, net| t.add_net(*net));
    let client_ip = ClientIpLayer::new().trusted_proxies(trusted);
    // Per instance, in fleet mode too: a flood defence that must not cost a Redis call.
    let handshake_rate = HandshakeRateLimitLayer::per_ip(
        rate(args.handshake_rate)
            .per(Duration::from_secs(1))
            .burst(args.handshake_burst),
    )
    .map_err(|e| Fatal(format!("--handshake-rate: {e}")))?
    .close_mode(close_mode)
    .dry_run(args.dry_run);
    let penalty = FailurePenaltyLayer::per_ip()
        .max_failures(
            args.auth_failure_limit,
            Duration::from_secs(args.auth_failure_window),
        )
        .map_err(|e| Fatal(format!("--auth-failure-limit: {e}")))?
        .close_mode(close_mode)
        .dry_run(args.dry_run);

    let mut allow = AllowList::new();
    if args.allow_origins.is_empty() {
        let port = addr.port();
        allow = allow
            .add_origin(&format!("http://127.0.0.1:{port}"))?
            .add_origin(&format!("http://localhost:{port}"))?;
    }
    for pattern in &args.allow_origins {
        allow = allow
            .add_origin(pattern)
            .map_err(|e| Fatal(format!("--allow-origin {pattern}: {e}")))?;
    }
    let origin = OriginGuardLayer::new(allow)
        .allow_missing_origin(!args.deny_missing_origin)
        .dry_run(args.dry_run);

    let mut keys = keys.into_iter();
    let first = keys
        .next()
        .ok_or_else(|| Fatal("no key source configured".to_owned()))?;
    let mut auth = keys
        .fold(JwtAuthLayer::<NoClaims>::new(first), |auth, source| {
            auth.add_key_source(source)
        })
        .with_token_sources([
            TokenSource::query("token")?,
            TokenSource::bearer(),
            TokenSource::protocol("bearer")?,
        ])?
        .close_mode(close_mode);
    if let Some(issuer) = &args.jwt_issuer {
        auth = auth.with_issuers([issuer.as_str()]);
    }
    if let Some(audience) = &args.jwt_audience {
        auth = auth.with_audiences([audience.as_str()]);
    }
    if let Some((revocations, sessions)) = stores.revocations {
        auth = auth.with_revocation(revocations).with_sessions(sessions);
    }

    let conn_limit = ConnLimitLayer::builder()
        .global(args.max_conns)
        .per_ip(args.max_conns_per_ip)
        .per_principal(args.max_conns_per_user)
        .close_mode(close_mode)
        .dry_run(args.dry_run)
        .store(stores.connections)
        .build()?;

    let rate_limit = MessageRateLimitLayer::new()
        .per_key_store(PrincipalKey::default(), stores.messages)
        .dry_run(args.dry_run);

    let max = args.max_message_bytes as usize;
    let validate = ValidateMessageLayer::new()
        .typed::<ClientMsg>()
        .max_message_size(max)
        .authorize(Members(Arc::clone(hub)))
        .dry_run(args.dry_run);

    let mut hygiene = Hygiene::new()
        .max_lifetime(Some(Duration::from_secs(args.max_lifetime)))
        .heartbeat(Duration::from_secs(30), Duration::from_secs(10))
        .shutdown(shutdown.clone());
    if let Some(idle) = args.idle_timeout() {
        hygiene = hygiene.idle_timeout(idle);
    }

    let handshake = Handshake {
        client_ip,
        rate: handshake_rate,
        penalty,
        origin,
        auth,
        conn_limit,
    };
    let sockets = SocketGuard::new()
        .rate_limit(rate_limit)
        .validate(validate)
        .hygiene(hygiene)
        .max_message_size(max);
    Ok((handshake, sockets))
}

/// A demo token for `user`, valid for a day.
fn demo_token(secret: &[u8], user: &str) -> Result<String, Fatal> {
    signing_backend();
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 24 * 3600;
    let claims = serde_json::json!({ "sub": user, "exp": exp });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )?)
}

/// Picks jsonwebtoken's signing backend for the demo tokens. (Verification does not depend
/// on it: wsguard-jwt-auth names its backend explicitly, and with `--all-features` both
/// backends are compiled in, when jsonwebtoken cannot choose by itself.)
pub fn signing_backend() {
    // Err only means a backend is installed already.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// The demo page, pre-filled with demo tokens only in zero-configuration mode.
fn page(tokens: Option<(&str, &str)>) -> Result<String, Fatal> {
    let tokens = match tokens {
        Some((alice, bob)) => serde_json::json!({ "alice": alice, "bob": bob }),
        None => serde_json::json!({}),
    };
    // JSON inside a <script>: escape `<` so no value can close the element.
    let tokens = serde_json::to_string(&tokens)?.replace('<', "\\u003c");
    Ok(include_str!("page.html").replace("/*DEMO_TOKENS*/{}", &tokens))
}

/// What the router is made of, besides the stores.
struct Parts<'a> {
    args: &'a Args,
    sources: Vec<KeySource>,
    addr: SocketAddr,
    hub: Arc<Hub>,
    shutdown: Shutdown,
    page: Arc<str>,
}

/// The chat's routes, its guard keeping its counts in `stores`.
fn router<St, K>(parts: Parts<'_>, stores: Stores<St, K>) -> Result<Router, Fatal>
where
    St: ConnectionStore,
    K: KeyStore,
{
    let keys: Arc<[KeySource]> = parts.sources.clone().into();
    let (handshake, sockets) = guard(
        parts.args,
        parts.sources,
        parts.addr,
        &parts.hub,
        &parts.shutdown,
        stores,
    )?;
    let app = App {
        sockets,
        keys,
        hub: parts.hub,
        page: parts.page,
        metrics: metrics_handle(),
    };
    Ok(Router::new()
        .route(
            "/ws",
            get(ws::<K>).layer(
                ServiceBuilder::new()
                    .layer(handshake.client_ip)
                    .layer(handshake.rate)
                    .layer(handshake.penalty)
                    .layer(handshake.origin)
                    .layer(handshake.auth)
                    .layer(handshake.conn_limit),
            ),
        )
        .route("/", get(index::<K>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<K>))
        .route("/metrics", get(metrics_text::<K>))
        .with_state(app))
}

/// A started chat server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The demo tokens of alice and bob, in zero-configuration mode.
    pub demo_tokens: Option<(String, String)>,
    /// Closes every socket with 1001 when triggered.
    pub shutdown: Shutdown,
    stop: Arc<tokio::sync::Notify>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, closes every socket with 1001 and waits (at most `grace`) for them.
    pub async fn stop(self, grace: Duration) -> Result<(), Fatal> {
        self.stop.notify_one();
        self.server.await.map_err(|e| Fatal(e.to_string()))?;
        let _ = tokio::time::timeout(grace, self.shutdown.closed()).await;
        Ok(())
    }
}

/// The process-wide Prometheus recorder (a process has one metrics recorder).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Connection durations as a Prometheus histogram (not a summary), from 1 s to a day.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("wsguard_connection_duration_seconds".to_owned()),
                    &[
                        1.0,
                        10.0,
                        60.0,
                        300.0,
                        1800.0,
                        3600.0,
                        4.0 * 3600.0,
                        86400.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            // Every series from the start, with its HELP and TYPE.
            wsguard::metrics::describe();
            handle
        })
        .clone()
}

/// Validates the arguments, binds and starts serving in the background.
pub async fn start(args: &Args) -> Result<Running, Fatal> {
    // The recorder before the layers: a connection limit registers its series when built.
    let _ = metrics_handle();
    let dialogs = args.dialog_map().map_err(Fatal)?;
    let Keys {
        sources,
        demo_secret,
    } = keys(args)?;
    let serve_config = ServeConfig::builder()
        .header_read_timeout(Duration::from_secs(args.header_read_timeout))
        .first_byte_timeout(Duration::from_secs(args.first_byte_timeout))
        .max_pending_heads(args.max_pending_heads)
        .max_pending_heads_per_ip(args.max_pending_heads_per_ip)
        .build()
        .map_err(|e| Fatal(format!("serving options (--header-read-timeout, --first-byte-timeout, --max-pending-heads, --max-pending-heads-per-ip): {e}")))?;

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| Fatal(format!("--listen {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let demo_tokens = match &demo_secret {
        Some(secret) => Some((demo_token(secret, "alice")?, demo_token(secret, "bob")?)),
        None => None,
    };
    let page = page(demo_tokens.as_ref().map(|(a, b)| (a.as_str(), b.as_str())))?;
    let parts = Parts {
        args,
        sources,
        addr,
        hub: Hub::new(dialogs),
        shutdown: shutdown.clone(),
        page: page.into(),
    };
    let router = match &args.redis_url {
        None => router(parts, memory_stores(args)?)?,
        Some(url) => router(parts, fleet_stores(args, url).await?)?,
    };

    let stop = Arc::new(tokio::sync::Notify::new());
    // wsguard's server: header-read and first-byte timeouts, a cap on heads still arriving,
    // and the peer as `ConnectInfo` for the client-ip layer.
    let server = serve(listener, router)
        .with_config(serve_config)
        .with_graceful_shutdown({
            let (stop, shutdown) = (Arc::clone(&stop), shutdown.clone());
            async move {
                stop.notified().await;
                tracing::info!("shutting down: closing sockets with 1001");
                shutdown.trigger();
            }
        });
    Ok(Running {
        addr,
        demo_tokens,
        shutdown,
        stop,
        server: tokio::spawn(server.into_future()),
    })
}

/// Runs the chat server until Ctrl-C.
pub async fn run(args: Args) -> Result<(), Fatal> {
    let running = start(&args).await?;
    let addr = running.addr;
    println!("chat: listening on http://{addr}/ (WebSocket at ws://{addr}/ws)");
    if let Some((alice, bob)) = &running.demo_tokens {
        println!("chat: no key configured: demo mode with a random HS256 secret");
        println!("chat: token for alice: {alice}");
        println!("chat: token for bob:   {bob}");
        println!("chat: open http://{addr}/ in a browser to chat");
    }
    let _ = tokio::signal::ctrl_c().await;
    // Upgraded sockets outlive the HTTP server: give them a moment to close cleanly.
    running.stop(Duration::from_secs(10)).await
}

async fn ws<K: KeyStore>(State(app): State<App<K>>, upgrade: GuardedUpgrade) -> Response {
    let hub = Arc::clone(&app.hub);
    app.sockets
        .on_upgrade(upgrade.protocols(["bearer"]), move |socket| {
            crate::socket::serve(socket, hub)
        })
}

/// Readiness: 200 once every key source has its keys (a JWKS after its first successful
/// fetch), 503 before. `/healthz` stays a liveness check.
async fn readyz<K>(State(app): State<App<K>>) -> (StatusCode, &'static str) {
    if app.keys.iter().all(KeySource::is_ready) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "key sources not loaded")
    }
}

async fn index<K>(State(app): State<App<K>>) -> Html<String> {
    Html(app.page.to_string())
}

async fn metrics_text<K>(State(app): State<App<K>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
