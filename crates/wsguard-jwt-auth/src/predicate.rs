//! The asynchronous claims predicate.

use std::{future::Future, pin::Pin, sync::Arc};

use wsguard_core::{Access, RequestHead};

/// An asynchronous check of a verified token's claims, for decisions that need I/O: "the
/// account is still active", "the user may open this room". Answering [`Access::Deny`]
/// refuses the request with 403 ([`Failure::Denied`](crate::Failure::Denied)).
///
/// It runs after the signature, the claims and the revocation store, so only holders of a
/// valid token can make it run. The request head it gets already carries the
/// [`Principal`](wsguard_core::Principal), the [`VerifiedToken`](crate::VerifiedToken) and
/// the [`Claims`](crate::Claims) in its extensions. A check whose I/O fails should deny
/// (fail closed).
///
/// Implemented for every `Fn(&C, &RequestHead<'_>) -> impl Future<Output = Access>` that is
/// `Clone + Send + Sync + 'static`; the future must own what it needs (clone it out of the
/// arguments before the `async move` block).
///
/// ```
/// use wsguard_core::{Access, RequestHead};
/// use wsguard_jwt_auth::{Algorithm, JwtAuthLayer, VerifyingKey, KeySet};
///
/// #[derive(Clone, serde::Deserialize)]
/// struct MyClaims { sub: String }
///
/// async fn account_is_active(user: String) -> Access {
///     // a database lookup
///     Access::from(!user.is_empty())
/// }
///
/// let keys = KeySet::from_keys([VerifyingKey::hmac(Algorithm::HS256, &[7; 32])?])?;
/// let layer = JwtAuthLayer::<MyClaims>::new(keys)
///     .with_async_predicate(|claims: &MyClaims, _: &RequestHead<'_>| {
///         account_is_active(claims.sub.clone())
///     });
/// # let _ = layer;
/// # Ok::<(), wsguard_jwt_auth::ConfigError>(())
/// ```
pub trait ClaimsPredicate<C>: Clone + Send + Sync + 'static {
    /// The future of the answer.
    type Future: Future<Output = Access> + Send + 'static;

    /// Starts checking whether `claims` may pass, for the request described by `head`.
    fn check(&self, claims: &C, head: &RequestHead<'_>) -> Self::Future;
}

impl<C, F, Fut> ClaimsPredicate<C> for F
where
    F: Fn(&C, &RequestHead<'_>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Access> + Send + 'static,
{
    type Future = Fut;

    fn check(&self, claims: &C, head: &RequestHead<'_>) -> Self::Future {
        self(claims, head)
    }
}

/// The future of a configured predicate's answer, boxed: it runs at most once per
/// handshake, after a signature check.
pub(crate) type PredicateFuture = Pin<Box<dyn Future<Output = Access> + Send>>;

/// A configured predicate, its future boxed, so that the layer's type does not name it.
pub(crate) type SharedPredicate<C> = Arc<dyn ErasedPredicate<C>>;

/// [`ClaimsPredicate`] with its future boxed.
pub(crate) trait ErasedPredicate<C>: Send + Sync + 'static {
    fn check(&self, claims: &C, head: &RequestHead<'_>) -> PredicateFuture;
}

impl<C, A: ClaimsPredicate<C>> ErasedPredicate<C> for A {
    fn check(&self, claims: &C, head: &RequestHead<'_>) -> PredicateFuture {
        Box::pin(ClaimsPredicate::check(self, claims, head))
    }
}
