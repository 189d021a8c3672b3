//! Live sessions: the authenticated connections of this instance that are open now, by
//! subject and by token, so that a revocation can close them.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::SystemTime,
};

use sha2::{Digest, Sha256};
use wsguard_core::{CloseHandle, ConnectionScope, Principal, Reason, Rejection};

use crate::VerifiedToken;

/// The close request a revocation makes: 4403 ([`Reason::Forbidden`]), the answer the same
/// token gets at a handshake once revoked (403, or 4403 in close mode).
const REVOKED: Rejection = Rejection::new(Reason::Forbidden);

/// A token's identity without its `jti`: the first 128 bits of the SHA-256 of the `jti`.
///
/// What [`LiveSessions`] indexes tokens by, and what a fleet sends between instances (as 32
/// lowercase hex digits, its `Display` form) instead of the `jti` itself: a `jti` is not a
/// secret, but it is the issuer's choice and may be long, where a `TokenId` is 16 bytes.
///
/// ```
/// use wsguard_jwt_auth::TokenId;
///
/// let id = TokenId::of("token-42");
/// let hex = id.to_string();
/// assert_eq!(hex.len(), 32);
/// assert_eq!(hex.parse::<TokenId>(), Ok(id));
/// assert_ne!(TokenId::of("token-43"), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenId([u8; 16]);

impl TokenId {
    /// The identity of the token whose `jti` is `jti`.
    pub fn of(jti: &str) -> Self {
        let digest = Sha256::digest(jti.as_bytes());
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        Self(id)
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenId({self})")
    }
}

/// A text that is not 32 hex digits, parsed as a [`TokenId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTokenId;

impl fmt::Display for InvalidTokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token id is 32 hex digits")
    }
}

impl std::error::Error for InvalidTokenId {}

impl FromStr for TokenId {
    type Err = InvalidTokenId;

    /// 32 hex digits, either case.
    fn from_str(hex: &str) -> Result<Self, InvalidTokenId> {
        let hex = hex.as_bytes();
        if hex.len() != 32 {
            return Err(InvalidTokenId);
        }
        let digit = |c: u8| char::from(c).to_digit(16).ok_or(InvalidTokenId);
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(hex.chunks_exact(2)) {
            let (high, low) = match pair {
                [high, low] => (digit(*high)?, digit(*low)?),
                _ => return Err(InvalidTokenId),
            };
            // Two hex digits make one byte: `high * 16 + low` is at most 255.
            *byte = u8::try_from(high * 16 + low).map_err(|_| InvalidTokenId)?;
        }
        Ok(Self(id))
    }
}

/// The authenticated connections of this instance that are open now, by subject and by
/// token: what a revocation closes.
///
/// A token that is revoked, or a subject logged out everywhere, is refused at its next
/// handshake; the sockets it opened before stay open for hours unless something closes
/// them. Give one `LiveSessions` to [`JwtAuthLayer::with_sessions`](crate::JwtAuthLayer::with_sessions),
/// and the layer registers every WebSocket handshake it accepts; then
/// [`close_token`](Self::close_token), [`close_subject_before`](Self::close_subject_before)
/// (or a store that calls them: [`InMemoryRevocations::with_sessions`](crate::InMemoryRevocations::with_sessions),
/// `wsguard-redis`'s `RedisRevocations` across a fleet) fire the matching connections'
/// [`CloseHandle`]s. Their sockets close with **4403** ([`Reason::Forbidden`], "forbidden":
/// the answer the same token gets at a handshake once revoked) through the message plane's
/// `GuardedSocket`, or `Hygiene::wrap_connection` on a socket without the plane, as soon as
/// the socket task polls them (which a read loop does all the time).
///
/// **Bounded by the live connections.** An entry is made when a handshake is accepted and
/// dropped with the connection's [`ConnectionScope`], however the connection ends (a close,
/// an error, a refusal by a later layer, a panic in the socket task): the registry never
/// holds more entries than this instance has authenticated connections. An entry holds the
/// subject (a reference count), the [`TokenId`] (16 bytes), the `iat` and the close handle;
/// the scope holds one small guard that removes it.
///
/// Clones share the registry.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use wsguard_jwt_auth::{InMemoryRevocations, JwtAuthLayer, LiveSessions, NoClaims, VerifyingKey, Algorithm};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sessions = LiveSessions::new();
/// let revocations = InMemoryRevocations::new(10_000).with_sessions(sessions.clone());
/// let layer = JwtAuthLayer::<NoClaims>::new(VerifyingKey::hmac(Algorithm::HS256, &[42; 32])?)
///     .with_revocation(revocations.clone())
///     .with_sessions(sessions.clone());
///
/// // Later, "log out everywhere": refused at the next handshake, and every socket of
/// // alice's that is open now closes with 4403.
/// let now = SystemTime::now();
/// revocations.revoke_subject_before("alice", now, now + Duration::from_secs(86_400))?;
/// assert_eq!(sessions.len(), 0);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct LiveSessions {
    inner: Arc<Mutex<Sessions>>,
}

