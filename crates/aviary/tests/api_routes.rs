//! The management API over HTTP against a running broker: every route, its success and
//! its error paths (401 without a key, 400 naming the field, 404, 409), and the OpenAPI
//! document's agreement with the routes.

mod api;
mod common;

use std::collections::BTreeSet;

use aviary_codec::{Packet, ProtocolVersion, ReasonCode};
use serde_json::{json, Value};

use api::{assert_error, start_api, KEY};
use common::{packet_hex, str_hex, RawClient};

/// Every route of the API, as `METHOD path`.
const ROUTES: &[&str] = &[
    "GET /api/v1/health",
    "GET /api/v1/ready",
    "GET /api/v1/api-keys",
    "POST /api/v1/api-keys",
    "DELETE /api/v1/api-keys/{id}",
    "GET /api/v1/clients",
    "GET /api/v1/clients/{client_id}",
    "DELETE /api/v1/clients/{client_id}",
    "POST /api/v1/clients/{client_id}/subscriptions",
    "DELETE /api/v1/clients/{client_id}/subscriptions",
    "GET /api/v1/retained",
    "GET /api/v1/retained/{topic}",
    "DELETE /api/v1/retained/{topic}",
    "POST /api/v1/publish",
    "GET /api/v1/shared-subscriptions",
    "GET /api/v1/stats",
    "GET /api/v1/listeners",
    "POST /api/v1/listeners",
    "GET /api/v1/listeners/{name}",
    "PATCH /api/v1/listeners/{name}",
    "DELETE /api/v1/listeners/{name}",
    "GET /api/v1/limits",
    "PUT /api/v1/limits",
    "GET /api/v1/usage",
    "GET /api/v1/usage/{scope}/{name}",
    "GET /api/v1/users",
    "POST /api/v1/users",
    "GET /api/v1/users/{username}",
    "PATCH /api/v1/users/{username}",
    "DELETE /api/v1/users/{username}",
    "GET /api/v1/authorization-policies",
    "POST /api/v1/authorization-policies",
    "GET /api/v1/authorization-policies/{id}",
    "PUT /api/v1/authorization-policies/{id}",
    "DELETE /api/v1/authorization-policies/{id}",
    "GET /api/v1/authenticators",
    "PATCH /api/v1/authenticators",
    "GET /api/v1/device-identities",
    "POST /api/v1/device-identities",
    "GET /api/v1/device-identities/{device_id}",
    "PATCH /api/v1/device-identities/{device_id}",
    "DELETE /api/v1/device-identities/{device_id}",
    "GET /api/v1/ca-certificates/registration-code",
    "GET /api/v1/ca-certificates",
    "POST /api/v1/ca-certificates",
    "GET /api/v1/ca-certificates/{id}",
    "PATCH /api/v1/ca-certificates/{id}",
    "DELETE /api/v1/ca-certificates/{id}",
    "GET /api/v1/ca-certificates/{id}/crl",
    "POST /api/v1/ca-certificates/{id}/crl",
    "DELETE /api/v1/ca-certificates/{id}/crl",
    "GET /api/v1/device-certificates",
    "POST /api/v1/device-certificates",
    "GET /api/v1/device-certificates/{id}",
    "PATCH /api/v1/device-certificates/{id}",
    "DELETE /api/v1/device-certificates/{id}",
    "GET /api/v1/device-certificates/{id}/status",
];

