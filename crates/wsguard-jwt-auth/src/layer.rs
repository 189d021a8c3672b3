//! The layer and its builder methods.

use std::{fmt, sync::Arc, time::Duration, time::SystemTime};

use tower_layer::Layer;
use wsguard_core::HttpRejection;

use crate::{
    claims::ClaimRules,
    config::{Clock, Config, DEFAULT_MAX_TOKEN_LEN},
    keys::KeySource,
    predicate::SharedPredicate,
    revocation::SharedRevocation,
    verify::{SyncPredicate, Verifier},
    ClaimsPredicate, ConfigError, JwtAuth, LiveSessions, Revocation, TokenSource,
};

/// Applies [`JwtAuth`], which authenticates requests with a JWT before they reach the inner
/// service.
///
/// `C` is the type of the claims handed on in [`Claims<C>`](crate::Claims); `P` is the
/// rejection policy ([`on_rejection`](Self::on_rejection)). Cheap to clone: the
/// configuration lives behind one `Arc`, and key sources, revocation stores and JWKS caches
/// are shared by every clone.
///
/// See the [crate docs](crate) for an example.
pub struct JwtAuthLayer<C, P = HttpRejection> {
    config: Arc<Config<C, P>>,
}

impl<C> JwtAuthLayer<C> {
    /// A layer that verifies tokens with `keys` (a [`VerifyingKey`](crate::VerifyingKey),
    /// [`KeySet`](crate::KeySet), [`KeySetHandle`](crate::KeySetHandle) or, with the `jwks`
    /// feature, a [`Jwks`](crate::jwks::Jwks) cache).
    ///
    /// The defaults: tokens from `Authorization: Bearer` only, at most 8 KiB; `exp`
    /// required; 60 s of leeway on `exp` and `nbf`; no issuer and no audience accepted
    /// (a token with an `aud` claim is refused until [`with_audiences`](Self::with_audiences)
    /// names one); the principal from `sub`; refusals answered over HTTP by
    /// [`HttpRejection`].
    #[must_use]
    pub fn new(keys: impl Into<KeySource>) -> Self {
        Self {
            config: Arc::new(Config {
                verifier: Verifier {
                    keys: vec![keys.into()],
                    rules: ClaimRules::default(),
                    typ: None,
                    predicate: None,
                },
                sources: vec![TokenSource::bearer()],
                max_len: DEFAULT_MAX_TOKEN_LEN,
                revocation: None,
                fail_open: false,
                sessions: None,
                async_predicate: None,
                close_mode: false,
                policy: HttpRejection,
                clock: None,
            }),
        }
    }
}