#[derive(Default)]
struct Sessions {
    next: u64,
    live: HashMap<u64, Entry>,
    by_subject: BTreeSet<(Principal, u64)>,
    by_token: BTreeSet<(TokenId, u64)>,
}

struct Entry {
    subject: Principal,
    token: Option<TokenId>,
    issued_at: Option<SystemTime>,
    close: CloseHandle,
}

impl fmt::Debug for LiveSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSessions")
            .field("len", &self.len())
            .finish()
    }
}

/// One live authenticated connection, as [`LiveSessions::sessions`] lists it: for checking
/// the open connections again against a store (after missed revocations, for example).
#[derive(Clone)]
pub struct LiveSession {
    subject: Principal,
    token: Option<TokenId>,
    issued_at: Option<SystemTime>,
    close: CloseHandle,
}

impl fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The subject is personal data: not printed.
        f.debug_struct("LiveSession")
            .field("token", &self.token)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

impl LiveSession {
    /// The connection's subject (principal).
    pub const fn subject(&self) -> &Principal {
        &self.subject
    }

    /// Its token's identity, if the token has a `jti`.
    pub const fn token(&self) -> Option<TokenId> {
        self.token
    }

    /// Its token's `iat`, if any.
    pub const fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// Closes the connection's socket with 4403, as a revocation does. `false` when a close
    /// was requested before.
    pub fn close(&self) -> bool {
        self.close.close(REVOKED)
    }
}

/// Removes a connection's entry when its scope ends.
struct Registered {
    sessions: LiveSessions,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock();
        if let Some(entry) = sessions.live.remove(&self.id) {
            sessions.by_subject.remove(&(entry.subject, self.id));
            if let Some(token) = entry.token {
                sessions.by_token.remove(&(token, self.id));
            }
        }
    }
}

