//! Keys from a JWKS URL (RFC 7517 section 5) or an OpenID Connect issuer (OpenID Connect
//! Discovery 1.0 section 4, see [`Jwks::from_issuer`]), cached and refreshed.
//!
//! A [`Jwks`] cache is a [key source](crate::KeySource) that fetches its keys through a
//! [`JwksFetcher`] ([`HttpFetcher`] for an `https://` URL): as soon as it is built, then every
//! [refresh interval](JwksBuilder::refresh_interval) (every
//! [retry interval](JwksBuilder::retry_interval) after a failed fetch), and when a token
//! names a `kid` the cache does not know, so keys rotated in at the identity provider are
//! picked up without a restart.
//!
//! Until its first fetch succeeds the cache is not [ready](Jwks::is_ready): a token that no
//! other source's key verifies, and whose `alg` this cache could hold, is refused with 503
//! and `Retry-After` ([`Failure::KeysUnavailable`](crate::Failure::KeysUnavailable)), not
//! 401, and [`JwtAuthLayer::keys_ready`](crate::JwtAuthLayer::keys_ready) is `false`, for a
//! readiness probe.
//!
//! What an attacker can and cannot make it do:
//!
//! - **No fetch storm.** Fetches are single-flight (requests that arrive while one is
//!   running wait for it, at most the [fetch timeout](JwksBuilder::fetch_timeout)), and an
//!   unknown `kid` starts a fetch only if none started within the
//!   [cooldown](JwksBuilder::cooldown): a flood of random `kid`s costs at most one fetch per
//!   cooldown; every other request with an unknown `kid` is refused at once.
//! - **No key from the token.** The URL is configured; nothing of the token (`jku`, `x5u`,
//!   `jwk`, `kid`) is ever fetched or used as a key. Symmetric (`oct`) keys in a fetched set
//!   are ignored: a public document must not hold HMAC secrets.
//! - **No outage from a bad fetch.** A failed or timed-out fetch, or a set without one usable
//!   key, keeps the keys already loaded (stale keys beat no keys) and is logged.
//! - **No lock on the hot path.** Requests load the key set through `arc-swap`; the one
//!   mutex is taken only for an unknown `kid`, never across an `.await`.
//! - **Bounded memory.** At most [`max_keys`](JwksBuilder::max_keys) keys per set, and
//!   [`HttpFetcher`] reads at most 1 MiB.
//!
//! Each cache keeps its own keys: with two caches (two identity providers) on one layer, a
//! `kid` of one can never replace a key of the other, the cache is keyed by (source, `kid`).
//!
//! Needs a tokio runtime: [`JwksBuilder::start`] spawns the refresh task on the current one.
//!
//! ```no_run
//! use std::time::Duration;
//! use wsguard_jwt_auth::{jwks::Jwks, JwtAuthLayer, NoClaims};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let jwks = Jwks::from_url("https://login.example.com/.well-known/jwks.json")?
//!     .refresh_interval(Duration::from_secs(15 * 60))
//!     .cooldown(Duration::from_secs(30))
//!     .start()
//!     .await?;
//! let layer = JwtAuthLayer::<NoClaims>::new(jwks)
//!     .with_issuers(["https://login.example.com/"])
//!     .with_audiences(["chat-api"]);
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet},
    Algorithm, AlgorithmFamily,
};
use tokio::{runtime::Handle, sync::watch};

use super::{
    key::{jwk_algorithm, VerifyingKey},
    set::KeySet,
    source::{KeyProvider, KeySource, KeyWait, Loaded},
};
use crate::ConfigError;

/// A boxed, sendable future: what a [`JwksFetcher`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Fetches a JWK set: the one thing a [`Jwks`] cache does not do itself, so that it can be
/// swapped (another HTTP client, a file, a service mesh) and tested.
///
/// The cache applies the timeout, the single-flight rule and the cooldown around it.
/// Implemented by [`HttpFetcher`] and by every `Fn() -> impl Future<Output =
/// Result<JwkSet, JwksError>>` that is `Send + Sync + 'static`.
pub trait JwksFetcher: Send + Sync + 'static {
    /// Fetches the current set.
    fn fetch(&self) -> BoxFuture<Result<JwkSet, JwksError>>;
}

impl<F, Fut> JwksFetcher for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<JwkSet, JwksError>> + Send + 'static,
{
    fn fetch(&self) -> BoxFuture<Result<JwkSet, JwksError>> {
        Box::pin(self())
    }
}

