//! Will messages: when they are published and when not, delay, retain, properties.

use aviary_codec::{Connect, Packet, QoS, ReasonCode};

use super::*;

fn with_will(mut c: Connect, topic_name: &str, payload: &str) -> Connect {
    c.will = Some(will(topic_name, payload, QoS::AtMostOnce, false));
    c
}

fn with_will_delay(mut c: Connect, topic_name: &str, delay: u32) -> Connect {
    let mut w = will(topic_name, "gone", QoS::AtMostOnce, false);
    w.properties.will_delay_interval = Some(delay);
    c.will = Some(w);
    c
}

/// A watcher on conn 9 subscribed to "w/#".
fn watcher(h: &mut Harness) {
    h.client(9, "watcher");
    h.subscribe(9, "w/#", QoS::AtMostOnce);
}

fn gone(topic_name: &str) -> Packet {
    delivered(topic_name, QoS::AtMostOnce, 0, "gone")
}

#[test]
fn will_is_published_when_the_transport_is_lost() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(1, with_will(connect(V3_1_1, "c", true), "w/c", "gone"));
    h.close(1);
    assert_eq!(h.drain(), vec![packet(9, gone("w/c"))]);
    assert_eq!(h.broker.stats().wills_published, 1);
}

#[test]
fn mqtt_3_1_2_8_will_is_not_published_after_disconnect() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(1, with_will(connect(V3_1_1, "c", true), "w/c", "gone"));
    h.send(1, disconnect(ReasonCode::SUCCESS));
    assert_eq!(h.drain(), vec![close(1)]);
    h.close(1);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn mqtt_3_14_4_3_v5_normal_disconnect_discards_the_will() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(1, with_will(connect(V5, "c", true), "w/c", "gone"));
    h.send(1, disconnect(ReasonCode::NORMAL_DISCONNECTION));
    assert_eq!(h.drain(), vec![close(1)]);
}

#[test]
fn v5_disconnect_with_will_message_0x04_publishes_it() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(1, with_will(connect(V5, "c", true), "w/c", "gone"));
    h.send(1, disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE));
    assert_eq!(h.drain(), vec![close(1), packet(9, gone("w/c"))]);
}

#[test]
fn will_is_published_on_keep_alive_timeout() {
    let mut h = Harness::new();
    watcher(&mut h);
    let mut c = with_will(connect(V3_1_1, "c", true), "w/c", "gone");
    c.keep_alive = 4;
    h.connected(1, c);
    h.send(9, Packet::PingReq);
    h.drain();
    h.advance_secs(6);
    assert_eq!(h.drain(), vec![close(1), packet(9, gone("w/c"))]);
}

#[test]
fn will_is_published_on_protocol_error() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(1, with_will(connect(V5, "c", true), "w/c", "gone"));
    h.send(1, Packet::PingResp);
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::PROTOCOL_ERROR)),
            close(1),
            packet(9, gone("w/c"))
        ]
    );
}

#[test]
fn will_is_published_when_the_session_is_taken_over() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(1, with_will(connect(V3_1_1, "c", true), "w/c", "gone"));
    h.connect(2, connect(V3_1_1, "c", true));
    // (drained by connect; check the watcher got it through stats)
    assert_eq!(h.broker.stats().wills_published, 1);
}

#[test]
fn will_retain_flag_stores_the_will_as_retained() {
    let mut h = Harness::new();
    let mut c = connect(V3_1_1, "c", true);
    c.will = Some(will("w/c", "gone", QoS::AtLeastOnce, true));
    h.connected(1, c);
    h.close(1);
    h.client(2, "late");
    h.send(2, subscribe(1, &[("w/c", QoS::AtLeastOnce)]));
    assert_eq!(
        h.drain_packets(2),
        vec![
            suback(1, &[1]),
            with_retain(delivered("w/c", QoS::AtLeastOnce, 1, "gone"))
        ]
    );
}

#[test]
fn will_properties_are_carried_onto_the_message() {
    let mut h = Harness::new();
    h.client_v5(9, "watcher");
    h.subscribe(9, "w/#", QoS::AtMostOnce);
    let mut c = connect(V5, "c", true);
    let mut w = will("w/c", "gone", QoS::AtMostOnce, false);
    w.properties.content_type = Some("text/plain".into());
    w.properties.payload_format_indicator = Some(true);
    w.properties.user_properties = vec![("k".into(), "v".into())];
    w.properties.response_topic = Some(topic("reply"));
    w.properties.correlation_data = Some(bytes::Bytes::from_static(b"id"));
    c.will = Some(w);
    h.connected(1, c);
    h.close(1);
    let expected = with_props(gone("w/c"), |p| {
        p.content_type = Some("text/plain".into());
        p.payload_format_indicator = Some(true);
        p.user_properties = vec![("k".into(), "v".into())];
        p.response_topic = Some(topic("reply"));
        p.correlation_data = Some(bytes::Bytes::from_static(b"id"));
    });
    assert_eq!(h.drain(), vec![packet(9, expected)]);
}

#[test]
fn mqtt_3_1_3_9_will_delay_publishes_after_the_delay() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(
        1,
        with_will_delay(connect_v5_expiry("c", true, 100), "w/c", 10),
    );
    h.close(1);
    assert_eq!(h.drain(), vec![]);
    h.advance_secs(9);
    assert_eq!(h.drain(), vec![]);
    h.advance_secs(1);
    assert_eq!(h.drain(), vec![packet(9, gone("w/c"))]);
}

#[test]
fn mqtt_3_1_3_9_reconnecting_before_the_will_delay_cancels_the_will() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(
        1,
        with_will_delay(connect_v5_expiry("c", true, 100), "w/c", 10),
    );
    h.close(1);
    h.advance_secs(5);
    h.connected(2, connect_v5_expiry("c", false, 100));
    h.advance_secs(20);
    assert_eq!(h.drain(), vec![]);
    assert_eq!(h.broker.stats().wills_published, 0);
}

#[test]
fn will_delay_longer_than_session_expiry_publishes_when_the_session_ends() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(
        1,
        with_will_delay(connect_v5_expiry("c", true, 5), "w/c", 60),
    );
    h.close(1);
    h.advance_secs(4);
    assert_eq!(h.drain(), vec![]);
    h.advance_secs(1);
    assert_eq!(h.drain(), vec![packet(9, gone("w/c"))]);
    assert_eq!(h.broker.stats().sessions, 1); // only the watcher's
}

#[test]
fn will_delay_with_session_expiry_0_publishes_at_once() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(1, with_will_delay(connect(V5, "c", true), "w/c", 60));
    h.close(1);
    assert_eq!(h.drain(), vec![packet(9, gone("w/c"))]);
}

#[test]
fn delayed_will_is_published_when_a_clean_start_ends_the_session() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(
        1,
        with_will_delay(connect_v5_expiry("c", true, 100), "w/c", 60),
    );
    h.close(1);
    let out = h.connect(2, connect(V5, "c", true));
    assert!(out.contains(&packet(9, gone("w/c"))), "{out:?}");
}

#[test]
fn v5_takeover_resuming_the_session_with_will_delay_sends_no_will() {
    let mut h = Harness::new();
    watcher(&mut h);
    h.connected(
        1,
        with_will_delay(connect_v5_expiry("c", true, 100), "w/c", 10),
    );
    let out = h.connect(2, connect_v5_expiry("c", false, 100));
    assert_eq!(out.len(), 3, "{out:?}"); // DISCONNECT 0x8E, Close, CONNACK
    h.advance_secs(30);
    assert_eq!(h.drain(), vec![]);
}
