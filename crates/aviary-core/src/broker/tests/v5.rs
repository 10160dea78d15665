//! MQTT 5.0 features: topic aliases both ways, message expiry, subscription identifiers,
//! No Local, property pass-through, Maximum Packet Size, reason codes on acks.

use std::num::{NonZeroU16, NonZeroU32};

use aviary_codec::properties::PublishProperties;
use aviary_codec::{Packet, QoS, ReasonCode, SubscriptionOptions};

use super::*;

fn alias(n: u16) -> Option<NonZeroU16> {
    NonZeroU16::new(n)
}

fn aliased_publish(topic_name: &str, n: u16, payload: &str) -> Packet {
    with_props(publish(topic_name, QoS::AtMostOnce, 0, payload), |p| {
        p.topic_alias = alias(n)
    })
}

fn empty_topic_publish(n: u16, payload: &str) -> Packet {
    let Packet::Publish(mut p) = aliased_publish("x", n, payload) else {
        unreachable!()
    };
    p.topic = aviary_codec::TopicName::empty();
    Packet::Publish(p)
}

#[test]
fn inbound_topic_alias_is_bound_then_used() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a/#", QoS::AtMostOnce);
    h.client_v5(2, "pub");
    h.send(2, aliased_publish("a/b", 1, "1"));
    h.send(2, empty_topic_publish(1, "2"));
    assert_eq!(
        h.drain(),
        vec![
            packet(1, delivered("a/b", QoS::AtMostOnce, 0, "1")),
            packet(1, delivered("a/b", QoS::AtMostOnce, 0, "2")),
        ]
    );
}

#[test]
fn mqtt_3_3_2_9_inbound_alias_above_our_maximum_gets_0x94() {
    let mut h = Harness::new();
    h.client_v5(1, "pub");
    h.send(1, aliased_publish("a", 65, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::TOPIC_ALIAS_INVALID)),
            close(1)
        ]
    );
}

#[test]
fn inbound_unknown_alias_with_empty_topic_is_a_protocol_error() {
    let mut h = Harness::new();
    h.client_v5(1, "pub");
    h.send(1, empty_topic_publish(3, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(1, disconnect(ReasonCode::PROTOCOL_ERROR)), close(1)]
    );
}

#[test]
fn inbound_aliases_are_per_connection() {
    let mut h = Harness::new();
    h.client_v5(1, "pub");
    h.send(1, aliased_publish("a", 1, "x"));
    h.client_v5(2, "other");
    h.send(2, empty_topic_publish(1, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(2, disconnect(ReasonCode::PROTOCOL_ERROR)), close(2)]
    );
}

#[test]
fn outbound_topic_aliases_are_assigned_within_the_clients_maximum() {
    let mut h = Harness::new();
    let mut c = connect(V5, "sub", true);
    c.properties.topic_alias_maximum = Some(1);
    h.connected(1, c);
    h.subscribe(1, "#", QoS::AtMostOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtMostOnce, 0, "1"));
    h.send(2, publish("a", QoS::AtMostOnce, 0, "2"));
    h.send(2, publish("b", QoS::AtMostOnce, 0, "3"));
    assert_eq!(
        h.drain_packets(1),
        vec![
            aliased_publish("a", 1, "1"),
            empty_topic_publish(1, "2"),
            delivered("b", QoS::AtMostOnce, 0, "3"),
        ]
    );
    // A new connection starts without aliases.
    h.close(1);
    let mut c = connect(V5, "sub", true);
    c.properties.topic_alias_maximum = Some(1);
    h.connected(3, c);
    h.subscribe(3, "#", QoS::AtMostOnce);
    h.send(2, publish("a", QoS::AtMostOnce, 0, "4"));
    assert_eq!(h.drain_packets(3), vec![aliased_publish("a", 1, "4")]);
}

#[test]
fn no_outbound_aliases_without_the_clients_topic_alias_maximum() {
    let mut h = Harness::new();
    h.client_v5(1, "sub");
    h.subscribe(1, "#", QoS::AtMostOnce);
    h.send(1, publish("a", QoS::AtMostOnce, 0, "1"));
    h.send(1, publish("a", QoS::AtMostOnce, 0, "2"));
    assert_eq!(
        h.drain_packets(1),
        vec![
            delivered("a", QoS::AtMostOnce, 0, "1"),
            delivered("a", QoS::AtMostOnce, 0, "2"),
        ]
    );
}