/// SUBSCRIBE (packet id 1) to one filter at `qos`; 5.0 has an empty property block.
fn subscribe_hex(filter: &str, qos: u8, v5: bool) -> String {
    let props = if v5 { "00" } else { "" };
    packet_hex(0x82, &format!("0001 {props} {} {qos:02x}", str_hex(filter)))
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes() {
    let api = start_api(|_| {}).await;
    let (status, doc) = api
        .call_with_key("GET", "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"api_key": []}]));
    assert_eq!(
        doc["paths"]["/api/v1/health"]["get"]["security"],
        json!([{}])
    );
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected: BTreeSet<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    assert_eq!(documented, expected);
    // Every documented route is served (not the fallback), and a method that is not
    // documented on a path is refused with 405.
    for route in ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{scope}", "client").replace(['{', '}'], "");
        let (status, body) = api.call(method, &path, None).await;
        assert_ne!(status, 405, "{route}: {body}");
        let fallback = body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no such route"));
        assert!(!fallback, "{route} is not routed: {body}");
    }
    let (status, _) = api.call("PUT", "/api/v1/clients", None).await;
    assert_eq!(status, 405);
    let (status, body) = api.call("GET", "/api/v1/nothing", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "not_found");
    api.shutdown().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused_but_probes_are_open() {
    let api = start_api(|_| {}).await;
    for route in ROUTES
        .iter()
        .filter(|r| !r.contains("/health") && !r.contains("/ready"))
    {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace(['{', '}'], "");
        assert_error(
            api.call_with_key(method, &path, None, None).await,
            401,
            "unauthorized",
            "API key",
        );
        assert_error(
            api.call_with_key(method, &path, None, Some("wrong-key"))
                .await,
            401,
            "unauthorized",
            "Bearer",
        );
    }
    let (status, body) = api.call_with_key("GET", "/api/v1/health", None, None).await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    let (status, body) = api.call_with_key("GET", "/api/v1/ready", None, None).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")));
    let (status, _) = api.call_with_key("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    api.shutdown().await;
}

#[tokio::test]
async fn api_keys_are_created_listed_and_revoked() {
    let api = start_api(|_| {}).await;
    let (status, created) = api
        .call("POST", "/api/v1/api-keys", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("avk_"));
    let (status, list) = api
        .call_with_key("GET", "/api/v1/api-keys", None, Some(&key))
        .await;
    assert_eq!(status, 200);
    let listed = list.as_array().unwrap();
    assert!(listed
        .iter()
        .any(|k| k["id"] == id.as_str() && k["name"] == "ci"));
    assert!(listed
        .iter()
        .all(|k| k.get("key").is_none() && k.get("hash").is_none()));

    let (status, _) = api
        .call("DELETE", &format!("/api/v1/api-keys/{id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_error(
        api.call_with_key("GET", "/api/v1/api-keys", None, Some(&key))
            .await,
        401,
        "unauthorized",
        "API key",
    );
    assert_error(
        api.call("DELETE", &format!("/api/v1/api-keys/{id}"), None)
            .await,
        404,
        "not_found",
        &id,
    );
    assert_error(
        api.call("POST", "/api/v1/api-keys", Some(json!({"name": ""})))
            .await,
        400,
        "invalid_field",
        "name",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/api-keys",
            Some(json!({"name": "x", "admin": true})),
        )
        .await,
        400,
        "invalid_field",
        "admin",
    );
    assert_error(
        api.call("POST", "/api/v1/api-keys", Some(json!({}))).await,
        400,
        "invalid_field",
        "name",
    );
    assert_error(
        api.call_raw("POST", "/api/v1/api-keys", "{not json").await,
        400,
        "bad_request",
        "",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn clients_are_listed_filtered_paged_and_shown() {
    let api = start_api(|_| {}).await;
    let mut v5 = RawClient::connect_v5(api.mqtt, "car-1").await;
    let _v3 = RawClient::connect_v311(api.mqtt, "car-2").await;
    let _other = RawClient::connect_v311(api.mqtt, "meter-1").await;
    v5.send_hex(&subscribe_hex("cars/+/speed", 1, true)).await;
    v5.read_frame().await; // SUBACK

    let (status, page) = api.call("GET", "/api/v1/clients", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["total"], 3);
    let ids: Vec<&str> = page["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["car-1", "car-2", "meter-1"]);

    let (_, page) = api
        .call("GET", "/api/v1/clients?client_id=car-*", None)
        .await;
    assert_eq!(page["total"], 2);
    let (_, page) = api.call("GET", "/api/v1/clients?protocol=5.0", None).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["clients"][0]["client_id"], "car-1");
    let (_, page) = api
        .call(
            "GET",
            "/api/v1/clients?listener=default&offset=1&limit=1",
            None,
        )
        .await;
    assert_eq!(
        (
            page["total"].clone(),
            page["clients"][0]["client_id"].clone()
        ),
        (json!(3), json!("car-2"))
    );
    let (_, page) = api
        .call("GET", "/api/v1/clients?username=nobody", None)
        .await;
    assert_eq!(page["total"], 0);

    assert_error(
        api.call("GET", "/api/v1/clients?protocol=4", None).await,
        400,
        "invalid_field",
        "protocol",
    );
    assert_error(
        api.call("GET", "/api/v1/clients?limit=0", None).await,
        400,
        "invalid_field",
        "limit",
    );
    assert_error(
        api.call("GET", "/api/v1/clients?limit=x", None).await,
        400,
        "invalid_field",
        "limit",
    );
    assert_error(
        api.call("GET", "/api/v1/clients?colour=red", None).await,
        400,
        "invalid_field",
        "colour",
    );

    let (status, detail) = api.call("GET", "/api/v1/clients/car-1", None).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["protocol"], "5.0");
    assert_eq!(detail["keep_alive"], 60);
    assert_eq!(detail["listener"], "default");
    assert_eq!(detail["subscriptions"], 1);
    assert_eq!(detail["inflight"], 0);
    assert_eq!(detail["queued"], 0);
    assert!(detail["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(detail["subscription_list"][0]["filter"], "cars/+/speed");
    assert_eq!(detail["subscription_list"][0]["qos"], 1);
    assert_error(
        api.call("GET", "/api/v1/clients/nobody", None).await,
        404,
        "not_found",
        "nobody",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn kicking_a_client_sends_administrative_action_to_5_0() {
    let api = start_api(|_| {}).await;
    let mut v5 = RawClient::connect_v5(api.mqtt, "kick-me").await;
    let (status, _) = api.call("DELETE", "/api/v1/clients/kick-me", None).await;
    assert_eq!(status, 204);
    match v5.read_packet().await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::ADMINISTRATIVE_ACTION),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    v5.expect_closed().await;
    assert_error(
        api.call("DELETE", "/api/v1/clients/kick-me", None).await,
        404,
        "not_found",
        "kick-me",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn subscriptions_are_added_and_removed_on_a_live_session() {
    let api = start_api(|_| {}).await;
    let mut client = RawClient::connect_v311(api.mqtt, "live").await;
    let path = "/api/v1/clients/live/subscriptions";
    let (status, _) = api
        .call("POST", path, Some(json!({"filter": "a/#", "qos": 1})))
        .await;
    assert_eq!(status, 201);
    let (status, _) = api
        .call("POST", path, Some(json!({"filter": "a/#", "qos": 0})))
        .await;
    assert_eq!(status, 200, "replacing answers 200");
    let (_, published) = api
        .call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "a/b", "payload": "hi"})),
        )
        .await;
    assert_eq!(published["matched"], true);
    assert_eq!(
        client.read_frame().await.raw(),
        common::hex(&packet_hex(0x30, &format!("{} 6869", str_hex("a/b"))))
    );

    assert_error(
        api.call("POST", path, Some(json!({"filter": "a/+b"})))
            .await,
        400,
        "invalid_field",
        "filter",
    );
    assert_error(
        api.call("POST", path, Some(json!({"filter": "a", "qos": 3})))
            .await,
        400,
        "invalid_field",
        "qos",
    );
    assert_error(
        api.call("POST", path, Some(json!({"filter": "a", "nolocal": true})))
            .await,
        400,
        "invalid_field",
        "nolocal",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/clients/ghost/subscriptions",
            Some(json!({"filter": "a"})),
        )
        .await,
        404,
        "not_found",
        "ghost",
    );
    let (status, _) = api
        .call("DELETE", &format!("{path}?filter=a%2F%23"), None)
        .await;
    assert_eq!(status, 204);
    assert_error(
        api.call("DELETE", &format!("{path}?filter=a%2F%23"), None)
            .await,
        404,
        "not_found",
        "a/#",
    );
    assert_error(
        api.call("DELETE", path, None).await,
        400,
        "invalid_field",
        "filter",
    );
    let (_, published) = api
        .call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "a/b", "payload": "hi"})),
        )
        .await;
    assert_eq!(published["matched"], false);
    api.shutdown().await;
}

