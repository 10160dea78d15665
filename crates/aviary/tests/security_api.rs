//! The security resources of the management API, end to end: each change made over HTTP
//! is observed by real MQTT clients (exact CONNACK / SUBACK codes).

mod api;
mod common;

use api::start_api;
use aviary_codec::Packet;
use common::*;
use serde_json::json;

/// CONNECT 5.0 with user name and password; returns the CONNACK code.
async fn connect_v5_code(
    addr: std::net::SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
) -> u8 {
    let version = aviary_codec::ProtocolVersion::V5;
    connect_code(
        addr,
        version,
        client_id,
        Some(user),
        Some(password.as_bytes()),
    )
    .await
    .1
}

#[tokio::test]
async fn users_policies_and_devices_over_the_api_apply_to_mqtt_clients() {
    let api = start_api(|_| {}).await;
    let (status, body) = api.call("GET", "/api/v1/authenticators", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["anonymous_allowed"], true);

    let (status, body) = api
        .call(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "alice", "password": "pw-1"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(
        body.get("password_hash").is_none(),
        "no hash in answers: {body}"
    );
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "alice", "password": "x"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = api
        .call("POST", "/api/v1/users", Some(json!({"username": "bob"})))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_field"))
    );
    assert_eq!(connect_v5_code(api.mqtt, "a1", "alice", "pw-1").await, 0);
    assert_eq!(connect_v5_code(api.mqtt, "a2", "alice", "nope").await, 0x86);
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/users/alice",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(connect_v5_code(api.mqtt, "a3", "alice", "pw-1").await, 0x87);
    api.call(
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"enabled": true})),
    )
    .await;

    // A policy: alice may only subscribe under users/alice/#.
    let policy = json!({"id": "alice-own", "priority": 1, "effect": "allow",
        "actions": ["connect", "subscribe"], "resources": ["users/${username}/#"]});
    let (status, body) = api
        .call("POST", "/api/v1/authorization-policies", Some(policy))
        .await;
    assert_eq!(status, 201, "{body}");
    let bad =
        json!({"id": "bad", "effect": "allow", "actions": ["publish"], "resources": ["a/#/b"]});
    let (status, body) = api
        .call("POST", "/api/v1/authorization-policies", Some(bad))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let mut c = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V5).await;
    c.send_hex(&packet_hex(
        0x10,
        &format!(
            "00 04 4d 51 54 54 05 c2 00 3c 00 {} {} {}",
            str_hex("a4"),
            str_hex("alice"),
            str_hex("pw-1")
        ),
    ))
    .await;
    c.expect_connack(0).await;
    c.subscribe(1, "users/alice/x", 0).await;
    c.send_hex(&packet_hex(
        0x82,
        &format!("00 02 00 {} 00", str_hex("users/bob/x")),
    ))
    .await;
    let suback = c.read_frame().await;
    assert_eq!(suback.body.last(), Some(&0x87));
    let (status, _) = api
        .call("DELETE", "/api/v1/authorization-policies/alice-own", None)
        .await;
    assert_eq!(status, 204);

    // A device identity: keys generated, a token made with one of them connects.
    let (status, device) = api
        .call(
            "POST",
            "/api/v1/device-identities",
            Some(json!({"device_id": "meter-1"})),
        )
        .await;
    assert_eq!(status, 201, "{device}");
    let key = device["primary_key"].as_str().unwrap();
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = aviary::auth::devices::make_token(key, "meter-1", expiry).unwrap();
    assert_eq!(
        connect_v5_code(api.mqtt, "meter-1", "meter-1", &token).await,
        0
    );
    // Rotating the primary key ("" regenerates it) invalidates tokens made with the old one.
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/device-identities/meter-1",
            Some(json!({"primary_key": ""})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        connect_v5_code(api.mqtt, "meter-1", "meter-1", &token).await,
        0x86
    );
    c.ping().await;
}