fn expiring(payload: &str, seconds: u32) -> Packet {
    with_props(publish("a", QoS::AtLeastOnce, 1, payload), |p| {
        p.message_expiry_interval = Some(seconds)
    })
}

#[test]
fn mqtt_3_3_2_6_the_remaining_expiry_interval_is_sent() {
    let mut h = Harness::new();
    h.connected(1, connect_v5_expiry("sub", true, 1000));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.close(1);
    h.client_v5(2, "pub");
    h.send(2, expiring("x", 10));
    h.drain();
    h.advance_secs(4);
    let out = h.connect(3, connect_v5_expiry("sub", false, 1000));
    let expected = with_props(delivered("a", QoS::AtLeastOnce, 1, "x"), |p| {
        p.message_expiry_interval = Some(6)
    });
    assert_eq!(out[1], packet(3, expected));
}

#[test]
fn mqtt_3_3_2_5_an_expired_message_is_not_delivered() {
    let mut h = Harness::new();
    h.connected(1, connect_v5_expiry("sub", true, 1000));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.close(1);
    h.client_v5(2, "pub");
    h.send(2, expiring("x", 10));
    h.drain();
    h.advance_secs(10);
    h.advance(std::time::Duration::from_millis(1));
    let out = h.connect(3, connect_v5_expiry("sub", false, 1000));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(h.broker.stats().dropped.expired, 1);
}

#[test]
fn mqtt_3_3_4_3_one_copy_carries_every_matching_subscription_identifier() {
    let mut h = Harness::new();
    h.client_v5(1, "sub");
    let o = SubscriptionOptions::with_qos(QoS::AtMostOnce);
    h.send(1, subscribe_with(1, Some(7), vec![("a/+", o)]));
    h.send(1, subscribe_with(2, Some(9), vec![("a/#", o)]));
    h.send(1, subscribe_with(3, None, vec![("+/b", o)]));
    h.drain();
    h.client(2, "pub");
    h.send(2, publish("a/b", QoS::AtMostOnce, 0, "x"));
    let Packet::Publish(p) = h.drain_packets(1).remove(0) else {
        panic!()
    };
    let mut ids: Vec<u32> = p
        .properties
        .subscription_identifiers
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![7, 9]);
}

#[test]
fn subscription_identifier_is_sent_with_retained_messages() {
    let mut h = Harness::new();
    h.client(2, "pub");
    h.send(2, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    h.client_v5(1, "sub");
    let o = SubscriptionOptions::with_qos(QoS::AtMostOnce);
    h.send(1, subscribe_with(1, Some(5), vec![("a", o)]));
    let expected = with_props(with_retain(delivered("a", QoS::AtMostOnce, 0, "r")), |p| {
        p.subscription_identifiers = vec![NonZeroU32::new(5).unwrap()]
    });
    assert_eq!(h.drain_packets(1), vec![suback(1, &[0]), expected]);
}

#[test]
fn mqtt_3_3_4_6_client_publish_with_subscription_identifier_is_a_protocol_error() {
    let mut h = Harness::new();
    h.client_v5(1, "pub");
    h.send(
        1,
        with_props(publish("a", QoS::AtMostOnce, 0, "x"), |p| {
            p.subscription_identifiers = vec![NonZeroU32::new(1).unwrap()]
        }),
    );
    assert_eq!(
        h.drain(),
        vec![packet(1, disconnect(ReasonCode::PROTOCOL_ERROR)), close(1)]
    );
}

#[test]
fn mqtt_3_8_3_3_no_local_does_not_send_a_client_its_own_messages() {
    let mut h = Harness::new();
    h.client_v5(1, "c1");
    let o = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::with_qos(QoS::AtMostOnce)
    };
    h.send(1, subscribe_with(1, None, vec![("a", o)]));
    h.drain();
    h.client_v5(2, "c2");
    h.subscribe(2, "a", QoS::AtMostOnce);
    h.drain();
    h.send(1, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain(),
        vec![packet(2, delivered("a", QoS::AtMostOnce, 0, "x"))]
    );
    h.send(2, publish("a", QoS::AtMostOnce, 0, "y"));
    let mut out = h.drain();
    out.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(
        out,
        vec![
            packet(1, delivered("a", QoS::AtMostOnce, 0, "y")),
            packet(2, delivered("a", QoS::AtMostOnce, 0, "y")),
        ]
    );
}

