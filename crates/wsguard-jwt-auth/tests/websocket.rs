//! A real axum WebSocket endpoint on 127.0.0.1:0 and a real tokio-tungstenite client: a
//! valid token upgrades (offered in the subprotocol list, the way browsers send it, and the
//! 101 selects the marker, never the token); each failure gets its status and header, or,
//! in close mode, its close code.

mod common;

use std::net::SocketAddr;

use axum::{extract::ws::Message as AxumMessage, routing::get, Router};
use common::*;
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, protocol::frame::coding::CloseCode, Message,
};
use wsguard_core::axum::GuardedUpgrade;
use wsguard_jwt_auth::{Claims, JwtAuthLayer, TokenSource};
use wsguard_test_kit::{client::Client, server, WAIT};

#[derive(Clone, serde::Deserialize)]
struct ChatClaims {
    room: String,
}

/// Serves `/ws` behind the layer; the socket greets with what the connection knows.
async fn serve(close_mode: bool) -> SocketAddr {
    let layer = JwtAuthLayer::<ChatClaims>::new(hs256_key())
        .with_token_sources([
            TokenSource::protocol("bearer").unwrap(),
            TokenSource::bearer(),
            TokenSource::query("token").unwrap(),
        ])
        .unwrap()
        .with_predicate(|claims: &ChatClaims| claims.room != "secret")
        .close_mode(close_mode);
    let app = Router::new()
        .route(
            "/ws",
            get(|upgrade: GuardedUpgrade| async move {
                upgrade
                    .protocols(["bearer"])
                    .on_upgrade(|mut socket, conn| async move {
                        let room = conn
                            .extensions()
                            .get::<Claims<ChatClaims>>()
                            .map(|c| c.room.clone());
                        let greeting = format!(
                            "hello {} in {} (expires: {})",
                            conn.principal().map_or("nobody", |p| p.as_str()),
                            room.unwrap_or_default(),
                            conn.token_expiry().is_some()
                        );
                        let _ = socket.send(AxumMessage::Text(greeting.into())).await;
                        while let Some(Ok(msg)) = socket.recv().await {
                            if matches!(msg, AxumMessage::Close(_)) {
                                break;
                            }
                        }
                    })
            }),
        )
        .layer(layer);
    server::axum(app).await
}

async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<(Client, http::Response<Option<Vec<u8>>>), tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
    }
    timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
}

fn room(room: &str) -> String {
    claims(&format!(r#""room":"{room}""#))
}

#[tokio::test]
async fn a_valid_subprotocol_token_upgrades_and_is_never_echoed() {
    let addr = serve(false).await;
    let token = hs256(&room("lobby"));
    let (mut ws, res) = connect(
        addr,
        "/ws",
        &[("sec-websocket-protocol", format!("bearer, {token}"))],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    // The selected subprotocol is the marker; the token appears nowhere in the response.
    assert_eq!(res.headers()["sec-websocket-protocol"], "bearer");
    for (_, value) in res.headers() {
        assert!(!value.to_str().unwrap().contains(&token));
    }
    let greeting = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        greeting,
        Message::text("hello alice in lobby (expires: true)")
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn valid_header_and_query_tokens_upgrade() {
    let addr = serve(false).await;
    let token = hs256(&room("lobby"));
    let (mut ws, _) = connect(addr, "/ws", &[("authorization", format!("Bearer {token}"))])
        .await
        .unwrap();
    let greeting = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        greeting,
        Message::text("hello alice in lobby (expires: true)")
    );

    let (mut ws, _) = connect(addr, &format!("/ws?token={token}"), &[])
        .await
        .unwrap();
    let greeting = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        greeting,
        Message::text("hello alice in lobby (expires: true)")
    );
}

#[tokio::test]
async fn each_failure_gets_its_status_and_header() {
    let addr = serve(false).await;
    let valid = hs256(&room("lobby"));
    let expired = hs256(&format!(
        r#"{{"sub":"alice","room":"lobby","exp":{}}}"#,
        unix_now() - 3600
    ));
    let forged = forged(&room("lobby"));
    let denied = hs256(&room("secret"));
    let bearer = |t: &str| vec![("sec-websocket-protocol", format!("bearer, {t}"))];
    // (headers, status, WWW-Authenticate, body)
    type Case<'a> = (Vec<(&'static str, String)>, u16, Option<&'a str>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![], 401, Some("Bearer"), "authentication required"),
        (
            bearer(&forged),
            401,
            Some("Bearer error=\"invalid_token\""),
            "invalid token",
        ),
        (
            bearer(&expired),
            401,
            Some("Bearer error=\"invalid_token\", error_description=\"token expired\""),
            "token expired",
        ),
        (bearer(&denied), 403, None, "forbidden"),
        (
            vec![
                ("sec-websocket-protocol", format!("bearer, {valid}")),
                ("authorization", format!("Bearer {valid}")),
            ],
            400,
            None,
            "bad request",
        ),
    ];
    for (headers, status, challenge, body) in cases {
        match connect(addr, "/ws", &headers).await {
            Err(tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), status, "{body}");
                assert_eq!(
                    res.headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    challenge,
                    "{body}"
                );
                assert_eq!(res.body().as_deref(), Some(body.as_bytes()));
            }
            other => panic!(
                "{body}: expected a refusal, got {:?}",
                other.map(|(_, r)| r)
            ),
        }
    }
}

