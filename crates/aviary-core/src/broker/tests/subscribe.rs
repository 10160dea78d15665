//! SUBSCRIBE / UNSUBSCRIBE: granted QoS, limits, replacement, UNSUBACK codes.

use aviary_codec::{Packet, QoS, ReasonCode, SubscriptionOptions};

use super::*;

#[test]
fn suback_grants_the_requested_qos() {
    let mut h = Harness::new();
    h.client(1, "c");
    h.send(
        1,
        subscribe(
            5,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtLeastOnce),
                ("c", QoS::ExactlyOnce),
            ],
        ),
    );
    assert_eq!(h.drain(), vec![packet(1, suback(5, &[0, 1, 2]))]);
    assert_eq!(h.broker.stats().subscriptions, 3);
}

fn filters(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}/{i}")).collect()
}

#[test]
fn subscription_limit_refuses_filters_beyond_30_with_0x80_in_3_x() {
    let mut h = Harness::new();
    h.client(1, "c");
    let first = filters(28, "a");
    let list: Vec<(&str, QoS)> = first
        .iter()
        .map(|f| (f.as_str(), QoS::AtLeastOnce))
        .collect();
    h.send(1, subscribe(1, &list));
    h.drain();
    // 28 + 4 new: two fit, two are refused; re-subscribing an existing one is fine.
    h.send(
        1,
        subscribe(
            2,
            &[
                ("b/1", QoS::AtMostOnce),
                ("a/0", QoS::ExactlyOnce),
                ("b/2", QoS::AtMostOnce),
                ("b/3", QoS::AtMostOnce),
                ("b/4", QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(
        h.drain(),
        vec![packet(1, suback(2, &[0x00, 0x02, 0x00, 0x80, 0x80]))]
    );
    assert_eq!(h.broker.stats().subscriptions, 30);
    // Unsubscribing frees a slot.
    h.send(1, unsubscribe(3, &["b/1"]));
    h.drain();
    h.send(1, subscribe(4, &[("b/3", QoS::AtMostOnce)]));
    assert_eq!(h.drain(), vec![packet(1, suback(4, &[0x00]))]);
}

#[test]
fn subscription_limit_refuses_with_0x97_in_5_0() {
    let mut h = Harness::with_config(BrokerConfig {
        max_subscriptions_per_session: 2,
        ..BrokerConfig::default()
    });
    h.client_v5(1, "c");
    h.send(
        1,
        subscribe(
            1,
            &[
                ("a", QoS::AtLeastOnce),
                ("b", QoS::AtLeastOnce),
                ("c", QoS::AtLeastOnce),
                ("$share/g/d", QoS::AtLeastOnce),
            ],
        ),
    );
    assert_eq!(h.drain(), vec![packet(1, suback(1, &[1, 1, 0x97, 0x97]))]);
}

#[test]
fn mqtt_3_8_3_4_no_local_on_a_shared_subscription_is_a_protocol_error() {
    let mut h = Harness::new();
    h.client_v5(1, "c");
    let options = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::with_qos(QoS::AtMostOnce)
    };
    h.send(1, subscribe_with(1, None, vec![("$share/g/a", options)]));
    assert_eq!(
        h.drain(),
        vec![packet(1, disconnect(ReasonCode::PROTOCOL_ERROR)), close(1)]
    );
}

#[test]
fn filter_deeper_than_max_topic_levels_is_refused() {
    let mut h = Harness::with_config(BrokerConfig {
        max_topic_levels: 2,
        ..BrokerConfig::default()
    });
    h.client(1, "a");
    h.send(
        1,
        subscribe(1, &[("a/b/c", QoS::AtMostOnce), ("a/#", QoS::AtMostOnce)]),
    );
    assert_eq!(h.drain(), vec![packet(1, suback(1, &[0x80, 0x00]))]);
    h.client_v5(2, "b");
    h.send(2, subscribe(1, &[("$share/g/a/b/c", QoS::AtMostOnce)]));
    assert_eq!(h.drain(), vec![packet(2, suback(1, &[0x8F]))]);
}

#[test]
fn mqtt_3_8_4_3_resubscribing_replaces_the_subscription() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::ExactlyOnce);
    h.subscribe(1, "a", QoS::AtMostOnce);
    assert_eq!(h.broker.stats().subscriptions, 1);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::ExactlyOnce, 1, "x"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("a", QoS::AtMostOnce, 0, "x")]
    );
}

#[test]
fn unsubscribe_stops_delivery_and_unsuback_has_no_codes_in_3_x() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.send(1, unsubscribe(2, &["a", "never"]));
    assert_eq!(h.drain(), vec![packet(1, unsuback(2, &[]))]);
    h.send(1, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.broker.stats().subscriptions, 0);
}

#[test]
fn v5_unsuback_says_whether_the_subscription_existed() {
    let mut h = Harness::new();
    h.client_v5(1, "sub");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.send(1, unsubscribe(2, &["a", "b"]));
    assert_eq!(h.drain(), vec![packet(1, unsuback(2, &[0x00, 0x11]))]);
}

#[test]
fn clean_session_end_removes_subscriptions() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.subscribe(1, "a", QoS::AtMostOnce);
    h.close(1);
    assert_eq!(h.broker.stats().subscriptions, 0);
    assert_eq!(h.broker.stats().sessions, 0);
    h.client(2, "pub");
    h.send(2, publish("a", QoS::AtMostOnce, 0, "x"));
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn ping_gets_pingresp() {
    let mut h = Harness::new();
    h.client(1, "c");
    h.send(1, Packet::PingReq);
    assert_eq!(h.drain(), vec![packet(1, Packet::PingResp)]);
}
