//! End to end: JWT (every algorithm with inline keys; RSA and EC keys from a JWKS served
//! over HTTP, refreshed and rotated) and the HTTP authentication service, each against a
//! real HTTP server on a loopback port. Every refusal with its exact CONNACK code. Keys are
//! made in the test: EC with rcgen, RSA with the `openssl` command (ring cannot generate
//! RSA keys).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aviary::auth::{HttpMethod, HttpSettings, JwtKeys, JwtSettings, TokenField};
use aviary_codec::ProtocolVersion;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const V3: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// One HTTP request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

/// A tiny HTTP/1.1 server on a loopback port: each request (one per connection) goes to
/// `answer`, which returns the status and body. Counts the requests. It stops with the
/// test's runtime.
async fn http_server(
    answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Bounded: a request in these tests is far below 64 KiB.
                while buf.len() < 65536 {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let head = text[..end].to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body = text[end + 4..end + 4 + len].to_string();
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = answer(&Seen { head, body });
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    return;
                }
            });
        }
    });
    (addr, count)
}

async fn expect_code(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
    code: u8,
) -> RawClient {
    let (mut c, got) = connect_code(addr, version, client_id, user, password).await;
    assert_eq!(got, code, "CONNACK code for {client_id}");
    if code != 0 {
        c.expect_closed().await;
    }
    c
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_hs256_checks_signature_expiry_client_id_and_grants() {
    let secret = b"test-secret-0123456789".to_vec();
    let (server, _dir) = start_server(|c| {
        c.security.auth.jwt = Some(JwtSettings {
            from: TokenField::Password,
            keys: JwtKeys::Secret(secret.clone()),
            algorithms: vec![Algorithm::HS256],
            client_id_claim: Some("clientid".into()),
            username_claim: "sub".into(),
            leeway: 0,
        });
    })
    .await;
    let addr = server.mqtt_addr();
    let exp = now() + 600;
    let good = hs256(
        &secret,
        serde_json::json!({"sub": "u1", "clientid": "c1", "exp": exp,
        "publish": ["up/${clientid}"], "subscribe": ["down/${clientid}/#"]}),
    );
    let mut c1 = expect_code(addr, V5, "c1", Some("ignored"), Some(good.as_bytes()), 0).await;

    // Grants decide publish/subscribe: 0x87 outside them.
    c1.subscribe(1, "down/c1/#", 0).await;
    c1.publish("up/c2", 1, 2, b"x").await;
    let ack = c1.read_frame().await;
    assert_eq!((ack.first, ack.body[2]), (0x40, 0x87));
    c1.publish("up/c1", 1, 3, b"x").await;
    let ack = c1.read_frame().await;
    assert_eq!(ack.first, 0x40);
    assert!(
        ack.body.len() == 2 || ack.body[2] < 0x80,
        "{}",
        to_hex(&ack.raw())
    );

    // Expired, not yet valid, wrongly signed: 0x86 / 4. Bound to another client id: 0x87.
    let expired = hs256(
        &secret,
        serde_json::json!({"clientid": "c2", "exp": now() - 10}),
    );
    expect_code(addr, V5, "c2", Some("u"), Some(expired.as_bytes()), 0x86).await;
    let early = hs256(
        &secret,
        serde_json::json!({"clientid": "c2", "exp": exp, "nbf": now() + 300}),
    );
    expect_code(addr, V3, "c2", Some("u"), Some(early.as_bytes()), 0x04).await;
    let forged = hs256(
        b"another-secret",
        serde_json::json!({"clientid": "c2", "exp": exp}),
    );
    expect_code(addr, V5, "c2", Some("u"), Some(forged.as_bytes()), 0x86).await;
    expect_code(addr, V5, "c3", Some("u"), Some(good.as_bytes()), 0x87).await;
    expect_code(addr, V3, "c3", Some("u"), Some(good.as_bytes()), 0x05).await;
    // No token at all: JWT is configured, so anonymous access is off.
    expect_code(addr, V5, "c4", None, None, 0x87).await;
    c1.ping().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn jwt_es256_keys_come_from_a_jwks_url() {
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let raw = key.public_key_raw(); // 0x04 || x || y
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]})
    .to_string();
    // Switched to documents without a usable key later in the test.
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = broken.clone();
    let (jwks_addr, fetches) = http_server(move |_| {
        if serving.load(Ordering::SeqCst) {
            (200, r#"{"keys":[]}"#.into())
        } else {
            (200, jwks.clone())
        }
    })
    .await;
    let (server, _dir) = start_server(|c| {
        c.security.auth.jwt = Some(JwtSettings {
            from: TokenField::Password,
            keys: JwtKeys::Jwks {
                url: format!("http://{jwks_addr}/jwks.json"),
                refresh: Duration::from_secs(3600),
            },
            algorithms: vec![Algorithm::ES256],
            client_id_claim: None,
            username_claim: "sub".into(),
            leeway: 0,
        });
    })
    .await;
    let addr = server.mqtt_addr();
    // The refresh task fetches at start; fetch once more here so the keys are surely in.
    let jwt = server.security().auth.jwt().unwrap();
    let client = aviary::auth::http_client_builder().build().unwrap();
    assert_eq!(jwt.refresh(&client).await.unwrap(), 1);
    assert!(fetches.load(Ordering::SeqCst) >= 1);

    let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "dev", "exp": now() + 600}),
        &encoding,
    )
    .unwrap();
    let mut ok = expect_code(addr, V5, "es", Some("x"), Some(token.as_bytes()), 0).await;
    // Signed by another key: refused.
    let other = rcgen::KeyPair::generate().unwrap();
    let other = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
    let bad =
        jsonwebtoken::encode(&header, &serde_json::json!({"exp": now() + 600}), &other).unwrap();
    expect_code(addr, V5, "es2", Some("x"), Some(bad.as_bytes()), 0x86).await;
    ok.ping().await;
    // A JWKS with no usable key does not replace the keys: the token still works.
    broken.store(true, Ordering::SeqCst);
    assert!(jwt.refresh(&client).await.is_err());
    drop(ok);
    expect_code(addr, V5, "es", Some("x"), Some(token.as_bytes()), 0).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_jwt_can_come_in_the_username_field() {
    let secret = b"username-field-secret".to_vec();
    let (server, _dir) = start_server(|c| {
        c.security.auth.jwt = Some(JwtSettings {
            from: TokenField::Username,
            keys: JwtKeys::Secret(secret.clone()),
            algorithms: vec![Algorithm::HS256],
            client_id_claim: None,
            username_claim: "sub".into(),
            leeway: 0,
        });
    })
    .await;
    let addr = server.mqtt_addr();
    let token = hs256(
        &secret,
        serde_json::json!({"sub": "dev", "exp": now() + 600}),
    );
    let mut ok = expect_code(addr, V5, "u1", Some(&token), None, 0).await;
    let bad = hs256(
        b"another",
        serde_json::json!({"sub": "dev", "exp": now() + 600}),
    );
    expect_code(addr, V5, "u2", Some(&bad), None, 0x86).await;
    ok.ping().await;
    server.shutdown().await.unwrap();
}

