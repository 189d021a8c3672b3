//! The asynchronous hook that can allow origins the allow-list does not.

use std::future::{ready, Future, Ready};

use wsguard_core::key::RequestHead;

use crate::Origin;

/// An asynchronous check that may allow an origin the [`AllowList`](crate::AllowList) did
/// not, with access to the request's head (URI, headers, and extensions set by earlier
/// layers).
///
/// It is consulted only for a well-formed tuple origin the allow-list refused; never for a
/// missing, `null` or malformed `Origin`. Returning `false` rejects the request with 403.
/// A hook that does I/O should return `false` when that I/O fails (fail closed).
///
/// Implemented for every `Fn(&Origin, &RequestHead<'_>) -> impl Future<Output = bool>`
/// that is `Clone + Send + Sync + 'static`. The future may not borrow its arguments: take
/// what it needs from them (a cheap clone of an extension) before the `async move` block.
///
/// ```
/// use std::sync::Arc;
/// use wsguard_core::key::RequestHead;
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
///         async move { sites.is_some_and(|sites| sites.0.contains_origin(&origin)) }
///     });
/// # let _ = layer;
/// # Ok::<(), wsguard_origin::ConfigError>(())
/// ```
pub trait OriginPredicate: Clone + Send + Sync + 'static {
    /// The future that answers the check.
    type Future: Future<Output = bool> + Send + 'static;

    /// Starts checking whether `origin` is allowed for the request described by `head`.
    fn check(&self, origin: &Origin, head: &RequestHead<'_>) -> Self::Future;
}

impl<F, Fut> OriginPredicate for F
where
    F: Fn(&Origin, &RequestHead<'_>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    type Future = Fut;

    fn check(&self, origin: &Origin, head: &RequestHead<'_>) -> Self::Future {
        self(origin, head)
    }
}

/// The default of [`OriginGuardLayer`](crate::OriginGuardLayer): no predicate, so the
/// allow-list alone decides. Never called; it costs nothing.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct AllowListOnly;

impl OriginPredicate for AllowListOnly {
    type Future = Ready<bool>;

    fn check(&self, _: &Origin, _: &RequestHead<'_>) -> Self::Future {
        ready(false)
    }
}
