//! The asynchronous hook that can allow origins the allow-list does not.

use std::{future::Future, pin::Pin, sync::Arc};

use wsguard_core::{Access, RequestHead};

use crate::Origin;

/// An asynchronous check that may allow an origin the [`AllowList`](crate::AllowList) did
/// not, with access to the request's head (URI, headers, and extensions set by earlier
/// layers).
///
/// It is consulted only for a well-formed tuple origin the allow-list refused; never for a
/// missing, `null` or malformed `Origin`. Answering [`Access::Deny`] rejects the request
/// with 403. A hook that does I/O should deny when that I/O fails (fail closed).
///
/// Implemented for every `Fn(&Origin, &RequestHead<'_>) -> impl Future<Output = Access>`
/// that is `Clone + Send + Sync + 'static`. The future may not borrow its arguments: take
/// what it needs from them (a cheap clone of an extension) before the `async move` block.
///
/// ```
/// use std::sync::Arc;
/// use wsguard_core::{Access, RequestHead};
/// use wsguard_origin::{AllowList, DomainSet, Origin, OriginGuardLayer};
///
/// /// Inserted by an authentication layer from a verified token's claim.
/// #[derive(Clone)]
/// struct SiteDomains(Arc<DomainSet>);
///
/// let layer = OriginGuardLayer::new(AllowList::new().add_origin("https://app.example.com")?)
///     .with_predicate(|origin: &Origin, head: &RequestHead<'_>| {
///         let sites = head.extensions().get::<SiteDomains>().cloned();
///         let origin = origin.clone();
///         async move { Access::from(sites.is_some_and(|sites| sites.0.contains_origin(&origin))) }
///     });
/// # let _ = layer;
/// # Ok::<(), wsguard_origin::ConfigError>(())
/// ```
pub trait OriginPredicate: Clone + Send + Sync + 'static {
    /// The future that answers the check.
    type Future: Future<Output = Access> + Send + 'static;

    /// Starts checking whether `origin` is allowed for the request described by `head`.
    fn check(&self, origin: &Origin, head: &RequestHead<'_>) -> Self::Future;
}

impl<F, Fut> OriginPredicate for F
where
    F: Fn(&Origin, &RequestHead<'_>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Access> + Send + 'static,
{
    type Future = Fut;

    fn check(&self, origin: &Origin, head: &RequestHead<'_>) -> Self::Future {
        self(origin, head)
    }
}

/// The future of a configured predicate's answer, boxed: it runs at most once per
/// handshake, for an origin the allow-list refused.
pub(crate) type CheckFuture = Pin<Box<dyn Future<Output = Access> + Send>>;

/// A configured predicate, its future boxed, so that the layer's type does not name it.
pub(crate) type SharedPredicate = Arc<dyn ErasedPredicate>;

/// [`OriginPredicate`] with its future boxed.
pub(crate) trait ErasedPredicate: Send + Sync + 'static {
    fn check(&self, origin: &Origin, head: &RequestHead<'_>) -> CheckFuture;
}

impl<T: OriginPredicate> ErasedPredicate for T {
    fn check(&self, origin: &Origin, head: &RequestHead<'_>) -> CheckFuture {
        Box::pin(OriginPredicate::check(self, origin, head))
    }
}