/// Why a fetch failed. The cache keeps its keys and logs the error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksError {
    /// The fetch took longer than the fetch timeout.
    Timeout,
    /// The server answered with a status other than 2xx.
    Status(u16),
    /// The connection or TLS failed.
    Transport(String),
    /// The body was larger than allowed.
    TooLarge,
    /// The body is not a JWK set.
    Invalid(String),
    /// The set holds no key this cache can use.
    NoUsableKeys,
    /// No tokio runtime to run the fetch on.
    NoRuntime,
    /// Another fetcher's error.
    Other(String),
}

impl JwksError {
    /// An error of a custom [`JwksFetcher`].
    pub fn other(error: impl fmt::Display) -> Self {
        Self::Other(error.to_string())
    }
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("JWKS fetch timed out"),
            Self::Status(status) => write!(f, "JWKS fetch answered with status {status}"),
            Self::Transport(error) => write!(f, "JWKS fetch failed: {error}"),
            Self::TooLarge => f.write_str("JWKS document too large"),
            Self::Invalid(error) => write!(f, "JWKS document invalid: {error}"),
            Self::NoUsableKeys => f.write_str("JWKS document holds no usable key"),
            Self::NoRuntime => f.write_str("no tokio runtime for the JWKS cache"),
            Self::Other(error) => write!(f, "JWKS fetch failed: {error}"),
        }
    }
}

impl std::error::Error for JwksError {}

/// The default [`JwksFetcher`]: a GET of an `https://` (or, for tests and internal
/// networks, `http://`) URL with `reqwest` and rustls (ring, the platform's certificate
/// verifier).
///
/// It follows no redirect, uses no proxy, and reads at most
/// [`max_body_len`](Self::max_body_len) bytes (default 1 MiB).
#[derive(Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    url: reqwest::Url,
    max_body_len: usize,
    /// With OpenID Connect discovery: the issuer, and `url` is its discovery document.
    issuer: Option<Arc<str>>,
}

