//! Revocation: a token blacklist consulted after the signature is verified.

use std::{
    collections::HashMap,
    error::Error as StdError,
    fmt,
    future::{ready, Future, Ready},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use wsguard_core::Principal;

use crate::LiveSessions;

/// What a [`Revocation`] store is asked about a verified token.
#[derive(Debug, Clone)]
pub struct RevocationQuery {
    pub(crate) jti: Option<Arc<str>>,
    pub(crate) subject: Principal,
    pub(crate) issued_at: Option<SystemTime>,
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) now: SystemTime,
}

impl RevocationQuery {
    /// A query, for testing a store or calling one from your own code.
    pub fn new(subject: Principal, now: SystemTime) -> Self {
        Self {
            jti: None,
            subject,
            issued_at: None,
            expires_at: None,
            now,
        }
    }

    /// Sets the `jti`.
    #[must_use]
    pub fn with_jti(mut self, jti: impl Into<Arc<str>>) -> Self {
        self.jti = Some(jti.into());
        self
    }

    /// Sets the `iat`.
    #[must_use]
    pub const fn with_issued_at(mut self, issued_at: SystemTime) -> Self {
        self.issued_at = Some(issued_at);
        self
    }

    /// Sets the expiry.
    #[must_use]
    pub const fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// The token's `jti`, if it has one.
    pub fn jti(&self) -> Option<&str> {
        self.jti.as_deref()
    }

    /// The token's subject (the principal).
    pub const fn subject(&self) -> &Principal {
        &self.subject
    }

    /// The token's `iat`, if it has one.
    pub const fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// When the layer stops accepting the token (`exp` plus leeway), if it has an `exp`.
    /// A revocation entry for it is useless after that instant.
    pub const fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The layer's clock when the request was verified.
    pub const fn now(&self) -> SystemTime {
        self.now
    }
}

/// The answer of a [`Revocation`] store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationStatus {
    /// Not revoked.
    Active,
    /// Revoked: the request is refused with 403 ([`Failure::Revoked`](crate::Failure::Revoked)).
    Revoked,
}

/// A revocation store that could not answer (a network error, a timeout, ...).
///
/// What the layer does then is its choice, not the store's: by default it fails closed and
/// refuses the request with 500 ([`Failure::RevocationUnavailable`](crate::Failure::RevocationUnavailable));
/// with [`JwtAuthLayer::revocation_fail_open`](crate::JwtAuthLayer::revocation_fail_open)
/// it lets the token through and logs a warning. The error itself is logged, so it must not
/// contain tokens or secrets.
#[derive(Debug)]
pub struct RevocationError(Box<dyn StdError + Send + Sync>);

impl RevocationError {
    /// Wraps the store's error.
    pub fn new(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for RevocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "revocation store unavailable: {}", self.0)
    }
}

impl StdError for RevocationError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// A store of revoked tokens: by `jti`, and "every token of this subject issued before T"
/// (logout everywhere, a changed password).
///
/// Asked once per request, after the signature and the claims were verified, so an attacker
/// without a valid token cannot make the layer query it. The check is asynchronous and
/// fallible so that a networked store (Redis, a database) fits: its future owns what it
/// needs (a connection handle, the keys to look up), and a failure is an `Err`, which the
/// layer answers as configured (fail closed by default).
///
/// [`InMemoryRevocations`] is the in-process implementation. An `Arc<T>` of a store is a
/// store.
pub trait Revocation: Send + Sync + 'static {
    /// The future of the answer.
    type Future: Future<Output = Result<RevocationStatus, RevocationError>> + Send + 'static;

    /// Whether the token described by `query` is revoked.
    fn check(&self, query: &RevocationQuery) -> Self::Future;
}

impl<R: Revocation> Revocation for Arc<R> {
    type Future = R::Future;

    fn check(&self, query: &RevocationQuery) -> Self::Future {
        (**self).check(query)
    }
}

/// The future of a configured store's answer, boxed: it is asked at most once per
/// handshake, next to a signature check.
pub(crate) type RevocationFuture =
    Pin<Box<dyn Future<Output = Result<RevocationStatus, RevocationError>> + Send>>;

/// A configured store, its future boxed, so that the layer's type does not name it.
pub(crate) type SharedRevocation = Arc<dyn ErasedRevocation>;

/// [`Revocation`] with its future boxed.
pub(crate) trait ErasedRevocation: Send + Sync + 'static {
    fn check(&self, query: &RevocationQuery) -> RevocationFuture;
}

impl<R: Revocation> ErasedRevocation for R {
    fn check(&self, query: &RevocationQuery) -> RevocationFuture {
        Box::pin(Revocation::check(self, query))
    }
}

/// The in-memory store is full of entries that have not expired yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFull {
    capacity: usize,
}

