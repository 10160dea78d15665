//! Throughput probes (ignored by default; run with
//! `cargo test -p aviary-core --release -- --ignored --nocapture perf`). They print figures
//! and assert only that every message arrived: no wall-clock assertions.

use std::time::Instant;

use aviary_codec::{Packet, QoS};

use super::*;

fn run(label: &str, subscribers: u64, qos: QoS, messages: u64) {
    let mut h = Harness::new();
    for conn in 1..=subscribers {
        h.client(conn, &format!("s{conn}"));
        h.subscribe(conn, "t/+/x", qos);
    }
    h.client(0, "pub");
    let publish = publish("t/a/x", qos, 1, "payload-of-some-bytes");
    let started = Instant::now();
    let mut delivered = 0u64;
    for _ in 0..messages {
        h.send(0, publish.clone());
        while let Some(t) = h.broker.poll_transmit() {
            if let Transmit::Packet {
                conn,
                packet: Packet::Publish(p),
            } = t
            {
                delivered += 1;
                if let Some(id) = p.packet_id {
                    h.broker.handle_packet(
                        conn,
                        Packet::PubAck(aviary_codec::Ack {
                            packet_id: id,
                            reason_code: aviary_codec::ReasonCode::SUCCESS,
                            properties: Default::default(),
                        }),
                        h.now,
                    );
                }
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(delivered, subscribers * messages);
    println!(
        "{label}: {messages} msgs x {subscribers} subs in {elapsed:?} = {:.0} deliveries/s",
        delivered as f64 / elapsed.as_secs_f64()
    );
}

#[test]
#[ignore]
fn perf_fan_out() {
    run("qos0 1->1", 1, QoS::AtMostOnce, 1_000_000);
    run("qos0 1->100", 100, QoS::AtMostOnce, 10_000);
    run("qos1 1->1", 1, QoS::AtLeastOnce, 500_000);
    run("qos1 1->100", 100, QoS::AtLeastOnce, 5_000);
}
