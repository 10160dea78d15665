//! System event topics and MQTT over WebSocket, end to end: a `$events/#` subscriber sees
//! JSON for connects, subscriptions and disconnects; a WebSocket listener created through
//! the API speaks MQTT in binary frames on `/mqtt` with subprotocol `mqtt` (or
//! `mqttv3.1`), refuses other paths and subprotocols, and closes on a text frame.

mod api;
mod common;

use aviary_codec::{Packet, ProtocolVersion};
use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use api::{start_api, Api, WAIT};
use common::{connect_v311_hex, hex, packet_hex, str_hex, RawClient};

/// The topic and JSON payload of the next event `client` receives about another client
/// (its own subscription to `$events/#` is an event too).
async fn next_event(client: &mut RawClient) -> (String, Value) {
    for _ in 0..10 {
        match client.read_packet().await {
            Packet::Publish(p) => {
                let event: Value = serde_json::from_slice(&p.payload).expect("JSON payload");
                if event["client_id"] != "watcher" {
                    return (p.topic.as_str().to_owned(), event);
                }
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    panic!("no event about another client in 10 messages");
}

#[tokio::test]
async fn event_topics_carry_json_for_client_events() {
    let api = start_api(|_| {}).await;
    let mut watcher = RawClient::connect_v311(api.mqtt, "watcher").await;
    watcher
        .send_hex(&packet_hex(
            0x82,
            &format!("0001 {} 00", str_hex("$events/#")),
        ))
        .await;
    watcher.expect_hex("90 03 00 01 00").await;

    let mut device = RawClient::connect_v311(api.mqtt, "device").await;
    let (topic, event) = next_event(&mut watcher).await;
    assert_eq!(topic, "$events/client_connected");
    assert_eq!(event["client_id"], "device");
    assert_eq!(event["protocol"], "3.1.1");
    assert_eq!(event["listener"], "default");
    assert_eq!(event["clean_start"], true);

    device
        .send_hex(&packet_hex(0x82, &format!("0001 {} 01", str_hex("a/b"))))
        .await;
    device.expect_hex("90 03 00 01 01").await;
    let (topic, event) = next_event(&mut watcher).await;
    assert_eq!(topic, "$events/session_subscribed");
    assert_eq!(
        event,
        json!({"client_id": "device", "filter": "a/b", "qos": 1})
    );

    device
        .send_hex(&packet_hex(0xa2, &format!("0002 {}", str_hex("a/b"))))
        .await;
    device.expect_hex("b0 02 00 02").await;
    let (topic, event) = next_event(&mut watcher).await;
    assert_eq!(topic, "$events/session_unsubscribed");
    assert_eq!(event, json!({"client_id": "device", "filter": "a/b"}));

    device.send_hex("e0 00").await;
    let (topic, event) = next_event(&mut watcher).await;
    assert_eq!(topic, "$events/client_disconnected");
    assert_eq!(event["client_id"], "device");
    assert_eq!(event["reason"], "ClientDisconnect");
    api.shutdown().await;
}

/// Creates a WebSocket listener through the API; returns its address.
async fn ws_listener(api: &Api) -> std::net::SocketAddr {
    let (status, created) = api
        .call(
            "POST",
            "/api/v1/listeners",
            Some(json!({"name": "web", "kind": "ws", "bind": "127.0.0.1:0"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["address"].as_str().unwrap().parse().unwrap()
}

/// Opens a WebSocket on `path` offering `protocols`.
async fn ws_connect(
    addr: std::net::SocketAddr,
    path: &str,
    protocols: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake timed out")
        .map(|(ws, _)| ws)
}

/// Reads binary frames until one whole MQTT packet decodes.
async fn ws_packet(ws: &mut WebSocketStream<TcpStream>, buf: &mut BytesMut) -> Packet {
    for _ in 0..100 {
        if let Some(packet) = aviary_codec::decode(buf, ProtocolVersion::V3_1_1, 1 << 20).unwrap() {
            return packet;
        }
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out")
        {
            Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
    panic!("no whole packet in 100 frames");
}

#[tokio::test]
async fn mqtt_over_websocket_in_binary_frames() {
    let api = start_api(|_| {}).await;
    let addr = ws_listener(&api).await;
    let mut ws = ws_connect(addr, "/mqtt", Some("mqtt")).await.unwrap();
    // CONNECT split over two frames [MQTT-6.0.0-2].
    let connect = hex(&connect_v311_hex("over-ws", 0x02, 60));
    ws.send(Message::Binary(connect[..5].to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(connect[5..].to_vec().into()))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        ws_packet(&mut ws, &mut buf).await,
        Packet::ConnAck(_)
    ));
    // SUBSCRIBE and a PUBLISH from a TCP client arrive as frames.
    let subscribe = hex(&packet_hex(0x82, &format!("0001 {} 00", str_hex("w/#"))));
    ws.send(Message::Binary(subscribe.into())).await.unwrap();
    assert!(matches!(
        ws_packet(&mut ws, &mut buf).await,
        Packet::SubAck(_)
    ));
    let mut tcp = RawClient::connect_v311(api.mqtt, "tcp-pub").await;
    tcp.send_hex(&packet_hex(0x30, &format!("{} 6869", str_hex("w/x"))))
        .await;
    match ws_packet(&mut ws, &mut buf).await {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"hi"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    let (_, page) = api.call("GET", "/api/v1/clients?listener=web", None).await;
    assert_eq!(page["clients"][0]["client_id"], "over-ws");

    // A text frame closes the connection [MQTT-6.0.0-1].
    ws.send(Message::Text("hello".into())).await.unwrap();
    let mut closed = false;
    for _ in 0..10 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                closed = true;
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    assert!(closed);
    api.wait_for("/api/v1/clients?listener=web", |p| p["total"] == 0)
        .await;
    api.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrade_needs_the_path_and_an_mqtt_subprotocol() {
    let api = start_api(|_| {}).await;
    let addr = ws_listener(&api).await;
    assert!(ws_connect(addr, "/other", Some("mqtt")).await.is_err());
    assert!(ws_connect(addr, "/mqtt", None).await.is_err());
    assert!(ws_connect(addr, "/mqtt", Some("chat")).await.is_err());
    let mut old = ws_connect(addr, "/mqtt", Some("mqttv3.1")).await.unwrap();
    let connect = hex(&connect_v311_hex("old-ws", 0x02, 60));
    old.send(Message::Binary(connect.into())).await.unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        ws_packet(&mut old, &mut buf).await,
        Packet::ConnAck(_)
    ));
    api.shutdown().await;
}

#[tokio::test]
async fn sys_topics_publish_broker_statistics() {
    let api = start_api(|_| {}).await;
    let mut watcher = RawClient::connect_v311(api.mqtt, "sys-watch").await;
    watcher
        .send_hex(&packet_hex(
            0x82,
            &format!("0001 {} 00", str_hex("$SYS/broker/clients/connected")),
        ))
        .await;
    watcher.expect_hex("90 03 00 01 00").await;
    // Published every 10 seconds: wait for the next round (at most 3 × 5 s).
    let mut value = None;
    for _ in 0..3 {
        if let common::Next::Frame(frame) = watcher.next(common::WAIT).await {
            match watcher.decode(&frame) {
                Packet::Publish(p) => {
                    value = Some(String::from_utf8(p.payload.to_vec()).unwrap());
                    break;
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }
    assert_eq!(value.as_deref(), Some("1"), "one client connected");
    api.shutdown().await;
}
