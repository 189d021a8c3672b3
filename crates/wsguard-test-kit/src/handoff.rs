//! The two hand-offs behind one server, and the contract they both keep.
//!
//! wsguard-core hands an upgraded socket and its [`Connection`] to the application in two
//! ways: [`wsguard_core::axum::GuardedUpgrade`] (an axum extractor) and
//! [`wsguard_core::tungstenite::GuardedUpgrade`] (raw hyper 1 + tokio-tungstenite). [`serve`]
//! runs either one on a real server, with a [`SocketHandler`] written once for both sockets;
//! [`contract`] is what both must do, written once and run against each [`HandOff`].
//!
//! ```
//! use wsguard_test_kit::handoff::{contract, HandOff};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! for hand_off in HandOff::BOTH {
//!     contract::non_handshakes_are_refused_with_their_status(hand_off).await;
//! }
//! # }
//! ```

use std::{convert::Infallible, fmt, future::Future, net::SocketAddr, sync::Arc};

use axum::{
    routing::{get, MethodRouter},
    Router,
};
use futures_util::{SinkExt, StreamExt};
use http::{Extensions, Request, Response};
use hyper::body::Incoming;
use tokio::{sync::watch, time::timeout};
use tower::{service_fn, ServiceBuilder};
#[cfg(feature = "plane")]
use wsguard_core::{Admit, GuardedSocket};
use wsguard_core::{Connection, WsMessage, WsSocket};

use crate::{server, MAX_MESSAGES, WAIT};

/// Which hand-off a server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOff {
    /// axum 0.8: [`wsguard_core::axum::GuardedUpgrade`], served by `axum::serve`.
    Axum,
    /// Raw hyper 1 + tokio-tungstenite: [`wsguard_core::tungstenite::GuardedUpgrade`].
    Hyper,
}

impl HandOff {
    /// Both hand-offs.
    pub const BOTH: [Self; 2] = [Self::Axum, Self::Hyper];
}

impl fmt::Display for HandOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Axum => "axum",
            Self::Hyper => "hyper",
        })
    }
}

/// The socket's limits, set on either hand-off's `GuardedUpgrade` (`None`: its default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Upgrade {
    /// `GuardedUpgrade::max_message_size`.
    pub max_message_size: Option<usize>,
    /// `GuardedUpgrade::max_frame_size`.
    pub max_frame_size: Option<usize>,
}

impl Upgrade {
    fn axum(
        self,
        mut up: wsguard_core::axum::GuardedUpgrade,
    ) -> wsguard_core::axum::GuardedUpgrade {
        if let Some(max) = self.max_message_size {
            up = up.max_message_size(max);
        }
        if let Some(max) = self.max_frame_size {
            up = up.max_frame_size(max);
        }
        up
    }

    fn hyper(
        self,
        mut up: wsguard_core::tungstenite::GuardedUpgrade,
    ) -> wsguard_core::tungstenite::GuardedUpgrade {
        if let Some(max) = self.max_message_size {
            up = up.max_message_size(max);
        }
        if let Some(max) = self.max_frame_size {
            up = up.max_frame_size(max);
        }
        up
    }
}

/// What a socket's task runs, written once for both hand-offs' sockets (axum's `WebSocket`
/// and tokio-tungstenite's stream are both a [`WsSocket`]).
pub trait SocketHandler: Clone + Send + Sync + 'static {
    /// Runs the socket handed off with its connection.
    fn handle<S>(self, socket: S, conn: Connection) -> impl Future<Output = ()> + Send
    where
        S: WsSocket + Send + 'static,
        S::SocketError: Send + fmt::Debug;
}

/// Echoes text and binary messages until the socket ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl SocketHandler for Echo {
    async fn handle<S>(self, mut socket: S, conn: Connection)
    where
        S: WsSocket + Send + 'static,
        S::SocketError: Send + fmt::Debug,
    {
        echo(&mut socket).await;
        drop(conn);
    }
}

/// Echoes text and binary messages through the message plane (feature `plane`): a
/// [`GuardedSocket`] over [`Admit`], which closes the socket when its connection is asked to
/// close (a revoked token: 4403) or its token expires (4440).
#[cfg(feature = "plane")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PlaneEcho;

#[cfg(feature = "plane")]
impl SocketHandler for PlaneEcho {
    async fn handle<S>(self, socket: S, conn: Connection)
    where
        S: WsSocket + Send + 'static,
        S::SocketError: Send + fmt::Debug,
    {
        echo(&mut GuardedSocket::new(socket, conn, Admit)).await;
    }
}

