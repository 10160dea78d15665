//! Retained messages: set, replace, delete, retain handling 0/1/2, RETAIN flag rules.

use aviary_codec::{QoS, RetainHandling, SubscriptionOptions};

use super::*;

fn options(qos: QoS, retain_handling: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling,
        ..SubscriptionOptions::with_qos(qos)
    }
}

#[test]
fn mqtt_3_3_1_9_retained_message_is_sent_on_subscribe_with_retain_1() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a/b", QoS::AtLeastOnce, 1, "r"));
    assert_eq!(h.drain(), vec![packet(1, puback(1))]);
    assert_eq!(h.broker.stats().retained, 1);
    h.client(2, "sub");
    h.send(2, subscribe(1, &[("a/+", QoS::ExactlyOnce)]));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, suback(1, &[2])),
            packet(2, with_retain(delivered("a/b", QoS::AtLeastOnce, 1, "r"))),
        ]
    );
}

#[test]
fn retained_message_qos_is_downgraded_to_the_subscription() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a", QoS::ExactlyOnce, 1, "r"));
    h.drain();
    h.client(2, "sub");
    h.send(2, subscribe(1, &[("a", QoS::AtMostOnce)]));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, suback(1, &[0])),
            packet(2, with_retain(delivered("a", QoS::AtMostOnce, 0, "r"))),
        ]
    );
}

#[test]
fn mqtt_3_3_1_5_a_new_retained_message_replaces_the_old_one() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, "old"));
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, "new"));
    h.client(2, "sub");
    h.send(2, subscribe(1, &[("a", QoS::AtMostOnce)]));
    assert_eq!(
        h.drain_packets(2),
        vec![
            suback(1, &[0]),
            with_retain(delivered("a", QoS::AtMostOnce, 0, "new")),
        ]
    );
}

#[test]
fn mqtt_3_3_1_6_empty_retained_payload_deletes_and_is_still_delivered() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    h.client(2, "sub");
    h.subscribe(2, "a", QoS::AtMostOnce);
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, ""));
    // Delivered to the existing subscription, with RETAIN=0 [MQTT-3.3.1-12].
    assert_eq!(
        h.drain_packets(2),
        vec![delivered("a", QoS::AtMostOnce, 0, "")]
    );
    assert_eq!(h.broker.stats().retained, 0);
    h.client(3, "late");
    h.send(3, subscribe(1, &[("a", QoS::AtMostOnce)]));
    assert_eq!(h.drain_packets(3), vec![suback(1, &[0])]);
}

#[test]
fn mqtt_3_3_1_12_live_delivery_of_a_retained_publish_has_retain_0() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.client(2, "pub");
    h.send(2, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::AtMostOnce, 0, "r")]
    );
}

#[test]
fn mqtt_3_3_1_13_retain_as_published_keeps_the_flag() {
    let mut h = Harness::new();
    h.client_v5(1, "sub");
    let options = SubscriptionOptions {
        retain_as_published: true,
        ..SubscriptionOptions::with_qos(QoS::AtMostOnce)
    };
    h.send(1, subscribe_with(1, None, vec![("a", options)]));
    h.drain();
    h.client(2, "pub");
    h.send(2, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    assert_eq!(
        h.drain_packets(1),
        vec![with_retain(delivered("a", QoS::AtMostOnce, 0, "r"))]
    );
}

#[test]
fn mqtt_3_3_1_10_retain_handling_1_sends_only_for_a_new_subscription() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    h.client_v5(2, "sub");
    let o = options(QoS::AtMostOnce, RetainHandling::SendOnNewSubscribe);
    h.send(2, subscribe_with(1, None, vec![("a", o)]));
    assert_eq!(
        h.drain_packets(2),
        vec![
            suback(1, &[0]),
            with_retain(delivered("a", QoS::AtMostOnce, 0, "r"))
        ]
    );
    h.send(2, subscribe_with(2, None, vec![("a", o)]));
    assert_eq!(h.drain_packets(2), vec![suback(2, &[0])]);
}

#[test]
fn mqtt_3_3_1_9_retain_handling_0_sends_on_every_subscribe() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    h.client_v5(2, "sub");
    for n in 1..=2 {
        h.send(2, subscribe(n, &[("a", QoS::AtMostOnce)]));
        assert_eq!(
            h.drain_packets(2),
            vec![
                suback(n, &[0]),
                with_retain(delivered("a", QoS::AtMostOnce, 0, "r"))
            ]
        );
    }
}

#[test]
fn mqtt_3_3_1_11_retain_handling_2_sends_nothing() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    h.client_v5(2, "sub");
    let o = options(QoS::AtMostOnce, RetainHandling::DoNotSend);
    h.send(2, subscribe_with(1, None, vec![("a", o)]));
    assert_eq!(h.drain_packets(2), vec![suback(1, &[0])]);
}

#[test]
fn shared_subscriptions_get_no_retained_messages() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a", QoS::AtMostOnce, 0, "r"));
    h.client(2, "sub");
    h.send(2, subscribe(1, &[("$share/g/a", QoS::AtMostOnce)]));
    assert_eq!(h.drain_packets(2), vec![suback(1, &[0])]);
}

#[test]
fn several_retained_messages_match_a_wildcard() {
    let mut h = Harness::new();
    h.client(1, "pub");
    h.send(1, retained_publish("a/1", QoS::AtMostOnce, 0, "1"));
    h.send(1, retained_publish("a/2", QoS::AtMostOnce, 0, "2"));
    h.send(1, retained_publish("b/3", QoS::AtMostOnce, 0, "3"));
    h.client(2, "sub");
    h.send(2, subscribe(1, &[("a/#", QoS::AtMostOnce)]));
    let mut out = h.drain_packets(2);
    assert_eq!(out.remove(0), suback(1, &[0]));
    out.sort_by_key(|p| format!("{p:?}"));
    assert_eq!(
        out,
        vec![
            with_retain(delivered("a/1", QoS::AtMostOnce, 0, "1")),
            with_retain(delivered("a/2", QoS::AtMostOnce, 0, "2")),
        ]
    );
}

#[test]
fn retained_message_expiry_counts_down_and_expired_ones_are_removed() {
    let mut h = Harness::new();
    h.client_v5(1, "pub");
    let p = with_props(retained_publish("a", QoS::AtMostOnce, 0, "r"), |p| {
        p.message_expiry_interval = Some(10)
    });
    h.send(1, p);
    h.advance_secs(4);
    h.client_v5(2, "sub");
    h.send(2, subscribe(1, &[("a", QoS::AtMostOnce)]));
    let expected = with_props(with_retain(delivered("a", QoS::AtMostOnce, 0, "r")), |p| {
        p.message_expiry_interval = Some(6)
    });
    assert_eq!(h.drain_packets(2), vec![suback(1, &[0]), expected]);
    h.advance_secs(7);
    assert_eq!(h.broker.stats().retained, 0);
    h.send(2, subscribe(2, &[("a", QoS::AtMostOnce)]));
    assert_eq!(h.drain_packets(2), vec![suback(2, &[0])]);
}
