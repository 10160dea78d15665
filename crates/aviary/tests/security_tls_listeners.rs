//! TLS and secure WebSocket listeners made through the management API: created with their
//! certificate files and X.509 mode (bad files refused naming the field), used by rumqttc
//! over rustls and by a WebSocket client over tokio-rustls, their server certificate
//! replaced while connections stay, switched off (5.0 clients get DISCONNECT 0x98, other
//! listeners' clients are unaffected), kept across a restart, and a revoked device
//! certificate closing a live WSS connection (DISCONNECT 0x87).

mod api;
mod common;
mod tls_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aviary::tls::{CaStatus, CertStatus};
use aviary_codec::{Packet, ProtocolVersion, ReasonCode};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use rumqttc::v5::mqttbytes::v5::Packet as V5Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

use api::{assert_error, start_api, start_api_in, Api};
use common::RawClient;
use tls_support::{
    client_config, register_ca, server_pki, try_connect, write, Ca, Got, ServerPki, WAIT,
};

/// Writes `pki`'s certificate and key as `<stem>.pem` / `<stem>.key` in `dir`.
fn files(dir: &Path, stem: &str, pki: &ServerPki) -> (String, String) {
    let cert = write(dir, &format!("{stem}.pem"), &pki.cert);
    let key = write(dir, &format!("{stem}.key"), &pki.key);
    (cert.display().to_string(), key.display().to_string())
}

/// Creates a listener through the API and returns its bound address.
async fn create(api: &Api, body: Value) -> SocketAddr {
    let (status, created) = api.call("POST", "/api/v1/listeners", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["address"].as_str().unwrap().parse().unwrap()
}

/// What a rumqttc event loop reported: a packet, or the error that ended it.
type Incoming = Result<V5Packet, rumqttc::v5::ConnectionError>;

/// A rumqttc 5.0 client over rustls trusting `ca`; polls its event loop in a task and
/// forwards the incoming packets, then the error that ends it.
fn rumqttc_tls(
    addr: SocketAddr,
    ca: &str,
    client_id: &str,
) -> (AsyncClient, tokio::sync::mpsc::Receiver<Incoming>) {
    let mut options = MqttOptions::new(client_id, "localhost", addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(1 << 20));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_config(ca, None, false),
    )));
    let (client, mut events) = AsyncClient::new(options, 16);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        // Ends at the first error (rumqttc would reconnect) or when the test is done.
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if tx.send(Ok(packet)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    (client, rx)
}

/// The next packet rumqttc received, within `WAIT`.
async fn next(rx: &mut tokio::sync::mpsc::Receiver<Incoming>) -> Incoming {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("nothing within WAIT")
        .expect("event loop gone")
}