/// Sends back each text and binary message `socket` yields, until it ends.
async fn echo<S: WsSocket>(socket: &mut S) {
    for _ in 0..MAX_MESSAGES {
        let Some(Ok(msg)) = socket.next().await else {
            break;
        };
        if msg.kind().is_data() && socket.send(msg).await.is_err() {
            break;
        }
    }
}

/// An axum route (`GET`) that hands each socket off to `handler` through
/// [`wsguard_core::axum::GuardedUpgrade`], with the limits `upgrade` sets: mount it at any path,
/// behind any layer.
///
/// ```
/// use axum::Router;
/// use wsguard_test_kit::{client, handoff::{self, Echo, Upgrade}, server};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = Router::new().route("/chat", handoff::route(Upgrade::default(), Echo));
/// let addr = server::axum(app).await;
/// let mut ws = client::connect(addr, "/chat").await;
/// client::round_trip(&mut ws, "hello").await;
/// client::close(ws).await;
/// # }
/// ```
pub fn route<H: SocketHandler>(upgrade: Upgrade, handler: H) -> MethodRouter {
    get(move |up: wsguard_core::axum::GuardedUpgrade| async move {
        upgrade
            .axum(up)
            .on_upgrade(move |socket, conn| handler.handle(socket, conn))
    })
}

/// Serves `handler` at `/ws` through `hand_off` on a free loopback port. `before` sees each
/// request's extensions before the hand-off does, as a handshake layer would (to hold a guard
/// in the connection scope, to defer a rejection, ...).
pub async fn serve<F, H>(hand_off: HandOff, upgrade: Upgrade, before: F, handler: H) -> SocketAddr
where
    F: Fn(&mut Extensions) + Clone + Send + Sync + 'static,
    H: SocketHandler,
{
    match hand_off {
        HandOff::Axum => {
            let app = Router::new().route("/ws", route(upgrade, handler)).layer(
                ServiceBuilder::new().map_request(move |mut req: Request<axum::body::Body>| {
                    before(req.extensions_mut());
                    req
                }),
            );
            server::axum(app).await
        }
        HandOff::Hyper => {
            server::hyper(move |_peer| {
                let (before, handler) = (before.clone(), handler.clone());
                service_fn(move |mut req: Request<Incoming>| {
                    before(req.extensions_mut());
                    let handler = handler.clone();
                    async move {
                        let res: Response<String> =
                            match wsguard_core::tungstenite::GuardedUpgrade::from_request(&mut req)
                            {
                                Ok(up) => upgrade
                                    .hyper(up)
                                    .on_upgrade(move |socket, conn| handler.handle(socket, conn)),
                                Err(err) => err.to_response(),
                            };
                        Ok::<_, Infallible>(res)
                    }
                })
            })
            .await
        }
    }
}

/// Counts guards alive (held in connection scopes, for example); each guard's drop is seen
/// at once by [`Alive::until`].
#[derive(Debug, Clone)]
pub struct Alive(Arc<watch::Sender<usize>>);

/// One guard counted by an [`Alive`], until it is dropped.
#[derive(Debug)]
pub struct AliveGuard(Alive);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n -= 1);
    }
}

impl Default for Alive {
    fn default() -> Self {
        Self::new()
    }
}

impl Alive {
    /// No guard alive yet.
    pub fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    /// A new guard, counted until it is dropped.
    pub fn guard(&self) -> AliveGuard {
        self.0.send_modify(|n| *n += 1);
        AliveGuard(self.clone())
    }

    /// The guards alive now.
    pub fn now(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until exactly `n` guards are alive.
    ///
    /// # Panics
    ///
    /// If that does not happen within [`WAIT`].
    pub async fn until(&self, n: usize) {
        let mut rx = self.0.subscribe();
        timeout(WAIT, rx.wait_for(|v| *v == n))
            .await
            .unwrap_or_else(|_| panic!("guards alive: {} (waited for {n})", self.now()))
            .unwrap();
    }
}

pub mod contract {
    //! What both hand-offs promise, each promise an async function that panics when a
    //! hand-off breaks it. Run each against [`HandOff::BOTH`].

    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio_tungstenite::tungstenite::Message;
    use wsguard_core::{guard::PendingRejection, ConnectionScope, Rejection};

    use super::*;
    use crate::client;

    /// Which way a socket ends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum End {
        /// The client sends a close frame and waits for the answer.
        Clean,
        /// The client drops the TCP connection without a close frame.
        Abort,
        /// The server's handler panics after the first message.
        Panic,
    }

