//! How fast, not only how many: GCRA budgets on handshakes per key.
//!
//! The connection limits count sockets open at once; a client that connects and disconnects
//! in a loop (a reconnect storm, a script trying tokens) never holds more than its share and
//! passes them, while each attempt costs a full handshake and a signature check.
//! [`HandshakeRateLimitLayer`] gives each key (the client IP with IPv6 grouped by /64, the
//! principal, a header, the whole server) a budget of handshakes: a rate and a burst, kept
//! by the generic cell rate algorithm (GCRA, through `governor`) in a
//! [`KeyStore`] of `wsguard-msg-rate`, by default its bounded, self-sweeping
//! [`InMemoryKeyStore`] (at most 100,000 keys that no request holds, 96 bytes per IP key as
//! measured in `wsguard-msg-rate`; see its eviction rules).
//! A store over a shared database gives a fleet of instances one budget per key.
//!
//! Over budget, a request is refused with [`Reason::RateExceeded`]: `429 Too Many Requests`
//! with a `Retry-After` (whole seconds, rounded up, never the limit itself), the gRPC form
//! through [`GrpcRejection`](wsguard_core::GrpcRejection), or, in close mode, an upgrade
//! closed at once with 4429. A shared store that cannot answer and fails closed
//! ([`Decision::Unavailable`]) gets
//! [`Reason::AtCapacity`] instead: 503 with `Retry-After: 1` (1013 in close mode), since the
//! client did nothing wrong. Every handshake that this layer lets through spends from its
//! key's budget, whatever the layers inside it answer (a refused attempt costs the server a
//! handshake too); one this layer refuses spends nothing. Put the layer on the WebSocket
//! route.
//!
//! Place a client-IP budget before authentication, so that a flooding address is refused
//! before any signature is checked, and a per-principal budget after it (the principal is
//! known only then): two layers of this type, one per key.
//!
//! # Dry run
//!
//! [`HandshakeRateLimitLayer::dry_run`]`(true)` refuses no handshake: one that enforce mode
//! would refuse (over its key's budget, the store unavailable, no usable key) goes on to the
//! inner service, and is logged (`INFO`, the reason and `mode = "dry_run"`, never the key or
//! the address) and counted in `wsguard_rejections_total{layer="handshake_rate",mode="dry_run"}`.
//! The budgets are kept exactly as in enforce mode: the store is asked the same question, a
//! handshake over budget spends nothing from it (a refusal spends nothing in enforce mode
//! either), and only the handshakes enforce mode would admit spend. The budgets therefore say
//! what enforce mode would have done, and a client over its budget is counted at each try,
//! without pushing its next admitted handshake further away.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use wsguard_conn_limit::handshake_rate::HandshakeRateLimitLayer;
//! use wsguard_core::PrincipalKey;
//! use wsguard_msg_rate::rate;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 5 handshakes a second per client IP (IPv6 per /64), bursts of 20.
//! let per_ip = HandshakeRateLimitLayer::per_ip(rate(5).per(Duration::from_secs(1)).burst(20))?;
//! // 1 a second per user, bursts of 10, counted after authentication.
//! let per_user = HandshakeRateLimitLayer::new(
//!     PrincipalKey::default(),
//!     rate(1).per(Duration::from_secs(1)).burst(10),
//! )?;
//! let stack = ServiceBuilder::new()
//!     .layer(per_ip)
//!     // .layer(jwt_auth)
//!     .layer(per_user)
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! # let _ = stack;
//! # Ok(())
//! # }
//! ```

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use wsguard_core::{
    guard::{finish_deferred, record_rejection_as, respond, Mode, PendingRejection},
    is_websocket_upgrade, ClientIpKey, HttpRejection, KeyError, KeyExtractor, OnRejection, Reason,
    Rejection, RequestHead,
};
use wsguard_msg_rate::{Budget, ConfigError, Cost, Decision, InMemoryKeyStore, KeyStore, Rate};

const LAYER: &str = crate::telemetry::HANDSHAKE_RATE;

/// Limits how fast each key may open connections; see the [module docs](self).
///
/// Cheap to clone: clones share the configuration and the store.
#[must_use]
pub struct HandshakeRateLimitLayer<K = InMemoryKeyStore, P = HttpRejection> {
    config: Arc<Config<K, P>>,
}

