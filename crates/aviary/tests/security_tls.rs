//! End to end over TLS, on the config's `[tls_listener]`: one-way TLS (1.2 and 1.3), mutual
//! TLS with a registered CA, one certificate per device (registered by API and just in
//! time), status changes and CRLs taking effect on live connections, CA registration with
//! proof of possession; everything registered survives a restart. Real clients: tokio-rustls
//! with literal MQTT bytes, and `mosquitto_pub --cafile --cert --key`. Certificates and CRLs
//! are made with rcgen in the test. TLS listeners made through the API:
//! `security_tls_listeners.rs`.

mod api;
mod tls_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aviary::config::TlsListenerConfig;
use aviary::tls::{CaOptions, CaStatus, CertStatus, RegistryError, TlsMode};
use aviary_codec::{Packet, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tls_support::{
    client_config, register_ca, server_pki, try_connect, write, Ca, Got, ServerPki, WAIT,
};

/// The status of a serial that at most one CA knows.
fn only_status(registry: &aviary::tls::CertificateRegistry, serial: &str) -> Option<CertStatus> {
    let found = registry.status_of(serial, None);
    assert!(found.len() <= 1, "{serial} known by several CAs");
    found.first().map(|m| m.status)
}

async fn start(dir: &Path, server: &ServerPki, mode: TlsMode) -> aviary::RunningServer {
    start_with(dir, server, mode, |_| {}).await
}

async fn start_with(
    dir: &Path,
    server: &ServerPki,
    mode: TlsMode,
    tweak: impl FnOnce(&mut aviary::Config),
) -> aviary::RunningServer {
    let mut config = aviary::Config {
        data_dir: dir.join("data"),
        ..Default::default()
    };
    config.listener.bind = "127.0.0.1:0".parse().unwrap();
    config.api.enabled = false;
    config.security.tls_listener = Some(TlsListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert: write(dir, "server.pem", &server.cert),
        key: write(dir, "server.key", &server.key),
        mode,
        ca: vec![],
    });
    tweak(&mut config);
    tokio::time::timeout(WAIT, aviary::start(config))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn one_way_tls_accepts_tls_1_2_and_1_3() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let server = start(dir.path(), &pki, TlsMode::OneWay).await;
    let addr = server.tls_addr().unwrap();
    for tls12 in [false, true] {
        let config = client_config(&pki.ca.pem, None, tls12);
        let (client, code) = try_connect(addr, config, ProtocolVersion::V3_1_1, "one-way").await;
        assert_eq!(code, Some(0), "TLS 1.2 only: {tls12}");
        let mut client = client.unwrap();
        client.ping().await;
        let version = client.stream.get_ref().1.protocol_version().unwrap();
        assert_eq!(version == rustls::ProtocolVersion::TLSv1_2, tls12);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ca_registration_needs_proof_of_possession() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let server = start(dir.path(), &pki, TlsMode::PerDevice).await;
    let registry = &server.security().certificates;
    let fleet = Ca::new("Fleet CA");
    let other = Ca::new("Other CA");
    let code = registry.registration_code().unwrap();
    let (wrong_cn, _) = fleet.issue("not-the-code", &[], 1);
    assert_eq!(
        registry.register_ca(
            fleet.pem.as_bytes(),
            wrong_cn.as_bytes(),
            CaOptions::default()
        ),
        Err(RegistryError::WrongCode)
    );
    let (foreign, _) = other.issue(&code, &[], 2);
    assert_eq!(
        registry.register_ca(
            fleet.pem.as_bytes(),
            foreign.as_bytes(),
            CaOptions::default()
        ),
        Err(RegistryError::NotSignedByCa)
    );
    let (leaf, _) = fleet.issue("leaf", &[], 3);
    let (proof, _) = fleet.issue(&code, &[], 4);
    assert_eq!(
        registry.register_ca(leaf.as_bytes(), proof.as_bytes(), CaOptions::default()),
        Err(RegistryError::NotCa)
    );
    let id = register_ca(&server, &fleet, CaOptions::default());
    assert_eq!(registry.ca(&id).unwrap().status, CaStatus::Active);
    assert_eq!(registry.delete_ca(&id), Err(RegistryError::CaActive));
    registry.set_ca_status(&id, CaStatus::Inactive).unwrap();
    registry.delete_ca(&id).unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn per_device_certificates_bind_client_ids_and_status_changes_close_live_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let server = start(dir.path(), &pki, TlsMode::PerDevice).await;
    let addr = server.tls_addr().unwrap();
    let fleet = Ca::new("Fleet CA");
    register_ca(&server, &fleet, CaOptions::default());
    let registry = server.security().certificates.clone();
    let (c1, k1) = fleet.issue("dev-1", &[], 11);
    let (c2, k2) = fleet.issue("dev-2", &[], 12);
    let (c3, k3) = fleet.issue("dev-3", &[], 13);
    registry
        .register_cert(c1.as_bytes(), None, CertStatus::Active)
        .unwrap();
    registry
        .register_cert(c2.as_bytes(), None, CertStatus::Active)
        .unwrap();
    let dev1 = client_config(&pki.ca.pem, Some((&c1, &k1)), false);
    let dev2 = client_config(&pki.ca.pem, Some((&c2, &k2)), true);

    // Bound to the CN: dev-1 may not connect as dev-2 (0x87 in 5.0, 5 in 3.1.1).
    let (_, code) = try_connect(addr, dev1.clone(), ProtocolVersion::V5, "dev-2").await;
    assert_eq!(code, Some(0x87));
    // (The codec reads 3.1.1 return code 5 as the 5.0 code with its meaning, 0x87.)
    let (_, code) = try_connect(addr, dev1.clone(), ProtocolVersion::V3_1_1, "dev-2").await;
    assert_eq!(code, Some(0x87));
    let (one, code) = try_connect(addr, dev1.clone(), ProtocolVersion::V5, "dev-1").await;
    assert_eq!(code, Some(0));
    let mut one = one.unwrap();
    let (two, code) = try_connect(addr, dev2.clone(), ProtocolVersion::V3_1_1, "dev-2").await;
    assert_eq!(code, Some(0));
    let mut two = two.unwrap();

    // Unregistered (CA without JITP) and no certificate at all: no session.
    let dev3 = client_config(&pki.ca.pem, Some((&c3, &k3)), false);
    assert_eq!(
        try_connect(addr, dev3, ProtocolVersion::V5, "dev-3")
            .await
            .1,
        None
    );
    let anonymous = client_config(&pki.ca.pem, None, false);
    assert_eq!(
        try_connect(addr, anonymous, ProtocolVersion::V5, "x")
            .await
            .1,
        None
    );

    // Deactivated while connected: DISCONNECT 0x87 right away, then the close.
    let serial1 = registry
        .list_certs(&Default::default())
        .into_iter()
        .find(|c| c.client_id == "dev-1")
        .unwrap()
        .serial;
    assert_eq!(serial1, "0b");
    registry
        .set_cert_status(&serial1, CertStatus::Inactive)
        .unwrap();
    match one.next().await {
        Got::Packet(Packet::Disconnect(d)) => assert_eq!(d.reason_code.0, 0x87),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert!(matches!(one.next().await, Got::Closed));
    // The other device is unaffected; a new handshake with the inactive certificate fails.
    two.ping().await;
    assert_eq!(
        try_connect(addr, dev1.clone(), ProtocolVersion::V5, "dev-1")
            .await
            .1,
        None
    );
    registry
        .set_cert_status(&serial1, CertStatus::Active)
        .unwrap();
    let (again, code) = try_connect(addr, dev1.clone(), ProtocolVersion::V5, "dev-1").await;
    assert_eq!(code, Some(0));
    let mut again = again.unwrap();

    // A CRL from the CA revokes dev-2 (3.1.1: closed without DISCONNECT).
    let fleet_id = registry.list_cas()[0].id.clone();
    assert_eq!(
        registry
            .import_crl(&fleet_id, fleet.crl(&[12]).as_bytes())
            .unwrap(),
        1
    );
    assert!(matches!(two.next().await, Got::Closed));
    assert_eq!(only_status(&registry, "0c"), Some(CertStatus::Revoked));
    assert_eq!(only_status(&registry, "0b"), Some(CertStatus::Active));
    assert_eq!(only_status(&registry, "ff"), None);
    assert_eq!(
        try_connect(addr, dev2, ProtocolVersion::V3_1_1, "dev-2")
            .await
            .1,
        None
    );
    again.ping().await;

    // Deactivating the CA closes its devices too.
    registry
        .set_ca_status(&fleet_id, CaStatus::Inactive)
        .unwrap();
    assert!(matches!(
        again.next().await,
        Got::Packet(Packet::Disconnect(_))
    ));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn just_in_time_registration_waits_for_activation_unless_auto_activated() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let server = start(dir.path(), &pki, TlsMode::PerDevice).await;
    let addr = server.tls_addr().unwrap();
    let registry = server.security().certificates.clone();
    let pending = Ca::new("Pending CA");
    register_ca(
        &server,
        &pending,
        CaOptions {
            auto_register: Some(true),
            ..CaOptions::default()
        },
    );
    let (cert, key) = pending.issue("jit-1", &[], 21);
    let config = client_config(&pki.ca.pem, Some((&cert, &key)), false);
    assert_eq!(
        try_connect(addr, config.clone(), ProtocolVersion::V5, "jit-1")
            .await
            .1,
        None
    );
    assert_eq!(
        only_status(&registry, "15"),
        Some(CertStatus::PendingActivation)
    );
    registry.set_cert_status("15", CertStatus::Active).unwrap();
    assert_eq!(
        try_connect(addr, config, ProtocolVersion::V5, "jit-1")
            .await
            .1,
        Some(0)
    );

    let auto = Ca::new("Auto CA");
    register_ca(
        &server,
        &auto,
        CaOptions {
            auto_register: Some(true),
            auto_activate: Some(true),
            ..CaOptions::default()
        },
    );
    let (cert, key) = auto.issue("jit-2", &[], 22);
    let config = client_config(&pki.ca.pem, Some((&cert, &key)), false);
    assert_eq!(
        try_connect(addr, config, ProtocolVersion::V3_1_1, "jit-2")
            .await
            .1,
        Some(0)
    );
    let listed = registry.list_certs(&aviary::tls::CertFilter {
        status: Some(CertStatus::Active),
        ..Default::default()
    });
    assert_eq!(listed.len(), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_accepts_any_client_id_from_a_registered_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let server = start(dir.path(), &pki, TlsMode::Mutual).await;
    let addr = server.tls_addr().unwrap();
    let fleet = Ca::new("Fleet CA");
    let stranger = Ca::new("Stranger CA");
    register_ca(&server, &fleet, CaOptions::default());
    let (cert, key) = fleet.issue("anyone", &[], 31);
    let (scert, skey) = stranger.issue("anyone", &[], 32);
    let ok = client_config(&pki.ca.pem, Some((&cert, &key)), false);
    assert_eq!(
        try_connect(addr, ok, ProtocolVersion::V5, "whatever")
            .await
            .1,
        Some(0)
    );
    let bad = client_config(&pki.ca.pem, Some((&scert, &skey)), false);
    assert_eq!(
        try_connect(addr, bad, ProtocolVersion::V5, "whatever")
            .await
            .1,
        None
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mosquitto_pub_with_a_device_certificate() {
    if std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("mosquitto_pub not installed; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let server = start(dir.path(), &pki, TlsMode::PerDevice).await;
    let addr = server.tls_addr().unwrap();
    let fleet = Ca::new("Fleet CA");
    register_ca(&server, &fleet, CaOptions::default());
    let registry = server.security().certificates.clone();
    let (watch_cert, watch_key) = fleet.issue("watch", &[], 41);
    let (car_cert, car_key) = fleet.issue("car-7", &[], 42);
    registry
        .register_cert(watch_cert.as_bytes(), None, CertStatus::Active)
        .unwrap();
    registry
        .register_cert(car_cert.as_bytes(), None, CertStatus::Active)
        .unwrap();
    let (watch, code) = try_connect(
        addr,
        client_config(&pki.ca.pem, Some((&watch_cert, &watch_key)), false),
        ProtocolVersion::V3_1_1,
        "watch",
    )
    .await;
    assert_eq!(code, Some(0));
    let mut watch = watch.unwrap();
    // SUBSCRIBE id 1 to "cars/#" QoS 0.
    watch
        .send(&[
            0x82, 0x0b, 0x00, 0x01, 0x00, 0x06, b'c', b'a', b'r', b's', b'/', b'#', 0x00,
        ])
        .await
        .unwrap();
    assert!(matches!(watch.next().await, Got::Packet(Packet::SubAck(_))));

    let cafile = write(dir.path(), "ca.pem", &pki.ca.pem);
    let cert = write(dir.path(), "car.pem", &car_cert);
    let key = write(dir.path(), "car.key", &car_key);
    let run = move |client_id: &str| {
        std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "localhost",
                "-p",
                &addr.port().to_string(),
                "-i",
                client_id,
                "-t",
                "cars/7",
                "-m",
                "hello",
                "-q",
                "1",
            ])
            .arg("--cafile")
            .arg(&cafile)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(move || (run("car-7"), run("car-8")))
        .await
        .unwrap();
    assert!(
        out.0.status.success(),
        "{}",
        String::from_utf8_lossy(&out.0.stderr)
    );
    match watch.next().await {
        Got::Packet(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"hello"),
        other => panic!("{other:?}"),
    }
    // Another client id with car-7's certificate: refused (mosquitto_pub reports "not authorised").
    assert!(!out.1.status.success());
    let stderr = String::from_utf8_lossy(&out.1.stderr).to_lowercase();
    assert!(stderr.contains("not authori"), "{stderr}");
    server.shutdown().await.unwrap();
}

/// A TLS listener config (per-device mode) for the API harness, its PEMs written in `dir`.
fn tls_listener(dir: &Path, pki: &ServerPki) -> TlsListenerConfig {
    TlsListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert: write(dir, "server.pem", &pki.cert),
        key: write(dir, "server.key", &pki.key),
        mode: TlsMode::PerDevice,
        ca: vec![],
    }
}

/// Registers `ca` over the API with proof of possession; its id.
async fn register_ca_over_api(api: &api::Api, ca: &Ca, extra: serde_json::Value) -> String {
    let (status, code) = api
        .call("GET", "/api/v1/ca-certificates/registration-code", None)
        .await;
    assert_eq!(status, 200, "{code}");
    let (verification, _) = ca.issue(code["registration_code"].as_str().unwrap(), &[], 77);
    let mut body = serde_json::json!({
        "certificate_pem": ca.pem,
        "verification_certificate_pem": verification,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, body) = api
        .call("POST", "/api/v1/ca-certificates", Some(body))
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn cas_certificates_statuses_crls_and_jitp_survive_a_restart() {
    let pems = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let listener = tls_listener(pems.path(), &pki);
    let tweak = |config: &mut aviary::Config| config.security.tls_listener = Some(listener.clone());
    let api = api::start_api_in(tempfile::tempdir().unwrap(), tweak).await;
    let fleet = Ca::new("Fleet CA");
    let fleet_id = register_ca_over_api(
        &api,
        &fleet,
        serde_json::json!({"auto_register": true, "auto_activate": true}),
    )
    .await;
    let retired = Ca::new("Retired CA");
    let retired_id = register_ca_over_api(&api, &retired, serde_json::json!({})).await;
    let (status, _) = api
        .call(
            "PATCH",
            &format!("/api/v1/ca-certificates/{retired_id}"),
            Some(serde_json::json!({"status": "INACTIVE"})),
        )
        .await;
    assert_eq!(status, 200);

    let active = fleet.issue("dev-active", &[], 41);
    let revoked = fleet.issue("dev-revoked", &[], 42);
    let crl_listed = fleet.issue("dev-crl", &[], 43);
    let jitp = fleet.issue("dev-jitp", &[], 44);
    let of_retired = retired.issue("dev-retired", &[], 45);
    for (cert, _) in [&active, &revoked, &crl_listed] {
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/device-certificates",
                Some(serde_json::json!({"certificate_pem": cert, "status": "ACTIVE"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = api
        .call(
            "PATCH",
            "/api/v1/device-certificates/2a",
            Some(serde_json::json!({"status": "REVOKED"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = api
        .call(
            "POST",
            &format!("/api/v1/ca-certificates/{fleet_id}/crl"),
            Some(serde_json::json!({"crl_pem": fleet.crl(&[43])})),
        )
        .await;
    assert_eq!((status, &body["revoked"]), (200, &serde_json::json!(1)));
    // dev-jitp is registered just in time by its first connection.
    let addr = api.server.as_ref().unwrap().tls_addr().unwrap();
    let config =
        |(cert, key): &(String, String)| client_config(&pki.ca.pem, Some((cert, key)), false);
    let (_, code) = try_connect(addr, config(&jitp), ProtocolVersion::V5, "dev-jitp").await;
    assert_eq!(code, Some(0));
    let dir = api.stop().await;

    let api = api::start_api_in(dir, tweak).await;
    let addr = api.server.as_ref().unwrap().tls_addr().unwrap();
    let (_, cas) = api.call("GET", "/api/v1/ca-certificates", None).await;
    let cas = cas.as_array().unwrap();
    assert_eq!(cas.len(), 2, "{cas:?}");
    let fleet_view = cas.iter().find(|c| c["id"] == fleet_id.as_str()).unwrap();
    assert_eq!(fleet_view["status"], "ACTIVE");
    assert_eq!(fleet_view["auto_register"], true);
    assert_eq!(fleet_view["crl_revoked"], 1);
    let retired_view = cas.iter().find(|c| c["id"] == retired_id.as_str()).unwrap();
    assert_eq!(retired_view["status"], "INACTIVE");
    // Before anyone connects again: the JITP certificate is stored, statuses are kept.
    for (serial, expected) in [
        ("29", "ACTIVE"),
        ("2a", "REVOKED"),
        ("2b", "REVOKED"),
        ("2c", "ACTIVE"),
    ] {
        let (status, body) = api
            .call(
                "GET",
                &format!("/api/v1/device-certificates/{serial}/status"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some(expected)),
            "{serial}"
        );
    }
    let (_, listed) = api
        .call(
            "GET",
            "/api/v1/device-certificates?client_id=dev-jitp",
            None,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    let (client, code) =
        try_connect(addr, config(&active), ProtocolVersion::V5, "dev-active").await;
    assert_eq!(code, Some(0));
    client.unwrap().ping().await;
    let (_, code) = try_connect(addr, config(&jitp), ProtocolVersion::V3_1_1, "dev-jitp").await;
    assert_eq!(code, Some(0));
    for (cert, id) in [
        (&revoked, "dev-revoked"),
        (&crl_listed, "dev-crl"),
        (&of_retired, "dev-retired"),
    ] {
        let (_, code) = try_connect(addr, config(cert), ProtocolVersion::V5, id).await;
        assert_eq!(code, None, "{id} must be refused after the restart");
    }
    api.shutdown().await;
}

/// Serials are unique per CA only: a certificate from CA B with the serial of CA A's
/// registered device is not A's device (it cannot connect as A's client id), the same
/// serial can be registered under both CAs, and revoking one leaves the other connected.
#[tokio::test]
async fn the_same_serial_from_two_cas_names_two_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let server = start(dir.path(), &pki, TlsMode::PerDevice).await;
    let addr = server.tls_addr().unwrap();
    let registry = server.security().certificates.clone();
    let fleet_a = Ca::new("Fleet A");
    let fleet_b = Ca::new("Fleet B");
    let a_id = register_ca(&server, &fleet_a, CaOptions::default());
    let b_id = register_ca(&server, &fleet_b, CaOptions::default());
    let (a_cert, a_key) = fleet_a.issue("dev-a", &[], 42);
    let (b_cert, b_key) = fleet_b.issue("dev-a", &[], 42);
    let a_info = registry
        .register_cert(a_cert.as_bytes(), None, CertStatus::Active)
        .unwrap();
    assert_eq!(a_info.id, format!("{a_id}:2a"));
    let dev_a = client_config(&pki.ca.pem, Some((&a_cert, &a_key)), false);
    let dev_b = client_config(&pki.ca.pem, Some((&b_cert, &b_key)), false);

    // B's certificate is not registered: refused, whatever client id it asks for.
    for client_id in ["dev-a", "dev-b"] {
        assert_eq!(
            try_connect(addr, dev_b.clone(), ProtocolVersion::V5, client_id)
                .await
                .1,
            None,
            "CA B's serial 2a admitted as {client_id}"
        );
    }

    // Registered under B too (no conflict with A's), bound to its own client id.
    let b_info = registry
        .register_cert(b_cert.as_bytes(), Some("dev-b".into()), CertStatus::Active)
        .unwrap();
    assert_eq!(b_info.id, format!("{b_id}:2a"));
    let (_, code) = try_connect(addr, dev_b.clone(), ProtocolVersion::V5, "dev-a").await;
    assert_eq!(
        code,
        Some(0x87),
        "B's certificate may not connect as A's device"
    );
    assert_eq!(
        registry.set_cert_status("2a", CertStatus::Revoked),
        Err(RegistryError::AmbiguousSerial("2a".into()))
    );
    // Listing filters by serial (both) and by CA (one each).
    let by_serial = registry.list_certs(&aviary::tls::CertFilter {
        serial: Some("2a".into()),
        ..Default::default()
    });
    assert_eq!(by_serial.len(), 2);
    let by_ca = registry.list_certs(&aviary::tls::CertFilter {
        ca_id: Some(b_id.clone()),
        ..Default::default()
    });
    assert_eq!(
        by_ca.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [b_info.id.as_str()]
    );
    let mut statuses = registry.status_of("2a", None);
    statuses.sort_by(|x, y| x.ca_id.cmp(&y.ca_id));
    assert_eq!(statuses.len(), 2);
    assert_eq!(
        registry.status_of("2a", Some(&b_id))[0].id,
        Some(b_info.id.clone())
    );

    let (one, code) = try_connect(addr, dev_a.clone(), ProtocolVersion::V5, "dev-a").await;
    assert_eq!(code, Some(0));
    let mut one = one.unwrap();
    let (two, code) = try_connect(addr, dev_b.clone(), ProtocolVersion::V5, "dev-b").await;
    assert_eq!(code, Some(0));
    let mut two = two.unwrap();

    // Revoking A's certificate closes A's connection (0x87) only.
    registry
        .set_cert_status(&a_info.id, CertStatus::Revoked)
        .unwrap();
    match one.next().await {
        Got::Packet(Packet::Disconnect(d)) => assert_eq!(d.reason_code.0, 0x87),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    two.ping().await;
    assert_eq!(
        registry.cert(&b_info.id).unwrap().status,
        CertStatus::Active
    );
    assert_eq!(
        registry.status_of("2a", Some(&a_id))[0].status,
        CertStatus::Revoked
    );
    // Deleting B's leaves A's record alone.
    registry.delete_cert(&b_info.id).unwrap();
    assert!(matches!(
        two.next().await,
        Got::Packet(Packet::Disconnect(_)) | Got::Closed
    ));
    assert_eq!(registry.cert("2a").unwrap().id, a_info.id);
    server.shutdown().await.unwrap();
}

/// An HTTP auth service on a loopback port that allows a body naming `cert_cn` "dev-ok",
/// answers "ignore" for "dev-ignored" and refuses the rest; the bodies it saw.
async fn cert_cn_auth_service() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bodies = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers and the small JSON body arrive together; read until the body closes.
            while !request.ends_with(b"}") {
                match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
            let answer = if body.contains(r#""cert_cn":"dev-ok""#) {
                "200 OK\r\ncontent-length: 18\r\n\r\n{\"result\":\"allow\"}"
            } else if body.contains(r#""cert_cn":"dev-ignored""#) {
                "200 OK\r\ncontent-length: 19\r\n\r\n{\"result\":\"ignore\"}"
            } else {
                "403 Forbidden\r\ncontent-length: 0\r\n\r\n"
            };
            bodies.lock().unwrap().push(body);
            let reply = format!("HTTP/1.1 {answer}");
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_http_auth_service_decides_for_certificate_clients_by_their_cn() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (service, bodies) = cert_cn_auth_service().await;
    let server = start_with(dir.path(), &pki, TlsMode::Mutual, |config| {
        config.security.auth.http = Some(aviary::auth::HttpSettings {
            url: format!("http://{service}/auth"),
            method: aviary::auth::HttpMethod::Post,
            body: Some(r#"{"clientid":"${clientid}","cert_cn":"${cert_cn}"}"#.into()),
            timeout: Duration::from_secs(3),
            ..aviary::auth::HttpSettings::default()
        });
    })
    .await;
    let addr = server.tls_addr().unwrap();
    let fleet = Ca::new("Fleet CA");
    register_ca(&server, &fleet, CaOptions::default());
    let config = |cn: &str, serial: u64| {
        let (cert, key) = fleet.issue(cn, &[], serial);
        client_config(&pki.ca.pem, Some((&cert, &key)), false)
    };
    let (ok, code) = try_connect(addr, config("dev-ok", 61), ProtocolVersion::V5, "any-id").await;
    assert_eq!(code, Some(0));
    let (_, code) = try_connect(addr, config("dev-no", 62), ProtocolVersion::V5, "other").await;
    assert_eq!(code, Some(0x87), "the service refused dev-no (403)");
    let (_, code) = try_connect(addr, config("dev-no", 62), ProtocolVersion::V3_1_1, "o3").await;
    assert_eq!(code, Some(0x87), "3.1.1 return code 5");
    let (_, code) = try_connect(addr, config("dev-ignored", 63), ProtocolVersion::V5, "ig").await;
    assert_eq!(
        code,
        Some(0),
        "ignore leaves the certificate's word standing"
    );
    ok.unwrap().ping().await;
    let bodies = bodies.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .any(|b| b == r#"{"clientid":"any-id","cert_cn":"dev-ok"}"#),
        "{bodies:?}"
    );
    server.shutdown().await.unwrap();
}