impl fmt::Display for StoreFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "revocation store full ({} unexpired entries); the entry was not added",
            self.capacity
        )
    }
}

impl StdError for StoreFull {}

/// An in-process [`Revocation`] store with a hard size cap.
///
/// Entries expire by themselves: a revoked `jti` is kept until the token's expiry plus a
/// grace period (default 60 s, the layer's default leeway: set it to at least the leeway),
/// after which the token is refused as expired anyway; a subject cutoff is kept until the
/// instant given when it was added (for example "now plus the longest token lifetime").
///
/// **At the cap**, adding an entry first drops every expired one; if the store is still
/// full, the new entry is refused with [`StoreFull`] and a warning is logged. It never
/// evicts an unexpired entry, since that would silently un-revoke a token. Re-revoking an
/// entry that is already stored never needs room.
///
/// Clones share the store. It lives in one process: with several instances behind a load
/// balancer, use a shared store (such as Redis) instead.
///
/// **Live sockets.** A revocation refuses the token's next handshakes; with
/// [`with_sessions`](Self::with_sessions) it also closes, at once, the sockets the token (or
/// the subject) has open on this instance, with 4403 (see [`LiveSessions`]).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use wsguard_jwt_auth::{InMemoryRevocations, Revocation, RevocationQuery, RevocationStatus};
/// use wsguard_core::Principal;
///
/// let store = InMemoryRevocations::new(10_000);
/// let now = SystemTime::now();
/// store.revoke_token("token-42", now + Duration::from_secs(3600))?;
/// store.revoke_subject_before("alice", now, now + Duration::from_secs(86_400))?;
///
/// let query = RevocationQuery::new(Principal::new("bob"), now).with_jti("token-42");
/// assert_eq!(store.status(&query), RevocationStatus::Revoked);
///
/// let before = now - Duration::from_secs(10);
/// let query = RevocationQuery::new(Principal::new("alice"), now).with_issued_at(before);
/// assert_eq!(store.status(&query), RevocationStatus::Revoked);
/// # Ok::<(), wsguard_jwt_auth::StoreFull>(())
/// ```
#[derive(Clone)]
pub struct InMemoryRevocations {
    inner: Arc<Mutex<Entries>>,
    capacity: usize,
    grace: Duration,
    sessions: Option<LiveSessions>,
}

#[derive(Default)]
struct Entries {
    /// `jti` to the instant the entry can be dropped.
    tokens: HashMap<Arc<str>, SystemTime>,
    /// Subject to (tokens issued before this are revoked, entry dropped at).
    subjects: HashMap<Arc<str>, (SystemTime, SystemTime)>,
}

impl Entries {
    fn len(&self) -> usize {
        self.tokens.len() + self.subjects.len()
    }

    fn purge(&mut self, now: SystemTime) {
        self.tokens.retain(|_, until| *until > now);
        self.subjects.retain(|_, (_, until)| *until > now);
    }
}

impl fmt::Debug for InMemoryRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryRevocations")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("grace", &self.grace)
            .field("sessions", &self.sessions.is_some())
            .finish()
    }
}