struct Config<K, P> {
    extractor: Arc<dyn KeyExtractor>,
    store: K,
    policy: P,
    close_mode: bool,
    dry_run: bool,
}

impl<K, P> Config<K, P> {
    const fn mode(&self) -> Mode {
        Mode::from_dry_run(self.dry_run)
    }
}

impl<K, P> Clone for HandshakeRateLimitLayer<K, P> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<K: fmt::Debug, P: fmt::Debug> fmt::Debug for HandshakeRateLimitLayer<K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeRateLimitLayer")
            .field("store", &self.config.store)
            .field("policy", &self.config.policy)
            .field("close_mode", &self.config.close_mode)
            .field("dry_run", &self.config.dry_run)
            .finish_non_exhaustive()
    }
}

impl HandshakeRateLimitLayer {
    /// A budget of `rate` handshakes per client IP, IPv6 clients grouped by /64 (as the
    /// connection limit's `per_ip` groups them: a subscriber can pick any address of its
    /// /64), in an [`InMemoryKeyStore`] with its default cap and sweeps.
    ///
    /// The client IP comes from `wsguard-client-ip` (a missing one is a configuration error,
    /// answered 500).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `rate` cannot work (a zero count, period or burst).
    pub fn per_ip(rate: Rate) -> Result<Self, ConfigError> {
        let key = ClientIpKey::new()
            .ipv6_prefix(64)
            .unwrap_or_else(|_| ClientIpKey::new());
        Self::new(key, rate)
    }

    /// Gives every key of `extractor` a budget of `rate` handshakes, kept in an
    /// [`InMemoryKeyStore`] with its default cap and sweeps.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `rate` cannot work (a zero count, period or burst).
    pub fn new<E: KeyExtractor>(extractor: E, rate: Rate) -> Result<Self, ConfigError> {
        let store = InMemoryKeyStore::new(Budget::new().messages(rate))?;
        Ok(Self::with_store(extractor, store))
    }
}

impl<K: KeyStore> HandshakeRateLimitLayer<K> {
    /// Keeps the budgets of `extractor`'s keys in `store`: an [`InMemoryKeyStore`] with a cap
    /// of your own, or a store shared by several instances. Each handshake costs one
    /// message of the store's budget.
    pub fn with_store<E: KeyExtractor>(extractor: E, store: K) -> Self {
        Self {
            config: Arc::new(Config {
                extractor: Arc::new(extractor),
                store,
                policy: HttpRejection,
                close_mode: false,
                dry_run: false,
            }),
        }
    }
}

impl<K: Clone, P: Clone> HandshakeRateLimitLayer<K, P> {
    fn map<P2>(
        self,
        f: impl FnOnce(Config<K, P>) -> Config<K, P2>,
    ) -> HandshakeRateLimitLayer<K, P2> {
        let config = Arc::unwrap_or_clone(self.config);
        HandshakeRateLimitLayer {
            config: Arc::new(f(config)),
        }
    }

    /// How refusals are answered (default [`HttpRejection`]; `GrpcRejection` for tonic).
    pub fn on_rejection<P2: Clone>(self, policy: P2) -> HandshakeRateLimitLayer<K, P2> {
        self.map(|c| Config {
            extractor: c.extractor,
            store: c.store,
            policy,
            close_mode: c.close_mode,
            dry_run: c.dry_run,
        })
    }

    /// Close mode (default off): a refused WebSocket handshake is upgraded and closed at
    /// once with 4429, for browsers, which cannot read a refused handshake's status. Needs
    /// a wsguard hand-off in the application (see `wsguard_core::guard::PendingRejection`).
    pub fn close_mode(self, enabled: bool) -> Self {
        self.map(|c| Config {
            close_mode: enabled,
            ..c
        })
    }

    /// Dry-run mode (default `false`): a handshake the layer would refuse (over its key's
    /// budget, the store unavailable, no usable key) goes through, and is logged (`INFO`,
    /// with the reason and `mode = "dry_run"`, never the key or the address) and counted in
    /// `wsguard_rejections_total{layer="handshake_rate",mode="dry_run"}`.
    ///
    /// The budgets stay what enforce mode would make them: a handshake over budget spends
    /// nothing (as a refused one spends nothing), so only the handshakes enforce mode would
    /// admit spend from them, and the counter says how many handshakes enforce mode would
    /// refuse. [`close_mode`](Self::close_mode) plays no part: nothing is refused. See
    /// [Dry run](self#dry-run).
    pub fn dry_run(self, enabled: bool) -> Self {
        self.map(|c| Config {
            dry_run: enabled,
            ..c
        })
    }