    impl End {
        /// Every way.
        pub const ALL: [Self; 3] = [Self::Clean, Self::Abort, Self::Panic];
    }

    /// The contract's handler: says it was called, checks that the hand-off claimed the
    /// connection scope, panics on a text `panic`, echoes the rest.
    #[derive(Clone)]
    struct Handler(Arc<AtomicBool>);

    impl SocketHandler for Handler {
        async fn handle<S>(self, mut socket: S, conn: Connection)
        where
            S: WsSocket + Send + 'static,
            S::SocketError: Send + fmt::Debug,
        {
            self.0.store(true, Ordering::SeqCst);
            assert!(conn.scope().is_claimed());
            for _ in 0..MAX_MESSAGES {
                let Some(Ok(msg)) = socket.next().await else {
                    break;
                };
                if msg.as_text() == Some("panic") {
                    panic!("handler panics on purpose");
                }
                if msg.kind().is_data() && socket.send(msg).await.is_err() {
                    break;
                }
            }
            drop(conn);
        }
    }

    /// A server whose every request holds one guard of `alive` in its connection scope
    /// (and carries `deferred`, if any, as a deferred rejection), with the contract's
    /// handler; `called` says whether the handler ran.
    async fn serve_guarded(
        hand_off: HandOff,
        alive: &Alive,
        deferred: Option<Rejection>,
        called: &Arc<AtomicBool>,
    ) -> SocketAddr {
        let alive = alive.clone();
        serve(
            hand_off,
            Upgrade::default(),
            move |extensions: &mut Extensions| {
                ConnectionScope::from_extensions(extensions).hold(alive.guard());
                if let Some(rejection) = deferred {
                    let _ = PendingRejection::defer(extensions, rejection);
                }
            },
            Handler(Arc::clone(called)),
        )
        .await
    }

    /// A guard held in the connection scope lives exactly as long as the socket, however the
    /// socket ends ([`End::ALL`]), and the handler gets a claimed scope.
    pub async fn scope_ends_with_the_socket(hand_off: HandOff) {
        for end in End::ALL {
            let alive = Alive::new();
            let called = Arc::new(AtomicBool::new(false));
            let addr = serve_guarded(hand_off, &alive, None, &called).await;

            let mut ws = client::connect(addr, "/ws").await;
            client::round_trip(&mut ws, "hello").await;
            assert_eq!(
                alive.now(),
                1,
                "{hand_off}, {end:?}: the guard is held while the socket is open"
            );
            match end {
                End::Clean => client::close(ws).await,
                End::Abort => drop(ws),
                End::Panic => {
                    ws.send(Message::text("panic")).await.unwrap();
                    // The server's task dies; the TCP connection is dropped under us.
                    let _ = timeout(WAIT, ws.next()).await.unwrap();
                }
            }
            alive.until(0).await;
            assert!(called.load(Ordering::SeqCst), "{hand_off}, {end:?}");
        }
    }

    /// A rejection a handshake layer deferred (close mode) is answered after the upgrade
    /// with a close frame as the first message, carrying `code` and `reason`; the handler is
    /// never called, and the scope's guards go when the socket does.
    pub async fn deferred_rejection_closes_without_calling_the_handler(
        hand_off: HandOff,
        rejection: Rejection,
        code: u16,
        reason: &str,
    ) {
        let alive = Alive::new();
        let called = Arc::new(AtomicBool::new(false));
        let addr = serve_guarded(hand_off, &alive, Some(rejection), &called).await;
        let mut ws = client::connect(addr, "/ws").await;
        match timeout(WAIT, ws.next())
            .await
            .expect("a close frame in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), code, "{hand_off}");
                assert_eq!(frame.reason.as_str(), reason, "{hand_off}");
            }
            other => panic!("{hand_off}: expected a close frame, got {other:?}"),
        }
        // Complete the closing handshake.
        client::until_end(&mut ws).await;
        alive.until(0).await;
        assert!(!called.load(Ordering::SeqCst), "{hand_off}");
    }

    /// A request that is not a WebSocket handshake gets 400 from the hand-off, and its
    /// scope's guards go with it.
    pub async fn non_handshakes_are_refused_with_their_status(hand_off: HandOff) {
        let alive = Alive::new();
        let addr = serve_guarded(hand_off, &alive, None, &Arc::default()).await;
        let (status, _) = client::fetch(addr, "/ws", &[]).await;
        assert_eq!(status, 400, "{hand_off}");
        alive.until(0).await;
    }
}
