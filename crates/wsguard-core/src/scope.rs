// The connection scope: guards that live exactly as long as the connection.

use std::{
    any::Any,
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{Context, Poll},
};

use bytes::Buf;
use http::{Extensions, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Guards that must live as long as the connection.
///
/// Cloning is cheap and shares the same guards.
///
/// The connection scope: guards that live exactly as long as the connection.
///
/// A handshake layer that must hold something for the socket's whole life (a connection
/// permit, a gauge) puts it into the request's [`ConnectionScope`] with
/// [`ConnectionScope::hold`]. The scope is shared: the request carries it, a hand-off
/// ([`axum::GuardedUpgrade`](crate::axum::GuardedUpgrade) or
/// [`tungstenite::GuardedUpgrade`](crate::tungstenite::GuardedUpgrade)) moves it into the task
/// that serves the upgraded socket, and a layer that answers with a streamed body can move it
/// into the body with [`ScopedBody`]. The guards are dropped when the last of these lets go:
/// when the socket task ends (clean close, error, client abort, panic), when the body ends or
/// is dropped, or when a plain response is done.
///
/// A response `101 Switching Protocols` whose scope no hand-off [claimed](ConnectionScope::is_claimed)
/// means the application upgraded the socket without wsguard's hand-off: the guards would be
/// released while the socket stays open. Layers detect this and log it.
#[derive(Clone, Default)]
pub struct ConnectionScope {
    inner: Arc<ScopeInner>,
}

#[derive(Default)]
struct ScopeInner {
    guards: Mutex<Vec<Box<dyn Any + Send>>>,
    claimed: AtomicBool,
}

impl Drop for ScopeInner {
    fn drop(&mut self) {
        // Release in the reverse order of acquisition, like a stack.
        let guards = self
            .guards
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(guard) = guards.pop() {
            drop(guard);
        }
    }
}

impl fmt::Debug for ConnectionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionScope")
            .field("guards", &self.len())
            .field("claimed", &self.is_claimed())
            .finish()
    }
}

impl ConnectionScope {
    /// The scope of a request, created and inserted if it has none yet.
    pub fn of<B>(req: &mut Request<B>) -> Self {
        Self::from_extensions(req.extensions_mut())
    }

    /// The scope in `extensions`, created and inserted if there is none yet.
    pub fn from_extensions(extensions: &mut Extensions) -> Self {
        extensions.get_or_insert_default::<Self>().clone()
    }

    /// Keeps `guard` alive until the connection ends. Guards are dropped in reverse order.
    pub fn hold<T>(&self, guard: T)
    where
        T: Send + 'static,
    {
        self.inner
            .guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(guard));
    }

    /// How many guards the scope holds.
    pub fn len(&self) -> usize {
        self.inner
            .guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the scope holds no guard.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the scope as taken over by a hand-off that keeps it for the socket's life.
    ///
    /// Called by the hand-offs of this crate; call it yourself only if you wrote your own
    /// hand-off that keeps a clone of the scope (or the [`Connection`](crate::Connection)) in the socket's task.
    pub fn claim(&self) {
        self.inner.claimed.store(true, Ordering::Release);
    }

    /// Whether a hand-off has taken over the scope.
    pub fn is_claimed(&self) -> bool {
        self.inner.claimed.load(Ordering::Acquire)
    }

    /// Whether two handles share the same guards.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

pin_project! {
    /// A response body that keeps a [`ConnectionScope`] alive until the body ends or is
    /// dropped: how guards follow a streamed response (SSE, gRPC server streams).
    pub struct ScopedBody<B> {
        #[pin]
        inner: B,
        scope: Option<ConnectionScope>,
    }
}

impl<B> ScopedBody<B> {
    /// Wraps `inner`, holding `scope` until it ends.
    pub const fn new(inner: B, scope: Option<ConnectionScope>) -> Self {
        Self { inner, scope }
    }

    /// Wraps a whole response's body.
    pub fn wrap(res: Response<B>, scope: Option<ConnectionScope>) -> Response<Self> {
        res.map(|body| Self::new(body, scope))
    }
}

impl<B: fmt::Debug> fmt::Debug for ScopedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedBody")
            .field("inner", &self.inner)
            .field("scope", &self.scope)
            .finish()
    }
}