#[tokio::test]
async fn close_mode_upgrades_and_closes_with_the_code() {
    let addr = serve(true).await;
    let valid = hs256(&room("lobby"));
    let expired = hs256(&format!(
        r#"{{"sub":"alice","room":"lobby","exp":{}}}"#,
        unix_now() - 3600
    ));
    let forged = forged(&room("lobby"));
    let denied = hs256(&room("secret"));
    // (token offered, close code, reason)
    let cases = [
        (None, 4401, "authentication required"),
        (Some(&forged), 4401, "invalid token"),
        (Some(&expired), 4440, "token expired"),
        (Some(&denied), 4403, "forbidden"),
    ];
    for (token, code, reason) in cases {
        let protocols = match token {
            Some(token) => format!("bearer, {token}"),
            None => "bearer".to_owned(),
        };
        let (mut ws, res) = connect(addr, "/ws", &[("sec-websocket-protocol", protocols)])
            .await
            .unwrap_or_else(|e| panic!("{reason}: {e}"));
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(res.headers()["sec-websocket-protocol"], "bearer");
        let msg = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
        let Message::Close(Some(frame)) = msg else {
            panic!("{reason}: expected a close frame, got {msg:?}");
        };
        assert_eq!(frame.code, CloseCode::from(code), "{reason}");
        assert_eq!(frame.reason.as_str(), reason);
    }
    // A valid token still gets the application.
    let (mut ws, _) = connect(
        addr,
        "/ws",
        &[("sec-websocket-protocol", format!("bearer, {valid}"))],
    )
    .await
    .unwrap();
    let greeting = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        greeting,
        Message::text("hello alice in lobby (expires: true)")
    );
}

#[tokio::test]
async fn header_parameters_that_change_what_is_verified_are_refused() {
    // Issue 11: an HS256 token signed with the right secret under `{"alg":"HS256","b64":false}`
    // (RFC 7797, no `crit`) was upgraded. Now it gets 401, as do its kin; the same claims
    // under a plain header still upgrade, so only the header decides.
    let with_header = |header: &str| {
        sign(
            header,
            &room("lobby"),
            jsonwebtoken::Algorithm::HS256,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
    };
    let refused = [
        r#"{"alg":"HS256","b64":false}"#,
        r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#,
        r#"{"alg":"HS256","jwk":{"kty":"oct","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}}"#,
        r#"{"alg":"HS256","cty":"JWT"}"#,
        r#"{"alg":"HS512","alg":"HS256"}"#,
    ];
    let addr = serve(false).await;
    for header in refused {
        let token = with_header(header);
        match connect(
            addr,
            "/ws",
            &[("sec-websocket-protocol", format!("bearer, {token}"))],
        )
        .await
        {
            Err(tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
                assert_eq!(
                    res.headers()["www-authenticate"],
                    "Bearer error=\"invalid_token\"",
                    "{header}"
                );
                assert_eq!(res.body().as_deref(), Some(&b"invalid token"[..]));
            }
            other => panic!(
                "{header}: expected a refusal, got {:?}",
                other.map(|(_, r)| r)
            ),
        }
    }
    let token = with_header(r#"{"alg":"HS256"}"#);
    let (mut ws, res) = connect(
        addr,
        "/ws",
        &[("sec-websocket-protocol", format!("bearer, {token}"))],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let greeting = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(
        greeting,
        Message::text("hello alice in lobby (expires: true)")
    );
    ws.close(None).await.unwrap();

    // In close mode: upgraded, then closed with 4401 and the generic reason.
    let addr = serve(true).await;
    let token = with_header(r#"{"alg":"HS256","b64":false}"#);
    let (mut ws, res) = connect(
        addr,
        "/ws",
        &[("sec-websocket-protocol", format!("bearer, {token}"))],
    )
    .await
    .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let msg = timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    let Message::Close(Some(frame)) = msg else {
        panic!("expected a close frame, got {msg:?}");
    };
    assert_eq!(frame.code, CloseCode::from(4401));
    assert_eq!(frame.reason.as_str(), "invalid token");
}
