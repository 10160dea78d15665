//! Topic matching with 1,000,000 subscriptions: how long one published topic takes to find
//! its subscribers, for exact, `+` and `#` subscriptions and shared groups, in an index of
//! a fleet-like shape. Run with `cargo bench -p aviary-core --bench topic_index`.

use std::hint::black_box;

use aviary_codec::{TopicFilter, TopicName};
use aviary_core::topic_index::{Match, SubscriptionIndex};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Subscriptions in the index.
const SUBSCRIPTIONS: u32 = 1_000_000;

/// 1,000,000 subscriptions: 990,000 devices each on its own command topic, back ends with
/// `+` and `#` per fleet (1,000 fleets), 5,000 shared-group members.
fn build() -> SubscriptionIndex<u32, u8> {
    let mut index = SubscriptionIndex::new();
    let filter = |s: String| TopicFilter::new(&s).unwrap();
    let mut key = 0u32;
    for device in 0..990_000u32 {
        index.insert(
            &filter(format!("fleet/{}/device/{device}/cmd", device % 1000)),
            key,
            0,
        );
        key += 1;
    }
    for fleet in 0..1000u32 {
        for _ in 0..2 {
            index.insert(&filter(format!("fleet/{fleet}/device/+/telemetry")), key, 1);
            key += 1;
            index.insert(&filter(format!("fleet/{fleet}/#")), key, 1);
            key += 1;
        }
    }
    while key < SUBSCRIPTIONS {
        index.insert(
            &filter(format!(
                "$share/backend/fleet/{}/device/+/event",
                key % 1000
            )),
            key,
            2,
        );
        key += 1;
    }
    assert_eq!(index.len(), SUBSCRIPTIONS as usize);
    index
}

fn bench_match(c: &mut Criterion) {
    let index = build();
    let mut group = c.benchmark_group("match_1m_subscriptions");
    group.throughput(Throughput::Elements(1));
    // (name, topic, matches: plain subscriptions + shared groups)
    let cases = [
        // its device + the fleet's two `#` back ends
        ("exact_device_cmd", "fleet/417/device/123417/cmd", 3),
        // the fleet's two `+` and two `#` back ends
        (
            "wildcards_telemetry",
            "fleet/417/device/123417/telemetry",
            4,
        ),
        // the fleet's shared group + two `#`
        ("shared_event", "fleet/417/device/123417/event", 3),
        ("no_match", "other/417/device/123417/cmd", 0),
    ];
    let count = |topic: &TopicName| {
        let mut found = 0u32;
        index.for_each_match(topic, |m| {
            found += match m {
                Match::Plain { .. } | Match::Shared { .. } => 1,
            }
        });
        found
    };
    for (name, topic, expected) in cases {
        let topic = TopicName::new(topic).unwrap();
        assert_eq!(count(&topic), expected, "{name}");
        group.bench_function(name, |b| b.iter(|| black_box(count(black_box(&topic)))));
    }
    group.finish();
}

criterion_group!(benches, bench_match);
criterion_main!(benches);
