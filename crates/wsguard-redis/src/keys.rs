//! Key names: what a `wsguard_core::Key` becomes inside a Redis key name, and the hash that
//! names a token's `jti`.

use sha2::{Digest, Sha256};
use wsguard_core::Key;

/// The bytes that name `key` inside a Redis key: its class, then its value. The class keeps
/// keys of different kinds apart (`ip:192.0.2.1` and `principal:192.0.2.1`). Addresses,
/// networks and principals are kept readable; a header's or a custom key's value (an API
/// key id, say: possibly a secret) is named by a hash, as a `jti` is ([`jti_part`]), so it
/// never shows in `KEYS`, `MONITOR` or a slow log.
///
/// A kind of key this crate does not know yet (`Key` is non-exhaustive) is named by its
/// class alone: all keys of that kind then share one count, which refuses too much, never
/// too little.
pub(crate) fn key_part(key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(key.class().as_bytes());
    out.push(b':');
    match key {
        Key::Global => out.push(b'-'),
        Key::Ip(ip) => out.extend_from_slice(ip.to_string().as_bytes()),
        Key::Net(net) => out.extend_from_slice(net.to_string().as_bytes()),
        Key::Principal(principal) => out.extend_from_slice(principal.as_str().as_bytes()),
        Key::Header(value) => out.extend_from_slice(&hash_part(value.as_bytes())),
        Key::Custom(value) => out.extend_from_slice(&hash_part(value.as_bytes())),
        _ => out.push(b'?'),
    }
    out
}

/// The name of a `jti` (or of a header's or custom key's value) inside a key: the first 128
/// bits of its SHA-256, in hex. A `jti` is not a secret, but it can be long and is chosen by
/// whoever issues tokens; hashing keeps key names short and free of token material.
pub(crate) fn jti_part(jti: &str) -> Vec<u8> {
    hash_part(jti.as_bytes())
}

/// The first 128 bits of the SHA-256 of `value`, in hex.
fn hash_part(value: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(value);
    let mut out = Vec::with_capacity(32);
    for byte in &digest[..16] {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use wsguard_core::Principal;

    use super::*;

    #[test]
    fn classes_keep_kinds_apart() {
        let ip = key_part(&Key::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        let principal = key_part(&Key::Principal(Principal::new("192.0.2.1")));
        assert_eq!(ip, b"ip:192.0.2.1");
        assert_eq!(principal, b"principal:192.0.2.1");
        assert_eq!(key_part(&Key::Global), b"global:-");
    }

    #[test]
    fn header_and_custom_values_are_hashed() {
        let secret = "sk_live_0123456789abcdef";
        for (key, class) in [
            (Key::Header(secret.parse().unwrap()), "header"),
            (Key::Custom(secret.into()), "custom"),
        ] {
            assert_eq!(key.class(), class);
            let name = key_part(&key);
            let expected = [class.as_bytes(), b":", &jti_part(secret)].concat();
            assert_eq!(name, expected);
            assert!(!String::from_utf8_lossy(&name).contains(secret));
        }
    }

    #[test]
    fn jti_names_are_short_hex_and_never_the_value() {
        let name = jti_part("a-very-long-token-identifier-0123456789");
        assert_eq!(name.len(), 32);
        assert!(name.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(jti_part("a"), jti_part("b"));
    }
}
