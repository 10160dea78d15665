//! The management side's operations on a running broker (`broker/manage.rs`): session
//! subscriptions, retained messages, shared groups, runtime limits, refusing a CONNECT over
//! the shell's rate and disconnecting a connection.

use aviary_codec::{QoS, ReasonCode, SubscriptionOptions, TopicFilter};

use super::*;
use crate::{ManageError, RuntimeLimits};

fn filter(f: &str) -> TopicFilter {
    TopicFilter::new(f).unwrap()
}

#[test]
fn a_subscription_added_from_outside_routes_like_a_client_one() {
    let mut h = Harness::new();
    h.client(1, "sub");
    h.client(2, "pub");
    let options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
    assert_eq!(
        h.broker.add_subscription("sub", filter("a/+"), options),
        Ok(false)
    );
    assert_eq!(
        h.broker.add_subscription("sub", filter("a/+"), options),
        Ok(true)
    );
    assert_eq!(
        h.broker.session_subscriptions("sub").unwrap()[0].filter,
        filter("a/+")
    );
    h.send(2, publish("a/b", QoS::AtLeastOnce, 7, "x"));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, puback(7)),
            packet(1, delivered("a/b", QoS::AtLeastOnce, 1, "x")),
        ]
    );
    assert_eq!(
        h.broker.remove_subscription("sub", &filter("a/+"), h.now),
        Some(true)
    );
    assert_eq!(
        h.broker.remove_subscription("sub", &filter("a/+"), h.now),
        Some(false)
    );
    assert_eq!(
        h.broker
            .remove_subscription("nobody", &filter("a/+"), h.now),
        None
    );
    h.send(2, publish("a/b", QoS::AtMostOnce, 0, "y"));
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn added_subscriptions_keep_the_per_session_limits() {
    let mut h = Harness::with_config(BrokerConfig {
        max_subscriptions_per_session: 1,
        max_topic_levels: 2,
        ..BrokerConfig::default()
    });
    h.client(1, "c");
    let options = SubscriptionOptions::with_qos(QoS::AtMostOnce);
    assert_eq!(
        h.broker.add_subscription("c", filter("a"), options),
        Ok(false)
    );
    assert_eq!(
        h.broker.add_subscription("c", filter("b"), options),
        Err(ManageError::TooManySubscriptions(1))
    );
    assert_eq!(
        h.broker.add_subscription("c", filter("a/b/c"), options),
        Err(ManageError::TooDeep(2))
    );
    assert_eq!(
        h.broker.add_subscription("x", filter("a"), options),
        Err(ManageError::NoSession("x".into()))
    );
}

#[test]
fn retained_messages_are_listed_read_and_deleted() {
    let mut h = Harness::new();
    h.client(1, "p");
    h.send(1, retained_publish("b/2", QoS::AtMostOnce, 0, "two"));
    h.send(1, retained_publish("b/1", QoS::AtMostOnce, 0, "one"));
    h.send(1, retained_publish("c", QoS::AtMostOnce, 0, "three"));
    h.drain();
    let topics: Vec<String> = h
        .broker
        .retained_messages("b/#", 10)
        .into_iter()
        .map(|m| m.topic.as_str().to_owned())
        .collect();
    assert_eq!(topics, ["b/1", "b/2"]);
    assert_eq!(h.broker.retained_messages("#", 1).len(), 1);
    assert_eq!(
        &h.broker.retained_message(&topic("c")).unwrap().payload[..],
        b"three"
    );
    assert!(h.broker.delete_retained(&topic("c")));
    assert!(!h.broker.delete_retained(&topic("c")));
    assert_eq!(h.broker.retained_message(&topic("c")), None);
}