impl fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcher")
            .field("url", &self.url.as_str())
            .field("max_body_len", &self.max_body_len)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl HttpFetcher {
    /// A fetcher for `url`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Jwks`] when `url` is not an `http` or `https` URL, or the TLS
    /// configuration cannot be built (no usable certificate store on the platform).
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let jwks_error = |reason: String| ConfigError::Jwks { reason };
        let url = reqwest::Url::parse(url).map_err(|e| jwks_error(format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(jwks_error("the URL must be https (or http)".to_owned()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier(builder)
            })
            .map_err(|e| jwks_error(format!("TLS: {e}")))?
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| jwks_error(format!("HTTP client: {e}")))?;
        Ok(Self {
            client,
            url,
            max_body_len: 1024 * 1024,
            issuer: None,
        })
    }

    /// A fetcher that finds the JWK set through OpenID Connect discovery (OpenID Connect
    /// Discovery 1.0 section 4): each fetch reads the provider configuration at `issuer`
    /// followed by `/.well-known/openid-configuration` (a trailing `/` of `issuer` removed
    /// first, section 4.1), checks that its `issuer` is exactly `issuer` (section 4.3), and
    /// fetches the set at its `jwks_uri` (section 3), so a provider that moves its keys is
    /// followed. This is the OpenID Connect location of the document, not the RFC 8414
    /// form that inserts the well-known path before the issuer's path.
    ///
    /// The `jwks_uri` of an `https` issuer must be `https` too; each document is read with
    /// the [size limit](Self::max_body_len).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Jwks`] when `issuer` is not an `http` or `https` URL, or has a query
    /// or a fragment (an issuer identifier has neither: OpenID Connect Core 1.0 section 2),
    /// or as [`HttpFetcher::new`].
    pub fn discovery(issuer: &str) -> Result<Self, ConfigError> {
        let jwks_error = |reason: String| ConfigError::Jwks { reason };
        let parsed = reqwest::Url::parse(issuer)
            .map_err(|e| jwks_error(format!("invalid issuer URL: {e}")))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(jwks_error(
                "an issuer URL has no query and no fragment".to_owned(),
            ));
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let mut fetcher = Self::new(&url)?;
        fetcher.issuer = Some(issuer.into());
        Ok(fetcher)
    }

    /// The largest document read, in bytes (default 1 MiB).
    #[must_use]
    pub const fn max_body_len(mut self, max: usize) -> Self {
        self.max_body_len = max;
        self
    }

    async fn get(self) -> Result<JwkSet, JwksError> {
        let jwks_uri = match &self.issuer {
            None => self.url.clone(),
            Some(issuer) => {
                let body = self.get_body(self.url.clone(), "application/json").await?;
                self.jwks_uri(issuer, &body)?
            }
        };
        let body = self
            .get_body(jwks_uri, "application/jwk-set+json, application/json")
            .await?;
        serde_json::from_slice(&body).map_err(|e| JwksError::Invalid(e.to_string()))
    }

    /// The `jwks_uri` of a provider configuration (OpenID Connect Discovery 1.0 sections 3
    /// and 4.3).
    fn jwks_uri(&self, issuer: &str, body: &[u8]) -> Result<reqwest::Url, JwksError> {
        #[derive(serde::Deserialize)]
        struct Configuration {
            issuer: String,
            jwks_uri: String,
        }
        let invalid = |reason: String| JwksError::Invalid(reason);
        let config: Configuration = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("OpenID provider configuration: {e}")))?;
        if config.issuer != issuer {
            return Err(invalid(
                "the provider configuration names another issuer".to_owned(),
            ));
        }
        let uri =
            reqwest::Url::parse(&config.jwks_uri).map_err(|e| invalid(format!("jwks_uri: {e}")))?;
        let scheme_ok = match self.url.scheme() {
            "https" => uri.scheme() == "https",
            _ => matches!(uri.scheme(), "https" | "http"),
        };
        if !scheme_ok {
            return Err(invalid(
                "jwks_uri must be https (http only for an http issuer)".to_owned(),
            ));
        }
        Ok(uri)
    }

    /// GETs `url` and reads at most `max_body_len` bytes of its 2xx answer.
    async fn get_body(
        &self,
        url: reqwest::Url,
        accept: &'static str,
    ) -> Result<Vec<u8>, JwksError> {
        let transport = |e: reqwest::Error| JwksError::Transport(e.to_string());
        let mut response = self
            .client
            .get(url)
            .header(http::header::ACCEPT, accept)
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > self.max_body_len as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_body_len {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl JwksFetcher for HttpFetcher {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, JwksError>> {
        Box::pin(self.clone().get())
    }
}

/// Configures a [`Jwks`] cache; see the [module docs](self).
#[must_use]
pub struct JwksBuilder {
    fetcher: Arc<dyn JwksFetcher>,
    issuer: Option<Arc<str>>,
    refresh_interval: Duration,
    retry_interval: Duration,
    cooldown: Duration,
    fetch_timeout: Duration,
    max_keys: usize,
    rsa_algorithm: Algorithm,
    allowed: Option<Vec<Algorithm>>,
}

impl fmt::Debug for JwksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksBuilder")
            .field("issuer", &self.issuer)
            .field("refresh_interval", &self.refresh_interval)
            .field("retry_interval", &self.retry_interval)
            .field("cooldown", &self.cooldown)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("max_keys", &self.max_keys)
            .field("rsa_algorithm", &self.rsa_algorithm)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl JwksBuilder {
    /// Pins the issuer: a token verified with a key of this cache must have an `iss` claim
    /// equal to `issuer` (compared as strings, RFC 7519 section 4.1.1), whatever the layer's
    /// [`with_issuers`](crate::JwtAuthLayer::with_issuers) accepts for other sources, so a
    /// key of one identity provider never vouches for tokens naming another.
    /// [`Jwks::from_issuer`] sets it.
    pub fn issuer(mut self, issuer: impl Into<Arc<str>>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// How often the set is fetched again (default 15 minutes).
    pub const fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// How soon the refresh task tries again after a failed fetch (default 10 s; never
    /// later than the refresh interval): a cache that could not fetch at start gets its keys
    /// soon after the identity provider answers.
    pub const fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// The shortest time between two fetches started by requests (unknown `kid`s, or tokens
    /// arriving before the first fetch succeeded) (default 30 s).
    pub const fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// How long one fetch may take (default 5 s).
    pub const fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// The most keys kept from one set (default 64); the rest are ignored.
    pub const fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// The algorithm of RSA keys that do not name one (default `RS256`): a JWK without `alg`
    /// is bound to this one for RSA, to ES256 or ES384 by its curve, to EdDSA for Ed25519.
    pub const fn rsa_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.rsa_algorithm = algorithm;
        self
    }

    /// The only algorithms accepted from the set (default: every asymmetric one); keys bound
    /// to others are ignored.
    pub fn allowed_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.allowed = Some(algorithms.into_iter().collect());
        self
    }

    /// Builds the cache and starts its first fetch in the background, on the current tokio
    /// runtime. Until a fetch succeeds the cache holds no key and is not
    /// [ready](Jwks::is_ready); the refresh task retries every
    /// [retry interval](Self::retry_interval).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Jwks`] outside a tokio runtime (the cache could never be started),
    /// for a zero refresh interval, retry interval or fetch timeout, an RSA algorithm that
    /// is not RSA, or a configuration that could never hold a usable key: `max_keys(0)`, or
    /// allowed algorithms without an asymmetric one (symmetric keys are never taken from a
    /// published set).
    pub fn build(self) -> Result<Jwks, ConfigError> {
        let invalid = |reason: &str| ConfigError::Jwks {
            reason: reason.to_owned(),
        };
        if self.refresh_interval.is_zero()
            || self.retry_interval.is_zero()
            || self.fetch_timeout.is_zero()
        {
            return Err(invalid(
                "the refresh interval, retry interval and fetch timeout must not be zero",
            ));
        }
        if self.rsa_algorithm.family() != AlgorithmFamily::Rsa {
            return Err(invalid("the RSA algorithm must be RS* or PS*"));
        }
        if self.max_keys == 0 {
            return Err(invalid("max_keys(0) could never hold a usable key"));
        }
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|alg| is_asymmetric(*alg)) {
                return Err(invalid(
                    "the allowed algorithms name no asymmetric algorithm: no key of a published set could ever be used",
                ));
            }
        }
        let runtime = Handle::try_current().map_err(|_| invalid("no tokio runtime"))?;
        let (done, _) = watch::channel(Done {
            generation: 0,
            result: Err(JwksError::NoUsableKeys),
        });
        let shared = Arc::new(Shared {
            keys: ArcSwap::from_pointee(KeySet::new()),
            fetcher: self.fetcher,
            issuer: self.issuer,
            cooldown: self.cooldown,
            fetch_timeout: self.fetch_timeout,
            retry_interval: self.retry_interval.min(self.refresh_interval),
            max_keys: self.max_keys,
            rsa_algorithm: self.rsa_algorithm,
            allowed: self.allowed,
            state: Mutex::new(State::default()),
            done,
            runtime: runtime.clone(),
        });
        // The first fetch starts now, not after a refresh interval: a cache nobody fetched
        // for would refuse every token until then.
        let first = Shared::start_or_join(&shared, false);
        let weak = Arc::downgrade(&shared);
        let (interval, retry) = (self.refresh_interval, shared.retry_interval);
        runtime.spawn(async move {
            let mut wait = first;
            loop {
                let succeeded = match wait.as_mut() {
                    Some(wait) => wait.changed().await.is_ok() && wait.borrow().result.is_ok(),
                    None => false,
                };
                tokio::time::sleep(if succeeded { interval } else { retry }).await;
                let Some(shared) = weak.upgrade() else {
                    break;
                };
                wait = Shared::start_or_join(&shared, false);
                drop(shared);
            }
        });
        Ok(Jwks { shared })
    }

    /// Builds the cache and waits for its first fetch.
    ///
    /// # Errors
    ///
    /// [`JwksError`] when the first fetch fails (use [`build`](Self::build) to start
    /// serving while the identity provider is unreachable: tokens then get 503 until it
    /// answers), [`JwksError::NoRuntime`] for a configuration [`build`](Self::build)
    /// refuses.
    pub async fn start(self) -> Result<Jwks, JwksError> {
        let jwks = self.build().map_err(|_| JwksError::NoRuntime)?;
        jwks.refresh().await?;
        Ok(jwks)
    }
}

