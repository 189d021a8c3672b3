//! RFC 8725 ("JWT Best Current Practices") attacks, each its own test, and the tokens that
//! must pass: every supported algorithm and the RFC 7515 appendix A examples.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::*;
use http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey};
use tower::ServiceBuilder;
use wsguard_jwt_auth::{
    jwk::Jwk, ConfigError, Failure, JwtAuthLayer, KeySet, TokenSource, VerifyingKey,
};

type Layer = JwtAuthLayer<serde_json::Value>;

async fn run(layer: Layer, req: Request<()>) -> http::Response<String> {
    let mut svc = ServiceBuilder::new().layer(layer).service_fn(inner);
    call(&mut svc, req).await
}

fn hs_layer() -> Layer {
    JwtAuthLayer::new(hs256_key())
}

async fn assert_refused(layer: Layer, token: &str, expected: Failure) {
    let res = run(layer, bearer(token)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{expected}");
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\"",
        "{expected}"
    );
    assert_eq!(failure(&res), Some(expected));
    assert_eq!(res.body(), "invalid token");
}

// --- The RFC 7515 appendix A examples, with their published keys. -----------------------

/// The payload the RFC 7515 examples share: `{"iss":"joe",\r\n "exp":1300819380,\r\n
/// "http://example.com/is_root":true}`.
const RFC_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt\
    cGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

/// A layer for the RFC examples: their clock is fixed before their `exp` (1300819380,
/// March 2011), and their only identity claim is `iss`.
fn rfc_layer(key: VerifyingKey) -> Layer {
    JwtAuthLayer::new(key)
        .principal_claim("iss")
        .unwrap()
        .with_clock(|| UNIX_EPOCH + Duration::from_secs(1_300_819_000))
}