#[tokio::test]
async fn certificate_resources_answer_with_codes_and_statuses() {
    let api = start_api(|_| {}).await;
    let (status, body) = api
        .call("GET", "/api/v1/ca-certificates/registration-code", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["registration_code"].as_str().unwrap().len(), 32);
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/ca-certificates",
            Some(json!({"certificate_pem": "nope", "verification_certificate_pem": "nope"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_field")),
        "{body}"
    );
    let (status, body) = api
        .call("GET", "/api/v1/device-certificates/0abc/status", None)
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("UNKNOWN")));
    let (status, _) = api
        .call("GET", "/api/v1/device-certificates/0abc", None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = api
        .call("GET", "/api/v1/device-certificates?status=REVOKED", None)
        .await;
    assert_eq!((status, body), (200, json!([])));
    let (status, _) = api
        .call("GET", "/api/v1/device-certificates?status=NOPE", None)
        .await;
    assert_eq!(status, 400);
    let (_, doc) = api.call("GET", "/api/v1/openapi.json", None).await;
    for path in [
        "/api/v1/users",
        "/api/v1/authorization-policies",
        "/api/v1/device-identities",
        "/api/v1/ca-certificates",
        "/api/v1/device-certificates/{id}/status",
        "/api/v1/ca-certificates/{id}/crl",
        "/api/v1/authenticators",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let (status, _) = api.call_with_key("GET", "/api/v1/users", None, None).await;
    assert_eq!(status, 401);
}

/// SUBSCRIBE one filter at QoS 0; the SUBACK's code.
async fn suback_code(c: &mut RawClient, packet_id: u16, filter: &str) -> u8 {
    let pid = to_hex(&packet_id.to_be_bytes());
    let props = if c.version.is_v5() { "00" } else { "" };
    c.send_hex(&packet_hex(
        0x82,
        &format!("{pid} {props} {} 00", str_hex(filter)),
    ))
    .await;
    let ack = c.read_frame().await;
    assert_eq!(ack.first, 0x90, "{}", to_hex(&ack.raw()));
    *ack.body.last().unwrap()
}

/// `$SYS/...` and `$events/...` subscriptions go through the policies like any other: an
/// allow on `#` does not grant them, an allow naming them does.
#[tokio::test]
async fn system_topic_subscriptions_need_a_policy_that_grants_them() {
    let api = start_api(|_| {}).await;
    for policy in [
        json!({"id": "ops-events", "priority": 1, "effect": "allow", "actions": ["subscribe"],
            "resources": ["$events/#", "$SYS/#"], "client_ids": ["ops-*"]}),
        json!({"id": "everyone", "priority": 2, "effect": "allow",
            "actions": ["connect", "publish", "subscribe"], "resources": ["#"]}),
    ] {
        let (status, body) = api
            .call("POST", "/api/v1/authorization-policies", Some(policy))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let mut plain5 = RawClient::connect_v5(api.mqtt, "plain-5").await;
    let mut plain3 = RawClient::connect_v311(api.mqtt, "plain-3").await;
    for filter in ["$SYS/#", "$events/#", "$events/client_connected"] {
        assert_eq!(suback_code(&mut plain5, 1, filter).await, 0x87, "{filter}");
        assert_eq!(suback_code(&mut plain3, 1, filter).await, 0x80, "{filter}");
    }
    // Their own topics are granted by `#`.
    assert_eq!(suback_code(&mut plain5, 2, "data/#").await, 0x00);

    let mut ops = RawClient::connect_v5(api.mqtt, "ops-1").await;
    ops.subscribe(1, "$events/client_connected", 0).await;
    ops.subscribe(2, "$SYS/#", 0).await;
    let _newcomer = RawClient::connect_v311(api.mqtt, "newcomer").await;
    // The event for "newcomer" arrives (a `$SYS` statistic may come first: bounded loop).
    let mut got_event = false;
    let mut got_sys = false;
    for _ in 0..200 {
        let Next::Frame(frame) = ops.next(std::time::Duration::from_secs(15)).await else {
            break;
        };
        if frame.kind() != 3 {
            continue;
        }
        let Packet::Publish(publish) = ops.decode(&frame) else {
            continue;
        };
        let topic = publish.topic.as_str().to_owned();
        if topic == "$events/client_connected" {
            let payload = String::from_utf8_lossy(&publish.payload).to_string();
            if payload.contains("newcomer") {
                got_event = true;
            }
        } else if topic.starts_with("$SYS/") {
            got_sys = true;
        }
        if got_event && got_sys {
            break;
        }
    }
    assert!(got_event, "the granted subscriber never got the event");
    assert!(got_sys, "the granted subscriber never got a $SYS statistic");
    // The refused ones got nothing.
    plain5.expect_silence().await;
    plain3.expect_silence().await;
    api.shutdown().await;
}

/// The authentication chain changed over the API applies to the next CONNECT (real
/// clients, exact codes), a change keeps what it does not name, bad values name their
/// field, and the settings survive a restart.
#[tokio::test]
async fn authenticator_settings_change_at_runtime_and_survive_a_restart() {
    let api = start_api(|_| {}).await;
    assert_eq!(connect_v5_code(api.mqtt, "anon-1", "", "").await, 0);
    let (status, body) = api
        .call(
            "PATCH",
            "/api/v1/authenticators",
            Some(json!({"anonymous": "deny"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["anonymous_allowed"], false);
    let mut anon = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V5).await;
    anon.send_hex(&connect_v5_hex("anon-2", 0x02, 60, "")).await;
    anon.expect_connack(0x87).await;

    for (bad, field) in [
        (json!({"anonymous": "sometimes"}), "anonymous"),
        (json!({"order": ["users", "ldap"]}), "order"),
        (
            json!({"jwt": {"secret": "s", "algorithms": ["none"]}}),
            "jwt.algorithms",
        ),
        (
            json!({"jwt": {"secret": "s", "jwks_url": "http://x"}}),
            "jwt",
        ),
        (json!({"http": {"url": "ftp://x"}}), "http.url"),
        (json!({"jwt": {"secret": "s", "colour": "red"}}), "colour"),
    ] {
        let (status, body) = api
            .call("PATCH", "/api/v1/authenticators", Some(bad.clone()))
            .await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(
            body["message"].as_str().unwrap().contains(field),
            "{bad} → {body}"
        );
    }

    let secret = "runtime-secret-0123456789";
    let settings = json!({"anonymous": "auto", "order": ["jwt", "users"],
        "jwt": {"secret": secret, "algorithms": ["HS384"], "leeway": 0}});
    let (status, body) = api
        .call("PATCH", "/api/v1/authenticators", Some(settings))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["order"], json!(["jwt", "users"]));
    assert_eq!(body["jwt_configured"], true);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &json!({"sub": "u", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(connect_v5_code(api.mqtt, "jwt-1", "x", &token).await, 0);
    assert_eq!(
        connect_v5_code(api.mqtt, "jwt-2", "x", &format!("{token}x")).await,
        0x86
    );
    // JWT configured and anonymous "auto": no anonymous access.
    let mut anon = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V5).await;
    anon.send_hex(&connect_v5_hex("anon-3", 0x02, 60, "")).await;
    anon.expect_connack(0x87).await;

    let dir = api.stop().await;
    let api = api::start_api_in(dir, |_| {}).await;
    let (_, body) = api.call("GET", "/api/v1/authenticators", None).await;
    assert_eq!(body["order"], json!(["jwt", "users"]), "{body}");
    // The stored settings are shown, the secret redacted.
    assert_eq!(body["jwt"]["secret"], "<redacted>", "{body}");
    assert_eq!(body["jwt"]["algorithms"], json!(["HS384"]));
    assert_eq!(body["jwt"]["leeway"], 0);
    assert!(!body.to_string().contains(secret), "{body}");
    assert_eq!(body["http"], serde_json::Value::Null);
    let (status, body) = api
        .call(
            "PATCH",
            "/api/v1/authenticators",
            Some(
                json!({"http": {"url": "http://svc:pa55@127.0.0.1:9/auth?c=${clientid}",
                "method": "get", "headers": {"authorization": "Bearer t0ken"}, "timeout_ms": 700}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["http"]["url"],
        "http://svc:<redacted>@127.0.0.1:9/auth?c=${clientid}"
    );
    assert_eq!(body["http"]["method"], "get");
    assert_eq!(body["http"]["timeout_ms"], 700);
    assert_eq!(body["http"]["headers"]["authorization"], "<redacted>");
    assert!(
        !body.to_string().contains("pa55") && !body.to_string().contains("t0ken"),
        "{body}"
    );
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/authenticators",
            Some(json!({"http": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(connect_v5_code(api.mqtt, "jwt-3", "x", &token).await, 0);
    let mut anon = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V5).await;
    anon.send_hex(&connect_v5_hex("anon-4", 0x02, 60, "")).await;
    anon.expect_connack(0x87).await;
    // A change keeps what it does not name: a new order, JWT still there.
    let (status, body) = api
        .call(
            "PATCH",
            "/api/v1/authenticators",
            Some(json!({"order": ["users", "jwt"]})),
        )
        .await;
    assert_eq!(
        (status, body["jwt_configured"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(connect_v5_code(api.mqtt, "jwt-4", "x", &token).await, 0);
    // `null` switches JWT off: nobody recognises the token any more.
    let (status, body) = api
        .call(
            "PATCH",
            "/api/v1/authenticators",
            Some(json!({"jwt": null, "anonymous": "deny"})),
        )
        .await;
    assert_eq!(
        (status, body["jwt_configured"].as_bool()),
        (200, Some(false))
    );
    assert_eq!(connect_v5_code(api.mqtt, "jwt-5", "x", &token).await, 0x86);
    // Back to the open start: anonymous access allowed again at once.
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/authenticators",
            Some(json!({"anonymous": "allow"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(connect_v5_code(api.mqtt, "anon-5", "", "").await, 0);
    api.shutdown().await;
}
