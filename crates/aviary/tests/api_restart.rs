//! Management state made through the API is stored and comes back after a restart:
//! API-created listeners and changes to the default one, the plan limits, and API keys
//! (created ones work again, revoked ones do not).

mod api;
mod common;

use serde_json::json;

use api::{start_api_in, KEY};

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
