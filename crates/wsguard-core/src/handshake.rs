//! Recognising WebSocket handshakes, and the parts the hand-offs share.

use http::{header, HeaderMap, Method, Request};

/// Whether `req` asks for a WebSocket: an `Upgrade` header whose list contains the
/// `websocket` token (HTTP/1.1, RFC 6455), or a `CONNECT` request (HTTP/2 and HTTP/3
/// extended CONNECT, RFC 8441 and RFC 9220).
///
/// It is deliberately wide: guards that run only on handshakes use it, so it errs on the side
/// of treating a request as a handshake. Every `CONNECT` request counts, whatever its
/// `:protocol`, and the method of an HTTP/1.1 upgrade is not checked (the upgrade itself will
/// refuse anything but `GET`).
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT || has_websocket_upgrade_token(req.headers())
}

fn has_websocket_upgrade_token(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|token| {
            // A protocol may carry a version (`websocket/13`); RFC 7230 section 6.7.
            let token = token.trim_ascii();
            let name = token.split(|&b| b == b'/').next().unwrap_or(token);
            name.eq_ignore_ascii_case(b"websocket")
        })
    })
}

/// Closes a socket accepted only to be refused (close mode), through the one closing
/// handshake ([`crate::close`]), which counts the close code.
#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
pub(crate) async fn close_with<S, M, E>(mut socket: S, rejection: &crate::Rejection)
where
    S: futures_util::Sink<M, Error = E> + futures_util::Stream<Item = Result<M, E>> + Unpin,
    M: crate::WsMessage,
{
    crate::close::close_with(&mut socket, crate::close::Closing::new(rejection)).await;
}

/// Runs a hand-off's callback on an upgraded socket: counts the accepted handshake now and,
/// when the callback's future ends, the connection's duration.
#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
pub(crate) fn run_upgraded<F>(handler: F) -> Upgraded<F>
where
    F: std::future::Future<Output = ()>,
{
    crate::telemetry::handshake_accepted();
    Upgraded {
        handler,
        opened: std::time::Instant::now(),
    }
}

#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
pin_project_lite::pin_project! {
    /// The future of [`run_upgraded`]: the callback's future, inline and only once (an
    /// `async fn` taking it would keep it twice for the socket's whole life,
    /// rust-lang/rust#62958), and when the connection opened.
    pub(crate) struct Upgraded<F> {
        #[pin]
        handler: F,
        opened: std::time::Instant,
    }
}

#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
impl<F> std::future::Future for Upgraded<F>
where
    F: std::future::Future<Output = ()>,
{
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.project();
        std::task::ready!(this.handler.poll(cx));
        crate::telemetry::connection_ended(this.opened.elapsed());
        std::task::Poll::Ready(())
    }
}

/// The read buffer a guarded socket starts with: 4 KiB instead of tungstenite's 128 KiB,
/// which keeps each idle connection about 130 KB smaller.
#[cfg(any(feature = "axum", feature = "tokio-tungstenite"))]
pub const DEFAULT_READ_BUFFER_SIZE: usize = 4 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_handshakes() {
        type Case = (&'static str, &'static [(&'static str, &'static str)], bool);
        let cases: &[Case] = &[
            ("GET", &[("upgrade", "websocket")], true),
            ("GET", &[("upgrade", "WebSocket")], true),
            ("GET", &[("upgrade", "h2c, websocket")], true),
            ("GET", &[("upgrade", "websocket/13")], true),
            ("GET", &[("upgrade", "h2c"), ("upgrade", "websocket")], true),
            ("POST", &[("upgrade", "websocket")], true),
            ("CONNECT", &[], true),
            ("GET", &[], false),
            ("GET", &[("upgrade", "h2c")], false),
            ("GET", &[("upgrade", "websockets")], false),
            ("GET", &[("connection", "websocket")], false),
        ];
        for (method, headers, expected) in cases {
            let mut req = Request::builder().method(*method);
            for (name, value) in *headers {
                req = req.header(*name, *value);
            }
            let req = req.body(()).unwrap();
            assert_eq!(
                is_websocket_upgrade(&req),
                *expected,
                "{method} {headers:?}"
            );
        }
    }
}
