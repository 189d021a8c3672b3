//! The configuration a layer and its services share, the decision on each request, and
//! the log and count of each refusal.
//!
//! The bottom of the crate's one way through: `layer.rs` -> `service.rs` -> `future.rs` ->
//! this module, which imports none of them.

use std::{fmt, net::IpAddr, sync::Arc, time::SystemTime};

use http::{Request, Response};
use serde::de::DeserializeOwned;
use wsguard_core::{
    guard::{record_rejection, respond},
    is_websocket_upgrade, ClientIp, ConnectionScope, OnRejection, PeerAddr, Principal, Rejection,
    TokenExpiry,
};

use crate::{
    keys::KeyWait,
    predicate::SharedPredicate,
    revocation::SharedRevocation,
    sessions::LiveSessions,
    source::{self, Extracted},
    verify::{Outcome, Verified, Verifier},
    Claims, Failure, HeaderParameter, TokenSource, VerifiedToken,
};

/// The default maximum token length: 8 KiB.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// The injectable clock.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Everything a layer and its services share.
pub(crate) struct Config<C, P> {
    pub(crate) verifier: Verifier<C>,
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) max_len: usize,
    pub(crate) revocation: Option<SharedRevocation>,
    pub(crate) fail_open: bool,
    pub(crate) sessions: Option<LiveSessions>,
    pub(crate) async_predicate: Option<SharedPredicate<C>>,
    pub(crate) close_mode: bool,
    pub(crate) policy: P,
    pub(crate) clock: Option<Clock>,
}

impl<C, P: Clone> Clone for Config<C, P> {
    fn clone(&self) -> Self {
        Self {
            verifier: self.verifier.clone(),
            sources: self.sources.clone(),
            max_len: self.max_len,
            revocation: self.revocation.clone(),
            fail_open: self.fail_open,
            sessions: self.sessions.clone(),
            async_predicate: self.async_predicate.clone(),
            close_mode: self.close_mode,
            policy: self.policy.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<C, P> Config<C, P> {
    pub(crate) fn now(&self) -> SystemTime {
        self.clock
            .as_ref()
            .map_or_else(SystemTime::now, |clock| clock())
    }
}

impl<C, P> fmt::Debug for Config<C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("keys", &self.verifier.keys)
            .field("rules", &self.verifier.rules)
            .field("typ", &self.verifier.typ)
            .field("predicate", &self.verifier.predicate.is_some())
            .field("sources", &self.sources)
            .field("max_len", &self.max_len)
            .field("revocation", &self.revocation.is_some())
            .field("fail_open", &self.fail_open)
            .field("sessions", &self.sessions.is_some())
            .field("async_predicate", &self.async_predicate.is_some())
            .field("close_mode", &self.close_mode)
            .field("policy", &std::any::type_name::<P>())
            .field("clock", &self.clock.is_some())
            .finish()
    }
}

/// What the synchronous part of authentication concluded.
pub(crate) enum Decision<C> {
    Admit(Verified<C>),
    Refuse(Failure, Option<&'static str>),
    Wait(KeyWait, Extracted),
}

impl<C, P> Config<C, P>
where
    C: DeserializeOwned,
{
    /// Extracts (and removes) the token, and verifies it.
    pub(crate) fn decide<B>(&self, req: &mut Request<B>) -> Decision<C> {
        match source::extract(req, &self.sources, self.max_len) {
            Ok(extracted) => self.verify_extracted(req, extracted, true),
            Err((failure, source)) => Decision::Refuse(failure, source),
        }
    }

    pub(crate) fn verify_extracted<B>(
        &self,
        req: &Request<B>,
        extracted: Extracted,
        may_refresh: bool,
    ) -> Decision<C> {
        let outcome = self.verifier.verify(
            &extracted.token,
            extracted.source,
            req.headers(),
            self.now(),
            may_refresh,
        );
        match outcome {
            Outcome::Verified(verified) => Decision::Admit(verified),
            Outcome::Failed(failure) => Decision::Refuse(failure, Some(extracted.source)),
            Outcome::WaitForKeys(wait) => Decision::Wait(wait, extracted),
        }
    }
}

impl<C, P> Config<C, P> {
    /// The response of a refusal: the policy's answer with the `Rejection` and the `Failure`
    /// in its extensions.
    pub(crate) fn reject<B>(&self, failure: Failure) -> Response<B>
    where
        P: OnRejection<B>,
    {
        let mut res = respond(&self.policy, self.rejection(failure));
        res.extensions_mut().insert(failure);
        res
    }

    /// The rejection of `failure`: its reason, and for keys not loaded yet or a revocation
    /// store that cannot answer, when to retry.
    pub(crate) fn rejection(&self, failure: Failure) -> Rejection {
        let rejection = Rejection::new(failure.reason());
        match failure {
            Failure::KeysUnavailable => {
                rejection.with_retry_after(self.verifier.keys_retry_after())
            }
            Failure::RevocationUnavailable => rejection.with_retry_after(REVOCATION_RETRY_AFTER),
            _ => rejection,
        }
    }
}

/// The `Retry-After` of a refusal because the revocation store could not answer: a store
/// behind a deadline and a circuit breaker (wsguard-redis) answers again, or answers from its
/// fallback, within about a second.
const REVOCATION_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Puts what the token proved into the request's extensions, and registers a WebSocket
/// handshake in the live sessions, if configured. The registration comes before the
/// revocation store is asked: a revocation made while the store answers either is in its
/// answer or finds the connection registered, never neither.
pub(crate) fn admit<B, C>(
    req: &mut Request<B>,
    verified: Verified<C>,
    sessions: Option<&LiveSessions>,
) where
    C: Clone + Send + Sync + 'static,
{
    if let Some(sessions) = sessions {
        if is_websocket_upgrade(req) {
            sessions.register(&ConnectionScope::of(req), &verified.token);
        }
    }
    tracing::debug!(
        target: "wsguard_jwt_auth",
        source = verified.token.source,
        algorithm = ?verified.token.algorithm,
        "token accepted"
    );
    let extensions = req.extensions_mut();
    if let Some(expiry) = verified.token.expires_at {
        extensions.insert(TokenExpiry(expiry));
    }
    extensions.insert(verified.token.principal.clone());
    extensions.insert(verified.token);
    extensions.insert(Claims(verified.claims));
}

/// Takes back what [`admit`] inserted, before a refused request goes on in close mode.
pub(crate) fn unadmit<B, C>(req: &mut Request<B>)
where
    C: Clone + Send + Sync + 'static,
{
    let extensions = req.extensions_mut();
    extensions.remove::<Claims<C>>();
    extensions.remove::<VerifiedToken>();
    extensions.remove::<Principal>();
    extensions.remove::<TokenExpiry>();
}

/// Logs and counts one refusal: the reason, the precise cause, the token's source and the
/// client address; never the token, a claim or a key.
pub(crate) fn log_rejection(failure: Failure, source: Option<&'static str>, peer: Option<IpAddr>) {
    tracing::info!(
        target: "wsguard_jwt_auth",
        reason = failure.reason().as_str(),
        cause = failure.as_str(),
        header_parameter = failure.header_parameter().map(HeaderParameter::as_str),
        source,
        peer = peer.map(tracing::field::display),
        "request rejected: authentication failed"
    );
    record_rejection("jwt_auth", failure.reason());
}

/// The client address for the log: the resolved [`ClientIp`], else the direct peer.
pub(crate) fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
    let extensions = req.extensions();
    extensions
        .get::<ClientIp>()
        .map(|ip| ip.0)
        .or_else(|| extensions.get::<PeerAddr>().map(|peer| peer.0.ip()))
}