impl InMemoryRevocations {
    /// A store holding at most `capacity` entries (tokens and subjects together).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::default(),
            capacity,
            grace: Duration::from_secs(60),
            sessions: None,
        }
    }

    /// Closes the live sockets of what is revoked: every revocation also closes, at once,
    /// the matching connections registered in `sessions` (give the same registry to
    /// [`JwtAuthLayer::with_sessions`](crate::JwtAuthLayer::with_sessions)), with 4403. See
    /// [`LiveSessions`] for an example.
    #[must_use]
    pub fn with_sessions(mut self, sessions: LiveSessions) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// How long a revoked `jti` is kept after the token's `exp` (default 60 s).
    #[must_use]
    pub const fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Revokes the token with `jti`, whose `exp` is `expires_at`, and closes its live
    /// sockets (with [`with_sessions`](Self::with_sessions)).
    ///
    /// # Errors
    ///
    /// [`StoreFull`] at the cap (see the type's docs). The live sockets are closed all the
    /// same.
    pub fn revoke_token(
        &self,
        jti: impl Into<Arc<str>>,
        expires_at: SystemTime,
    ) -> Result<(), StoreFull> {
        let jti = jti.into();
        let stored = self.store_token(Arc::clone(&jti), expires_at);
        // After the store: a handshake registered after this call finds it in the store.
        if let Some(sessions) = &self.sessions {
            sessions.close_token(&jti);
        }
        stored
    }

    fn store_token(&self, jti: Arc<str>, expires_at: SystemTime) -> Result<(), StoreFull> {
        let until = expires_at.checked_add(self.grace).unwrap_or(expires_at);
        let mut entries = self.entries();
        if let Some(existing) = entries.tokens.get_mut(&jti) {
            *existing = (*existing).max(until);
            return Ok(());
        }
        self.make_room(&mut entries)?;
        entries.tokens.insert(jti, until);
        Ok(())
    }

    /// Revokes every token of `subject` issued before `issued_before` (and every token of
    /// it without `iat`, which cannot be placed in time), until `until`, and closes the
    /// live sockets of those tokens (with [`with_sessions`](Self::with_sessions)).
    ///
    /// # Errors
    ///
    /// [`StoreFull`] at the cap (see the type's docs). The live sockets are closed all the
    /// same.
    pub fn revoke_subject_before(
        &self,
        subject: impl Into<Arc<str>>,
        issued_before: SystemTime,
        until: SystemTime,
    ) -> Result<(), StoreFull> {
        let subject = subject.into();
        let stored = self.store_subject(Arc::clone(&subject), issued_before, until);
        if let Some(sessions) = &self.sessions {
            sessions.close_subject_before(&subject, issued_before);
        }
        stored
    }

    fn store_subject(
        &self,
        subject: Arc<str>,
        issued_before: SystemTime,
        until: SystemTime,
    ) -> Result<(), StoreFull> {
        let mut entries = self.entries();
        if let Some((before, keep)) = entries.subjects.get_mut(&subject) {
            *before = (*before).max(issued_before);
            *keep = (*keep).max(until);
            return Ok(());
        }
        self.make_room(&mut entries)?;
        entries.subjects.insert(subject, (issued_before, until));
        Ok(())
    }

    fn make_room(&self, entries: &mut Entries) -> Result<(), StoreFull> {
        if entries.len() < self.capacity {
            return Ok(());
        }
        entries.purge(SystemTime::now());
        if entries.len() < self.capacity {
            return Ok(());
        }
        tracing::warn!(
            target: "wsguard_jwt_auth",
            capacity = self.capacity,
            "revocation store full: entry not added"
        );
        Err(StoreFull {
            capacity: self.capacity,
        })
    }

    /// The number of stored entries (expired ones included until the next purge).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer for `query`, synchronously.
    pub fn status(&self, query: &RevocationQuery) -> RevocationStatus {
        let entries = self.entries();
        let now = query.now;
        let token_revoked = query
            .jti
            .as_ref()
            .and_then(|jti| entries.tokens.get(jti))
            .is_some_and(|until| *until > now);
        let subject_revoked =
            entries
                .subjects
                .get(query.subject.as_str())
                .is_some_and(|(before, until)| {
                    *until > now && query.issued_at.is_none_or(|iat| iat < *before)
                });
        if token_revoked || subject_revoked {
            RevocationStatus::Revoked
        } else {
            RevocationStatus::Active
        }
    }
}

impl Revocation for InMemoryRevocations {
    type Future = Ready<Result<RevocationStatus, RevocationError>>;

    fn check(&self, query: &RevocationQuery) -> Self::Future {
        ready(Ok(self.status(query)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_cap_holds() {
        let store = InMemoryRevocations::new(2).with_grace(Duration::ZERO);
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        store.revoke_token("a", now + hour).unwrap();
        store.revoke_token("b", now - hour).unwrap();
        // Full: "b" has expired and makes room.
        store.revoke_token("c", now + hour).unwrap();
        assert_eq!(store.len(), 2);
        // Full of live entries: refused, never evicting a live one.
        assert_eq!(
            store.revoke_token("d", now + hour),
            Err(StoreFull { capacity: 2 })
        );
        // Re-revoking needs no room.
        store.revoke_token("a", now + hour * 2).unwrap();
        let q = |jti: &str| RevocationQuery::new(Principal::new("u"), now).with_jti(jti);
        assert_eq!(store.status(&q("a")), RevocationStatus::Revoked);
        assert_eq!(store.status(&q("c")), RevocationStatus::Revoked);
        assert_eq!(store.status(&q("d")), RevocationStatus::Active);
        // After its expiry an entry no longer counts.
        let later = RevocationQuery::new(Principal::new("u"), now + hour * 3).with_jti("a");
        assert_eq!(store.status(&later), RevocationStatus::Active);
    }

    #[test]
    fn subject_cutoffs_fail_closed_without_iat() {
        let store = InMemoryRevocations::new(10);
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        store
            .revoke_subject_before("alice", now, now + day)
            .unwrap();
        let alice = || RevocationQuery::new(Principal::new("alice"), now);
        assert_eq!(
            store.status(&alice().with_issued_at(now - day)),
            RevocationStatus::Revoked
        );
        assert_eq!(
            store.status(&alice().with_issued_at(now)),
            RevocationStatus::Active
        );
        assert_eq!(store.status(&alice()), RevocationStatus::Revoked);
        let bob = RevocationQuery::new(Principal::new("bob"), now);
        assert_eq!(store.status(&bob), RevocationStatus::Active);
    }
}
