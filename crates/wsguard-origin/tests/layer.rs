//! The layer's behaviour: scope, predicates, policies, readiness and logging.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use http::{header, Method, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};
use wsguard_core::{Access, GrpcRejection, Reason, Rejection};
use wsguard_origin::{AllowList, DomainSet, Origin, OriginGuardLayer, RequestHead};
use wsguard_test_kit::service::{counting, handshake};

fn allow() -> AllowList {
    AllowList::new()
        .add_origin("https://app.example.com")
        .unwrap()
}

#[tokio::test]
async fn only_handshakes_are_checked_by_default() {
    let calls = Arc::new(AtomicUsize::new(0));
    let plain = || {
        Request::builder()
            .header(header::ORIGIN, "https://evil.example")
            .body(())
            .unwrap()
    };
    let svc = OriginGuardLayer::new(allow()).layer(counting(&calls));
    let res = svc.clone().oneshot(plain()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = svc
        .clone()
        .oneshot(handshake("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the rejected handshake never reached the service"
    );

    // RFC 8441: an HTTP/2 handshake is an extended CONNECT.
    let connect = Request::builder()
        .method(Method::CONNECT)
        .uri("https://chat.example.com/ws")
        .header(header::ORIGIN, "https://evil.example")
        .body(())
        .unwrap();
    let res = svc.clone().oneshot(connect).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let every = OriginGuardLayer::new(allow())
        .check_every_request(true)
        .layer(counting(&calls));
    let res = every.clone().oneshot(plain()).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = every
        .oneshot(
            Request::builder()
                .header(header::ORIGIN, "https://app.example.com")
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn same_host_uses_the_request_target_authority_first() {
    // HTTP/2 `:authority` (and absolute-form HTTP/1.1) is in the URI; RFC 9110 section 7.2.
    let layer = OriginGuardLayer::new(AllowList::new().allow_same_host(true));
    let req = |uri: &str, host: &str| {
        let mut req = handshake("https://chat.example.com");
        *req.uri_mut() = uri.parse().unwrap();
        req.headers_mut()
            .insert(header::HOST, host.parse().unwrap());
        req
    };
    let status = |req| {
        let svc = layer.layer(counting(&Arc::new(AtomicUsize::new(0))));
        async move { svc.oneshot(req).await.unwrap().status() }
    };
    assert_eq!(
        status(req("https://chat.example.com/ws", "other.example")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(req("https://other.example/ws", "chat.example.com")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(req("/ws", "chat.example.com")).await, StatusCode::OK);
    // Two Host headers: no authority to compare with.
    let mut two = req("/ws", "chat.example.com");
    two.headers_mut()
        .append(header::HOST, "chat.example.com".parse().unwrap());
    assert_eq!(status(two).await, StatusCode::FORBIDDEN);
}

/// What an authentication layer would insert from a verified site token.
#[derive(Clone)]
struct SiteDomains(Arc<DomainSet>);

#[tokio::test]
async fn the_predicate_reads_extensions_and_may_wait() {
    let consulted = Arc::new(AtomicUsize::new(0));
    let layer = OriginGuardLayer::new(allow()).with_predicate({
        let consulted = Arc::clone(&consulted);
        move |origin: &Origin, head: &RequestHead<'_>| {
            consulted.fetch_add(1, Ordering::SeqCst);
            let sites = head.extensions().get::<SiteDomains>().cloned();
            let origin = origin.clone();
            async move {
                // A real hook would query something here; make the future pending once.
                tokio::task::yield_now().await;
                Access::from(sites.is_some_and(|sites| sites.0.contains_origin(&origin)))
            }
        }
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(counting(&calls));
    let with_sites = |origin: &str| {
        let mut req = handshake(origin);
        req.extensions_mut().insert(SiteDomains(Arc::new(
            DomainSet::new(["customer.example", "bücher.example"]).unwrap(),
        )));
        req
    };
    let status = |req| {
        let svc = svc.clone();
        async move { svc.oneshot(req).await.unwrap().status() }
    };

    // The allow-list alone: the predicate is not consulted.
    assert_eq!(
        status(handshake("https://app.example.com")).await,
        StatusCode::OK
    );
    assert_eq!(consulted.load(Ordering::SeqCst), 0);

    assert_eq!(
        status(with_sites("https://www.customer.example")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(with_sites("https://xn--bcher-kva.example")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(with_sites("https://evil.example")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(handshake("https://www.customer.example")).await,
        StatusCode::FORBIDDEN,
        "no token, no site domains"
    );
    assert_eq!(consulted.load(Ordering::SeqCst), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Never consulted for null, malformed or missing origins.
    assert_eq!(status(with_sites("null")).await, StatusCode::FORBIDDEN);
    assert_eq!(
        status(with_sites("https://customer.example/")).await,
        StatusCode::FORBIDDEN
    );
    let mut missing = with_sites("x");
    missing.headers_mut().remove(header::ORIGIN);
    assert_eq!(status(missing).await, StatusCode::OK);
    assert_eq!(consulted.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn rejection_policies_can_be_swapped() {
    let svc = OriginGuardLayer::new(allow())
        .on_rejection(GrpcRejection)
        .layer(counting(&Arc::new(AtomicUsize::new(0))));
    let res = svc
        .oneshot(handshake("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "7");
    assert!(res.extensions().get::<Rejection>().is_some());

    let svc = OriginGuardLayer::new(allow())
        .on_rejection(|rejection: &Rejection| {
            let mut res = Response::new(format!("{{\"error\":\"{}\"}}", rejection.reason()));
            *res.status_mut() = rejection.status();
            res
        })
        .layer(counting(&Arc::new(AtomicUsize::new(0))));
    let res = svc
        .oneshot(handshake("https://evil.example"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.body(), "{\"error\":\"origin_not_allowed\"}");
    assert_eq!(
        res.extensions().get::<Rejection>().map(Rejection::reason),
        Some(Reason::OriginNotAllowed)
    );
}

/// A service that may only be called after `poll_ready`; its clones start unready
/// (tower-http #561: calling a clone made after `poll_ready` breaks this contract).
#[derive(Default)]
struct MustBeReady {
    ready: bool,
}

impl Clone for MustBeReady {
    fn clone(&self) -> Self {
        Self { ready: false }
    }
}

impl Service<Request<()>> for MustBeReady {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        assert!(self.ready, "called without poll_ready");
        self.ready = false;
        std::future::ready(Ok(Response::new(String::new())))
    }
}

#[tokio::test]
async fn the_ready_service_is_the_one_called_after_a_check() {
    let layer =
        OriginGuardLayer::new(allow()).with_predicate(|_: &Origin, _: &RequestHead<'_>| async {
            tokio::task::yield_now().await;
            Access::Allow
        });
    let mut svc = layer.layer(MustBeReady::default());
    for origin in ["https://app.example.com", "https://other.example"] {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(handshake(origin))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{origin}");
    }
}

#[test]
fn futures_are_send_and_services_are_clone() {
    fn assert_send<T: Send>(_: &T) {}
    let layer = OriginGuardLayer::new(allow())
        .with_predicate(|_: &Origin, _: &RequestHead<'_>| async { Access::Allow });
    let mut svc = layer.layer(counting(&Arc::new(AtomicUsize::new(0))));
    let future = svc.call(handshake("https://app.example.com"));
    assert_send(&future);
    assert_send(&svc.clone());
    // The layer's Debug lists the configuration, not the predicate.
    let debug = format!("{layer:?}");
    assert!(
        debug.contains("https://app.example.com") && debug.contains("predicate: true"),
        "{debug}"
    );
}
