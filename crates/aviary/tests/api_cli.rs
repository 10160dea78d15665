//! The `aviary` CLI against a running broker: every command group, tables and `--json`,
//! the key from the environment, and errors that say what to do.

mod api;
mod common;
mod tls_support;

use std::process::Output;

use serde_json::Value;

use api::{start_api, Api, KEY};
use common::RawClient;

/// Runs `aviary <args>` against `api` (key from the environment) and returns its output.
async fn aviary(api: &Api, args: &[&str]) -> Output {
    aviary_with(api, args, Some(KEY)).await
}

async fn aviary_with(api: &Api, args: &[&str], key: Option<&str>) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_aviary"));
    command.args(["--url", &api.base]).args(args);
    command.env_remove("AVIARY_API_KEY");
    if let Some(key) = key {
        command.env("AVIARY_API_KEY", key);
    }
    tokio::task::spawn_blocking(move || command.output().expect("run aviary"))
        .await
        .unwrap()
}

/// Stdout of a successful run.
async fn ok(api: &Api, args: &[&str]) -> String {
    let out = aviary(api, args).await;
    assert!(
        out.status.success(),
        "aviary {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stderr of a failed run.
async fn fails(api: &Api, args: &[&str]) -> String {
    let out = aviary(api, args).await;
    assert!(!out.status.success(), "aviary {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[tokio::test]
async fn client_commands() {
    let api = start_api(|_| {}).await;
    let _a = RawClient::connect_v311(api.mqtt, "cli-a").await;
    let _b = RawClient::connect_v5(api.mqtt, "cli-b").await;
    let table = ok(&api, &["client", "list"]).await;
    assert!(table.starts_with("CLIENT ID"), "{table}");
    assert!(
        table.contains("cli-a") && table.contains("cli-b"),
        "{table}"
    );
    assert!(table.contains("(2 of 2 clients)"), "{table}");
    let json: Value =
        serde_json::from_str(&ok(&api, &["client", "list", "--protocol", "5.0", "--json"]).await)
            .unwrap();
    assert_eq!(json["clients"][0]["client_id"], "cli-b");
    assert_eq!(json["total"], 1);

    ok(&api, &["client", "subscribe", "cli-a", "x/#", "--qos", "1"]).await;
    let shown = ok(&api, &["client", "show", "cli-a"]).await;
    assert!(
        shown.contains("protocol: 3.1.1") && shown.contains("x/#"),
        "{shown}"
    );
    ok(&api, &["client", "unsubscribe", "cli-a", "x/#"]).await;
    let err = fails(&api, &["client", "unsubscribe", "cli-a", "x/#"]).await;
    assert!(
        err.contains("no subscription") && err.contains("HTTP 404"),
        "{err}"
    );
    assert!(ok(&api, &["client", "kick", "cli-b"])
        .await
        .contains("disconnected cli-b"));
    let err = fails(&api, &["client", "show", "cli-b"]).await;
    assert!(err.contains("not_found"), "{err}");
    api.shutdown().await;
}

#[tokio::test]
async fn listener_commands() {
    let api = start_api(|_| {}).await;
    let created = ok(
        &api,
        &[
            "listener",
            "create",
            "public",
            "--bind",
            "127.0.0.1:0",
            "--allow",
            "127.0.0.0/8",
        ],
    )
    .await;
    assert!(
        created.contains("public") && created.contains("127.0.0.0/8"),
        "{created}"
    );
    let off = ok(&api, &["listener", "disable", "public"]).await;
    assert!(off.contains("false"), "{off}");
    ok(&api, &["listener", "enable", "public"]).await;
    ok(&api, &["listener", "allow", "public"]).await;
    let listed = ok(&api, &["listener", "list"]).await;
    assert!(
        listed.contains("default") && listed.contains("public"),
        "{listed}"
    );
    let json: Value =
        serde_json::from_str(&ok(&api, &["listener", "show", "public", "--json"]).await).unwrap();
    assert_eq!(json["allow"], serde_json::json!([]));
    assert_eq!(json["enabled"], true);
    let err = fails(&api, &["listener", "delete", "default"]).await;
    assert!(err.contains("disable it instead"), "{err}");
    ok(&api, &["listener", "delete", "public"]).await;
    let err = fails(&api, &["listener", "create", "x", "--bind", "here"]).await;
    assert!(err.contains("bind"), "{err}");
    api.shutdown().await;
}

#[tokio::test]
async fn tls_listener_commands() {
    let api = start_api(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = tls_support::server_pki();
    let cert = tls_support::write(dir.path(), "server.pem", &pki.cert);
    let key = tls_support::write(dir.path(), "server.key", &pki.key);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let create = |extra: &'static [&'static str]| {
        let mut args = vec![
            "listener",
            "create",
            "secure",
            "--kind",
            "tls",
            "--bind",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        args
    };
    let err = fails(&api, &create(&[])).await;
    assert!(err.contains("cert: required"), "{err}");
    let mut args: Vec<&str> = create(&["--x509-mode", "mutual", "--key"]);
    args.extend([key, "--cert", "/nonexistent/server.pem"]);
    let err = fails(&api, &args).await;
    assert!(
        err.contains("cert: cannot read /nonexistent/server.pem"),
        "{err}"
    );
    let mut args: Vec<&str> = create(&["--x509-mode", "mutual", "--json"]);
    args.extend(["--cert", cert, "--key", key]);
    let created: Value = serde_json::from_str(&ok(&api, &args).await).unwrap();
    assert_eq!(created["kind"], "tls");
    assert_eq!(created["x509_mode"], "mutual");
    let listed = ok(&api, &["listener", "list"]).await;
    assert!(
        listed.contains("secure") && listed.contains("mutual"),
        "{listed}"
    );
    // Replace the certificate with another one.
    let next = tls_support::server_pki();
    let next_cert = tls_support::write(dir.path(), "next.pem", &next.cert);
    let next_key = tls_support::write(dir.path(), "next.key", &next.key);
    let replaced = ok(
        &api,
        &[
            "listener",
            "certificate",
            "secure",
            "--cert",
            next_cert.to_str().unwrap(),
            "--key",
            next_key.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    let replaced: Value = serde_json::from_str(&replaced).unwrap();
    assert_eq!(replaced["cert"], next_cert.to_str().unwrap());
    let err = fails(
        &api,
        &["listener", "certificate", "default", "--cert", cert],
    )
    .await;
    assert!(err.contains("cert:"), "{err}");
    ok(&api, &["listener", "delete", "secure"]).await;
    api.shutdown().await;
}

#[tokio::test]
async fn message_limit_usage_and_key_commands() {
    let api = start_api(|_| {}).await;
    let out = ok(&api, &["publish", "home/t", "21", "--retain", "--qos", "1"]).await;
    assert!(out.contains("published to home/t"), "{out}");
    let list = ok(&api, &["retained", "list"]).await;
    assert!(list.contains("home/t") && list.contains("21"), "{list}");
    assert!(ok(&api, &["retained", "get", "home/t"])
        .await
        .contains("payload: 21"));
    ok(&api, &["retained", "delete", "home/t"]).await;
    assert!(fails(&api, &["retained", "get", "home/t"])
        .await
        .contains("HTTP 404"));

    assert!(ok(&api, &["shared"]).await.starts_with("GROUP"));
    assert!(ok(&api, &["stats"]).await.contains("connections: 0"));

    let limits = ok(
        &api,
        &["limits", "set", "connect_rate=50", "max_connections=10"],
    )
    .await;
    assert!(
        limits.contains("connect_rate: 50") && limits.contains("max_connections: 10"),
        "{limits}"
    );
    assert!(ok(&api, &["limits", "get"])
        .await
        .contains("connect_rate: 50"));
    let err = fails(&api, &["limits", "set", "speed=1"]).await;
    assert!(err.contains("unknown limit \"speed\""), "{err}");
    let err = fails(&api, &["limits", "set", "connect_rate=0"]).await;
    assert!(err.contains("connect_rate"), "{err}");

    let _c = RawClient::connect_v311(api.mqtt, "user-1").await;
    api.wait_for("/api/v1/usage", |u| u["clients"]["user-1"]["total"] == 1)
        .await;
    let usage = ok(&api, &["usage"]).await;
    assert!(usage.contains("user-1"), "{usage}");
    assert!(ok(&api, &["usage", "--client", "user-1"])
        .await
        .contains("total: 1"));

    let created = ok(&api, &["api-key", "create", "deploy"]).await;
    let key = created
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap()
        .to_owned();
    let id = created
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    let out = aviary_with(&api, &["api-key", "list"], Some(&key)).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("deploy"));
    ok(&api, &["api-key", "revoke", &id]).await;
    let out = aviary_with(&api, &["stats"], Some(&key)).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AVIARY_API_KEY"));
    api.shutdown().await;
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let api = start_api(|_| {}).await;
    let out = aviary_with(&api, &["stats"], None).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--api-key") && err.contains("AVIARY_API_KEY"),
        "{err}"
    );
    let base = api.base.clone();
    api.shutdown().await;
    // Nothing listens there any more.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_aviary"))
            .args(["--url", &base, "--api-key", KEY, "stats"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("--url"),
        "{err}"
    );
}

/// `aviary <args> --json`, parsed.
async fn json(api: &Api, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(api, &args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("aviary {args:?}: {e}\n{out}"))
}

#[tokio::test]
async fn every_resource_prints_json_for_scripts_and_a_table_for_people() {
    let api = start_api(|_| {}).await;
    let mut member = RawClient::connect_v311(api.mqtt, "worker-1").await;
    member.subscribe(1, "$share/g/jobs/#", 1).await;

    // Health and readiness.
    let health = ok(&api, &["health"]).await;
    assert!(
        health.contains("health: ok") && health.contains("ready: ready"),
        "{health}"
    );
    let h = json(&api, &["health"]).await;
    assert_eq!((&h["health"], &h["ready"]), (&"ok".into(), &"ready".into()));

    // Clients and listeners.
    let c = json(&api, &["client", "show", "worker-1"]).await;
    assert_eq!(c["subscription_list"][0]["filter"], "$share/g/jobs/#");
    let l = json(&api, &["listener", "list"]).await;
    assert_eq!(l[0]["name"], "default");
    assert_eq!(l[0]["clients"], 1);

    // Publish, retained, shared groups.
    let p = json(
        &api,
        &["publish", "jobs/1", "build", "--qos", "1", "--retain"],
    )
    .await;
    assert_eq!(p["matched"], true);
    let r = json(&api, &["retained", "list"]).await;
    assert_eq!(r[0]["topic"], "jobs/1");
    assert_eq!(r[0]["payload"], "build");
    let r = json(&api, &["retained", "get", "jobs/1"]).await;
    assert_eq!(r["qos"], 1);
    let groups = ok(&api, &["shared"]).await;
    assert!(
        groups.starts_with("GROUP") && groups.contains("worker-1"),
        "{groups}"
    );
    let g = json(&api, &["shared"]).await;
    assert_eq!(g[0]["group"], "g");
    assert_eq!(g[0]["members"][0], "worker-1");

    // Stats, limits, usage, keys.
    let s = json(&api, &["stats"]).await;
    assert_eq!(s["connections"], 1);
    assert_eq!(s["retained"], 1);
    let limits = json(&api, &["limits", "get"]).await;
    assert!(limits["max_connections"].as_u64().unwrap() > 0);
    let set = json(&api, &["limits", "set", "will_connect_rate=7"]).await;
    assert_eq!(set["will_connect_rate"], 7);
    // Its CONNECT (1) and the QoS 1 delivery to its clean session (2).
    api.wait_for("/api/v1/usage", |u| u["clients"]["worker-1"]["total"] == 3)
        .await;
    let u = json(&api, &["usage"]).await;
    assert_eq!(u["clients"]["worker-1"]["total"], 3);
    let u = json(&api, &["usage", "--listener", "default"]).await;
    assert!(u["per_minute"].as_array().is_some_and(|m| !m.is_empty()));
    let keys = ok(&api, &["api-key", "list"]).await;
    assert!(keys.starts_with("ID"), "{keys}");
    let created = json(&api, &["api-key", "create", "scripts"]).await;
    assert!(created["key"].as_str().is_some_and(|k| !k.is_empty()));
    let k = json(&api, &["api-key", "list"]).await;
    assert!(
        k.as_array().unwrap().iter().any(|k| k["name"] == "scripts"),
        "{k}"
    );
    api.shutdown().await;
}