#[test]
fn user_and_request_response_properties_pass_through_unchanged() {
    let mut h = Harness::new();
    h.client_v5(1, "sub");
    h.subscribe(1, "a", QoS::AtMostOnce);
    let set = |p: &mut PublishProperties| {
        p.user_properties = vec![("k".into(), "v".into()), ("k".into(), "w".into())];
        p.content_type = Some("application/json".into());
        p.payload_format_indicator = Some(true);
        p.response_topic = Some(topic("reply/to"));
        p.correlation_data = Some(bytes::Bytes::from_static(b"\x01\x02"));
    };
    h.send(1, with_props(publish("a", QoS::AtMostOnce, 0, "{}"), set));
    assert_eq!(
        h.drain_packets(1),
        vec![with_props(delivered("a", QoS::AtMostOnce, 0, "{}"), set)]
    );
}

#[test]
fn v3_subscriber_gets_no_v5_properties() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.client_v5(2, "pub");
    h.send(
        2,
        with_props(publish("a", QoS::AtMostOnce, 0, "x"), |p| {
            p.user_properties = vec![("k".into(), "v".into())];
            p.message_expiry_interval = Some(100);
        }),
    );
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::AtMostOnce, 0, "x")]
    );
}

#[test]
fn v5_acks_report_no_matching_subscribers() {
    let mut h = Harness::new();
    h.client_v5(1, "pub");
    h.send(1, publish("nobody", QoS::AtLeastOnce, 1, "x"));
    h.send(1, publish("nobody", QoS::ExactlyOnce, 2, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(
                1,
                Packet::PubAck(ack(1, ReasonCode::NO_MATCHING_SUBSCRIBERS))
            ),
            packet(
                1,
                Packet::PubRec(ack(2, ReasonCode::NO_MATCHING_SUBSCRIBERS))
            ),
        ]
    );
    h.client(2, "pub3");
    h.send(2, publish("nobody", QoS::AtLeastOnce, 1, "x"));
    assert_eq!(h.drain(), vec![packet(2, puback(1))]);
}

#[test]
fn mqtt_3_1_2_25_packets_larger_than_the_clients_maximum_are_not_sent() {
    let mut h = Harness::new();
    let mut c = connect(V5, "sub", true);
    c.properties.maximum_packet_size = NonZeroU32::new(64);
    h.connected(1, c);
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtLeastOnce, 1, &"x".repeat(100)));
    h.send(2, publish("a", QoS::AtLeastOnce, 2, "small"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::AtLeastOnce, 1, "small")]
    );
    assert_eq!(h.broker.stats().dropped.too_large, 1);
}

#[test]
fn message_expiry_0_reaches_connected_subscribers_only() {
    let mut h = Harness::new();
    h.client_v5(1, "online");
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.connected(2, connect_v5_expiry("offline", true, 1000));
    h.subscribe(2, "a", QoS::AtLeastOnce);
    h.close(2);
    h.client_v5(3, "pub");
    h.send(3, expiring("x", 0));
    let expected = with_props(delivered("a", QoS::AtLeastOnce, 1, "x"), |p| {
        p.message_expiry_interval = Some(0)
    });
    assert_eq!(h.drain_packets(1), vec![expected]);
    h.advance_secs(1);
    let out = h.connect(4, connect_v5_expiry("offline", false, 1000));
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn a_full_queue_makes_room_from_expired_messages_before_dropping() {
    let mut h = Harness::with_config(BrokerConfig {
        max_queued_messages: 2,
        queue_overflow: crate::QueueOverflow::DropNew,
        ..BrokerConfig::default()
    });
    h.connected(1, connect_v5_expiry("sub", true, 1000));
    h.subscribe(1, "a", QoS::AtLeastOnce);
    h.close(1);
    h.client_v5(2, "pub");
    h.send(2, expiring("old", 5));
    h.send(2, publish("a", QoS::AtLeastOnce, 2, "kept"));
    h.drain();
    h.advance_secs(6);
    h.send(2, publish("a", QoS::AtLeastOnce, 3, "new"));
    h.drain();
    assert_eq!(h.broker.stats().dropped.expired, 1);
    assert_eq!(h.broker.stats().dropped.queue_full, 0);
    let out = h.connect(3, connect_v5_expiry("sub", false, 1000));
    let payloads: Vec<_> = out
        .iter()
        .filter_map(|t| match t {
            Transmit::Packet {
                packet: Packet::Publish(p),
                ..
            } => Some(p.payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads, ["kept", "new"]);
}
