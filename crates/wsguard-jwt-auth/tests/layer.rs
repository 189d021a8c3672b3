//! The layer's other behaviours: revocation, predicates, the principal and expiry handed
//! on, key rotation, site tokens, and the gRPC form.

mod common;

use std::{
    future::{ready, Ready},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::*;
use http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey};
use tower::ServiceBuilder;
use wsguard_core::{Access, GrpcRejection, Principal, RequestHead, TokenExpiry};
use wsguard_jwt_auth::{
    Failure, InMemoryRevocations, JwtAuthLayer, KeySet, KeySetHandle, NoClaims, Revocation,
    RevocationError, RevocationQuery, RevocationStatus, VerifiedToken, VerifyingKey,
};

type Layer = JwtAuthLayer<serde_json::Value>;

fn layer() -> Layer {
    JwtAuthLayer::new(hs256_key())
}

#[tokio::test]
async fn revoked_tokens_are_forbidden() {
    let store = InMemoryRevocations::new(100);
    let mut svc = ServiceBuilder::new()
        .layer(layer().with_revocation(store.clone()))
        .service_fn(inner);
    let token = hs256(&claims(&format!(r#""jti":"t-1","iat":{}"#, unix_now())));
    assert_eq!(
        call(&mut svc, bearer(&token)).await.status(),
        StatusCode::OK
    );

    store
        .revoke_token("t-1", SystemTime::now() + hour())
        .unwrap();
    let res = call(&mut svc, bearer(&token)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(failure(&res), Some(Failure::Revoked));

    // Every token of alice issued before now: an older one is refused, a newer one passes.
    let older = hs256(&claims(&format!(r#""iat":{}"#, unix_now() - 100)));
    assert_eq!(
        call(&mut svc, bearer(&older)).await.status(),
        StatusCode::OK
    );
    store
        .revoke_subject_before(
            "alice",
            SystemTime::now() - Duration::from_secs(10),
            SystemTime::now() + hour(),
        )
        .unwrap();
    assert_eq!(
        failure(&call(&mut svc, bearer(&older)).await),
        Some(Failure::Revoked)
    );
    let newer = hs256(&claims(&format!(r#""iat":{}"#, unix_now())));
    assert_eq!(
        call(&mut svc, bearer(&newer)).await.status(),
        StatusCode::OK
    );
    // Without `iat`, a token of a cut-off subject cannot be placed in time: refused.
    let undated = hs256(&claims(""));
    assert_eq!(
        failure(&call(&mut svc, bearer(&undated)).await),
        Some(Failure::Revoked)
    );
}

/// A store that is down.
#[derive(Clone, Default)]
struct Down(Arc<AtomicUsize>);

impl Revocation for Down {
    type Future = Ready<Result<RevocationStatus, RevocationError>>;

    fn check(&self, _: &RevocationQuery) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        ready(Err(RevocationError::new("connection refused")))
    }
}

#[tokio::test]
async fn a_failing_store_fails_closed_unless_told_otherwise() {
    let down = Down::default();
    let token = hs256(&claims(r#""jti":"t-1""#));
    let mut closed = ServiceBuilder::new()
        .layer(layer().with_revocation(down.clone()))
        .service_fn(inner);
    let res = call(&mut closed, bearer(&token)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(failure(&res), Some(Failure::RevocationUnavailable));

    let mut open = ServiceBuilder::new()
        .layer(
            layer()
                .with_revocation(down.clone())
                .revocation_fail_open(true),
        )
        .service_fn(inner);
    assert_eq!(
        call(&mut open, bearer(&token)).await.status(),
        StatusCode::OK
    );
    // Asked only for verified tokens: a forged one never reaches the store.
    call(&mut closed, bearer(&forged(&claims("")))).await;
    assert_eq!(down.0.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn predicates_answer_403() {
    let layer = layer()
        .with_predicate(|claims: &serde_json::Value| claims["role"] != "banned")
        .with_async_predicate(|claims: &serde_json::Value, head: &RequestHead<'_>| {
            // The head already carries what the token proved.
            let principal = head.extensions().get::<Principal>().cloned();
            let active = claims["active"] == true;
            async move { Access::from(active && principal.is_some_and(|p| p.as_str() == "alice")) }
        });
    let mut svc = ServiceBuilder::new().layer(layer).service_fn(inner);
    let ok = hs256(&claims(r#""active":true"#));
    assert_eq!(call(&mut svc, bearer(&ok)).await.status(), StatusCode::OK);
    for (extra, why) in [
        (r#""active":false"#, "async predicate"),
        (r#""active":true,"role":"banned""#, "sync predicate"),
    ] {
        let res = call(&mut svc, bearer(&hs256(&claims(extra)))).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{why}");
        assert_eq!(failure(&res), Some(Failure::Denied), "{why}");
        assert_eq!(res.body(), "forbidden");
    }
}

#[tokio::test]
async fn principal_expiry_and_token_are_handed_on() {
    let exp = unix_now() + 600;
    let token = sign(
        r#"{"alg":"HS256","kid":"k"}"#,
        &format!(r#"{{"user_id":4711,"exp":{exp},"jti":"j","iat":1}}"#),
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    );
    let keys = KeySet::from_keys([hs256_key().with_kid("k")]).unwrap();
    let layer = JwtAuthLayer::<NoClaims>::new(keys)
        .principal_claim("user_id")
        .unwrap()
        .leeway(Duration::from_secs(5));
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<()>| async move {
            let token = req.extensions().get::<VerifiedToken>().unwrap();
            let expiry = req.extensions().get::<TokenExpiry>().unwrap();
            let principal = req.extensions().get::<Principal>().unwrap();
            assert_eq!(principal.as_str(), "4711");
            assert_eq!(token.principal(), principal);
            assert_eq!(token.jti(), Some("j"));
            assert_eq!(token.kid(), Some("k"));
            assert_eq!(token.algorithm(), Algorithm::HS256);
            assert_eq!(token.source(), "authorization");
            assert_eq!(token.issued_at(), Some(UNIX_EPOCH + Duration::from_secs(1)));
            // The expiry is `exp` plus the leeway: when the layer would start refusing.
            assert_eq!(expiry.0, UNIX_EPOCH + Duration::from_secs(exp + 5));
            assert_eq!(token.expires_at(), Some(expiry.0));
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        });
    assert_eq!(
        call(&mut svc, bearer(&token)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn keys_rotate_through_the_handle_without_a_restart() {
    let old = VerifyingKey::hmac(Algorithm::HS256, SECRET)
        .unwrap()
        .with_kid("old");
    let handle = KeySetHandle::new(KeySet::from_keys([old.clone()]).unwrap());
    let mut svc = ServiceBuilder::new()
        .layer(Layer::new(handle.clone()))
        .service_fn(inner);
    let signed = |kid: &str, secret: &[u8]| {
        sign(
            &format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#),
            &claims(""),
            Algorithm::HS256,
            &EncodingKey::from_secret(secret),
        )
    };
    let new_secret = [0x55; 32];
    assert_eq!(
        call(&mut svc, bearer(&signed("old", SECRET)))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        failure(&call(&mut svc, bearer(&signed("new", &new_secret))).await),
        Some(Failure::UnknownKey)
    );
    let new = VerifyingKey::hmac(Algorithm::HS256, &new_secret)
        .unwrap()
        .with_kid("new");
    handle.replace(KeySet::from_keys([new]).unwrap());
    assert_eq!(
        call(&mut svc, bearer(&signed("new", &new_secret)))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        failure(&call(&mut svc, bearer(&signed("old", SECRET))).await),
        Some(Failure::UnknownKey)
    );
}

#[tokio::test]
async fn tonic_stacks_get_the_grpc_form() {
    let mut svc = ServiceBuilder::new()
        .layer(layer().on_rejection(GrpcRejection))
        .service_fn(inner);
    let res = call(&mut svc, Request::new(())).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["grpc-status"], "16");
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(failure(&res), Some(Failure::Missing));
}

#[cfg(feature = "site-token")]
#[tokio::test]
async fn site_tokens_work_only_on_their_domains() {
    let mut svc = ServiceBuilder::new()
        .layer(layer().site_claim("sites").unwrap())
        .service_fn(inner);
    let token = hs256(&claims(r#""sites":["shop.example","bücher.example"]"#));
    let from = |origin: Option<&str>| {
        let mut req = bearer(&token);
        if let Some(origin) = origin {
            req.headers_mut().insert("origin", origin.parse().unwrap());
        }
        req
    };
    // (origin, allowed) with the rules of wsguard-origin's DomainSet.
    let cases = [
        (Some("https://shop.example"), true),
        (Some("https://www.shop.example:8443"), true),
        (Some("https://xn--bcher-kva.example"), true),
        (Some("https://evilshop.example"), false),
        (Some("https://shop.example.evil.com"), false),
        (Some("null"), false),
        (None, false),
    ];
    for (origin, allowed) in cases {
        let res = call(&mut svc, from(origin)).await;
        if allowed {
            assert_eq!(res.status(), StatusCode::OK, "{origin:?}");
        } else {
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin:?}");
            assert_eq!(failure(&res), Some(Failure::SiteNotAllowed), "{origin:?}");
        }
    }
    // A token without the claim is no site token.
    let plain = hs256(&claims(""));
    let mut req = bearer(&plain);
    req.headers_mut()
        .insert("origin", "https://shop.example".parse().unwrap());
    assert_eq!(
        failure(&call(&mut svc, req).await),
        Some(Failure::SiteNotAllowed)
    );
}

#[tokio::test]
async fn a_future_polled_after_completion_panics() {
    use std::{
        future::Future,
        panic::{catch_unwind, AssertUnwindSafe},
        pin::pin,
        task::{Context, Waker},
    };
    use tower::{Service, ServiceExt};

    let mut svc = ServiceBuilder::new().layer(layer()).service_fn(inner);
    let req = Request::builder().body(()).unwrap();
    let mut future = pin!(svc.ready().await.unwrap().call(req));
    let mut cx = Context::from_waker(Waker::noop());
    let std::task::Poll::Ready(Ok(res)) = future.as_mut().poll(&mut cx) else {
        panic!("a refusal is ready at once");
    };
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let again = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
    let message = again.expect_err("a second poll panics");
    let message = message
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| message.downcast_ref::<&str>().copied());
    assert_eq!(message, Some("ResponseFuture polled after completion"));
}