#[test]
fn the_retained_count_limit_refuses_new_topics_with_quota_exceeded() {
    let mut h = Harness::with_config(BrokerConfig {
        max_retained: 1,
        ..BrokerConfig::default()
    });
    h.client_v5(1, "p");
    h.send(1, retained_publish("a", QoS::AtLeastOnce, 1, "x"));
    h.send(1, retained_publish("b", QoS::AtLeastOnce, 2, "x"));
    h.send(1, retained_publish("a", QoS::AtLeastOnce, 3, "y"));
    assert_eq!(
        h.drain(),
        vec![
            packet(
                1,
                Packet::PubAck(ack(1, ReasonCode::NO_MATCHING_SUBSCRIBERS))
            ),
            packet(1, Packet::PubAck(ack(2, ReasonCode::QUOTA_EXCEEDED))),
            packet(
                1,
                Packet::PubAck(ack(3, ReasonCode::NO_MATCHING_SUBSCRIBERS))
            ),
        ]
    );
    assert_eq!(h.broker.stats().retained, 1);
    assert_eq!(h.broker.stats().dropped.retained_quota, 1);
}

#[test]
fn shared_groups_list_members_sorted() {
    let mut h = Harness::new();
    h.client(1, "w2");
    h.client(2, "w1");
    h.subscribe(1, "$share/g/jobs/#", QoS::AtLeastOnce);
    h.subscribe(2, "$share/g/jobs/#", QoS::AtLeastOnce);
    h.subscribe(2, "$share/h/x", QoS::AtMostOnce);
    let groups = h.broker.shared_groups();
    assert_eq!(groups.len(), 2);
    assert_eq!(
        (groups[0].group.as_str(), groups[0].filter.as_str()),
        ("g", "jobs/#")
    );
    assert_eq!(groups[0].members, ["w1", "w2"]);
    assert_eq!(groups[0].backlog, 0);
    assert_eq!(groups[1].members, ["w1"]);
}

#[test]
fn limits_change_at_once() {
    let mut h = Harness::new();
    let limits = RuntimeLimits {
        max_connections: 1,
        ..h.broker.limits()
    };
    h.broker.set_limits(limits);
    assert_eq!(h.broker.limits(), limits);
    h.client(1, "a");
    let out = h.connect(2, connect(V5, "b", true));
    assert!(
        matches!(&out[0], Transmit::Packet { packet: Packet::ConnAck(a), .. } if a.reason_code == ReasonCode::QUOTA_EXCEEDED),
        "{out:?}"
    );
}

#[test]
fn a_connect_over_the_rate_is_refused_before_it_is_processed() {
    let mut h = Harness::new();
    h.open(1);
    assert!(h
        .broker
        .refuse_connect(ConnId(1), V5, ReasonCode::CONNECTION_RATE_EXCEEDED));
    let out = h.drain();
    assert!(
        matches!(&out[0], Transmit::Packet { packet: Packet::ConnAck(a), .. } if a.reason_code == ReasonCode::CONNECTION_RATE_EXCEEDED),
        "{out:?}"
    );
    assert_eq!(out[1], close(1));
    // 3.x: the return-code mapping (3, server unavailable).
    h.open(2);
    assert!(h
        .broker
        .refuse_connect(ConnId(2), V3_1_1, ReasonCode::CONNECTION_RATE_EXCEEDED));
    assert_eq!(
        h.drain(),
        vec![
            packet(2, connack(false, ReasonCode::SERVER_UNAVAILABLE)),
            close(2)
        ]
    );
    // A connected client is not "refused".
    h.client(3, "c");
    assert!(!h
        .broker
        .refuse_connect(ConnId(3), V3_1_1, ReasonCode::CONNECTION_RATE_EXCEEDED));
    assert_eq!(h.broker.stats().connects_refused, 2);
}

#[test]
fn disconnecting_a_connection_sends_administrative_action_to_5_0() {
    let mut h = Harness::new();
    h.client_v5(1, "v5");
    h.client(2, "v3");
    h.open(3);
    assert!(h.broker.disconnect_connection(ConnId(1), h.now));
    assert!(h.broker.disconnect_connection(ConnId(2), h.now));
    assert!(h.broker.disconnect_connection(ConnId(3), h.now));
    assert!(!h.broker.disconnect_connection(ConnId(4), h.now));
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::ADMINISTRATIVE_ACTION)),
            close(1),
            close(2),
            close(3),
        ]
    );
    assert_eq!(h.broker.stats().connections, 0);
}
