//! Codec micro-benchmarks: the packets of the hot path (PUBLISH at 16 B and 1 KiB, PUBACK),
//! decoded from and encoded into a buffer, in 3.1.1 and 5.0. Run with
//! `cargo bench -p aviary-codec --bench codec`.

use std::hint::black_box;

use aviary_codec::{
    decode, encode, Ack, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, TopicName,
};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MAX_PACKET: u32 = 1 << 20;

fn publish(payload: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TopicName::new("fleet/42/vehicle/8731/telemetry").unwrap(),
        packet_id: PacketId::new(17),
        properties: Default::default(),
        payload: vec![0xA5; payload].into(),
    })
}

fn puback() -> Packet {
    Packet::PubAck(Ack {
        packet_id: PacketId::new(17).unwrap(),
        reason_code: ReasonCode::SUCCESS,
        properties: Default::default(),
    })
}

fn versions() -> [(&'static str, ProtocolVersion); 2] {
    [
        ("v3.1.1", ProtocolVersion::V3_1_1),
        ("v5", ProtocolVersion::V5),
    ]
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    for (name, version) in versions() {
        for (label, packet) in [
            ("publish_16", publish(16)),
            ("publish_1k", publish(1024)),
            ("puback", puback()),
        ] {
            let mut buf = BytesMut::with_capacity(4096);
            group.bench_with_input(BenchmarkId::new(label, name), &packet, |b, packet| {
                b.iter(|| {
                    buf.clear();
                    encode(black_box(packet), version, &mut buf).unwrap();
                    black_box(buf.len())
                })
            });
        }
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (name, version) in versions() {
        for (label, packet) in [
            ("publish_16", publish(16)),
            ("publish_1k", publish(1024)),
            ("puback", puback()),
        ] {
            let mut wire = BytesMut::new();
            encode(&packet, version, &mut wire).unwrap();
            let wire = wire.freeze();
            group.bench_with_input(BenchmarkId::new(label, name), &wire, |b, wire| {
                // Each iteration decodes from a fresh buffer holding the packet, as a
                // connection's read buffer would (the copy is part of the measured time).
                b.iter(|| {
                    let mut buf = BytesMut::from(&wire[..]);
                    black_box(decode(&mut buf, version, MAX_PACKET).unwrap())
                })
            });
        }
    }
    group.finish();
}

/// Decoding a read buffer holding 64 PUBLISHes back to back (a batched read).
fn bench_decode_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_batch_64");
    group.throughput(Throughput::Elements(64));
    for (name, version) in versions() {
        let mut wire = BytesMut::new();
        for _ in 0..64 {
            encode(&publish(16), version, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        group.bench_function(BenchmarkId::new("publish_16", name), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&wire[..]);
                let mut n = 0;
                while let Some(packet) = decode(&mut buf, version, MAX_PACKET).unwrap() {
                    black_box(packet);
                    n += 1;
                }
                assert_eq!(n, 64);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_decode_batch);
criterion_main!(benches);
