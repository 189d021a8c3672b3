//! The identity extractors for axum: present, missing (a configuration mistake: 500), and
//! optional (`Option<_>`, for routes where the identity may be absent).
#![cfg(feature = "axum")]

use axum::{
    body::Body,
    extract::Request,
    middleware::{self, Next},
    response::Response,
    routing::get,
    Router,
};
use http::StatusCode;
use http_body_util::BodyExt;
use tower::ServiceExt;
use wsguard_core::{ClientIp, Principal};

/// Stands in for the authentication and client-IP layers: `x-user` becomes the principal,
/// `x-ip` the client IP.
async fn identify(mut req: Request, next: Next) -> Response {
    let user = req.headers().get("x-user").cloned();
    let ip = req.headers().get("x-ip").cloned();
    if let Some(user) = user {
        let user = Principal::new(user.to_str().unwrap());
        req.extensions_mut().insert(user);
    }
    if let Some(ip) = ip {
        let ip = ip.to_str().unwrap().parse().unwrap();
        req.extensions_mut().insert(ClientIp(ip));
    }
    next.run(req).await
}

fn app() -> Router {
    Router::new()
        .route(
            "/principal",
            get(|p: Principal| async move { p.to_string() }),
        )
        .route(
            "/maybe",
            get(|p: Option<Principal>| async move {
                p.map_or_else(|| "anonymous".to_owned(), |p| p.to_string())
            }),
        )
        .route("/ip", get(|ip: ClientIp| async move { ip.to_string() }))
        .route(
            "/maybe-ip",
            get(|ip: Option<ClientIp>| async move {
                ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
            }),
        )
        .layer(middleware::from_fn(identify))
}

async fn get_with(path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn present_identities_are_extracted() {
    let who = [("x-user", "alice"), ("x-ip", "192.0.2.7")];
    assert_eq!(
        get_with("/principal", &who).await,
        (StatusCode::OK, "alice".into())
    );
    assert_eq!(
        get_with("/maybe", &who).await,
        (StatusCode::OK, "alice".into())
    );
    assert_eq!(
        get_with("/ip", &who).await,
        (StatusCode::OK, "192.0.2.7".into())
    );
    assert_eq!(
        get_with("/maybe-ip", &who).await,
        (StatusCode::OK, "192.0.2.7".into())
    );
}

#[tokio::test]
async fn missing_identities_are_a_server_error_unless_optional() {
    let (status, body) = get_with("/principal", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !body.contains("authentication"),
        "no internals in the answer: {body}"
    );
    assert_eq!(
        get_with("/ip", &[]).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get_with("/maybe", &[]).await,
        (StatusCode::OK, "anonymous".into())
    );
    assert_eq!(
        get_with("/maybe-ip", &[]).await,
        (StatusCode::OK, "unknown".into())
    );
}
