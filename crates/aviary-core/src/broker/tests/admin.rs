//! Management-side operations: publish, disconnect a client, list clients.

use aviary_codec::properties::PublishProperties;
use aviary_codec::{QoS, ReasonCode};
use bytes::Bytes;

use super::*;

#[test]
fn broker_publish_reaches_subscribers_and_can_retain() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    let matched = h.broker.publish(
        topic("a"),
        Bytes::from_static(b"x"),
        QoS::AtLeastOnce,
        true,
        PublishProperties::default(),
        h.now,
    );
    assert!(matched);
    assert_eq!(
        h.drain(),
        vec![packet(1, delivered("a", QoS::AtLeastOnce, 1, "x"))]
    );
    assert_eq!(h.broker.stats().retained, 1);
}

#[test]
fn has_subscribers_follows_plain_and_shared_subscriptions_and_dollar_rules() {
    let mut h = Harness::new();
    h.client(1, "a");
    h.client(2, "b");
    let events = topic("$events/client_connected");
    assert!(!h.broker.has_subscribers(&events));
    // A filter starting with a wildcard does not match a `$` topic [MQTT-4.7.2-1].
    h.subscribe(1, "#", QoS::AtMostOnce);
    h.subscribe(1, "+/client_connected", QoS::AtMostOnce);
    assert!(!h.broker.has_subscribers(&events));
    assert!(h.broker.has_subscribers(&topic("x/y")));
    h.subscribe(2, "$share/g/$events/+", QoS::AtMostOnce);
    assert!(h.broker.has_subscribers(&events));
    assert!(!h.broker.has_subscribers(&topic("$events/a/b")));
    h.send(2, unsubscribe(7, &["$share/g/$events/+"]));
    assert!(!h.broker.has_subscribers(&events));
    h.subscribe(2, "$events/#", QoS::AtMostOnce);
    assert!(h.broker.has_subscribers(&events));
    h.drain();
}

#[test]
fn disconnect_client_sends_0x98_to_v5_and_publishes_the_will() {
    let mut h = Harness::new();
    h.client(9, "watcher");
    h.subscribe(9, "w", QoS::AtMostOnce);
    let mut c = connect(V5, "c", true);
    c.will = Some(will("w", "gone", QoS::AtMostOnce, false));
    h.connected(1, c);
    assert!(h.broker.disconnect_client("c", h.now));
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::ADMINISTRATIVE_ACTION)),
            close(1),
            packet(9, delivered("w", QoS::AtMostOnce, 0, "gone")),
        ]
    );
    assert!(!h.broker.disconnect_client("c", h.now));
}

#[test]
fn clients_lists_connected_clients_with_their_state() {
    let mut h = Harness::new();
    let mut c = connect(V5, "c", true);
    c.keep_alive = 30;
    h.connected(1, c);
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.subscribe(1, "b", QoS::AtLeastOnce);
    h.send(1, publish("a", QoS::AtLeastOnce, 1, "x"));
    h.drain();
    h.open(2);
    let clients: Vec<_> = h.broker.clients().collect();
    assert_eq!(clients.len(), 1);
    let info = &clients[0];
    assert_eq!(info.client_id, "c");
    assert_eq!(info.protocol, V5);
    assert_eq!(info.keep_alive, 30);
    assert_eq!(info.subscriptions, 2);
    assert_eq!(info.inflight, 1);
    assert_eq!(info.queued, 0);
}