impl<C, P> JwtAuthLayer<C, P>
where
    P: Clone,
{
    /// Whether every key source has its keys (see [`KeySource::is_ready`]): `false` while a
    /// JWKS or OpenID Connect source has not completed its first fetch, when tokens whose key
    /// it could hold are refused with 503
    /// ([`Failure::KeysUnavailable`](crate::Failure::KeysUnavailable)). For a readiness
    /// probe (`/readyz`); keep liveness (`/healthz`) apart from it.
    pub fn keys_ready(&self) -> bool {
        self.config.verifier.keys_ready()
    }

    /// Adds another key source. Each source keeps its own keys (see
    /// [`KeySource`]); a token is verified with the matching keys of every source.
    #[must_use]
    pub fn add_key_source(self, keys: impl Into<KeySource>) -> Self {
        self.map(|mut config| {
            config.verifier.keys.push(keys.into());
            config
        })
    }

    /// Replaces the token sources (default: [`TokenSource::bearer`] only). Every source is
    /// searched; a request with more than one token, even the same one twice, is refused
    /// with 400 ([`Failure::MultipleTokens`](crate::Failure::MultipleTokens)), so the order
    /// only decides which source a log names.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoTokenSource`] for an empty list,
    /// [`ConfigError::DuplicateTokenSource`] for a source given twice.
    pub fn with_token_sources(
        self,
        sources: impl IntoIterator<Item = TokenSource>,
    ) -> Result<Self, ConfigError> {
        let sources: Vec<TokenSource> = sources.into_iter().collect();
        if sources.is_empty() {
            return Err(ConfigError::NoTokenSource);
        }
        if sources
            .iter()
            .enumerate()
            .any(|(i, s)| sources.get(..i).is_some_and(|before| before.contains(s)))
        {
            return Err(ConfigError::DuplicateTokenSource);
        }
        Ok(self.map(|config| Config { sources, ..config }))
    }

    /// The longest token accepted, in bytes (default 8 KiB). Longer tokens are refused
    /// before any decoding ([`Failure::TooLong`](crate::Failure::TooLong)).
    #[must_use]
    pub fn max_token_len(self, max: usize) -> Self {
        self.map(|config| Config {
            max_len: max,
            ..config
        })
    }

    /// The clock skew allowed on `exp` and `nbf` (default 60 s).
    #[must_use]
    pub fn leeway(self, leeway: Duration) -> Self {
        self.map(|mut config| {
            config.verifier.rules.leeway = leeway;
            config
        })
    }

    /// Whether tokens must have an `exp` claim (default `true`). A token without `exp`
    /// never expires, and a socket opened with it is never closed for expiry.
    #[must_use]
    pub fn require_exp(self, require: bool) -> Self {
        self.map(|mut config| {
            config.verifier.rules.require_exp = require;
            config
        })
    }

    /// The accepted issuers: tokens must have an `iss` claim equal to one of them. Replaces
    /// any earlier list.
    #[must_use]
    pub fn with_issuers<I, S>(self, issuers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        let issuers = issuers.into_iter().map(Into::into).collect();
        self.map(|mut config| {
            config.verifier.rules.issuers = Some(issuers);
            config
        })
    }

    /// The accepted audiences: tokens must have an `aud` claim naming one of them. Replaces
    /// any earlier list.
    #[must_use]
    pub fn with_audiences<I, S>(self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        let audiences = audiences.into_iter().map(Into::into).collect();
        self.map(|mut config| {
            config.verifier.rules.audiences = Some(audiences);
            config
        })
    }

    /// Claims every token must have, with a value other than `null` (such as `jti` or
    /// `tenant`). Replaces any earlier list.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClaimName`] for an empty name,
    /// [`ConfigError::TooManyRequiredClaims`] for more than 64 names.
    pub fn require_claims<I, S>(self, claims: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<Box<str>>,
    {
        let required: Vec<Box<str>> = claims.into_iter().map(Into::into).collect();
        if required.iter().any(|name| name.is_empty()) {
            return Err(ConfigError::InvalidClaimName);
        }
        if required.len() > 64 {
            return Err(ConfigError::TooManyRequiredClaims);
        }
        Ok(self.map(|mut config| {
            config.verifier.rules.names.required = required;
            config
        }))
    }

    /// Requires the header's `typ` to be `typ` (for example `at+jwt`, RFC 9068), compared
    /// case-insensitively and with an optional `application/` prefix (RFC 8725 section 3.11:
    /// explicit typing keeps one kind of token from being used as another).
    #[must_use]
    pub fn require_type(self, typ: impl Into<Box<str>>) -> Self {
        let typ = typ.into();
        self.map(|mut config| {
            config.verifier.typ = Some(typ);
            config
        })
    }

    /// The claim the [`Principal`](wsguard_core::Principal) is taken from (default `sub`).
    /// A string or an integer; a token without it is refused
    /// ([`Failure::NoPrincipal`](crate::Failure::NoPrincipal)).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClaimName`] for an empty name.
    pub fn principal_claim(self, claim: impl Into<Box<str>>) -> Result<Self, ConfigError> {
        let claim = claim.into();
        if claim.is_empty() {
            return Err(ConfigError::InvalidClaimName);
        }
        Ok(self.map(|mut config| {
            config.verifier.rules.names.principal = claim;
            config
        }))
    }

    /// Makes tokens site tokens: the claim `claim` lists the domains (a string or an array
    /// of strings) whose pages may use the token, and the request's `Origin` host must be
    /// one of them or a subdomain of one, with the rules of
    /// [`wsguard_origin::DomainSet`]. A token without the claim, a request without an
    /// `Origin`, or a malformed list is refused with 403
    /// ([`Failure::SiteNotAllowed`](crate::Failure::SiteNotAllowed)).
    ///
    /// This is for public tokens embedded in third-party pages (chat widgets): it stops a
    /// token copied from one customer's page from working on another site in a browser.
    /// A non-browser client can send any `Origin`, so the check does not replace keeping
    /// such tokens short-lived and narrow.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidClaimName`] for an empty name.
    #[cfg(feature = "site-token")]
    #[cfg_attr(docsrs, doc(cfg(feature = "site-token")))]
    pub fn site_claim(self, claim: impl Into<Box<str>>) -> Result<Self, ConfigError> {
        let claim = claim.into();
        if claim.is_empty() {
            return Err(ConfigError::InvalidClaimName);
        }
        Ok(self.map(|mut config| {
            config.verifier.rules.names.site = Some(claim);
            config
        }))
    }

    /// A synchronous check of the typed claims; `false` refuses the request with 403
    /// ([`Failure::Denied`](crate::Failure::Denied)). Replaces an earlier one.
    #[must_use]
    pub fn with_predicate<F>(self, predicate: F) -> Self
    where
        F: Fn(&C) -> bool + Send + Sync + 'static,
    {
        let predicate: SyncPredicate<C> = Arc::new(predicate);
        self.map(|mut config| {
            config.verifier.predicate = Some(predicate);
            config
        })
    }

    /// An asynchronous check of the typed claims (see [`ClaimsPredicate`]), run after the
    /// revocation store. Replaces an earlier one. Its future is boxed: it runs at most once
    /// per handshake.
    #[must_use]
    pub fn with_async_predicate(self, predicate: impl ClaimsPredicate<C>) -> Self {
        let predicate: SharedPredicate<C> = Arc::new(predicate);
        self.map(|config| Config {
            async_predicate: Some(predicate),
            ..config
        })
    }

    /// Consults `store` for every verified token (see [`Revocation`]). Replaces an earlier
    /// store. Its future is boxed: it is asked at most once per handshake.
    #[must_use]
    pub fn with_revocation(self, store: impl Revocation) -> Self {
        let store: SharedRevocation = Arc::new(store);
        self.map(|config| Config {
            revocation: Some(store),
            ..config
        })
    }

    /// Registers every WebSocket handshake the layer accepts in `sessions` for the life of
    /// its connection, so that a revocation closes the sockets already open (see
    /// [`LiveSessions`]): give the same registry to the revocation store
    /// ([`InMemoryRevocations::with_sessions`](crate::InMemoryRevocations::with_sessions), or
    /// `wsguard-redis`'s `RedisRevocations::with_sessions` for a fleet). Replaces an earlier
    /// registry. Costs one registry entry per authenticated connection (and a SHA-256 of its
    /// `jti`), made once per handshake; requests that are not WebSocket handshakes are not
    /// registered.
    ///
    /// The sockets close (with 4403) when they are served through the message plane
    /// (`wsguard_core::GuardedSocket`) or wrapped with `wsguard_core::Hygiene::wrap_connection`,
    /// which obey the connection's close request.
    #[must_use]
    pub fn with_sessions(self, sessions: LiveSessions) -> Self {
        self.map(|config| Config {
            sessions: Some(sessions),
            ..config
        })
    }

    /// What happens when the revocation store fails: `false` (the default) refuses the
    /// request with 503 and `Retry-After: 1`
    /// ([`Failure::RevocationUnavailable`](crate::Failure::RevocationUnavailable)),
    /// `true` lets the token through and logs a warning, trading revocation for
    /// availability while the store is down.
    #[must_use]
    pub fn revocation_fail_open(self, fail_open: bool) -> Self {
        self.map(|config| Config {
            fail_open,
            ..config
        })
    }

    /// The "close" mode for browser clients (default `false`).
    ///
    /// A browser cannot read the status of a refused WebSocket handshake: `new
    /// WebSocket(...)` only reports a generic error and close code 1006, so the page cannot
    /// tell "log in again" from "server down". In this mode a refused WebSocket handshake
    /// is accepted and immediately closed with 4401 (missing or invalid token), 4440
    /// (expired) or 4403 (forbidden) and a short reason, which the page can read.
    ///
    /// The cost: a refused client gets a real upgrade, so it costs the server a socket, a
    /// task and a closing handshake (at most
    /// `wsguard_core::CLOSE_TIMEOUT` (5 s) of waiting) instead of one
    /// small response; and the refusal no longer shows up as a 401 in access logs (it is a
    /// 101). Requests that are not WebSocket handshakes still get the HTTP answer.
    ///
    /// It needs a wsguard hand-off (`wsguard_core::axum::GuardedUpgrade` or
    /// `wsguard_core::tungstenite::GuardedUpgrade`) to deliver the close frame; the inner
    /// service is called with the refused request (without claims, principal or token), and
    /// if its response was not an upgrade through such a hand-off, the layer answers the
    /// plain HTTP rejection instead: the mode fails closed.
    #[must_use]
    pub fn close_mode(self, enabled: bool) -> Self {
        self.map(|config| Config {
            close_mode: enabled,
            ..config
        })
    }

    /// Answers refusals with `policy` instead (for example
    /// [`GrpcRejection`](wsguard_core::GrpcRejection), or a closure `Fn(&Rejection) ->
    /// Response<B>`). The [`Rejection`](wsguard_core::Rejection) and the
    /// [`Failure`](crate::Failure) are put into the response's extensions whatever the policy
    /// returns.
    #[must_use]
    pub fn on_rejection<Q>(self, policy: Q) -> JwtAuthLayer<C, Q>
    where
        Q: Clone,
    {
        self.map(|config| Config {
            verifier: config.verifier,
            sources: config.sources,
            max_len: config.max_len,
            revocation: config.revocation,
            fail_open: config.fail_open,
            sessions: config.sessions,
            async_predicate: config.async_predicate,
            close_mode: config.close_mode,
            policy,
            clock: config.clock,
        })
    }

    /// The clock `exp`, `nbf` and the revocation store are checked against (default
    /// [`SystemTime::now`]): for tests, and for verifying recorded tokens.
    #[must_use]
    pub fn with_clock<F>(self, clock: F) -> Self
    where
        F: Fn() -> SystemTime + Send + Sync + 'static,
    {
        let clock: Clock = Arc::new(clock);
        self.map(|config| Config {
            clock: Some(clock),
            ..config
        })
    }

    fn map<Q>(self, f: impl FnOnce(Config<C, P>) -> Config<C, Q>) -> JwtAuthLayer<C, Q> {
        JwtAuthLayer {
            config: Arc::new(f(Arc::unwrap_or_clone(self.config))),
        }
    }
}

impl<C, P> Clone for JwtAuthLayer<C, P> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<C, P> fmt::Debug for JwtAuthLayer<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C, P> Layer<S> for JwtAuthLayer<C, P> {
    type Service = JwtAuth<S, C, P>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth::from_config(inner, Arc::clone(&self.config))
    }
}