/// Whether keys of `algorithm` may come from a published set: every algorithm but HMAC.
fn is_asymmetric(algorithm: Algorithm) -> bool {
    algorithm.family() != AlgorithmFamily::Hmac
}

/// A cache of the keys of one JWK set; see the [module docs](self).
///
/// Clones share the cache. Convert it into a [`KeySource`] by handing it to
/// [`JwtAuthLayer::new`](crate::JwtAuthLayer::new) or
/// [`add_key_source`](crate::JwtAuthLayer::add_key_source). The refresh task stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Jwks {
    shared: Arc<Shared>,
}

struct Shared {
    keys: ArcSwap<KeySet>,
    fetcher: Arc<dyn JwksFetcher>,
    issuer: Option<Arc<str>>,
    cooldown: Duration,
    fetch_timeout: Duration,
    retry_interval: Duration,
    max_keys: usize,
    rsa_algorithm: Algorithm,
    allowed: Option<Vec<Algorithm>>,
    state: Mutex<State>,
    done: watch::Sender<Done>,
    runtime: Handle,
}

#[derive(Default)]
struct State {
    in_flight: bool,
    last_start: Option<Instant>,
}

/// The outcome of the latest fetch.
#[derive(Clone)]
struct Done {
    generation: u64,
    result: Result<usize, JwksError>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwks")
            .field("keys", &self.shared.keys.load().len())
            .field("cooldown", &self.shared.cooldown)
            .field("fetch_timeout", &self.shared.fetch_timeout)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// A cache fetching from `url` with [`HttpFetcher`].
    ///
    /// # Errors
    ///
    /// As [`HttpFetcher::new`].
    pub fn from_url(url: &str) -> Result<JwksBuilder, ConfigError> {
        Ok(Self::builder(HttpFetcher::new(url)?))
    }

