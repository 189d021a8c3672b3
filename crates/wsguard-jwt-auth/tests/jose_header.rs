//! JOSE header parameters that would change what is verified: one table, each row signed
//! with the right key, so that only the header decides. Sources: RFC 7515 (JWS), RFC 7797
//! (unencoded payload), RFC 7516 and 7518 (JWE), RFC 7519 (JWT), RFC 8725 (JWT BCP).

mod common;

use common::*;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey};
use tower::ServiceBuilder;
use wsguard_jwt_auth::{Failure, HeaderParameter as P, JwtAuthLayer};

/// A token of valid claims under the literal `header`, signed with the layer's HS256 secret.
fn signed(header: &str) -> String {
    sign(
        header,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    )
}

/// `None`: accepted (200). `Some(failure)`: refused with 401 `invalid_token`.
type Expected = Option<Failure>;

const OK: Expected = None;
const BAD: Expected = Some(Failure::BadHeader);
const CRIT: Expected = Some(Failure::CriticalHeader);

const fn unsupported(param: P) -> Expected {
    Some(Failure::UnsupportedHeader(param))
}

const fn duplicate(param: P) -> Expected {
    Some(Failure::DuplicateHeader(param))
}

#[rustfmt::skip]
const CASES: &[(&str, Expected)] = &[
    // --- Accepted: `alg`, `kid`, `typ` are read; the rest can never change the outcome. ---
    // RFC 7515 section 4.1.1; appendix A.2 and A.3 headers.
    (r#"{"alg":"HS256"}"#, OK),
    // RFC 7515 appendix A.1, byte for byte (CRLF and a space inside the object).
    ("{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}", OK),
    // RFC 7515 sections 4.1.4 and 4.1.9; RFC 7519 section 5.1. An unknown `kid` falls back
    // to the key without one.
    (r#"{"alg":"HS256","typ":"JWT","kid":"2024-05"}"#, OK),
    // RFC 7515 section 4.1.10: a `cty` that is not a nested token only describes the payload.
    (r#"{"alg":"HS256","cty":"application/json"}"#, OK),
    // RFC 7515 sections 4.1.7 and 4.1.8: thumbprints carry no key (Entra ID tokens have
    // `x5t` next to `kid`).
    (r#"{"alg":"HS256","x5t":"nOo3ZDrODXEK1jKWhXslHR_KXEg","kid":"k"}"#, OK),
    (r#"{"alg":"HS256","x5t#S256":"aW52YWxpZA"}"#, OK),
    // RFC 7515 section 4: a parameter that is not understood and not in `crit` is ignored.
    (r#"{"alg":"HS256","foo":"bar"}"#, OK),
    (r#"{"alg":"HS256","ext":{"deep":[1,{"a":null}],"b64":false}}"#, OK),
    // Names are case-sensitive (RFC 7515 section 4): `B64` is not `b64`.
    (r#"{"alg":"HS256","B64":false,"CRIT":["x"]}"#, OK),
    // RFC 8555 sections 6.4 and 6.5.2 (ACME) and RFC 7519 section 5.3 (claims replicated in
    // the header): not read, so ignored.
    (r#"{"alg":"HS256","url":"https://x.example","nonce":"n","iss":"mallory","sub":"root"}"#, OK),
    // A duplicate of an ignored name: neither copy is read.
    (r#"{"alg":"HS256","foo":1,"foo":2}"#, OK),
    // A JSON escape in a name is the same name (RFC 8259 section 7).
    (r#"{"\u0061lg":"HS256"}"#, OK),
    (" { \"alg\" : \"HS256\" } \n", OK),

    // --- RFC 7797: `b64`, refused whatever its value. ---
    // Section 7: JWTs must not use the unencoded payload option. The input of issue 11.
    (r#"{"alg":"HS256","b64":false}"#, unsupported(P::B64)),
    // Section 3: `true` is the default meaning, but a signer that writes it without `crit`
    // (section 6) does not follow RFC 7797 either.
    (r#"{"alg":"HS256","b64":true}"#, unsupported(P::B64)),
    (r#"{"alg":"HS256","b64":"false"}"#, unsupported(P::B64)),
    (r#"{"alg":"HS256","b64":null}"#, unsupported(P::B64)),
    (r#"{"b\u0036\u0034":false,"alg":"HS256"}"#, unsupported(P::B64)),
    // Section 4.2's example header, with `crit` as section 6 requires.
    (r#"{"alg":"HS256","b64":false,"crit":["b64"]}"#, CRIT),

    // --- RFC 7515 section 4.1.11: `crit`, refused whatever it names. ---
    // The section's own example.
    (r#"{"alg":"HS256","crit":["exp"],"exp":1363284000}"#, CRIT),
    // Producers must not send `[]`.
    (r#"{"alg":"HS256","crit":[]}"#, CRIT),
    (r#"{"alg":"HS256","crit":["foo"],"foo":1}"#, CRIT),
    // A `crit` naming a parameter this specification defines (RFC 7515 lets recipients refuse).
    (r#"{"alg":"HS256","crit":["alg"]}"#, CRIT),
    (r#"{"alg":"HS256","crit":"b64"}"#, CRIT),
    (r#"{"alg":"HS256","crit":null}"#, CRIT),

    // --- RFC 8725 sections 2.9 and 3.10: the token never names or carries its own key. ---
    (r#"{"alg":"HS256","jku":"https://attacker.example/jwks.json"}"#, unsupported(P::Jku)),
    (r#"{"alg":"HS256","x5u":"https://attacker.example/cert.pem"}"#, unsupported(P::X5u)),
    // CVE-2018-0114: the embedded JWK of the attacker (RFC 7515 section 4.1.3).
    (r#"{"alg":"HS256","jwk":{"kty":"oct","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}}"#, unsupported(P::Jwk)),
    (r#"{"alg":"HS256","x5c":["MIIB"]}"#, unsupported(P::X5c)),
    (r#"{"alg":"HS256","kid":"k","jku":"https://issuer.example/jwks"}"#, unsupported(P::Jku)),

    // --- RFC 7516 and RFC 7518: JWE parameters in a JWS (RFC 8725 sections 2.8, 3.12). ---
    (r#"{"alg":"HS256","enc":"A128GCM"}"#, unsupported(P::Enc)),
    // RFC 7516 section 4.1.3. Some JWS producers compress the payload under `zip` (SMART
    // Health Cards): a verifier that ignores it reads other claims than were signed.
    (r#"{"alg":"HS256","zip":"DEF"}"#, unsupported(P::Zip)),
    (r#"{"alg":"HS256","epk":{"kty":"EC"},"apu":"QWxpY2U","apv":"Qm9i"}"#, unsupported(P::Epk)),
    (r#"{"alg":"HS256","p2s":"c2FsdA","p2c":4096}"#, unsupported(P::P2s)),
    (r#"{"alg":"HS256","iv":"AAAA","tag":"AAAA"}"#, unsupported(P::Iv)),

    // --- RFC 7519 section 5.2 and 7.2 step 8: a nested token is not unwrapped (RFC 8725
    // section 2.3), so it is refused, spelled any way `typ` may be. ---
    (r#"{"alg":"HS256","cty":"JWT"}"#, unsupported(P::Cty)),
    (r#"{"alg":"HS256","cty":"jwt"}"#, unsupported(P::Cty)),
    (r#"{"alg":"HS256","cty":"application/JWT"}"#, unsupported(P::Cty)),
    // RFC 7515 section 9.2: a JWS or JWE as the payload.
    (r#"{"alg":"HS256","cty":"JOSE"}"#, unsupported(P::Cty)),
    (r#"{"alg":"HS256","cty":"application/jose+json"}"#, unsupported(P::Cty)),

    // --- RFC 7515 sections 4 and 10.12: duplicate names are refused, not resolved. ---
    // A last-wins parser reads HS256 and a first-wins parser HS512.
    (r#"{"alg":"HS512","alg":"HS256"}"#, duplicate(P::Alg)),
    (r#"{"alg":"HS256","alg":"HS256"}"#, duplicate(P::Alg)),
    (r#"{"alg":"HS256","\u0061lg":"HS256"}"#, duplicate(P::Alg)),
    (r#"{"alg":"HS256","kid":"a","kid":"b"}"#, duplicate(P::Kid)),
    (r#"{"alg":"HS256","typ":"at+jwt","typ":"JWT"}"#, duplicate(P::Typ)),
    (r#"{"alg":"HS256","cty":"json","cty":"JWT"}"#, duplicate(P::Cty)),
    (r#"{"alg":"HS256","crit":["x"],"crit":[]}"#, duplicate(P::Crit)),
    (r#"{"alg":"HS256","x5t":"a","x5t":"b"}"#, duplicate(P::X5t)),
    // Whatever the order, a duplicate is reported before what it duplicates.
    (r#"{"alg":"HS256","b64":false,"b64":true}"#, duplicate(P::B64)),

    // --- Not a header at all (RFC 7515 section 5.2 steps 2-4; RFC 8725 section 2.1). ---
    (r#"{"typ":"JWT"}"#, BAD),
    (r#"{"alg":"none"}"#, BAD),
    (r#"{"alg":"hs256"}"#, BAD),
    (r#"{"alg":null}"#, BAD),
    (r#"{"alg":["HS256"]}"#, BAD),
    (r#"{"alg":"none","alg":"HS256"}"#, BAD),
    (r#"{"alg":"HS256","kid":7}"#, BAD),
    (r#"{"alg":"HS256","kid":null}"#, BAD),
    (r#"{"alg":"HS256","typ":{"v":"JWT"}}"#, BAD),
    (r#"{"alg":"HS256","cty":1}"#, BAD),
    (r#"{"alg":"HS256"}{}"#, BAD),
    (r#"{"alg":"HS256"} x"#, BAD),
    (r#"{"alg":"HS256",}"#, BAD),
    (r#"[{"alg":"HS256"}]"#, BAD),
    (r#""HS256""#, BAD),
    // A lone surrogate is not text (RFC 8725 section 3.7), in a read value or in a name.
    (r#"{"alg":"HS256","kid":"\ud800"}"#, BAD),
    (r#"{"alg":"HS256","\udc00":1}"#, BAD),
    // Malformed JSON anywhere wins over what the rest would have said.
    (r#"{"alg":"HS256","b64":false,"crit":[}"#, BAD),
];

#[tokio::test]
async fn header_parameters_table() {
    let layer: JwtAuthLayer<serde_json::Value> = JwtAuthLayer::new(hs256_key());
    let mut svc = ServiceBuilder::new().layer(layer).service_fn(inner);
    for &(header, expected) in CASES {
        let res = call(&mut svc, bearer(&signed(header))).await;
        match expected {
            None => {
                assert_eq!(
                    res.status(),
                    StatusCode::OK,
                    "{header}: {:?}",
                    failure(&res)
                );
                assert!(res.body().contains("principal=Some(\"alice\")"), "{header}");
            }
            Some(expected) => {
                assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
                assert_eq!(failure(&res), Some(expected), "{header}");
                assert_eq!(
                    res.headers()["www-authenticate"],
                    "Bearer error=\"invalid_token\"",
                    "{header}"
                );
                assert_eq!(res.body(), "invalid token", "{header}");
            }
        }
    }
}

#[tokio::test]
async fn a_long_header_is_read_like_a_short_one() {
    // Past the stack buffer (192 bytes of JSON), the header is decoded on the heap: the same
    // answers.
    let layer: JwtAuthLayer<serde_json::Value> = JwtAuthLayer::new(hs256_key());
    let mut svc = ServiceBuilder::new().layer(layer).service_fn(inner);
    let pad = "p".repeat(400);
    for (header, expected) in [
        (format!(r#"{{"alg":"HS256","pad":"{pad}"}}"#), None),
        (
            format!(r#"{{"alg":"HS256","pad":"{pad}","b64":false}}"#),
            unsupported(P::B64),
        ),
        (
            format!(r#"{{"alg":"HS256","pad":"{pad}","alg":"HS256"}}"#),
            duplicate(P::Alg),
        ),
    ] {
        assert!(b64(&header).len() > 256);
        let res = call(&mut svc, bearer(&signed(&header))).await;
        assert_eq!(failure(&res), expected, "{header}");
    }
    // At the edges of the buffer: 191, 192 and 193 bytes of JSON.
    for len in [191, 192, 193] {
        let fill = "f".repeat(len - r#"{"alg":"HS256","f":""}"#.len());
        let header = format!(r#"{{"alg":"HS256","f":"{fill}"}}"#);
        assert_eq!(header.len(), len);
        let res = call(&mut svc, bearer(&signed(&header))).await;
        assert_eq!(res.status(), StatusCode::OK, "{len}: {:?}", failure(&res));
    }
}

#[test]
fn failures_name_the_parameter_from_a_fixed_set() {
    assert_eq!(
        Failure::UnsupportedHeader(P::B64).as_str(),
        "unsupported_header"
    );
    assert_eq!(
        Failure::DuplicateHeader(P::Alg).as_str(),
        "duplicate_header"
    );
    assert_eq!(
        Failure::UnsupportedHeader(P::X5tS256).header_parameter(),
        Some(P::X5tS256)
    );
    assert_eq!(P::X5tS256.as_str(), "x5t#S256");
    assert_eq!(P::Unknown.as_str(), "unknown");
    assert_eq!(Failure::CriticalHeader.header_parameter(), None);
    assert_eq!(
        Failure::UnsupportedHeader(P::B64).reason(),
        wsguard_core::Reason::TokenInvalid
    );
}
