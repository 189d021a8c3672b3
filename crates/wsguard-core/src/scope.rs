// The connection scope: guards that live exactly as long as the connection.

use std::{
    any::Any,
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, Mutex, OnceLock, PoisonError,
    },
    task::{Context, Poll},
};

use atomic_waker::AtomicWaker;
use bytes::Buf;
use http::{Extensions, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::Rejection;

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
///
/// # Closing from outside the socket's task
///
/// A scope also carries the connection's close request: [`close_handle`](Self::close_handle)
/// gives a [`CloseHandle`] that anything (a revocation, an administrator's "kick") can keep
/// and fire later, from any thread. The socket adapters of the message plane
/// (`GuardedSocket`, and `HygieneSocket` when wrapped with `Hygiene::wrap_connection`,
/// feature `plane`) obey it the way they obey a token's expiry or a shutdown: they close the
/// socket with the request's close code through the one closing handshake
/// ([`guard::Closing`](crate::guard::Closing)), after which the connection and its guards
/// end. A handle does not keep the guards alive.
///
/// ```
/// use wsguard_core::{ConnectionScope, Reason, Rejection};
///
/// let mut req = http::Request::new(());
/// let scope = ConnectionScope::of(&mut req);
/// let handle = scope.close_handle(); // kept by, say, a registry of live sessions
///
/// assert!(handle.close(Rejection::new(Reason::Forbidden)), "the first request wins");
/// assert!(!handle.close(Rejection::new(Reason::ShuttingDown)));
/// assert_eq!(scope.close_handle().requested().map(|r| r.reason()), Some(Reason::Forbidden));
/// ```
#[derive(Clone, Default)]
pub struct ConnectionScope {
    inner: Arc<ScopeInner>,
}

#[derive(Default)]
struct ScopeInner {
    guards: Mutex<Vec<Box<dyn Any + Send>>>,
    claimed: AtomicBool,
    /// Made on first use: a scope nobody asks to close (a plain HTTP request) allocates
    /// nothing for it.
    close: OnceLock<Arc<CloseSignal>>,
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

    /// A handle that asks this connection's socket to close, from anywhere; see
    /// [closing from outside the socket's task](Self#closing-from-outside-the-sockets-task).
    ///
    /// Every handle of one scope shares one request. The first call allocates it (one small
    /// allocation per connection), later calls only count a reference.
    pub fn close_handle(&self) -> CloseHandle {
        CloseHandle {
            signal: Arc::clone(self.inner.close.get_or_init(Arc::default)),
        }
    }
}

/// The connection's close request has not been made.
const IDLE: u8 = 0;
/// Made, and not yet taken by a socket adapter.
const REQUESTED: u8 = 1;
/// Taken by the socket adapter that closes the socket.
const TAKEN: u8 = 2;

#[derive(Default)]
struct CloseSignal {
    state: AtomicU8,
    rejection: Mutex<Option<Rejection>>,
    waker: AtomicWaker,
}

/// Asks one connection's socket to close with a [`Rejection`]'s close code, from outside the
/// socket's task. Cheap to clone; clones share the request.
///
/// Made by [`ConnectionScope::close_handle`] while the handshake is handled (a handshake
/// layer keeps it, for example in a registry of live sessions) or later from the
/// [`Connection`](crate::Connection)'s scope. It holds no guard of the connection, so a
/// handle kept after the socket ended keeps nothing alive, and closing it then does
/// nothing.
///
/// The first request wins; the socket adapter that obeys it takes it once, so two nested
/// adapters (`HygieneSocket` inside `GuardedSocket`, or the reverse) close the socket once.
/// An adapter looks at the request when the application polls the socket for its next
/// message, as it does for its timers: see the scope's
/// [docs](ConnectionScope#closing-from-outside-the-sockets-task) for an example.
#[derive(Clone)]
pub struct CloseHandle {
    signal: Arc<CloseSignal>,
}

impl fmt::Debug for CloseHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloseHandle")
            .field("requested", &self.requested().map(|r| r.reason()))
            .finish()
    }
}

impl CloseHandle {
    /// Asks the socket to close with `rejection`'s close code. `true` when this is the
    /// connection's first close request (the one the socket obeys), `false` when one was
    /// made before (it stands).
    pub fn close(&self, rejection: Rejection) -> bool {
        let signal = &*self.signal;
        {
            let mut slot = signal
                .rejection
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if slot.is_some() {
                return false;
            }
            *slot = Some(rejection);
            signal.state.store(REQUESTED, Ordering::Release);
        }
        signal.waker.wake();
        true
    }

    /// The close request made so far, if any (whether or not a socket adapter took it).
    pub fn requested(&self) -> Option<Rejection> {
        if self.signal.state.load(Ordering::Acquire) == IDLE {
            return None;
        }
        *self
            .signal
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// For socket adapters: `Ready` with the rejection once a close was requested, and only
    /// to the first caller after the request (it takes it); `Pending` otherwise, waking the
    /// task of the last call when a request is made.
    ///
    /// An atomic load and a waker registration per call while no request is made.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Rejection> {
        let signal = &*self.signal;
        match signal.state.load(Ordering::Acquire) {
            TAKEN => return Poll::Pending,
            REQUESTED => {}
            _ => {
                signal.waker.register(cx.waker());
                if signal.state.load(Ordering::Acquire) != REQUESTED {
                    return Poll::Pending;
                }
            }
        }
        let taken =
            signal
                .state
                .compare_exchange(REQUESTED, TAKEN, Ordering::AcqRel, Ordering::Acquire);
        let rejection = *signal
            .rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (taken, rejection) {
            (Ok(_), Some(rejection)) => Poll::Ready(rejection),
            _ => Poll::Pending,
        }
    }

    /// Whether a request was made and not taken yet: one atomic load.
    #[cfg(feature = "plane")]
    pub(crate) fn is_requested(&self) -> bool {
        self.signal.state.load(Ordering::Acquire) == REQUESTED
    }

    /// Whether two handles belong to the same connection.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.signal, &other.signal)
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
