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

/// CONNECT 5.0 with a user name and password; the CONNACK code.
async fn login(api: &Api, client_id: &str, user: &str, password: &str) -> u8 {
    let version = aviary_codec::ProtocolVersion::V5;
    let mut c = RawClient::open(api.mqtt, version).await;
    c.send_hex(&common::connect_with_credentials_hex(
        version,
        client_id,
        Some(user),
        Some(password.as_bytes()),
    ))
    .await;
    let frame = c.read_frame().await;
    assert_eq!(frame.first, 0x20);
    frame.body[1]
}

#[tokio::test]
async fn user_policy_and_device_commands() {
    let api = start_api(|_| {}).await;
    let added = ok(&api, &["user", "add", "alice", "--password", "pw-1"]).await;
    assert!(
        added.starts_with("USERNAME") && added.contains("alice"),
        "{added}"
    );
    assert_eq!(login(&api, "a1", "alice", "pw-1").await, 0);
    ok(&api, &["user", "passwd", "alice", "--password", "pw-2"]).await;
    assert_eq!(login(&api, "a2", "alice", "pw-1").await, 0x86);
    assert_eq!(login(&api, "a3", "alice", "pw-2").await, 0);
    ok(&api, &["user", "disable", "alice"]).await;
    assert_eq!(login(&api, "a4", "alice", "pw-2").await, 0x87);
    let users: Value = serde_json::from_str(&ok(&api, &["user", "list", "--json"]).await).unwrap();
    assert_eq!(users[0]["username"], "alice");
    assert_eq!(users[0]["enabled"], false);
    let err = fails(&api, &["user", "add", "bob"]).await;
    assert!(err.contains("--password"), "{err}");
    assert!(ok(&api, &["user", "delete", "alice"])
        .await
        .contains("deleted user alice"));
    let err = fails(&api, &["user", "show", "alice"]).await;
    assert!(err.contains("HTTP 404"), "{err}");

    let created = ok(
        &api,
        &[
            "policy",
            "create",
            "own",
            "--effect",
            "allow",
            "--action",
            "subscribe",
            "--action",
            "publish",
            "--resource",
            "users/${username}/#",
            "--priority",
            "5",
        ],
    )
    .await;
    assert!(
        created.contains("own") && created.contains("users/${username}/#"),
        "{created}"
    );
    let err = fails(
        &api,
        &[
            "policy", "create", "bad", "--effect", "maybe", "--action", "publish",
        ],
    )
    .await;
    assert!(err.contains("effect"), "{err}");
    let listed: Value =
        serde_json::from_str(&ok(&api, &["policy", "list", "--json"]).await).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["priority"], 5);
    ok(&api, &["policy", "delete", "own"]).await;

    let device: Value =
        serde_json::from_str(&ok(&api, &["device", "add", "d1", "--json"]).await).unwrap();
    assert_eq!(device["device_id"], "d1");
    assert!(device["primary_key"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    let disabled = ok(&api, &["device", "disable", "d1"]).await;
    assert!(
        disabled.contains("d1") && disabled.contains("false"),
        "{disabled}"
    );
    ok(&api, &["device", "delete", "d1"]).await;

    // The authentication chain: anonymous access off, then a JWT from a settings file.
    let shown = ok(&api, &["auth", "show"]).await;
    assert!(shown.contains("anonymous: auto"), "{shown}");
    let set = ok(
        &api,
        &[
            "auth",
            "set",
            "--anonymous",
            "deny",
            "--order",
            "users,devices",
        ],
    )
    .await;
    assert!(set.contains("anonymous_allowed: false"), "{set}");
    let mut anon = RawClient::open(api.mqtt, aviary_codec::ProtocolVersion::V5).await;
    anon.send_hex(&common::connect_v5_hex("anon", 0x02, 60, ""))
        .await;
    anon.expect_connack(0x87).await;
    let files = tempfile::tempdir().unwrap();
    let jwt = files.path().join("jwt.json");
    std::fs::write(
        &jwt,
        r#"{"secret": "s-0123456789", "algorithms": ["HS999"]}"#,
    )
    .unwrap();
    let err = fails(&api, &["auth", "set", "--jwt", jwt.to_str().unwrap()]).await;
    assert!(err.contains("jwt.algorithms"), "{err}");
    std::fs::write(&jwt, r#"{"secret": "s-0123456789"}"#).unwrap();
    let set: Value = serde_json::from_str(
        &ok(
            &api,
            &["auth", "set", "--jwt", jwt.to_str().unwrap(), "--json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(set["jwt_configured"], true);
    assert_eq!(set["anonymous"], "deny", "kept: not named in the change");
    let set = ok(&api, &["auth", "set", "--no-jwt"]).await;
    assert!(set.contains("jwt_configured: false"), "{set}");
    assert!(!ok(&api, &["device", "list"]).await.contains("d1"));
    api.shutdown().await;
}

#[tokio::test]
async fn ca_certificate_and_crl_commands() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };
    let api = start_api(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "CLI CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = write("ca.pem", &ca.self_signed(&ca_key).unwrap().pem());
    let issuer = Issuer::from_params(&ca, &ca_key);
    let issue = |cn: &str, serial: u64| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .pem()
    };

    let code = ok(&api, &["ca", "code"]).await;
    let verification = write("verification.pem", &issue(code.trim(), 1));
    let registered: Value = serde_json::from_str(
        &ok(
            &api,
            &[
                "ca",
                "register",
                "--cert",
                &ca_pem,
                "--verification",
                &verification,
                "--auto-register",
                "--json",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(registered["status"], "ACTIVE");
    assert_eq!(registered["auto_register"], true);
    let ca_id = registered["id"].as_str().unwrap().to_owned();
    assert!(ok(&api, &["ca", "list"]).await.contains(&ca_id));
    let err = fails(
        &api,
        &[
            "ca",
            "register",
            "--cert",
            &ca_pem,
            "--verification",
            "/nonexistent.pem",
        ],
    )
    .await;
    assert!(err.contains("/nonexistent.pem"), "{err}");

    let device = write("device.pem", &issue("dev-1", 0x20));
    let listed = ok(&api, &["cert", "register", &device]).await;
    assert!(
        listed.contains("20") && listed.contains("dev-1") && listed.contains("ACTIVE"),
        "{listed}"
    );
    ok(&api, &["cert", "set-status", "20", "INACTIVE"]).await;
    assert!(ok(&api, &["cert", "status", "20"])
        .await
        .contains("INACTIVE"));
    let filtered: Value =
        serde_json::from_str(&ok(&api, &["cert", "list", "--status", "INACTIVE", "--json"]).await)
            .unwrap();
    assert_eq!(filtered[0]["client_id"], "dev-1");

    let now = time::OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(0x21u64),
            revocation_time: now - time::Duration::minutes(1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .pem()
    .unwrap();
    let crl = write("crl.pem", &crl);
    assert!(ok(&api, &["ca", "crl", &ca_id, &crl])
        .await
        .contains("1 serials revoked"));
    assert!(ok(&api, &["cert", "status", "21"])
        .await
        .contains("REVOKED"));
    assert!(ok(&api, &["cert", "status", "99"])
        .await
        .contains("UNKNOWN"));

    ok(&api, &["cert", "delete", "20"]).await;
    let err = fails(&api, &["ca", "delete", &ca_id]).await;
    assert!(err.contains("deactivate"), "{err}");
    assert!(ok(&api, &["ca", "deactivate", &ca_id])
        .await
        .contains("INACTIVE"));
    assert!(ok(&api, &["ca", "delete", &ca_id])
        .await
        .contains("deleted CA"));
    api.shutdown().await;
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
