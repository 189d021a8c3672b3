//! The answer of every authorization hook.

/// The answer of an authorization hook: whether a request, or a message, may pass.
///
/// Every hook that authorizes in wsguard answers it: `wsguard-origin`'s `OriginPredicate`
/// (an origin the allow-list refused), `wsguard-jwt-auth`'s `ClaimsPredicate` (a verified
/// token's claims) and `wsguard-schema-validate`'s `Authorize` (a parsed message). Each
/// layer decides what [`Deny`](Access::Deny) means for it (403 on the handshake, an error
/// frame or 4403 after the upgrade). `From<bool>` turns a yes/no answer into one (`true`
/// allows).
///
/// ```
/// use wsguard_core::Access;
///
/// async fn may_join(user: &str, room: &str) -> Access {
///     // a database lookup
///     Access::from(room == "lobby" || user == "admin")
/// }
///
/// # #[tokio::main]
/// # async fn main() {
/// assert_eq!(may_join("alice", "lobby").await, Access::Allow);
/// assert_eq!(may_join("alice", "staff").await, Access::Deny);
/// assert!(may_join("admin", "staff").await.is_allowed());
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// It may pass.
    Allow,
    /// It may not.
    Deny,
}

impl Access {
    /// Whether this is [`Access::Allow`].
    #[must_use]
    pub const fn is_allowed(self) -> bool {
        matches!(self, Self::Allow)
    }
}

impl From<bool> for Access {
    /// `true` allows.
    fn from(allowed: bool) -> Self {
        if allowed {
            Self::Allow
        } else {
            Self::Deny
        }
    }
}