async fn assert_rfc_accepts(key: VerifyingKey, token: &str) {
    let res = run(rfc_layer(key), bearer(token)).await;
    assert_eq!(res.status(), StatusCode::OK, "{:?}", failure(&res));
    assert!(
        res.body().contains("principal=Some(\"joe\")"),
        "{}",
        res.body()
    );
    assert!(res.body().contains(r#""http://example.com/is_root":true"#));
}

#[tokio::test]
async fn rfc7515_a1_hs256() {
    // RFC 7515 appendix A.1: the JWK `k` and the token of A.1.1.
    let jwk: Jwk = serde_json::from_str(
        r#"{"kty":"oct","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#,
    )
    .unwrap();
    let key = VerifyingKey::from_jwk_with_algorithm(&jwk, Algorithm::HS256).unwrap();
    let token = format!(
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.{RFC_PAYLOAD}.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
    assert_rfc_accepts(key.clone(), &token).await;
    // The clock matters: at the real time the example has long expired.
    let res = run(
        JwtAuthLayer::new(key).principal_claim("iss").unwrap(),
        bearer(&token),
    )
    .await;
    assert_eq!(failure(&res), Some(Failure::Expired));
}

#[tokio::test]
async fn rfc7515_a2_rs256() {
    // RFC 7515 appendix A.2: the public part (`n`, `e`) of the A.2.1 key, and the token.
    let n = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    let key = VerifyingKey::rsa_components(Algorithm::RS256, n, "AQAB").unwrap();
    let signature = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{RFC_PAYLOAD}.{signature}");
    assert_rfc_accepts(key, &token).await;
}

#[tokio::test]
async fn rfc7515_a3_es256() {
    // RFC 7515 appendix A.3: the public part (`x`, `y`) of the A.3.1 key, and the token.
    let key = VerifyingKey::ec_components(
        Algorithm::ES256,
        "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    )
    .unwrap();
    let signature =
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    let token = format!("eyJhbGciOiJFUzI1NiJ9.{RFC_PAYLOAD}.{signature}");
    assert_rfc_accepts(key, &token).await;
}

#[tokio::test]
async fn every_supported_algorithm() {
    let keys =
        KeySet::from_keys(ALL.map(|alg| decoding(alg).with_kid(format!("{alg:?}")))).unwrap();
    let layer: Layer = JwtAuthLayer::new(keys);
    for alg in ALL {
        let header = format!(r#"{{"alg":"{alg:?}","kid":"{alg:?}"}}"#);
        let token = sign(&header, &claims(""), alg, &encoding(alg));
        let res = run(layer.clone(), bearer(&token)).await;
        assert_eq!(res.status(), StatusCode::OK, "{alg:?}: {:?}", failure(&res));
        assert!(res.body().contains("principal=Some(\"alice\")"), "{alg:?}");
        assert!(res.body().contains("expiry=true"), "{alg:?}");
    }
}

// --- RFC 8725 section 2 attacks, one test each. -----------------------------------------

#[tokio::test]
async fn alg_none_is_refused() {
    // RFC 8725 section 2.1; the unsecured JWS of RFC 7515 appendix A.5, against the A.1 key.
    let jwk: Jwk = serde_json::from_str(
        r#"{"kty":"oct","alg":"HS256","k":"AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"}"#,
    )
    .unwrap();
    let token = format!("eyJhbGciOiJub25lIn0.{RFC_PAYLOAD}.");
    assert_refused(
        rfc_layer(VerifyingKey::from_jwk(&jwk).unwrap()),
        &token,
        Failure::BadHeader,
    )
    .await;
    // Spelled differently, or with a signature appended: still no algorithm called none.
    for header in [
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
    ] {
        let token = format!("{}.{}.{}", b64(header), b64(claims("")), b64("x"));
        assert_refused(hs_layer(), &token, Failure::BadHeader).await;
    }
}

#[tokio::test]
async fn algorithm_confusion_hs256_with_the_rsa_public_key_as_secret() {
    // RFC 8725 section 2.1: an HS256 token whose HMAC secret is the RS256 key's public PEM
    // must not verify against that RSA key.
    let rsa = VerifyingKey::rsa_pem(Algorithm::RS256, RSA_PUBLIC).unwrap();
    let forged = sign(
        r#"{"alg":"HS256"}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC),
    );
    assert_refused(
        JwtAuthLayer::new(rsa.clone()),
        &forged,
        Failure::AlgorithmMismatch,
    )
    .await;
    // The same with the key's `kid` in the header.
    let forged = sign(
        r#"{"alg":"HS256","kid":"rsa"}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC),
    );
    let keys = KeySet::from_keys([rsa.with_kid("rsa")]).unwrap();
    assert_refused(JwtAuthLayer::new(keys), &forged, Failure::AlgorithmMismatch).await;
    // And the key cannot be made an HMAC key in configuration either.
    assert!(matches!(
        VerifyingKey::rsa_pem(Algorithm::HS256, RSA_PUBLIC),
        Err(ConfigError::AlgorithmMismatch { .. })
    ));
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let keys = KeySet::from_keys([hs256_key().with_kid("2024")]).unwrap();
    let token = sign(
        r#"{"alg":"HS256","kid":"2025"}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    );
    assert_refused(JwtAuthLayer::new(keys.clone()), &token, Failure::UnknownKey).await;
    // A token without a `kid`, when every key has one.
    assert_refused(
        JwtAuthLayer::new(keys),
        &hs256(&claims("")),
        Failure::UnknownKey,
    )
    .await;
}

#[tokio::test]
async fn kid_pointing_at_a_key_of_another_family_is_refused() {
    // RFC 8725 section 2.1 / 3.1: the `kid` selects an ES256 key, the token says HS256 and
    // is signed with the key's public PEM as secret; and the reverse, an ES256 token naming
    // the HMAC key.
    let keys = KeySet::from_keys([
        VerifyingKey::ec_pem(Algorithm::ES256, P256_PUBLIC)
            .unwrap()
            .with_kid("ec"),
        hs256_key().with_kid("hmac"),
    ])
    .unwrap();
    let layer: Layer = JwtAuthLayer::new(keys);
    let forged = sign(
        r#"{"alg":"HS256","kid":"ec"}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(P256_PUBLIC),
    );
    assert_refused(layer.clone(), &forged, Failure::AlgorithmMismatch).await;
    let es = sign(
        r#"{"alg":"ES256","kid":"hmac"}"#,
        &claims(""),
        Algorithm::ES256,
        &encoding(Algorithm::ES256),
    );
    assert_refused(layer, &es, Failure::AlgorithmMismatch).await;
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    // RFC 8725 section 3.8.
    let layer = hs_layer().with_issuers(["https://issuer.example"]);
    let token = hs256(&claims(r#""iss":"https://evil.example""#));
    assert_refused(layer.clone(), &token, Failure::WrongIssuer).await;
    let token = hs256(&claims(""));
    assert_refused(layer.clone(), &token, Failure::WrongIssuer).await;
    let token = hs256(&claims(r#""iss":"https://issuer.example""#));
    assert_eq!(run(layer, bearer(&token)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    // RFC 8725 section 3.9.
    let layer = hs_layer().with_audiences(["chat"]);
    for aud in [r#""aud":"billing""#, r#""aud":["billing","admin"]"#, ""] {
        assert_refused(layer.clone(), &hs256(&claims(aud)), Failure::WrongAudience).await;
    }
    for aud in [r#""aud":"chat""#, r#""aud":["billing","chat"]"#] {
        let res = run(layer.clone(), bearer(&hs256(&claims(aud)))).await;
        assert_eq!(res.status(), StatusCode::OK, "{aud}");
    }
    // A token meant for an audience is refused by a layer that names none.
    assert_refused(
        hs_layer(),
        &hs256(&claims(r#""aud":"chat""#)),
        Failure::WrongAudience,
    )
    .await;
}

#[tokio::test]
async fn expired_token_is_refused_distinguishably() {
    let token = hs256(&format!(r#"{{"sub":"alice","exp":{}}}"#, unix_now() - 61));
    let res = run(hs_layer(), bearer(&token)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"token expired\""
    );
    assert_eq!(res.body(), "token expired");
    assert_eq!(failure(&res), Some(Failure::Expired));
    // Within the leeway (60 s by default), it passes; with no leeway, it does not.
    let token = hs256(&format!(r#"{{"sub":"alice","exp":{}}}"#, unix_now() - 30));
    assert_eq!(
        run(hs_layer(), bearer(&token)).await.status(),
        StatusCode::OK
    );
    let res = run(hs_layer().leeway(Duration::ZERO), bearer(&token)).await;
    assert_eq!(failure(&res), Some(Failure::Expired));
    // Without `exp` at all.
    assert_refused(
        hs_layer(),
        &hs256(r#"{"sub":"alice"}"#),
        Failure::MissingClaim,
    )
    .await;
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let token = hs256(&claims(&format!(r#""nbf":{}"#, unix_now() + 120)));
    assert_refused(hs_layer(), &token, Failure::NotYetValid).await;
    let token = hs256(&claims(&format!(r#""nbf":{}"#, unix_now() + 30)));
    assert_eq!(
        run(hs_layer(), bearer(&token)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn tampered_payload_with_the_original_signature_is_refused() {
    let token = hs256(&claims(r#""role":"user""#));
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64(claims(r#""role":"admin""#));
    assert_refused(hs_layer(), &parts.join("."), Failure::BadSignature).await;
    // A signature from another key.
    let other = sign(
        r#"{"alg":"HS256"}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(&[1; 32]),
    );
    assert_refused(hs_layer(), &other, Failure::BadSignature).await;
    // No signature.
    let unsigned = token.rsplit_once('.').unwrap().0.to_owned() + ".";
    assert_refused(hs_layer(), &unsigned, Failure::BadSignature).await;
}

#[tokio::test]
async fn token_over_the_size_cap_is_refused_before_decoding() {
    // A valid token with a large claim, just over the default 8 KiB.
    let token = hs256(&claims(&format!(r#""pad":"{}""#, "x".repeat(6200))));
    assert!(token.len() > 8192);
    assert_refused(hs_layer(), &token, Failure::TooLong).await;
    assert_eq!(
        run(hs_layer().max_token_len(16 * 1024), bearer(&token))
            .await
            .status(),
        StatusCode::OK
    );
    // Garbage over the cap is "too long", not "malformed": the length is looked at first.
    assert_refused(hs_layer(), &"%".repeat(9000), Failure::TooLong).await;
}

#[tokio::test]
async fn two_tokens_in_one_request_are_refused() {
    // RFC 6750 section 3.1: more than one method of sending the token is an invalid request.
    let token = hs256(&claims(""));
    let layer = hs_layer()
        .with_token_sources([TokenSource::bearer(), TokenSource::query("token").unwrap()])
        .unwrap();
    let req = Request::builder()
        .uri(format!("/ws?token={token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let res = run(layer, req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(failure(&res), Some(Failure::MultipleTokens));
    // Two Authorization headers.
    let req = Request::builder()
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    assert_eq!(
        failure(&run(hs_layer(), req).await),
        Some(Failure::MultipleTokens)
    );
}

// --- More of the same family. ------------------------------------------------------------

#[tokio::test]
async fn missing_token_gets_the_bare_challenge() {
    let res = run(hs_layer(), Request::new(())).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(failure(&res), Some(Failure::Missing));
}

#[tokio::test]
async fn critical_headers_and_wrong_types_are_refused() {
    // RFC 7515 section 4.1.11: no extension is understood, so `crit` is refused.
    let token = sign(
        r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    );
    assert_refused(hs_layer(), &token, Failure::CriticalHeader).await;
    // RFC 8725 section 3.11: explicit typing.
    let layer = hs_layer().require_type("at+jwt");
    assert_refused(layer.clone(), &hs256(&claims("")), Failure::WrongType).await;
    let token = sign(
        r#"{"alg":"HS256","typ":"application/at+jwt"}"#,
        &claims(""),
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    );
    assert_eq!(run(layer, bearer(&token)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn claims_that_parse_two_ways_are_refused() {
    // RFC 7519 section 4: duplicate claim names are refused rather than resolved.
    let exp = unix_now() + 3600;
    let token = hs256(&format!(r#"{{"sub":"alice","exp":{exp},"exp":1}}"#));
    assert_refused(hs_layer(), &token, Failure::BadClaims).await;
    let token = hs256(&format!(r#"{{"sub":"alice","exp":"{exp}"}}"#));
    assert_refused(hs_layer(), &token, Failure::BadClaims).await;
    assert_refused(hs_layer(), &hs256("[1,2]"), Failure::BadClaims).await;
    // Not three base64url parts.
    for token in ["a.b", "a.b.c.d", "a..c", "a.b+.c", ""] {
        assert_refused(hs_layer(), token, Failure::Malformed).await;
    }
}

#[test]
fn weak_keys_are_configuration_errors() {
    assert!(matches!(
        VerifyingKey::hmac(Algorithm::HS256, b"short secret"),
        Err(ConfigError::HmacSecretTooShort { min_len: 32, .. })
    ));
    assert!(matches!(
        VerifyingKey::rsa_pem(Algorithm::RS256, RSA_1024_PUBLIC),
        Err(ConfigError::RsaKeyTooSmall { bits: 1024 })
    ));
    assert!(matches!(
        VerifyingKey::ec_pem(Algorithm::ES384, P256_PUBLIC),
        Err(ConfigError::AlgorithmMismatch { .. })
    ));
    assert!(matches!(
        VerifyingKey::ec_pem(Algorithm::ES256, RSA_PUBLIC),
        Err(ConfigError::InvalidKey { .. })
    ));
    let jwk: Jwk = serde_json::from_str(
        r#"{"kty":"EC","crv":"P-256","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
    )
    .unwrap();
    assert!(matches!(
        VerifyingKey::from_jwk_with_algorithm(&jwk, Algorithm::ES256),
        Err(ConfigError::UnsupportedJwk { .. })
    ));
}
