//! Management state made through the API is stored and comes back after a restart:
//! API-created listeners and changes to the default one, the plan limits, and API keys
//! (created ones work again, revoked ones do not); users, authorization policies and device
//! identities (each checked by a real client's CONNACK / SUBACK); a listener switched off
//! stays off.

mod api;
mod common;

use serde_json::json;

use api::{start_api_in, KEY};
use common::{packet_hex, str_hex, RawClient};

#[tokio::test]
async fn listeners_limits_and_keys_survive_a_restart() {
    let api = start_api_in(tempfile::tempdir().unwrap(), |_| {}).await;
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "web", "kind": "ws", "bind": "127.0.0.1:0", "allow": ["127.0.0.0/8"]})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/listeners/default",
            Some(json!({"allow": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, mut limits) = api.call("GET", "/api/v1/limits", None).await;
    limits["connect_rate"] = json!(42);
    assert_eq!(
        api.call("PUT", "/api/v1/limits", Some(limits.clone()))
            .await
            .0,
        200
    );
    let (_, kept) = api
        .call("POST", "/api/v1/api-keys", Some(json!({"name": "kept"})))
        .await;
    let (_, revoked) = api
        .call("POST", "/api/v1/api-keys", Some(json!({"name": "revoked"})))
        .await;
    let revoked_id = revoked["id"].as_str().unwrap();
    assert_eq!(
        api.call("DELETE", &format!("/api/v1/api-keys/{revoked_id}"), None)
            .await
            .0,
        204
    );
    let dir = api.stop().await;

    let api = start_api_in(dir, |_| {}).await;
    let (_, listeners) = api.call("GET", "/api/v1/listeners", None).await;
    assert_eq!(listeners[0]["name"], "default");
    assert_eq!(listeners[0]["allow"], json!(["10.0.0.0/8"]));
    assert_eq!(listeners[1]["name"], "web");
    assert_eq!(listeners[1]["kind"], "ws");
    assert_eq!(listeners[1]["allow"], json!(["127.0.0.0/8"]));
    assert!(
        listeners[1]["address"].is_string(),
        "bound again: {listeners}"
    );
    assert_eq!(api.call("GET", "/api/v1/limits", None).await.1, limits);
    let key = kept["key"].as_str().unwrap();
    let (status, _) = api
        .call_with_key("GET", "/api/v1/stats", None, Some(key))
        .await;
    assert_eq!(status, 200, "a created key works after the restart");
    let (status, _) = api
        .call_with_key(
            "GET",
            "/api/v1/stats",
            None,
            Some(revoked["key"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 401, "a revoked key stays revoked");
    let _ = KEY;
    api.shutdown().await;
}

/// CONNECT 5.0 as `user` with `password` (Clean Start); the client and its CONNACK code.
async fn connect_as(
    addr: std::net::SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
) -> (RawClient, u8) {
    let mut c = RawClient::open(addr, aviary_codec::ProtocolVersion::V5).await;
    c.send_hex(&packet_hex(
        0x10,
        &format!(
            "00 04 4d 51 54 54 05 c2 00 3c 00 {} {} {}",
            str_hex(client_id),
            str_hex(user),
            str_hex(password)
        ),
    ))
    .await;
    let frame = c.read_frame().await;
    assert_eq!(frame.first, 0x20, "{frame:?}");
    (c, frame.body[1])
}

/// The SUBACK code of `client` subscribing to `filter` (QoS 0, 5.0) with packet id `id`.
async fn suback_code(client: &mut RawClient, id: u16, filter: &str) -> u8 {
    client
        .send_hex(&packet_hex(
            0x82,
            &format!("{id:04x} 00 {} 00", str_hex(filter)),
        ))
        .await;
    let suback = client.read_frame().await;
    assert_eq!(suback.first, 0x90, "{suback:?}");
    *suback.body.last().unwrap()
}

#[tokio::test]
async fn users_policies_devices_and_a_disabled_listener_survive_a_restart() {
    let api = start_api_in(tempfile::tempdir().unwrap(), |_| {}).await;
    let (status, body) = api
        .call(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "alice", "password": "pw-1"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let policy = json!({"id": "alice-own", "priority": 1, "effect": "allow",
        "actions": ["connect", "subscribe"], "resources": ["users/${username}/#"]});
    let (status, body) = api
        .call("POST", "/api/v1/authorization-policies", Some(policy))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, device) = api
        .call(
            "POST",
            "/api/v1/device-identities",
            Some(json!({"device_id": "meter-1"})),
        )
        .await;
    assert_eq!(status, 201, "{device}");
    let key = device["primary_key"].as_str().unwrap().to_owned();
    let (status, created) = api
        .call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "side", "kind": "tcp", "bind": "127.0.0.1:0"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, off) = api
        .call(
            "PATCH",
            "/api/v1/listeners/side",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!((status, &off["enabled"]), (200, &json!(false)), "{off}");
    let (_, policies_before) = api
        .call("GET", "/api/v1/authorization-policies", None)
        .await;
    let dir = api.stop().await;

    let api = start_api_in(dir, |_| {}).await;
    // The user: its password still works, a wrong one is refused (0x86).
    let (mut alice, code) = connect_as(api.mqtt, "a1", "alice", "pw-1").await;
    assert_eq!(code, 0x00);
    assert_eq!(connect_as(api.mqtt, "a2", "alice", "nope").await.1, 0x86);
    // The policy: listed as it was, and applied (alice only under users/alice/#).
    let (_, policies) = api
        .call("GET", "/api/v1/authorization-policies", None)
        .await;
    assert_eq!(policies, policies_before);
    assert_eq!(suback_code(&mut alice, 1, "users/alice/x").await, 0x00);
    assert_eq!(suback_code(&mut alice, 2, "users/bob/x").await, 0x87);
    // The device identity: a token made with the key issued before the restart connects.
    let (status, listed) = api
        .call("GET", "/api/v1/device-identities/meter-1", None)
        .await;
    assert_eq!(status, 200, "{listed}");
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = aviary::auth::devices::make_token(&key, "meter-1", expiry).unwrap();
    assert_eq!(
        connect_as(api.mqtt, "meter-1", "meter-1", &token).await.1,
        0x00
    );
    // The listener switched off stays off, with no address bound.
    let (status, side) = api.call("GET", "/api/v1/listeners/side", None).await;
    assert_eq!(status, 200, "{side}");
    assert_eq!(side["enabled"], false, "{side}");
    assert_eq!(side["address"], serde_json::Value::Null, "{side}");
    api.shutdown().await;
}
