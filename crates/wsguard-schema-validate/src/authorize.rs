//! Per-message authorization.

use std::future::{ready, Future, Ready};

use wsguard_core::ConnectionInfo;

/// The answer of an [`Authorize`] hook, the one answer of every authorization hook in
/// wsguard; re-exported from [`wsguard_core::Access`]. [`Access::Deny`] refuses the message
/// with a `forbidden` error frame, or closes the socket with 4403 (see
/// [`OnDeny`](crate::OnDeny)).
pub use wsguard_core::Access;

/// Decides whether a connection may send a parsed message: "the user may only subscribe to
/// sessions they own".
///
/// Implemented for every `Fn(&ConnectionInfo, &T) -> impl Future<Output = Access>`: the
/// function gets the connection's identity (principal, client IP, claims in the
/// extensions) and the typed message, and may look things up asynchronously (a database,
/// a cache) in the future it returns, which must own what it needs. See the
/// [crate docs](crate) for an example.
pub trait Authorize<T>: Send + Sync + 'static {
    /// The future of the answer.
    type Future: Future<Output = Access> + Send + 'static;

    /// Whether `conn` may send `message`.
    fn authorize(&self, conn: &ConnectionInfo, message: &T) -> Self::Future;

    /// Whether every message is allowed without asking, which lets the layer skip the
    /// asynchronous step. Only [`AllowAll`] says so.
    fn allows_all(&self) -> bool {
        false
    }
}

impl<T, F, Fut> Authorize<T> for F
where
    F: Fn(&ConnectionInfo, &T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Access> + Send + 'static,
{
    type Future = Fut;

    fn authorize(&self, conn: &ConnectionInfo, message: &T) -> Fut {
        self(conn, message)
    }
}

/// No per-message authorization: every valid message is allowed (the default).
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct AllowAll;

impl<T> Authorize<T> for AllowAll {
    type Future = Ready<Access>;

    fn authorize(&self, _: &ConnectionInfo, _: &T) -> Self::Future {
        ready(Access::Allow)
    }

    fn allows_all(&self) -> bool {
        true
    }
}

impl<T, A> Authorize<T> for std::sync::Arc<A>
where
    A: Authorize<T>,
{
    type Future = A::Future;

    fn authorize(&self, conn: &ConnectionInfo, message: &T) -> Self::Future {
        (**self).authorize(conn, message)
    }

    fn allows_all(&self) -> bool {
        (**self).allows_all()
    }
}