    /// A cache of the keys of the OpenID Connect provider `issuer`, found through discovery
    /// (see [`HttpFetcher::discovery`]), with the issuer [pinned](JwksBuilder::issuer):
    /// tokens verified with its keys must have `iss` equal to `issuer`. Fetched and refreshed
    /// like any JWKS; each fetch reads the provider configuration again.
    ///
    /// ```no_run
    /// use wsguard_jwt_auth::{jwks::Jwks, JwtAuthLayer, NoClaims};
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Reads https://login.example.com/realms/chat/.well-known/openid-configuration.
    /// let keys = Jwks::from_issuer("https://login.example.com/realms/chat")?.build()?;
    /// let layer = JwtAuthLayer::<NoClaims>::new(keys).with_audiences(["chat-api"]);
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`HttpFetcher::discovery`].
    pub fn from_issuer(issuer: &str) -> Result<JwksBuilder, ConfigError> {
        Ok(Self::builder(HttpFetcher::discovery(issuer)?).issuer(issuer))
    }

    /// The issuer tokens verified with this cache's keys must name, if pinned.
    pub fn issuer(&self) -> Option<&str> {
        self.shared.issuer.as_deref()
    }

    /// A cache fetching with `fetcher`.
    pub fn builder(fetcher: impl JwksFetcher) -> JwksBuilder {
        JwksBuilder {
            fetcher: Arc::new(fetcher),
            issuer: None,
            refresh_interval: Duration::from_secs(15 * 60),
            retry_interval: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            max_keys: 64,
            rsa_algorithm: Algorithm::RS256,
            allowed: None,
        }
    }

    /// Fetches the set now (or waits for the fetch already running), whatever the cooldown.
    /// Returns the number of keys loaded.
    ///
    /// # Errors
    ///
    /// The fetch's error; the keys loaded before are kept.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let Some(mut wait) = Shared::start_or_join(&self.shared, false) else {
            return Err(JwksError::NoRuntime);
        };
        match wait.changed().await {
            Ok(()) => wait.borrow().result.clone(),
            Err(_) => Err(JwksError::NoRuntime),
        }
    }

    /// The keys loaded now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.shared.keys.load_full()
    }

    /// Whether a fetch has succeeded: the cache holds keys. A cache keeps its keys through
    /// later failed fetches, so it stays ready once it is.
    pub fn is_ready(&self) -> bool {
        !self.shared.keys.load().is_empty()
    }
}

