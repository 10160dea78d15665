//! What every idle connection costs the broker (issue 6: ≤ 1 KiB per idle connection):
//! the sizes of the per-connection structs, and that the state most clients never use
//! is only allocated by those that do, and given back.

use aviary_codec::QoS;

use super::super::connection::{Connected, Connection};
use super::super::session::{Session, SessionId};
use super::*;

/// A connected client holds one `Session` and one `Connected`, both boxed in the
/// broker's tables; these bounds keep them from growing back unnoticed. They are set by
/// the blocks of both allocators we run with (mimalloc's size classes and glibc's chunks
/// with 8 bytes of header): 104 bytes take a 112-byte block in both, 120 a 128-byte one
/// (121 would take 160 with mimalloc, 144 with glibc).
#[cfg(target_pointer_width = "64")]
#[test]
fn session_stays_small() {
    let size = std::mem::size_of::<Session>();
    assert!(size <= 104, "Session is {size} bytes");
}

#[cfg(target_pointer_width = "64")]
#[test]
fn connected_stays_small() {
    let size = std::mem::size_of::<Connected>();
    assert!(size <= 120, "Connected is {size} bytes");
}

/// The connection table boxes the whole state; that costs nothing over boxing
/// `Connected` only while `Connecting` fits beside its niche.
#[cfg(target_pointer_width = "64")]
#[test]
fn connection_stays_small() {
    let size = std::mem::size_of::<Connection>();
    assert!(size <= 120, "Connection is {size} bytes");
}

fn session<'a>(h: &'a Harness, client_id: &str) -> &'a Session {
    let sid: &SessionId = h.broker.client_ids.get(client_id).expect("a session");
    h.broker.sessions.get(sid).expect("the session")
}

#[test]
fn idle_session_allocates_no_outbound_state_or_subscription_map() {
    let mut h = Harness::new();
    h.client(1, "idle");
    h.send(1, Packet::PingReq);
    h.drain();
    let s = session(&h, "idle");
    assert!(s.outbound.is_none());
    assert_eq!(s.subscriptions.len(), 0);
    assert!(s.subscriptions.keys().next().is_none());
    // QoS 0 traffic needs no window either.
    h.subscribe(1, "t", QoS::AtMostOnce);
    h.client(2, "pub");
    h.send(2, publish("t", QoS::AtMostOnce, 0, "x"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("t", QoS::AtMostOnce, 0, "x")]
    );
    assert!(session(&h, "idle").outbound.is_none());
    assert_eq!(session(&h, "idle").subscriptions.len(), 1);
}

#[test]
fn outbound_state_is_kept_while_connected_and_freed_when_nothing_is_pending() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "t", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("t", QoS::AtLeastOnce, 1, "1"));
    assert_eq!(
        h.drain_packets(1),
        vec![delivered("t", QoS::AtLeastOnce, 1, "1")]
    );
    assert_eq!(session(&h, "sub").inflight_len(), 1);
    h.send(1, puback(1));
    h.drain();
    // Acknowledged: kept for the next message while the connection lasts.
    let s = session(&h, "sub");
    assert_eq!(s.inflight_len(), 0);
    assert!(s.outbound.is_some());
    h.close(1);
    assert!(session(&h, "sub").outbound.is_none());
}

#[test]
fn outbound_state_with_pending_messages_survives_the_connection() {
    let mut h = Harness::new();
    h.connected(1, connect(V3_1_1, "sub", false));
    h.subscribe(1, "t", QoS::AtLeastOnce);
    h.client(2, "pub");
    h.send(2, publish("t", QoS::AtLeastOnce, 1, "1"));
    h.drain();
    h.close(1);
    h.send(2, publish("t", QoS::AtLeastOnce, 2, "2"));
    h.drain();
    let s = session(&h, "sub");
    assert_eq!((s.inflight_len(), s.queued_len()), (1, 1));
    assert_eq!(s.retry_at(), None, "no retry timer without a connection");
    assert_eq!(
        h.connect(3, connect(V3_1_1, "sub", false)),
        vec![
            packet(3, connack(true, aviary_codec::ReasonCode::SUCCESS)),
            packet(3, with_dup(delivered("t", QoS::AtLeastOnce, 1, "1"))),
            packet(3, delivered("t", QoS::AtLeastOnce, 2, "2")),
        ]
    );
}