impl<B: Default> Default for ScopedBody<B> {
    fn default() -> Self {
        Self::new(B::default(), None)
    }
}

/// A body without a scope from a short text, so that layers outside one that answers with
/// [`ScopedBody`] can still answer their rejections through
/// [`HttpRejection`](crate::HttpRejection).
impl<B: From<&'static str>> From<&'static str> for ScopedBody<B> {
    fn from(text: &'static str) -> Self {
        Self::new(B::from(text), None)
    }
}

impl<B> Body for ScopedBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            // The stream is over: release the guards now rather than when hyper drops us.
            *this.scope = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;
    use crate::{
        guard::{finish_deferred, PendingRejection},
        Connection, Rejection,
    };

    #[derive(Clone, Default)]
    struct Drops(Arc<AtomicUsize>);
    struct Guard(Drops);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0 .0.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Drops {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn guards_live_until_the_last_handle_is_gone() {
        let drops = Drops::default();
        let mut req = Request::new(());
        let scope = ConnectionScope::of(&mut req);
        scope.hold(Guard(drops.clone()));
        assert!(ConnectionScope::of(&mut req).ptr_eq(&scope));
        assert_eq!(scope.len(), 1);
        let (mut parts, ()) = req.into_parts();
        let conn = Connection::from_parts(&mut parts);
        assert!(scope.is_claimed());
        drop(parts);
        drop(scope);
        assert_eq!(drops.count(), 0);
        drop(conn);
        assert_eq!(drops.count(), 1);
    }

    #[test]
    fn guards_drop_in_reverse_order() {
        let order = Arc::new(Mutex::new(Vec::new()));
        struct Named(&'static str, Arc<Mutex<Vec<&'static str>>>);
        impl Drop for Named {
            fn drop(&mut self) {
                self.1.lock().unwrap().push(self.0);
            }
        }
        let scope = ConnectionScope::default();
        scope.hold(Named("first", order.clone()));
        scope.hold(Named("second", order.clone()));
        drop(scope);
        assert_eq!(*order.lock().unwrap(), ["second", "first"]);
    }

    #[tokio::test]
    async fn scoped_body_releases_at_end_of_stream() {
        let drops = Drops::default();
        let scope = ConnectionScope::default();
        scope.hold(Guard(drops.clone()));
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, std::convert::Infallible>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut body = ScopedBody::new(StreamBody::new(Box::pin(stream)), Some(scope));
        tx.send(Ok(Frame::data(bytes::Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.is_some());
        assert_eq!(drops.count(), 0, "held while the stream is open");
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(
            drops.count(),
            1,
            "released at the end, before the body is dropped"
        );
        drop(body);

        let scope = ConnectionScope::default();
        scope.hold(Guard(drops.clone()));
        let body = ScopedBody::new(Full::new(bytes::Bytes::from_static(b"x")), Some(scope));
        drop(body);
        assert_eq!(drops.count(), 2, "released when the body is dropped unread");
    }

    #[test]
    fn the_first_deferred_rejection_wins_and_fails_closed() {
        use crate::{HttpRejection, Reason};
        let mut ext = Extensions::new();
        assert!(
            PendingRejection::defer(&mut ext, Rejection::new(Reason::OriginNotAllowed)).is_none(),
            "a cross-origin handshake is never accepted, not even to close it"
        );
        assert!(ext.get::<PendingRejection>().is_none());
        let first =
            PendingRejection::defer(&mut ext, Rejection::new(Reason::TokenExpired)).unwrap();
        let second =
            PendingRejection::defer(&mut ext, Rejection::new(Reason::TooManyConnections)).unwrap();
        assert_eq!(second.rejection().reason(), Reason::TokenExpired);

        let upgraded = Response::builder().status(101).body(String::new()).unwrap();
        let res = finish_deferred(upgraded, &first, &HttpRejection);
        assert_eq!(
            res.status(),
            401,
            "not delivered: the HTTP form instead of the 101"
        );

        second.mark_delivered();
        assert!(first.is_delivered(), "one marker shared by every handle");
        let upgraded = Response::builder().status(101).body(String::new()).unwrap();
        assert_eq!(
            finish_deferred(upgraded, &first, &HttpRejection).status(),
            101
        );
    }
}