/// A JWKS cache: fetched keys, refreshed for an unknown `kid`.
impl KeyProvider for Jwks {
    fn load(&self) -> Loaded<'_> {
        Loaded::Guard(self.shared.keys.load())
    }

    fn is_ready(&self) -> bool {
        Jwks::is_ready(self)
    }

    /// The pinned issuer, shared (no copy per token).
    fn pinned_issuer(&self) -> Option<Arc<str>> {
        self.shared.issuer.clone()
    }

    /// Whether a key for `algorithm` could come from this cache: an asymmetric algorithm,
    /// among the [allowed ones](JwksBuilder::allowed_algorithms) if they are restricted.
    fn fetches_keys_for(&self, algorithm: Algorithm) -> bool {
        is_asymmetric(algorithm)
            && self
                .shared
                .allowed
                .as_ref()
                .is_none_or(|allowed| allowed.contains(&algorithm))
    }

    /// The `Retry-After` hint while the cache has no keys: when a request may start the next
    /// fetch, or the refresh task will (at least 1 s).
    fn retry_after(&self) -> Option<Duration> {
        if self.is_ready() {
            return None;
        }
        let after = self.shared.cooldown.min(self.shared.retry_interval);
        Some(after.max(Duration::from_secs(1)))
    }

    /// For a token no loaded key verifies: a wait for a fetch, if one is running or the
    /// cooldown allows starting one; `None` otherwise.
    fn refresh_for_unknown_kid(&self) -> Option<KeyWait> {
        let mut wait = Shared::start_or_join(&self.shared, true)?;
        // The fetch has its own timeout; this one only guards against a lost wake-up.
        let limit = self.shared.fetch_timeout + Duration::from_secs(1);
        Some(Box::pin(async move {
            let _ = tokio::time::timeout(limit, wait.changed()).await;
        }))
    }
}

impl From<Jwks> for KeySource {
    fn from(jwks: Jwks) -> Self {
        Self::new(jwks)
    }
}

impl Shared {
    /// Subscribes to the end of the running fetch, or starts one. With `cooldown`, a new
    /// fetch starts only if the last one started at least a cooldown ago.
    fn start_or_join(this: &Arc<Self>, cooldown: bool) -> Option<watch::Receiver<Done>> {
        let mut state = this.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.in_flight {
            let recent = state
                .last_start
                .is_some_and(|start| start.elapsed() < this.cooldown);
            if cooldown && recent {
                return None;
            }
            state.in_flight = true;
            state.last_start = Some(Instant::now());
            let shared = Arc::clone(this);
            this.runtime.spawn(async move { shared.fetch().await });
        }
        // Subscribed under the lock: the fetch cannot finish unseen.
        Some(this.done.subscribe())
    }

    async fn fetch(self: Arc<Self>) {
        let fetched = tokio::time::timeout(self.fetch_timeout, self.fetcher.fetch()).await;
        let result = match fetched {
            Err(_) => Err(JwksError::Timeout),
            Ok(Err(error)) => Err(error),
            Ok(Ok(set)) => self.load_set(&set),
        };
        match &result {
            Ok(keys) => tracing::debug!(target: "wsguard_jwt_auth", keys, "JWKS refreshed"),
            Err(error) => tracing::warn!(
                target: "wsguard_jwt_auth",
                %error,
                "JWKS refresh failed; keeping the keys loaded before"
            ),
        }
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_flight = false;
        self.done.send_modify(|done| {
            done.generation += 1;
            done.result = result;
        });
    }

    /// Turns `set` into keys and publishes them, unless none is usable.
    fn load_set(&self, set: &JwkSet) -> Result<usize, JwksError> {
        let mut keys = KeySet::new();
        for jwk in set.keys.iter().take(self.max_keys) {
            let kid = jwk.common.key_id.as_deref();
            let Some(algorithm) = self.algorithm_of(jwk) else {
                tracing::debug!(target: "wsguard_jwt_auth", kid, "JWKS key skipped: unsupported or not allowed");
                continue;
            };
            let added = VerifyingKey::from_jwk_with_algorithm(jwk, algorithm)
                .and_then(|key| keys.insert(key));
            if let Err(error) = added {
                tracing::warn!(target: "wsguard_jwt_auth", kid, %error, "JWKS key skipped");
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        let len = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(len)
    }

    /// The one algorithm a fetched JWK is bound to, if it is usable here.
    fn algorithm_of(&self, jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
        let by_type = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => self.rsa_algorithm,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            // Symmetric keys have no place in a published set.
            _ => return None,
        };
        // A JWK that names its algorithm is bound to it, if it is of the key's family.
        let algorithm = match jwk_algorithm(jwk) {
            Ok(Some(algorithm)) => algorithm,
            Ok(None) => by_type,
            Err(_) => return None,
        };
        if algorithm.family() != by_type.family() {
            return None;
        }
        match &self.allowed {
            Some(allowed) if !allowed.contains(&algorithm) => None,
            _ => Some(algorithm),
        }
    }
}
