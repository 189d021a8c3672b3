//! The asynchronous claims predicate.

use std::future::{ready, Future, Ready};

use wsguard_core::key::RequestHead;

/// An asynchronous check of a verified token's claims, for decisions that need I/O: "the
/// account is still active", "the user may open this room". Returning `false` refuses the
/// request with 403 ([`Failure::Denied`](crate::Failure::Denied)).
///
/// It runs after the signature, the claims and the revocation store, so only holders of a
/// valid token can make it run. The request head it gets already carries the
/// [`Principal`](wsguard_core::Principal), the [`VerifiedToken`](crate::VerifiedToken) and
/// the [`Claims`](crate::Claims) in its extensions. A check whose I/O fails should answer
/// `false` (fail closed).
///
/// Implemented for every `Fn(&C, &RequestHead<'_>) -> impl Future<Output = bool>` that is
/// `Clone + Send + Sync + 'static`; the future must own what it needs (clone it out of the
/// arguments before the `async move` block).
///
/// ```
/// use wsguard_core::key::RequestHead;
/// use wsguard_jwt_auth::{Algorithm, JwtAuthLayer, VerifyingKey, KeySet};
///
/// #[derive(Clone, serde::Deserialize)]
/// struct MyClaims { sub: String }
///
/// async fn account_is_active(user: String) -> bool {
///     // a database lookup
///     !user.is_empty()
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
    type Future: Future<Output = bool> + Send + 'static;

    /// Starts checking whether `claims` may pass, for the request described by `head`.
    fn check(&self, claims: &C, head: &RequestHead<'_>) -> Self::Future;
}

impl<C, F, Fut> ClaimsPredicate<C> for F
where
    F: Fn(&C, &RequestHead<'_>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    type Future = Fut;

    fn check(&self, claims: &C, head: &RequestHead<'_>) -> Self::Future {
        self(claims, head)
    }
}

/// The default of [`JwtAuthLayer`](crate::JwtAuthLayer): no asynchronous predicate, so every
/// verified token's claims are allowed (its answer is `true`). Never called.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct AllowAllClaims;

impl<C> ClaimsPredicate<C> for AllowAllClaims {
    type Future = Ready<bool>;

    fn check(&self, _: &C, _: &RequestHead<'_>) -> Self::Future {
        ready(true)
    }
}