#[tokio::test]
async fn subscription_limit_applies_to_api_subscriptions_too() {
    let api = start_api(|c| c.mqtt.max_subscriptions_per_session = 1).await;
    let _client = RawClient::connect_v311(api.mqtt, "full").await;
    let path = "/api/v1/clients/full/subscriptions";
    assert_eq!(
        api.call("POST", path, Some(json!({"filter": "a"}))).await.0,
        201
    );
    assert_error(
        api.call("POST", path, Some(json!({"filter": "b"}))).await,
        409,
        "conflict",
        "maximum",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn retained_messages_are_published_listed_read_and_deleted() {
    let api = start_api(|_| {}).await;
    let publish = |topic: &str, payload: Value| json!({"topic": topic, "payload": payload, "retain": true, "qos": 1});
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/publish",
            Some(publish("home/1/temp", json!("21")))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "home/2/temp", "payload_hex": "ff00", "retain": true}))
        )
        .await
        .0,
        200
    );
    let (status, list) = api.call("GET", "/api/v1/retained", None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["topic"], "home/1/temp");
    assert_eq!(list[0]["payload"], "21");
    assert_eq!(list[0]["qos"], 1);
    assert_eq!(list[1]["payload"], Value::Null);
    assert_eq!(list[1]["payload_hex"], "ff00");
    let (_, list) = api
        .call(
            "GET",
            "/api/v1/retained?filter=home%2F2%2F%2B&limit=5",
            None,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let (status, one) = api
        .call("GET", "/api/v1/retained/home%2F1%2Ftemp", None)
        .await;
    assert_eq!((status, &one["payload"]), (200, &json!("21")));
    // A subscriber gets it as retained.
    let mut sub = RawClient::connect_v311(api.mqtt, "rsub").await;
    sub.send_hex(&subscribe_hex("home/1/temp", 0, false)).await;
    sub.read_frame().await; // SUBACK
    let retained = sub.read_frame().await;
    assert_eq!(retained.first, 0x31, "retained flag set");

    assert_eq!(
        api.call("DELETE", "/api/v1/retained/home%2F1%2Ftemp", None)
            .await
            .0,
        204
    );
    assert_error(
        api.call("GET", "/api/v1/retained/home%2F1%2Ftemp", None)
            .await,
        404,
        "not_found",
        "home/1/temp",
    );
    assert_error(
        api.call("DELETE", "/api/v1/retained/home%2F1%2Ftemp", None)
            .await,
        404,
        "not_found",
        "home/1/temp",
    );
    assert_error(
        api.call("GET", "/api/v1/retained/a%2B", None).await,
        400,
        "invalid_field",
        "topic",
    );
    assert_error(
        api.call("GET", "/api/v1/retained?filter=a%2B", None).await,
        400,
        "invalid_field",
        "filter",
    );
    assert_error(
        api.call("GET", "/api/v1/retained?limit=100000", None).await,
        400,
        "invalid_field",
        "limit",
    );

    assert_error(
        api.call("POST", "/api/v1/publish", Some(json!({"topic": "a/+"})))
            .await,
        400,
        "invalid_field",
        "topic",
    );
    assert_error(
        api.call("POST", "/api/v1/publish", Some(json!({"topic": "$SYS/x"})))
            .await,
        400,
        "invalid_field",
        "topic",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "a", "payload_hex": "zz"})),
        )
        .await,
        400,
        "invalid_field",
        "payload_hex",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "a", "qos": 7})),
        )
        .await,
        400,
        "invalid_field",
        "qos",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "a", "qos": "high"})),
        )
        .await,
        400,
        "invalid_field",
        "qos",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "a", "dup": true})),
        )
        .await,
        400,
        "invalid_field",
        "dup",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn shared_groups_show_members_and_stats_count() {
    let api = start_api(|_| {}).await;
    let mut a = RawClient::connect_v311(api.mqtt, "worker-a").await;
    let mut b = RawClient::connect_v5(api.mqtt, "worker-b").await;
    a.send_hex(&subscribe_hex("$share/g/jobs/#", 1, false))
        .await;
    b.send_hex(&subscribe_hex("$share/g/jobs/#", 1, true)).await;
    a.read_frame().await;
    b.read_frame().await;
    let (status, groups) = api.call("GET", "/api/v1/shared-subscriptions", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        groups,
        json!([{"group": "g", "filter": "jobs/#", "members": ["worker-a", "worker-b"], "backlog": 0}])
    );
    let (status, stats) = api.call("GET", "/api/v1/stats", None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"], 2);
    assert_eq!(stats["subscriptions"], 2);
    api.shutdown().await;
}

#[tokio::test]
async fn listeners_are_created_switched_restricted_and_deleted() {
    let api = start_api(|_| {}).await;
    let (status, list) = api.call("GET", "/api/v1/listeners", None).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["name"], "default");
    assert_eq!(list[0]["address"], api.mqtt.to_string());

    let (status, created) = api
        .call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "public", "kind": "tcp", "bind": "127.0.0.1:0"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let addr: std::net::SocketAddr = created["address"].as_str().unwrap().parse().unwrap();
    let mut v5 = RawClient::connect_v5(addr, "on-public").await;
    let _v3 = RawClient::connect_v311(addr, "on-public-3").await;
    let (_, page) = api
        .call("GET", "/api/v1/clients?listener=public", None)
        .await;
    assert_eq!(page["total"], 2);
    let (_, public) = api.call("GET", "/api/v1/listeners/public", None).await;
    assert_eq!(public["clients"], 2);

    // Switching it off disconnects its clients: DISCONNECT 0x98 for 5.0.
    let (status, off) = api
        .call(
            "PATCH",
            "/api/v1/listeners/public",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["enabled"], false);
    assert_eq!(off["address"], Value::Null);
    match v5.read_packet().await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::ADMINISTRATIVE_ACTION),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "port released"
    );
    let (_, page) = api
        .call("GET", "/api/v1/clients?listener=public", None)
        .await;
    assert_eq!(page["total"], 0);

    // On again, restricted to a network loopback is not in: connections are closed at once.
    let (status, on) = api
        .call(
            "PATCH",
            "/api/v1/listeners/public",
            Some(json!({"enabled": true, "allow": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(on["allow"], json!(["10.0.0.0/8"]));
    let addr: std::net::SocketAddr = on["address"].as_str().unwrap().parse().unwrap();
    let mut refused = RawClient::open(addr, ProtocolVersion::V3_1_1).await;
    refused.expect_closed().await;
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/listeners/public",
            Some(json!({"allow": ["127.0.0.0/8"]})),
        )
        .await;
    assert_eq!(status, 200);
    let mut allowed = RawClient::connect_v5(addr, "allowed").await;
    // Narrowing the list disconnects the clients outside it.
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/listeners/public",
            Some(json!({"allow": ["10.0.0.0/8", "::1"]})),
        )
        .await;
    assert_eq!(status, 200);
    match allowed.read_packet().await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::ADMINISTRATIVE_ACTION),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }

    assert_error(
        api.call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "public", "kind": "tcp", "bind": "127.0.0.1:0"})),
        )
        .await,
        409,
        "conflict",
        "exists",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "x", "kind": "tcp", "bind": api.mqtt.to_string()})),
        )
        .await,
        409,
        "conflict",
        "cannot bind",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "x", "kind": "tcp", "bind": "nowhere"})),
        )
        .await,
        400,
        "invalid_field",
        "bind",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "x", "kind": "quic", "bind": "127.0.0.1:0"})),
        )
        .await,
        400,
        "invalid_field",
        "kind",
    );
    assert_error(
        api.call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "x y", "kind": "tcp", "bind": "127.0.0.1:0"})),
        )
        .await,
        400,
        "invalid_field",
        "name",
    );
    assert_error(
        api.call(
            "PATCH",
            "/api/v1/listeners/public",
            Some(json!({"allow": ["10.0.0.0/40"]})),
        )
        .await,
        400,
        "invalid_field",
        "allow[0]",
    );
    assert_error(
        api.call(
            "PATCH",
            "/api/v1/listeners/public",
            Some(json!({"port": 1})),
        )
        .await,
        400,
        "invalid_field",
        "port",
    );
    assert_error(
        api.call("GET", "/api/v1/listeners/none", None).await,
        404,
        "not_found",
        "none",
    );
    assert_error(
        api.call(
            "PATCH",
            "/api/v1/listeners/none",
            Some(json!({"enabled": true})),
        )
        .await,
        404,
        "not_found",
        "none",
    );
    assert_error(
        api.call("DELETE", "/api/v1/listeners/default", None).await,
        409,
        "conflict",
        "disable",
    );
    assert_eq!(
        api.call("DELETE", "/api/v1/listeners/public", None).await.0,
        204
    );
    assert_error(
        api.call("GET", "/api/v1/listeners/public", None).await,
        404,
        "not_found",
        "public",
    );
    assert_error(
        api.call("DELETE", "/api/v1/listeners/public", None).await,
        404,
        "not_found",
        "public",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn limits_apply_at_once() {
    let api = start_api(|_| {}).await;
    let (status, limits) = api.call("GET", "/api/v1/limits", None).await;
    assert_eq!(status, 200);
    assert_eq!(limits["max_subscriptions_per_session"], 30);
    assert_eq!(limits["connect_rate"], 1000, "max(100, 100000 / 100)");
    assert_eq!(limits["will_connect_rate"], 100);

    let mut changed = limits.clone();
    changed["max_connections"] = json!(1);
    changed["max_subscriptions_per_session"] = json!(1);
    let (status, body) = api
        .call("PUT", "/api/v1/limits", Some(changed.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.call("GET", "/api/v1/limits", None).await.1, changed);

    let mut first = RawClient::connect_v5(api.mqtt, "only").await;
    // Second connection: CONNACK 0x97 quota exceeded.
    let mut second = RawClient::open(api.mqtt, ProtocolVersion::V5).await;
    second
        .send_hex(&common::connect_v5_hex("second", 0x02, 60, ""))
        .await;
    second.expect_connack(0x97).await;
    // Second subscription: SUBACK 0x97.
    first
        .send_hex(&packet_hex(
            0x82,
            &format!("0001 00 {} 00 {} 00", str_hex("a"), str_hex("b")),
        ))
        .await;
    match first.read_packet().await {
        Packet::SubAck(ack) => {
            assert_eq!(
                ack.reason_codes,
                [ReasonCode(0), ReasonCode::QUOTA_EXCEEDED]
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }

    let mut bad = changed.clone();
    bad["connect_rate"] = json!(0);
    assert_error(
        api.call("PUT", "/api/v1/limits", Some(bad)).await,
        400,
        "invalid_field",
        "connect_rate",
    );
    let mut bad = changed.clone();
    bad["max_message_size"] = json!(1);
    assert_error(
        api.call("PUT", "/api/v1/limits", Some(bad)).await,
        400,
        "invalid_field",
        "max_message_size",
    );
    let mut bad = changed.clone();
    bad["max_retained"] = json!(-1);
    assert_error(
        api.call("PUT", "/api/v1/limits", Some(bad)).await,
        400,
        "invalid_field",
        "max_retained",
    );
    let mut bad = changed.clone();
    bad.as_object_mut().unwrap().remove("subscribe_rate");
    assert_error(
        api.call("PUT", "/api/v1/limits", Some(bad)).await,
        400,
        "invalid_field",
        "subscribe_rate",
    );
    let mut bad = changed;
    bad["burst"] = json!(1);
    assert_error(
        api.call("PUT", "/api/v1/limits", Some(bad)).await,
        400,
        "invalid_field",
        "burst",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn message_size_limit_applies_to_new_packets() {
    let api = start_api(|_| {}).await;
    let (_, mut limits) = api.call("GET", "/api/v1/limits", None).await;
    limits["max_message_size"] = json!(64);
    assert_eq!(api.call("PUT", "/api/v1/limits", Some(limits)).await.0, 200);
    let mut client = RawClient::connect_v5(api.mqtt, "big").await;
    let payload = "00".repeat(100);
    client
        .send_hex(&packet_hex(0x30, &format!("{} 00 {payload}", str_hex("t"))))
        .await;
    match client.read_packet().await {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::PACKET_TOO_LARGE),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert_error(
        api.call(
            "POST",
            "/api/v1/publish",
            Some(json!({"topic": "t", "payload": "x".repeat(100)})),
        )
        .await,
        400,
        "invalid_field",
        "payload",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn usage_and_metrics_are_served() {
    let api = start_api(|_| {}).await;
    let _client = RawClient::connect_v311(api.mqtt, "metered").await;
    let usage = api
        .wait_for("/api/v1/usage", |u| u["clients"]["metered"]["total"] == 1)
        .await;
    assert_eq!(usage["listeners"]["default"]["total"], 1);
    assert!(usage["total"]["per_minute"].as_array().is_some());
    let (status, one) = api.call("GET", "/api/v1/usage/client/metered", None).await;
    assert_eq!(status, 200);
    assert_eq!(one["total"], 1);
    assert_eq!(one["per_minute"][0]["units"], 1);
    assert_error(
        api.call("GET", "/api/v1/usage/client/nobody", None).await,
        404,
        "not_found",
        "nobody",
    );
    assert_error(
        api.call("GET", "/api/v1/usage/planet/x", None).await,
        400,
        "invalid_field",
        "scope",
    );

    // One QoS 1 message from a second client to a third.
    let mut sub = RawClient::connect_v311(api.mqtt, "metered-sub").await;
    sub.send_hex(&subscribe_hex("m/t", 1, false)).await;
    sub.read_frame().await;
    let mut publisher = RawClient::connect_v311(api.mqtt, "metered-pub").await;
    publisher
        .send_hex(&packet_hex(0x32, &format!("{} 0001 6869", str_hex("m/t"))))
        .await;
    publisher.expect_hex("40 02 00 01").await;
    let delivery = sub.read_frame().await;
    // The broker's first packet id is 1.
    assert_eq!(delivery.body[2 + 3..2 + 3 + 2], [0x00, 0x01]);
    sub.send_hex("40 02 00 01").await;

    // CONNECTs 3, QoS 1 in 2 and out 2 (clean sessions); the total is counted at once, its
    // share per listener by the attribution round of the next tick.
    let text = loop_metrics(
        &api,
        "aviary_usage_units_by_listener_total{listener=\"default\"} 7",
    )
    .await;
    for line in [
        "aviary_connections 3",
        "aviary_connacks_total{reason=\"0x00\"} 3",
        "aviary_messages_received_total{qos=\"1\"} 1",
        "aviary_messages_sent_total{qos=\"1\"} 1",
        "aviary_payload_bytes_received_total{qos=\"1\"} 2",
        "aviary_messages_dropped_total{reason=\"queue_full\"} 0",
        "aviary_subscriptions 1",
        "aviary_retained_messages 0",
        "aviary_auth_failures_total 0",
        "aviary_publish_to_deliver_seconds_count 1",
        "aviary_inflight_messages 0",
        "aviary_queued_messages 0",
        "aviary_usage_units_total 7",
        "aviary_store_failed 0",
        "aviary_store_operations_elided_total",
        "aviary_store_commit_seconds_count",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    let _ = KEY;
    api.shutdown().await;
}

/// `/metrics` once it contains `wanted` and nothing is in flight (usage per listener and
/// the queue gauges are updated by the attribution round of each tick).
async fn loop_metrics(api: &api::Api, wanted: &str) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        let response = api
            .http
            .get(format!("{}/metrics", api.base))
            .send()
            .await
            .unwrap();
        text = response.text().await.unwrap();
        if text.contains(wanted) && text.contains("aviary_inflight_messages 0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    text
}

#[tokio::test]
async fn shared_group_backlog_counts_unacknowledged_and_queued_messages() {
    let api = start_api(|_| {}).await;
    let mut member = RawClient::connect_v311(api.mqtt, "slow-worker").await;
    member
        .send_hex(&subscribe_hex("$share/g/jobs", 1, false))
        .await;
    member.read_frame().await;
    // 20 QoS 1 messages the member never acknowledges: 16 in flight, 4 queued.
    for _ in 0..20 {
        let (status, _) = api
            .call(
                "POST",
                "/api/v1/publish",
                Some(json!({"topic": "jobs", "payload": "x", "qos": 1})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let groups = api
        .wait_for("/api/v1/shared-subscriptions", |g| g[0]["backlog"] == 20)
        .await;
    assert_eq!(groups[0]["members"], json!(["slow-worker"]));
    let (_, detail) = api.call("GET", "/api/v1/clients/slow-worker", None).await;
    assert_eq!(
        (detail["inflight"].clone(), detail["queued"].clone()),
        (json!(16), json!(4))
    );
    api.shutdown().await;
}