#[tokio::test]
async fn tls_listener_settings_are_checked_naming_the_field() {
    let api = start_api(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (cert, key) = files(dir.path(), "server", &pki);
    let garbage = write(dir.path(), "garbage.pem", "not a PEM file")
        .display()
        .to_string();
    let missing = dir.path().join("missing.pem").display().to_string();
    let post = |body: Value| api.call("POST", "/api/v1/listeners", Some(body));
    let base = |extra: Value| {
        let mut body = json!({"name": "secure", "kind": "tls", "bind": "127.0.0.1:0"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    assert_error(
        post(base(json!({"key": key}))).await,
        400,
        "invalid_field",
        "cert:",
    );
    assert_error(
        post(base(json!({"cert": cert}))).await,
        400,
        "invalid_field",
        "key:",
    );
    assert_error(
        post(base(json!({"cert": missing, "key": key}))).await,
        400,
        "invalid_field",
        "cert: cannot read",
    );
    assert_error(
        post(base(json!({"cert": garbage, "key": key}))).await,
        400,
        "invalid_field",
        "cert:",
    );
    assert_error(
        post(base(json!({"cert": cert, "key": garbage}))).await,
        400,
        "invalid_field",
        "key:",
    );
    // A key that is not the certificate's.
    let (_, other_key) = files(dir.path(), "other", &server_pki());
    assert_error(
        post(base(json!({"cert": cert, "key": other_key}))).await,
        400,
        "invalid_field",
        "key:",
    );
    let (status, body) = post(base(
        json!({"cert": cert, "key": key, "x509_mode": "two-way"}),
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("x509_mode"),
        "{body}"
    );
    assert_error(
        post(json!({"name": "plain", "kind": "tcp", "bind": "127.0.0.1:0", "cert": cert})).await,
        400,
        "invalid_field",
        "cert:",
    );
    // Nothing was created; the config's TLS-less broker still has only `default`.
    let (_, list) = api.call("GET", "/api/v1/listeners", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // A certificate change on a TCP listener names the field too.
    assert_error(
        api.call(
            "PATCH",
            "/api/v1/listeners/default",
            Some(json!({"cert": cert})),
        )
        .await,
        400,
        "invalid_field",
        "cert:",
    );
    api.shutdown().await;
}

#[tokio::test]
async fn tls_listener_made_through_the_api_serves_rumqttc_then_is_switched_off() {
    let api = start_api(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (cert, key) = files(dir.path(), "server", &pki);
    let addr = create(
        &api,
        json!({"name": "secure", "kind": "tls", "bind": "127.0.0.1:0", "cert": cert, "key": key}),
    )
    .await;
    let (_, shown) = api.call("GET", "/api/v1/listeners/secure", None).await;
    assert_eq!(shown["kind"], "tls");
    assert_eq!(shown["x509_mode"], "one-way");
    assert_eq!(shown["cert"], cert.as_str());

    // rumqttc over rustls: subscribe, then a plain TCP client publishes to it.
    let (client, mut rx) = rumqttc_tls(addr, &pki.ca.pem, "rumqttc-tls");
    assert!(matches!(next(&mut rx).await, Ok(V5Packet::ConnAck(_))));
    client.subscribe("tls/#", QoS::AtLeastOnce).await.unwrap();
    assert!(matches!(next(&mut rx).await, Ok(V5Packet::SubAck(_))));
    let mut plain = RawClient::connect_v5(api.mqtt, "plain").await;
    plain.publish("tls/x", 1, 1, b"over tcp").await;
    plain.expect_ack(0x40, 1).await;
    match next(&mut rx).await {
        Ok(V5Packet::Publish(p)) => {
            assert_eq!(&p.topic[..], b"tls/x");
            assert_eq!(&p.payload[..], b"over tcp");
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // A large message crosses many TLS records both ways.
    let big = vec![7u8; 200_000];
    client
        .publish("tls/big", QoS::AtLeastOnce, false, big.clone())
        .await
        .unwrap();
    let mut got_big = false;
    for _ in 0..4 {
        match next(&mut rx).await {
            Ok(V5Packet::Publish(p)) => {
                assert_eq!(&p.topic[..], b"tls/big");
                assert_eq!(p.payload.len(), big.len());
                got_big = true;
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("rumqttc: {e:?}"),
        }
    }
    assert!(got_big);

    // A byte-level 5.0 client over TLS, to read the exact DISCONNECT.
    let (raw, code) = try_connect(
        addr,
        client_config(&pki.ca.pem, None, true),
        ProtocolVersion::V5,
        "raw-tls",
    )
    .await;
    assert_eq!(code, Some(0));
    let mut raw = raw.unwrap();
    let (_, page) = api
        .call("GET", "/api/v1/clients?listener=secure", None)
        .await;
    assert_eq!(page["total"], 2, "{page}");

    // Switched off: DISCONNECT 0x98, the port released; the TCP client is unaffected.
    let (status, off) = api
        .call(
            "PATCH",
            "/api/v1/listeners/secure",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{off}");
    match raw.next().await {
        Got::Packet(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, ReasonCode::ADMINISTRATIVE_ACTION)
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    assert!(matches!(raw.next().await, Got::Closed));
    // rumqttc reports the broker's DISCONNECT as the error that ends its event loop.
    let mut disconnected = false;
    for _ in 0..8 {
        match next(&mut rx).await {
            Err(rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
            )) => {
                assert_eq!(
                    reason_code,
                    rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::AdministrativeAction
                );
                disconnected = true;
                break;
            }
            Ok(V5Packet::PubAck(_) | V5Packet::Publish(_)) => {}
            other => panic!("expected DISCONNECT 0x98, got {other:?}"),
        }
    }
    assert!(disconnected);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    plain.ping().await;

    // On again (same certificate): TLS clients connect.
    let (status, on) = api
        .call(
            "PATCH",
            "/api/v1/listeners/secure",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{on}");
    let addr: SocketAddr = on["address"].as_str().unwrap().parse().unwrap();
    let (_, code) = try_connect(
        addr,
        client_config(&pki.ca.pem, None, false),
        ProtocolVersion::V3_1_1,
        "again",
    )
    .await;
    assert_eq!(code, Some(0));
    let (status, _) = api.call("DELETE", "/api/v1/listeners/secure", None).await;
    assert_eq!(status, 204);
    api.shutdown().await;
}

#[tokio::test]
async fn server_certificate_is_replaced_without_dropping_connections_and_kept_on_restart() {
    let api = start_api(|_| {}).await;
    let files_dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (cert, key) = files(files_dir.path(), "server", &pki);
    let addr = create(
        &api,
        json!({"name": "secure", "kind": "tls", "bind": "127.0.0.1:0", "cert": cert, "key": key}),
    )
    .await;
    let old = client_config(&pki.ca.pem, None, false);
    let (open, code) = try_connect(addr, old.clone(), ProtocolVersion::V5, "old").await;
    assert_eq!(code, Some(0));
    let mut open = open.unwrap();

    let next_pki = server_pki();
    let (next_cert, next_key) = files(files_dir.path(), "next", &next_pki);
    let (status, body) = api
        .call(
            "PATCH",
            "/api/v1/listeners/secure",
            Some(json!({"cert": next_cert, "key": next_key})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cert"], next_cert.as_str());
    open.ping().await;
    let new = client_config(&next_pki.ca.pem, None, false);
    assert_eq!(
        try_connect(addr, new.clone(), ProtocolVersion::V5, "new")
            .await
            .1,
        Some(0)
    );
    assert_eq!(
        try_connect(addr, old, ProtocolVersion::V5, "old-2").await.1,
        None
    );
    // A key that does not fit is refused and the working certificate stays.
    assert_error(
        api.call(
            "PATCH",
            "/api/v1/listeners/secure",
            Some(json!({"key": key})),
        )
        .await,
        400,
        "invalid_field",
        "key:",
    );
    open.ping().await;
    drop(open);

    // Stored: after a restart the listener is back, with the replaced certificate.
    let port = addr.port();
    let data = api.stop().await;
    let api = start_api_in(data, |_| {}).await;
    let (_, shown) = api.call("GET", "/api/v1/listeners/secure", None).await;
    assert_eq!(shown["kind"], "tls", "{shown}");
    assert_eq!(shown["cert"], next_cert.as_str());
    let addr: SocketAddr = shown["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    let _ = port;
    assert_eq!(
        try_connect(addr, new, ProtocolVersion::V5, "after-restart")
            .await
            .1,
        Some(0)
    );
    api.shutdown().await;
}

/// A WebSocket client over TLS with a client certificate: the upgrade on `/mqtt` with
/// subprotocol `mqtt`, then MQTT bytes in binary frames.
struct WssClient {
    ws: tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    buf: BytesMut,
}

impl WssClient {
    async fn open(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut request = format!("wss://localhost:{}/mqtt", addr.port())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
        let (ws, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tls))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
        Self {
            ws,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await
            .unwrap();
    }

    /// The next packet, or `None` when the connection closed.
    async fn next(&mut self) -> Option<Packet> {
        for _ in 0..100 {
            if let Ok(Some(p)) = aviary_codec::decode(&mut self.buf, ProtocolVersion::V5, 1 << 20) {
                return Some(p);
            }
            match tokio::time::timeout(WAIT, self.ws.next()).await.unwrap() {
                Some(Ok(Message::Binary(data))) => self.buf.extend_from_slice(&data),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
        panic!("too many frames");
    }
}

#[tokio::test]
async fn wss_listener_with_device_certificates_closes_a_revoked_device() {
    let api = start_api(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (cert, key) = files(dir.path(), "server", &pki);
    let addr = create(
        &api,
        json!({"name": "web", "kind": "wss", "bind": "127.0.0.1:0", "cert": cert, "key": key,
               "x509_mode": "per-device"}),
    )
    .await;
    let server = api.server.as_ref().unwrap();
    let fleet = Ca::new("Fleet CA");
    let ca_id = register_ca(server, &fleet, Default::default());
    let registry = server.security().certificates.clone();
    let (c1, k1) = fleet.issue("car-1", &[], 21);
    let (c2, k2) = fleet.issue("car-2", &[], 22);
    for c in [&c1, &c2] {
        registry
            .register_cert(c.as_bytes(), None, CertStatus::Active)
            .unwrap();
    }
    let connect = |id: &str| common::hex(&common::connect_v5_hex(id, 0x02, 60, ""));
    let mut one = WssClient::open(addr, client_config(&pki.ca.pem, Some((&c1, &k1)), false)).await;
    one.send(&connect("car-1")).await;
    assert!(matches!(one.next().await, Some(Packet::ConnAck(a)) if a.reason_code.0 == 0));
    let mut two = WssClient::open(addr, client_config(&pki.ca.pem, Some((&c2, &k2)), false)).await;
    // Bound to its certificate: car-2 may not be car-1.
    two.send(&connect("car-1")).await;
    assert!(matches!(two.next().await, Some(Packet::ConnAck(a)) if a.reason_code.0 == 0x87));
    let mut two = WssClient::open(addr, client_config(&pki.ca.pem, Some((&c2, &k2)), false)).await;
    two.send(&connect("car-2")).await;
    assert!(matches!(two.next().await, Some(Packet::ConnAck(a)) if a.reason_code.0 == 0));

    // car-1's certificate revoked while connected: DISCONNECT 0x87 at once.
    registry.set_cert_status("15", CertStatus::Revoked).unwrap();
    match one.next().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code.0, 0x87),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert!(one.next().await.is_none());
    // car-2 is unaffected.
    two.send(&[0xc0, 0x00]).await;
    assert!(matches!(two.next().await, Some(Packet::PingResp)));
    // The CA withdrawn: car-2 goes too.
    registry.set_ca_status(&ca_id, CaStatus::Inactive).unwrap();
    match two.next().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code.0, 0x87),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    api.shutdown().await;
}

#[tokio::test]
async fn the_config_tls_listener_is_the_registry_listener_named_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (cert, key) = files(dir.path(), "server", &pki);
    let section = |cert: &str| aviary::config::TlsListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert: cert.into(),
        key: key.clone().into(),
        mode: aviary::tls::TlsMode::Mutual,
        ca: vec![],
    };

    // A certificate file that cannot be read stops the start, naming the config key.
    let mut config = aviary::Config {
        data_dir: dir.path().join("bad"),
        ..Default::default()
    };
    config.listener.bind = "127.0.0.1:0".parse().unwrap();
    config.api.enabled = false;
    config.security.tls_listener = Some(section("/nonexistent/server.pem"));
    let err = aviary::start(config).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("tls_listener.cert: cannot read /nonexistent/server.pem"),
        "{err:#}"
    );

    let tls = section(&cert);
    let api = start_api(move |c| c.security.tls_listener = Some(tls)).await;
    let (_, shown) = api.call("GET", "/api/v1/listeners/tls", None).await;
    assert_eq!(shown["kind"], "tls", "{shown}");
    assert_eq!(shown["x509_mode"], "mutual");
    assert_eq!(
        shown["address"].as_str(),
        api.server
            .as_ref()
            .unwrap()
            .tls_addr()
            .map(|a| a.to_string())
            .as_deref()
    );
    assert_error(
        api.call("DELETE", "/api/v1/listeners/tls", None).await,
        409,
        "conflict",
        "disable it instead",
    );
    let (status, off) = api
        .call(
            "PATCH",
            "/api/v1/listeners/tls",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["address"], Value::Null);
    api.shutdown().await;
}

/// A CA's CRL can be read and deleted through the API; deleting it lets the device it
/// listed connect again.
#[tokio::test]
async fn a_deleted_crl_no_longer_refuses_the_devices_it_listed() {
    let api = start_api(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (cert, key) = files(dir.path(), "server", &pki);
    let addr = create(
        &api,
        json!({"name": "secure", "kind": "tls", "bind": "127.0.0.1:0", "cert": cert, "key": key,
               "x509_mode": "mutual"}),
    )
    .await;
    let server = api.server.as_ref().unwrap();
    let fleet = Ca::new("Fleet CA");
    let ca_id = register_ca(server, &fleet, Default::default());
    let (c1, k1) = fleet.issue("car-1", &[], 31);
    let car = client_config(&pki.ca.pem, Some((&c1, &k1)), false);
    let crl_path = format!("/api/v1/ca-certificates/{ca_id}/crl");
    let (status, body) = api.call("GET", &crl_path, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .call(
            "POST",
            &crl_path,
            Some(json!({"crl_pem": fleet.crl(&[31])})),
        )
        .await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(
        try_connect(addr, car.clone(), ProtocolVersion::V5, "car-1")
            .await
            .1,
        None
    );
    let (status, body) = api.call("GET", &crl_path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], json!(["1f"]));
    assert!(body["crl_pem"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN X509 CRL-----"));
    let (status, body) = api.call("DELETE", &crl_path, None).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = api.call("GET", &crl_path, None).await;
    assert_eq!(status, 404, "{body}");
    let (_, ca) = api
        .call("GET", &format!("/api/v1/ca-certificates/{ca_id}"), None)
        .await;
    assert_eq!(ca["crl_revoked"], 0);
    let (_, code) = try_connect(addr, car, ProtocolVersion::V5, "car-1").await;
    assert_eq!(code, Some(0));
    api.shutdown().await;
}

/// The config file's `[tls_listener]` given a new certificate through the API keeps it
/// across a restart (and falls back to the file's when the stored one is gone).
#[tokio::test]
async fn the_config_tls_listener_keeps_an_api_certificate_across_a_restart() {
    let files_dir = tempfile::tempdir().unwrap();
    let pki = server_pki();
    let (cert, key) = files(files_dir.path(), "server", &pki);
    let section = aviary::config::TlsListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert: cert.clone().into(),
        key: key.clone().into(),
        mode: aviary::tls::TlsMode::OneWay,
        ca: vec![],
    };
    let tweak = {
        let section = section.clone();
        move |c: &mut aviary::Config| c.security.tls_listener = Some(section.clone())
    };
    let api = start_api(tweak.clone()).await;
    let next_pki = server_pki();
    let (next_cert, next_key) = files(files_dir.path(), "next", &next_pki);
    let (status, body) = api
        .call(
            "PATCH",
            "/api/v1/listeners/tls",
            Some(json!({"cert": next_cert, "key": next_key})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let old = client_config(&pki.ca.pem, None, false);
    let new = client_config(&next_pki.ca.pem, None, false);

    let dir = api.stop().await;
    let api = api::start_api_in(dir, tweak.clone()).await;
    let addr = api.server.as_ref().unwrap().tls_addr().unwrap();
    let (_, shown) = api.call("GET", "/api/v1/listeners/tls", None).await;
    assert_eq!(shown["cert"], next_cert.as_str(), "{shown}");
    assert_eq!(
        try_connect(addr, new.clone(), ProtocolVersion::V5, "new")
            .await
            .1,
        Some(0)
    );
    assert_eq!(
        try_connect(addr, old.clone(), ProtocolVersion::V5, "old")
            .await
            .1,
        None
    );

    // The stored certificate's files gone: the file's certificate serves again.
    let dir = api.stop().await;
    std::fs::remove_file(&next_cert).unwrap();
    let api = api::start_api_in(dir, tweak).await;
    let addr = api.server.as_ref().unwrap().tls_addr().unwrap();
    assert_eq!(
        try_connect(addr, old, ProtocolVersion::V5, "old").await.1,
        Some(0)
    );
    api.shutdown().await;
}

/// Over the API, a serial two CAs issued names two certificates: paths take the
/// `ca_id:serial` id (a bare serial is ambiguous: 409), the status answers per CA.
#[tokio::test]
async fn the_api_names_device_certificates_by_ca_and_serial() {
    let api = start_api(|_| {}).await;
    let server = api.server.as_ref().unwrap();
    let fleet_a = Ca::new("Fleet A");
    let fleet_b = Ca::new("Fleet B");
    let a_id = register_ca(server, &fleet_a, Default::default());
    let b_id = register_ca(server, &fleet_b, Default::default());
    let mut ids = Vec::new();
    for (ca, client) in [(&fleet_a, "dev-a"), (&fleet_b, "dev-b")] {
        let (pem, _) = ca.issue(client, &[], 42);
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/device-certificates",
                Some(json!({"certificate_pem": pem, "client_id": client})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, [format!("{a_id}:2a"), format!("{b_id}:2a")]);
    assert_error(
        api.call("GET", "/api/v1/device-certificates/2a", None)
            .await,
        409,
        "conflict",
        "several CAs",
    );
    let (status, body) = api
        .call(
            "PATCH",
            &format!("/api/v1/device-certificates/{}", ids[0]),
            Some(json!({"status": "REVOKED"})),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("REVOKED")),
        "{body}"
    );
    let (_, status) = api
        .call("GET", "/api/v1/device-certificates/2a/status", None)
        .await;
    assert_eq!(status["status"], "AMBIGUOUS", "{status}");
    assert_eq!(status["matches"].as_array().unwrap().len(), 2);
    let (_, status) = api
        .call(
            "GET",
            &format!("/api/v1/device-certificates/2a/status?ca_id={b_id}"),
            None,
        )
        .await;
    assert_eq!(status["status"], "ACTIVE", "{status}");
    assert_eq!(status["matches"][0]["id"], ids[1].as_str());
    let (_, listed) = api
        .call(
            "GET",
            &format!("/api/v1/device-certificates?ca_id={a_id}"),
            None,
        )
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["client_id"], "dev-a");
    api.shutdown().await;
}