    /// The store of the budgets.
    pub fn store(&self) -> &K {
        &self.config.store
    }
}

impl<K: Clone, P: Clone> Clone for Config<K, P> {
    fn clone(&self) -> Self {
        Self {
            extractor: Arc::clone(&self.extractor),
            store: self.store.clone(),
            policy: self.policy.clone(),
            close_mode: self.close_mode,
            dry_run: self.dry_run,
        }
    }
}

impl<S, K, P> Layer<S> for HandshakeRateLimitLayer<K, P> {
    type Service = HandshakeRateLimit<S, K, P>;

    fn layer(&self, inner: S) -> Self::Service {
        HandshakeRateLimit {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service of [`HandshakeRateLimitLayer`]; see the [module docs](self).
pub struct HandshakeRateLimit<S, K = InMemoryKeyStore, P = HttpRejection> {
    inner: S,
    config: Arc<Config<K, P>>,
}

impl<S, K, P> HandshakeRateLimit<S, K, P> {
    /// The inner service.
    pub const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, P> Clone for HandshakeRateLimit<S, K, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, K, P> fmt::Debug for HandshakeRateLimit<S, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeRateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, P, ReqBody, ResBody> Service<Request<ReqBody>> for HandshakeRateLimit<S, K, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyStore,
    P: OnRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, K, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let key = match config.extractor.extract(&RequestHead::from_request(&req)) {
            Ok(key) => key,
            // Refused already by an outer layer in close mode (no principal, say): the socket
            // will only be closed, and its key is missing for a reason.
            Err(KeyError::Missing(_)) if req.extensions().get::<PendingRejection>().is_some() => {
                return ResponseFuture::calling(self.inner.call(req), &self.config);
            }
            Err(error) => {
                let reason = key_error(error);
                return match refusal(config, reason, "no usable key for its handshake rate") {
                    Some(rejection) => ResponseFuture::rejected(rejection, &self.config),
                    None => ResponseFuture::calling(self.inner.call(req), &self.config),
                };
            }
        };
        let prepared = config.store.prepare(key);
        match config.store.check_now(&prepared, Cost::message(0)) {
            Some(decision) => ResponseFuture {
                state: decide(config, decision, &mut self.inner, req),
                config: Arc::clone(&self.config),
            },
            None => {
                // The store answers later: the ready service goes into the future, a clone
                // stays here for the next call.
                let check = config.store.check(&prepared, Cost::message(0));
                let clone = self.inner.clone();
                let inner = mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Checking {
                        check,
                        inner: Some(Box::new((inner, req))),
                    },
                    config: Arc::clone(&self.config),
                }
            }
        }
    }
}

/// The `Retry-After` of a refusal because the store could not answer (a shared store
/// behind a deadline and a circuit breaker answers again within about a second).
const UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The state after the store's `decision` on `req`: call `inner`, or refuse.
fn decide<S, K, P, ReqBody>(
    config: &Config<K, P>,
    decision: Decision,
    inner: &mut S,
    mut req: Request<ReqBody>,
) -> State<S, K, ReqBody>
where
    S: Service<Request<ReqBody>>,
    K: KeyStore,
{
    let (reason, why, retry_after) = match decision {
        Decision::Allow => {
            return State::Calling {
                future: inner.call(req),
                pending: None,
            }
        }
        // A shared store that cannot answer and fails closed (it logs the outage once per
        // transition): the handshake may be fine, so 503 and a retry, not 429.
        Decision::Unavailable => (
            Reason::AtCapacity,
            "the handshake rate's store cannot answer",
            UNAVAILABLE_RETRY_AFTER,
        ),
        // `Deny`, and `TooLarge`, which a handshake (a cost of no bytes) cannot get. In dry
        // run the store spent nothing on it (a `Deny` never does): the budget stays what
        // enforce mode makes it.
        decision => (
            Reason::RateExceeded,
            "over its key's handshake rate",
            match decision {
                Decision::Deny { retry_after } => retry_after,
                _ => std::time::Duration::ZERO,
            },
        ),
    };
    let Some(rejection) = refusal(config, reason, why) else {
        return State::Calling {
            future: inner.call(req),
            pending: None,
        };
    };
    let rejection = rejection.with_retry_after(retry_after);
    if config.close_mode && is_websocket_upgrade(&req) {
        if let Some(pending) = PendingRejection::defer(req.extensions_mut(), rejection) {
            return State::Calling {
                future: inner.call(req),
                pending: Some(pending),
            };
        }
    }
    State::Rejected {
        rejection: Some(rejection),
    }
}

/// Counts a refusal for `reason` in the layer's mode and logs it (`why`; never the key or
/// the address): the rejection to answer, or, in dry-run mode, `None`: the handshake goes
/// through.
fn refusal<K, P>(config: &Config<K, P>, reason: Reason, why: &str) -> Option<Rejection> {
    record_rejection_as(LAYER, reason, config.mode());
    if config.dry_run {
        tracing::info!(
            reason = reason.as_str(),
            mode = Mode::DryRun.as_str(),
            "dry run: handshake let through that would be refused: {why}"
        );
        return None;
    }
    tracing::debug!(reason = reason.as_str(), "handshake refused: {why}");
    Some(Rejection::new(reason))
}

/// The reason to refuse a request without a usable key; logs what is wrong with it (a
/// missing key is a misconfiguration, logged as an error in either mode).
fn key_error(error: KeyError) -> Reason {
    match error {
        KeyError::Invalid(what) => {
            tracing::debug!(unusable = what, "no usable key for the handshake rate");
            Reason::BadRequest
        }
        KeyError::Missing(what) => {
            tracing::error!(
                missing = what,
                "the request has no key for the handshake rate; is the layer that provides it \
                 (client-ip, jwt-auth) in front of it?"
            );
            Reason::Internal
        }
        _ => Reason::Internal,
    }
}

pin_project! {
    /// The response future of [`HandshakeRateLimit`].
    ///
    /// Polled again after it completed, it panics, as tower-http's futures do (see the
    /// contributor notes in the [crate docs](crate)).
    pub struct ResponseFuture<S, ReqBody, K, P>
    where
        S: Service<Request<ReqBody>>,
        K: KeyStore,
    {
        #[pin]
        state: State<S, K, ReqBody>,
        config: Arc<Config<K, P>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, K, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        K: KeyStore,
    {
        Checking {
            #[pin]
            check: K::Future,
            // Boxed: only a store that answers later (across the network) needs it, and
            // inline it would make the future, which the server moves, as large as the
            // request for every handshake.
            inner: Option<Box<(S, Request<ReqBody>)>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            pending: Option<PendingRejection>,
        },
        Rejected {
            rejection: Option<Rejection>,
        },
    }
}

impl<S, K, P, ReqBody> ResponseFuture<S, ReqBody, K, P>
where
    S: Service<Request<ReqBody>>,
    K: KeyStore,
{
    fn calling(future: S::Future, config: &Arc<Config<K, P>>) -> Self {
        Self {
            state: State::Calling {
                future,
                pending: None,
            },
            config: Arc::clone(config),
        }
    }

    fn rejected(rejection: Rejection, config: &Arc<Config<K, P>>) -> Self {
        Self {
            state: State::Rejected {
                rejection: Some(rejection),
            },
            config: Arc::clone(config),
        }
    }
}

impl<S, K, P, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody, K, P>
where
    S: Service<Request<ReqBody>>,
    K: KeyStore,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, K, P, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, K, P>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: KeyStore,
    P: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Checking { check, inner } => {
                    let decision = ready!(check.poll(cx));
                    let Some(waiting) = inner.take() else {
                        return Poll::Pending;
                    };
                    let (mut inner, req) = *waiting;
                    decide(this.config, decision, &mut inner, req)
                }
                StateProj::Calling { future, pending } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(match pending {
                        Some(pending) => finish_deferred(res, pending, &this.config.policy),
                        None => res,
                    }));
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(respond(&this.config.policy, rejection)));
                }
            };
            this.state.set(next);
        }
    }
}