impl LiveSessions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Sessions> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the connection of `scope`, authenticated by `token`, until the scope ends.
    ///
    /// [`JwtAuthLayer::with_sessions`](crate::JwtAuthLayer::with_sessions) calls it for every
    /// WebSocket handshake it accepts; call it yourself only from an authentication layer of
    /// your own.
    pub fn register(&self, scope: &ConnectionScope, token: &VerifiedToken) {
        let entry = Entry {
            subject: token.principal().clone(),
            token: token.jti().map(TokenId::of),
            issued_at: token.issued_at(),
            close: scope.close_handle(),
        };
        let id = {
            let mut sessions = self.lock();
            let id = sessions.next;
            sessions.next = sessions.next.wrapping_add(1);
            sessions.by_subject.insert((entry.subject.clone(), id));
            if let Some(token) = entry.token {
                sessions.by_token.insert((token, id));
            }
            sessions.live.insert(id, entry);
            id
        };
        scope.hold(Registered {
            sessions: self.clone(),
            id,
        });
    }

    /// How many connections are registered: the authenticated connections of this instance
    /// that are open now (a refused handshake's entry lives until its request is done).
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many connections of `subject` are registered.
    pub fn count_subject(&self, subject: &str) -> usize {
        let subject = Principal::new(subject);
        self.lock()
            .by_subject
            .range((subject.clone(), 0)..=(subject, u64::MAX))
            .count()
    }

    /// Closes every connection opened with the token whose `jti` is `jti`, with 4403. The
    /// number of connections asked to close.
    pub fn close_token(&self, jti: &str) -> usize {
        self.close_token_id(TokenId::of(jti))
    }

    /// [`close_token`](Self::close_token) by the token's [`TokenId`].
    pub fn close_token_id(&self, token: TokenId) -> usize {
        let handles: Vec<CloseHandle> = {
            let sessions = self.lock();
            sessions
                .by_token
                .range((token, 0)..=(token, u64::MAX))
                .filter_map(|(_, id)| sessions.live.get(id))
                .map(|entry| entry.close.clone())
                .collect()
        };
        fire(&handles)
    }

    /// Closes every connection of `subject` whose token was issued before `issued_before`
    /// (or has no `iat`: it cannot be placed in time), with 4403: the rule of
    /// [`InMemoryRevocations::revoke_subject_before`](crate::InMemoryRevocations::revoke_subject_before).
    /// The number of connections asked to close.
    pub fn close_subject_before(&self, subject: &str, issued_before: SystemTime) -> usize {
        self.close_subject_where(subject, |iat| iat.is_none_or(|iat| iat < issued_before))
    }

    /// Closes every connection of `subject`, with 4403. The number of connections asked to
    /// close.
    pub fn close_subject(&self, subject: &str) -> usize {
        self.close_subject_where(subject, |_| true)
    }

    fn close_subject_where(
        &self,
        subject: &str,
        matches: impl Fn(Option<SystemTime>) -> bool,
    ) -> usize {
        let subject = Principal::new(subject);
        let handles: Vec<CloseHandle> = {
            let sessions = self.lock();
            sessions
                .by_subject
                .range((subject.clone(), 0)..=(subject, u64::MAX))
                .filter_map(|(_, id)| sessions.live.get(id))
                .filter(|entry| matches(entry.issued_at))
                .map(|entry| entry.close.clone())
                .collect()
        };
        fire(&handles)
    }

    /// Every registered connection, at this instant (a copy: one entry per connection).
    pub fn sessions(&self) -> Vec<LiveSession> {
        self.lock()
            .live
            .values()
            .map(|entry| LiveSession {
                subject: entry.subject.clone(),
                token: entry.token,
                issued_at: entry.issued_at,
                close: entry.close.clone(),
            })
            .collect()
    }
}

/// Fires `handles` outside the registry's lock; the number fired for the first time or
/// already asked to close.
fn fire(handles: &[CloseHandle]) -> usize {
    for handle in handles {
        handle.close(REVOKED);
    }
    if !handles.is_empty() {
        tracing::debug!(
            target: "wsguard_jwt_auth",
            connections = handles.len(),
            "revocation: live connections asked to close"
        );
    }
    handles.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_round_trip_and_refuse_what_is_not_hex() {
        let id = TokenId::of("a");
        assert_eq!(id.to_string().parse(), Ok(id));
        assert_eq!(id.to_string().to_uppercase().parse(), Ok(id));
        // SHA-256("a") starts with ca978112ca1bbdcafac231b39a23dc4d.
        assert_eq!(id.to_string(), "ca978112ca1bbdcafac231b39a23dc4d");
        for bad in [
            "",
            "ca97",
            "zz978112ca1bbdcafac231b39a23dc4d",
            "ça978112ca1bbdcafac231b39a23dc4",
        ] {
            assert_eq!(bad.parse::<TokenId>(), Err(InvalidTokenId), "{bad:?}");
        }
    }
}