fn http_settings(addr: SocketAddr) -> HttpSettings {
    HttpSettings {
        url: format!("http://{addr}/auth?client=${{clientid}}"),
        method: HttpMethod::Post,
        headers: vec![("x-peer".into(), "${peerhost}".into())],
        timeout: Duration::from_secs(3),
        ..HttpSettings::default()
    }
}

#[tokio::test]
async fn http_service_allows_denies_grants_and_caches() {
    let (auth_addr, calls) = http_server(|seen| {
        assert!(seen.head.starts_with("POST /auth?client="), "{}", seen.head);
        assert!(
            seen.head.to_ascii_lowercase().contains("x-peer: 127.0.0.1"),
            "{}",
            seen.head
        );
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        match body["password"].as_str().unwrap() {
            "good" => (
                200,
                r#"{"result":"allow","publish":["t/${clientid}"],"subscribe":["t/#"]}"#.into(),
            ),
            "plain" => (200, String::new()),
            "deny" => (200, r#"{"result":"deny"}"#.into()),
            "bad" => (401, String::new()),
            "forbidden" => (403, String::new()),
            _ => (500, "oops".into()),
        }
    })
    .await;
    let (server, _dir) =
        start_server(|c| c.security.auth.http = Some(http_settings(auth_addr))).await;
    let addr = server.mqtt_addr();
    let mut h1 = expect_code(addr, V5, "h1", Some("u"), Some(b"good"), 0).await;
    let mut h2 = expect_code(addr, V3, "h2", Some("u"), Some(b"plain"), 0).await;
    h1.publish("other", 1, 1, b"x").await;
    let ack = h1.read_frame().await;
    assert_eq!((ack.first, ack.body[2]), (0x40, 0x87));
    expect_code(addr, V5, "h3", Some("u"), Some(b"deny"), 0x86).await;
    expect_code(addr, V5, "h3", Some("u"), Some(b"bad"), 0x86).await;
    expect_code(addr, V3, "h3", Some("u"), Some(b"forbidden"), 0x05).await;
    // A service error is "server unavailable", never an acceptance.
    expect_code(addr, V5, "h3", Some("u"), Some(b"error"), 0x88).await;
    expect_code(addr, V3, "h3", Some("u"), Some(b"error"), 0x03).await;

    // The same credentials again within the cache TTL: no new call.
    let before = calls.load(Ordering::SeqCst);
    drop(h1);
    let _again = expect_code(addr, V5, "h1", Some("u"), Some(b"good"), 0).await;
    assert_eq!(calls.load(Ordering::SeqCst), before);
    h2.ping().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_http_service_refuses_with_server_unavailable() {
    // A port that was bound and released: nothing listens there.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (server, _dir) = start_server(|c| c.security.auth.http = Some(http_settings(closed))).await;
    let addr = server.mqtt_addr();
    expect_code(addr, V5, "x", Some("u"), Some(b"pw"), 0x88).await;
    expect_code(addr, V3, "y", Some("u"), Some(b"pw"), 0x03).await;
    server.shutdown().await.unwrap();
}

/// An RSA key made by `openssl genrsa`: (private PKCS#1 PEM, public SPKI PEM, modulus).
fn rsa_key() -> (String, String, Vec<u8>) {
    let run = |args: &[&str], input: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the openssl command is needed for RSA test keys");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl {args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let private = run(&["genrsa", "-traditional", "2048"], "");
    let public = run(&["rsa", "-pubout"], &private);
    let modulus = run(&["rsa", "-noout", "-modulus"], &private);
    let hex = modulus.trim().strip_prefix("Modulus=").unwrap();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    (private, public, bytes)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWK for an RSA public key (exponent 65537, as `openssl genrsa` makes).
fn rsa_jwk(kid: &str, modulus: &[u8]) -> serde_json::Value {
    serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig",
        "n": b64url(modulus), "e": b64url(&[1, 0, 1])})
}

/// A JWK for an EC public key (P-256 or P-384) from rcgen.
fn ec_jwk(kid: &str, key: &rcgen::KeyPair) -> serde_json::Value {
    let raw = key.public_key_raw(); // 0x04 || x || y
    let half = (raw.len() - 1) / 2;
    let crv = if half == 32 { "P-256" } else { "P-384" };
    serde_json::json!({"kty": "EC", "crv": crv, "kid": kid, "use": "sig",
        "x": b64url(&raw[1..1 + half]), "y": b64url(&raw[1 + half..])})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn jwt_settings(keys: JwtKeys, algorithms: Vec<Algorithm>) -> JwtSettings {
    JwtSettings {
        from: TokenField::Password,
        keys,
        algorithms,
        client_id_claim: None,
        username_claim: "sub".into(),
        leeway: 0,
    }
}

/// A token whose signature has one character changed (in the middle, so the decoded
/// bytes surely differ).
fn tampered(token: &str) -> String {
    let sig_start = token.rfind('.').unwrap() + 1;
    let at = sig_start + (token.len() - sig_start) / 2;
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn jwt_every_algorithm_with_inline_keys_checks_signature_exp_and_nbf() {
    let secret = b"inline-secret-0123456789abcdef".to_vec();
    let (rsa_private, rsa_public, _) = rsa_key();
    let ec256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let hs = || EncodingKey::from_secret(&secret);
    let rs = || EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap();
    let es = |k: &rcgen::KeyPair| EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).unwrap();
    let inline_secret = || JwtKeys::Secret(secret.clone());
    let rsa_pem = || JwtKeys::PublicKeyPem(rsa_public.clone().into_bytes());
    let cases = [
        (Algorithm::HS256, inline_secret(), hs()),
        (Algorithm::HS384, inline_secret(), hs()),
        (Algorithm::HS512, inline_secret(), hs()),
        (Algorithm::RS256, rsa_pem(), rs()),
        (Algorithm::RS384, rsa_pem(), rs()),
        (Algorithm::RS512, rsa_pem(), rs()),
        (
            Algorithm::ES256,
            JwtKeys::PublicKeyPem(ec256.public_key_pem().into_bytes()),
            es(&ec256),
        ),
        (
            Algorithm::ES384,
            JwtKeys::PublicKeyPem(ec384.public_key_pem().into_bytes()),
            es(&ec384),
        ),
    ];
    for (alg, keys, encoding) in cases {
        let (server, _dir) =
            start_server(|c| c.security.auth.jwt = Some(jwt_settings(keys, vec![alg]))).await;
        let addr = server.mqtt_addr();
        let token = |claims| sign(alg, None, &encoding, claims);
        let good = token(serde_json::json!({"sub": "u", "exp": now() + 600}));
        let mut v5 = expect_code(addr, V5, "good5", Some("x"), Some(good.as_bytes()), 0).await;
        let mut v3 = expect_code(addr, V3, "good3", Some("x"), Some(good.as_bytes()), 0).await;
        // Expired and not yet valid: 5.0 0x86, 3.x 4 (bad user name or password).
        let expired = token(serde_json::json!({"exp": now() - 60}));
        expect_code(addr, V5, "exp5", Some("x"), Some(expired.as_bytes()), 0x86).await;
        expect_code(addr, V3, "exp3", Some("x"), Some(expired.as_bytes()), 0x04).await;
        let early = token(serde_json::json!({"exp": now() + 600, "nbf": now() + 300}));
        expect_code(addr, V5, "nbf5", Some("x"), Some(early.as_bytes()), 0x86).await;
        expect_code(addr, V3, "nbf3", Some("x"), Some(early.as_bytes()), 0x04).await;
        let forged = tampered(&good);
        expect_code(addr, V5, "forged", Some("x"), Some(forged.as_bytes()), 0x86).await;
        v5.ping().await;
        v3.ping().await;
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn jwt_jwks_serves_rsa_and_ec_keys_and_a_refresh_picks_up_a_rotated_key() {
    let (rsa_private, _, modulus) = rsa_key();
    let ec256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let rotated = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let document = Arc::new(std::sync::Mutex::new(
        serde_json::json!({"keys": [rsa_jwk("rsa", &modulus), ec_jwk("ec256", &ec256),
            ec_jwk("ec384", &ec384)]})
        .to_string(),
    ));
    let served = document.clone();
    let (jwks_addr, fetches) = http_server(move |_| (200, served.lock().unwrap().clone())).await;
    let (server, _dir) = start_server(|c| {
        c.security.auth.jwt = Some(jwt_settings(
            JwtKeys::Jwks {
                url: format!("http://{jwks_addr}/jwks.json"),
                refresh: Duration::from_millis(200),
            },
            vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::ES256,
                Algorithm::ES384,
            ],
        ))
    })
    .await;
    let addr = server.mqtt_addr();
    let rs = EncodingKey::from_rsa_pem(rsa_private.as_bytes()).unwrap();
    let es = |k: &rcgen::KeyPair| EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).unwrap();
    let claims = || serde_json::json!({"sub": "dev", "exp": now() + 600});
    let tokens = [
        sign(Algorithm::RS256, Some("rsa"), &rs, claims()),
        sign(Algorithm::RS384, Some("rsa"), &rs, claims()),
        sign(Algorithm::RS512, Some("rsa"), &rs, claims()),
        sign(Algorithm::ES256, Some("ec256"), &es(&ec256), claims()),
        sign(Algorithm::ES384, Some("ec384"), &es(&ec384), claims()),
    ];
    // The first fetch may still be on its way: wait (bounded) for the first token.
    let mut accepted = false;
    for _ in 0..50 {
        let (_, code) =
            connect_code(addr, V5, "first", Some("x"), Some(tokens[0].as_bytes())).await;
        if code == 0 {
            accepted = true;
            break;
        }
        assert_eq!(code, 0x88, "before the JWKS is fetched: server unavailable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the JWKS was never fetched");
    let mut clients = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let id = format!("jwks-{i}");
        clients.push(expect_code(addr, V5, &id, Some("x"), Some(token.as_bytes()), 0).await);
    }
    let expired = sign(
        Algorithm::ES384,
        Some("ec384"),
        &es(&ec384),
        serde_json::json!({"exp": now() - 60}),
    );
    expect_code(addr, V3, "old", Some("x"), Some(expired.as_bytes()), 0x04).await;

    // Rotation: the document now holds only a new key. A periodic refresh brings it in
    // and the old keys stop working.
    *document.lock().unwrap() =
        serde_json::json!({"keys": [ec_jwk("rotated", &rotated)]}).to_string();
    let new_token = sign(Algorithm::ES256, Some("rotated"), &es(&rotated), claims());
    let mut rotated_in = false;
    for i in 0..50 {
        let id = format!("rot-{i}");
        let (_, code) = connect_code(addr, V5, &id, Some("x"), Some(new_token.as_bytes())).await;
        if code == 0 {
            rotated_in = true;
            break;
        }
        assert_eq!(code, 0x86, "unknown key until the refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated_in, "the rotated key was never fetched");
    expect_code(
        addr,
        V5,
        "stale",
        Some("x"),
        Some(tokens[3].as_bytes()),
        0x86,
    )
    .await;
    for client in &mut clients {
        client.ping().await;
    }

    // The refresh task stops with the server: no fetch after shutdown.
    server.shutdown().await.unwrap();
    let after_shutdown = fetches.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        after_shutdown,
        "a JWKS refresh ran after shutdown"
    );
}

#[tokio::test]
async fn connects_over_the_rate_get_0x9f_before_reaching_the_http_auth_service() {
    let (auth_addr, calls) = http_server(|_| (200, r#"{"result":"allow"}"#.into())).await;
    let (server, _dir) = start_server(|c| {
        c.security.auth.http = Some(http_settings(auth_addr));
        c.limits.connect_rate = Some(1);
    })
    .await;
    let addr = server.mqtt_addr();
    // A burst far over one CONNECT per second, each with its own credentials (no cache
    // hit): every one admitted costs one call to the service, every refused one none.
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 0..8 {
        let version = if i % 2 == 0 { V5 } else { V3 };
        let password = format!("pw-{i}");
        let (client, code) = connect_code(
            addr,
            version,
            &format!("burst-{i}"),
            Some("u"),
            Some(password.as_bytes()),
        )
        .await;
        match (version, code) {
            (_, 0) => admitted.push(client),
            (ProtocolVersion::V5, 0x9f) | (ProtocolVersion::V3_1_1, 0x03) => refused += 1,
            other => panic!("unexpected CONNACK {other:?}"),
        }
    }
    assert!(refused >= 1, "no CONNECT was over the rate");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        admitted.len(),
        "refused CONNECTs must not reach the auth service"
    );
    for client in &mut admitted {
        client.ping().await;
    }
    server.shutdown().await.unwrap();
}

/// A loopback server that answers every request with `head` and then `body_len` bytes of
/// `body` padding (no content-length when `length` is false: the body runs to the close),
/// or, with `hold`, never answers (holding the connection until the test ends).
async fn raw_http_server(
    prefix: &'static str,
    body_len: usize,
    length: bool,
    hold: bool,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let total = prefix.len() + body_len;
                let head = if length {
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n")
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n"
                        .to_owned()
                };
                if stream.write_all(head.as_bytes()).await.is_err()
                    || stream.write_all(prefix.as_bytes()).await.is_err()
                {
                    return;
                }
                let spaces = vec![b' '; 16 * 1024];
                let mut sent = 0;
                while sent < body_len {
                    let n = spaces.len().min(body_len - sent);
                    if stream.write_all(&spaces[..n]).await.is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_http_answer_over_64_kib_is_refused_as_server_unavailable() {
    let allow = r#"{"result":"allow"}"#;
    // Within the cap: allowed (the padding is JSON whitespace).
    let small = raw_http_server(allow, 1024, true, false).await;
    // Over the cap, announced by content-length, and streamed without a length.
    let announced = raw_http_server(allow, 1 << 20, true, false).await;
    let streamed = raw_http_server(allow, 1 << 20, false, false).await;
    for (service, code) in [(small, 0), (announced, 0x88), (streamed, 0x88)] {
        let (server, _dir) =
            start_server(|c| c.security.auth.http = Some(http_settings(service))).await;
        expect_code(server.mqtt_addr(), V5, "big", Some("u"), Some(b"pw"), code).await;
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_slow_http_service_times_out_as_server_unavailable_and_bystanders_carry_on() {
    let silent = raw_http_server("", 0, true, true).await;
    let (server, _dir) = start_server(|c| {
        let mut http = http_settings(silent);
        http.timeout = Duration::from_millis(300);
        http.connect_timeout = Duration::from_millis(300);
        c.security.auth.http = Some(http);
        c.security.users.push((
            "alice".into(),
            aviary::auth::Secret::Password("s3cret".into()),
        ));
    })
    .await;
    let addr = server.mqtt_addr();
    // Two CONNECTs wait on the hanging service...
    let slow5 = tokio::spawn(expect_code(
        addr,
        V5,
        "slow-5",
        Some("u"),
        Some(b"pw"),
        0x88,
    ));
    let slow3 = tokio::spawn(expect_code(
        addr,
        V3,
        "slow-3",
        Some("u"),
        Some(b"pw"),
        0x03,
    ));
    // ...while a built-in user (tried before the HTTP service) connects and is served.
    let mut bystander = expect_code(addr, V5, "bystander", Some("alice"), Some(b"s3cret"), 0).await;
    bystander.ping().await;
    tokio::time::timeout(WAIT, slow5).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, slow3).await.unwrap().unwrap();
    bystander.ping().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_get_and_a_body_template_carry_the_placeholders() {
    let (get_addr, _) = http_server(|seen| {
        let line = seen.head.lines().next().unwrap_or_default().to_owned();
        if line.starts_with("GET /auth?client=g%2F1&user=al%20ice ") {
            (200, r#"{"result":"allow"}"#.into())
        } else {
            (403, line)
        }
    })
    .await;
    let (server, _dir) = start_server(|c| {
        let mut http = http_settings(get_addr);
        http.method = HttpMethod::Get;
        http.url = format!("http://{get_addr}/auth?client=${{clientid}}&user=${{username}}");
        http.body = None;
        c.security.auth.http = Some(http);
    })
    .await;
    expect_code(
        server.mqtt_addr(),
        V5,
        "g/1",
        Some("al ice"),
        Some(b"pw"),
        0,
    )
    .await;
    expect_code(server.mqtt_addr(), V5, "g2", Some("bob"), Some(b"pw"), 0x87).await;
    server.shutdown().await.unwrap();

    let (post_addr, _) = http_server(|seen| {
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap_or_default();
        let ok = body["who"] == "p\"1" && body["secret"] == "s3" && body["peer"] == "127.0.0.1";
        (if ok { 200 } else { 401 }, String::new())
    })
    .await;
    let (server, _dir) = start_server(|c| {
        let mut http = http_settings(post_addr);
        http.body =
            Some(r#"{"who":"${clientid}","secret":"${password}","peer":"${peerhost}"}"#.into());
        c.security.auth.http = Some(http);
    })
    .await;
    expect_code(server.mqtt_addr(), V5, "p\"1", Some("u"), Some(b"s3"), 0).await;
    expect_code(server.mqtt_addr(), V5, "p2", Some("u"), Some(b"s3"), 0x86).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_more_http_auth_requests_are_in_flight_than_max_concurrency() {
    // Each request is held 200 ms; the server records the most it saw at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = listener.local_addr().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now_in, peak) = (in_flight.clone(), most.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (now_in, peak) = (now_in.clone(), peak.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let current = now_in.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(current, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                now_in.fetch_sub(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let (server, _dir) = start_server(|c| {
        let mut http = http_settings(service);
        http.max_concurrency = 2;
        http.cache_ttl = Duration::ZERO;
        http.timeout = Duration::from_secs(5);
        c.security.auth.http = Some(http);
    })
    .await;
    let addr = server.mqtt_addr();
    let clients: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(async move {
                let password = format!("pw-{i}");
                connect_code(
                    addr,
                    V5,
                    &format!("c{i}"),
                    Some("u"),
                    Some(password.as_bytes()),
                )
                .await
                .1
            })
        })
        .collect();
    for client in clients {
        let code = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(code, 0);
    }
    let seen = most.load(Ordering::SeqCst);
    assert!((1..=2).contains(&seen), "{seen} requests in flight at once");
    server.shutdown().await.unwrap();
}
