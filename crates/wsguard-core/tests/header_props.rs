//! Property tests for the header parsing in wsguard-core: it never panics, and it agrees with
//! a plain model of the grammar.

use http::{HeaderValue, Request};
use proptest::prelude::*;
use wsguard_core::{is_websocket_upgrade, HeaderKey, KeyExtractor, RequestHead};

/// Arbitrary bytes that are valid in a header value (visible ASCII, space, tab, obs-text).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b' '),
            Just(b','),
            Just(b'/'),
            Just(b'\t'),
            0x21u8..0x7f,
            0x80u8..=0xff,
            // Bias towards the interesting tokens.
            Just(b'w'),
        ],
        0..64,
    )
}

fn tokens() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("websocket".to_owned()),
            Just("WebSocket".to_owned()),
            Just("websocket/13".to_owned()),
            Just("h2c".to_owned()),
            Just("websockets".to_owned()),
            Just("".to_owned()),
            "[a-z0-9/]{0,12}",
        ],
        0..5,
    )
    .prop_map(|t| t.join(", "))
}

fn model(upgrade: &str) -> bool {
    upgrade.split(',').any(|t| {
        let t = t.trim_matches([' ', '\t']);
        t.split('/')
            .next()
            .unwrap_or(t)
            .eq_ignore_ascii_case("websocket")
    })
}

proptest! {
    #[test]
    fn upgrade_detection_never_panics(bytes in header_bytes(), method in "(GET|POST|CONNECT|PUT)") {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let req = Request::builder()
            .method(method.as_str())
            .header("upgrade", value)
            .body(())
            .unwrap();
        let detected = is_websocket_upgrade(&req);
        if method == "CONNECT" {
            prop_assert!(detected);
        }
    }

    #[test]
    fn upgrade_detection_matches_the_token_grammar(list in tokens()) {
        let req = Request::get("/").header("upgrade", list.as_str()).body(()).unwrap();
        prop_assert_eq!(is_websocket_upgrade(&req), model(&list));
    }

    #[test]
    fn header_keys_never_panic_and_stay_bounded(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let req = Request::get("/").header("x-key", value).body(()).unwrap();
        let extractor = HeaderKey::new(http::HeaderName::from_static("x-key"));
        if let Ok(key) = extractor.extract(&RequestHead::from_request(&req)) {
            prop_assert!(key.heap_size() <= HeaderKey::MAX_LEN);
        }
    }
}

#[cfg(feature = "tokio-tungstenite")]
mod handshake {
    use super::*;
    use wsguard_core::tungstenite::GuardedUpgrade;

    proptest! {
        #[test]
        fn handshake_parsing_never_panics(
            connection in header_bytes(),
            upgrade in header_bytes(),
            protocols in header_bytes(),
            key in header_bytes(),
        ) {
            let mut req = Request::get("/");
            for (name, bytes) in [
                ("connection", &connection),
                ("upgrade", &upgrade),
                ("sec-websocket-protocol", &protocols),
                ("sec-websocket-key", &key),
            ] {
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    req = req.header(name, value);
                }
            }
            let mut req = req.header("sec-websocket-version", "13").body(()).unwrap();
            // No hyper `OnUpgrade` in a hand-built request: at best `NotUpgradable`.
            let result = GuardedUpgrade::from_request(&mut req);
            prop_assert!(result.is_err());
        }
    }
}
