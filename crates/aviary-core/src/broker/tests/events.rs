//! Events for the management side.

use aviary_codec::{QoS, ReasonCode, TopicFilter};

use super::*;
use crate::{EndReason, Event};

fn events(h: &mut Harness) -> Vec<Event> {
    let mut all = Vec::new();
    while let Some(e) = h.broker.poll_event() {
        all.push(e);
    }
    all
}

#[test]
fn no_events_unless_enabled() {
    let mut h = Harness::new();
    h.client(1, "c");
    h.close(1);
    assert_eq!(h.broker.poll_event(), None);
}

#[test]
fn connect_subscribe_unsubscribe_disconnect_events() {
    let mut h = Harness::with_config(BrokerConfig {
        emit_events: true,
        ..BrokerConfig::default()
    });
    h.client(1, "c");
    h.subscribe(1, "a/#", QoS::AtLeastOnce);
    h.send(1, unsubscribe(2, &["a/#", "none"]));
    h.send(1, disconnect(ReasonCode::SUCCESS));
    h.drain();
    let c: std::sync::Arc<str> = "c".into();
    assert_eq!(
        events(&mut h),
        vec![
            Event::Connected {
                conn: ConnId(1),
                client_id: c.clone(),
                protocol: V3_1_1,
                clean_start: true,
                session_present: false,
            },
            Event::Subscribed {
                conn: ConnId(1),
                client_id: c.clone(),
                filter: TopicFilter::new("a/#").unwrap(),
                qos: QoS::AtLeastOnce,
            },
            Event::Unsubscribed {
                conn: ConnId(1),
                client_id: c.clone(),
                filter: TopicFilter::new("a/#").unwrap(),
            },
            Event::Disconnected {
                conn: ConnId(1),
                client_id: c,
                reason: EndReason::ClientDisconnect,
                units: 2, // connect + disconnect
            },
        ]
    );
}

#[test]
fn disconnect_reasons_are_reported() {
    let mut h = Harness::with_config(BrokerConfig {
        emit_events: true,
        ..BrokerConfig::default()
    });
    h.client_v5(1, "a");
    h.close(1);
    h.client_v5(2, "b");
    h.client_v5(3, "b");
    h.client_v5(4, "c");
    h.send(4, aviary_codec::Packet::PingResp);
    h.client_v5(5, "d");
    h.send(5, disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE));
    h.drain();
    let reasons: Vec<EndReason> = events(&mut h)
        .into_iter()
        .filter_map(|e| match e {
            Event::Disconnected { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            EndReason::TransportClosed,
            EndReason::TakenOver,
            EndReason::ProtocolError(ReasonCode::PROTOCOL_ERROR),
            EndReason::ClientDisconnectWithWill(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE),
        ]
    );
}
