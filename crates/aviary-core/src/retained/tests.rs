use proptest::prelude::*;

use super::*;

/// The reference matcher, independent of the trie.
use aviary_codec::topic_matches as oracle;

fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

fn store_of(topics: &[&str]) -> RetainedStore<String> {
    let mut store = RetainedStore::new();
    for t in topics {
        store.insert(topic(t), t.to_string());
    }
    store
}

/// The topics `filter` finds, sorted; each message is checked to sit under its own topic.
fn found(store: &RetainedStore<String>, filter: &str) -> Vec<String> {
    let mut found = Vec::new();
    store.for_each_match(filter, |name, message| {
        assert_eq!(name.as_str(), message);
        found.push(message.clone());
    });
    found.sort();
    found
}

/// Retains one message per topic (the message is its topic) and checks what `filter` finds.
#[track_caller]
fn check(topics: &[&str], filter: &str, expected: &[&str]) {
    let store = store_of(topics);
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(found(&store, filter), expected, "filter {filter}");
}

const TOPICS: &[&str] = &[
    "a", "a/b", "a/b/c", "a/c", "b", "a//c", "/a", "/", "$SYS/x", "$SYS",
];

#[test]
fn exact_filter_finds_its_topic() {
    check(TOPICS, "a/b", &["a/b"]);
    check(TOPICS, "a/x", &[]);
    check(TOPICS, "$SYS/x", &["$SYS/x"]);
}

#[test]
fn mqtt_4_7_1_2_hash_finds_parent_and_subtree() {
    check(TOPICS, "a/#", &["a", "a/b", "a/b/c", "a/c", "a//c"]);
    check(TOPICS, "a/b/#", &["a/b", "a/b/c"]);
    check(TOPICS, "a/+/#", &["a/b", "a/b/c", "a/c", "a//c"]);
}

#[test]
fn mqtt_4_7_1_3_plus_finds_one_level() {
    check(TOPICS, "a/+", &["a/b", "a/c"]);
    check(TOPICS, "+", &["a", "b"]);
    check(TOPICS, "+/+", &["a/b", "a/c", "/a", "/"]);
    check(TOPICS, "a/+/c", &["a/b/c", "a//c"]);
}

#[test]
fn mqtt_4_7_3_empty_levels_are_levels() {
    check(TOPICS, "/+", &["/a", "/"]);
    check(TOPICS, "/#", &["/a", "/"]);
    check(TOPICS, "a//c", &["a//c"]);
}

#[test]
fn mqtt_4_7_2_1_dollar_topics_not_found_by_leading_wildcards() {
    check(
        TOPICS,
        "#",
        &["a", "a/b", "a/b/c", "a/c", "b", "a//c", "/a", "/"],
    );
    check(TOPICS, "+/x", &[]);
    check(TOPICS, "+", &["a", "b"]);
    check(TOPICS, "$SYS/#", &["$SYS", "$SYS/x"]);
    check(TOPICS, "$SYS/+", &["$SYS/x"]);
    check(&["a/$x"], "a/+", &["a/$x"]);
}

#[test]
fn insert_replaces_and_remove_prunes() {
    let mut store = RetainedStore::new();
    assert_eq!(store.insert(topic("a/b"), 1), None);
    assert_eq!(store.insert(topic("a/b"), 2), Some(1));
    assert_eq!(store.insert(topic("a"), 3), None);
    assert_eq!(store.insert(topic("a/b/c/d"), 4), None);
    assert_eq!(store.len(), 3);
    assert_eq!(store.get(&topic("a/b")), Some(&2));
    assert_eq!(store.get(&topic("a/b/c")), None);
    assert_eq!(store.remove(&topic("a/b/c")), None);
    assert_eq!(store.remove(&topic("a/b/c/d")), Some(4));
    assert!(store
        .root
        .children
        .get("a")
        .unwrap()
        .children
        .get("b")
        .unwrap()
        .children
        .is_empty());
    assert_eq!(store.remove(&topic("a/b")), Some(2));
    assert!(store.root.children.get("a").unwrap().children.is_empty());
    assert_eq!(store.remove(&topic("a")), Some(3));
    assert!(store.is_empty());
    assert!(store.root.children.is_empty());
}

#[test]
fn empty_alias_topic_is_not_stored() {
    let mut store = RetainedStore::new();
    assert_eq!(store.insert(TopicName::empty(), 1), None);
    assert!(store.is_empty());
    assert_eq!(store.remove(&TopicName::empty()), None);
}

#[test]
fn retain_removes_rejected_messages_and_prunes() {
    let mut store = store_of(TOPICS);
    store.retain(|name, _| name.as_str().len() % 2 == 0);
    let mut left: Vec<&str> = TOPICS
        .iter()
        .copied()
        .filter(|t| t.len() % 2 == 0)
        .collect();
    left.sort();
    assert_eq!(
        found(&store, "#"),
        left.iter()
            .filter(|t| !t.starts_with('$'))
            .copied()
            .collect::<Vec<_>>()
    );
    assert_eq!(store.len(), left.len());
    store.retain(|_, _| false);
    assert!(store.is_empty());
    assert!(store.root.children.is_empty());
}

#[test]
fn deep_topics_do_not_exhaust_the_stack() {
    // 30,000 levels: well inside the 65,535-byte limit, far too deep for recursion.
    let deep = vec!["x"; 30_000].join("/");
    let mut store = RetainedStore::new();
    store.insert(topic(&deep), 1);
    let mut seen = 0;
    store.for_each_match("#", |_, _| seen += 1);
    store.for_each_match(&deep, |_, _| seen += 1);
    assert_eq!(seen, 2);
    store.retain(|_, _| false);
    assert!(store.root.children.is_empty());
}

#[test]
fn churn_leaves_the_trie_empty() {
    let mut store = RetainedStore::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..10_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let t = topic(TOPICS[(state % TOPICS.len() as u64) as usize]);
        if state & (1 << 40) == 0 {
            store.insert(t, ());
        } else {
            store.remove(&t);
        }
    }
    for t in TOPICS {
        store.remove(&topic(t));
    }
    assert!(store.is_empty());
    assert!(
        store.root.children.is_empty(),
        "not pruned: {:?}",
        store.root
    );
}

fn topic_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$x"]);
    prop::collection::vec(level, 1..=4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$x", "+", "#"]);
    prop::collection::vec(level, 1..=4)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a valid filter", |f| {
            aviary_codec::TopicFilter::new(f).is_ok()
        })
}

proptest! {
    #[test]
    fn matches_agree_with_the_oracle(
        topics in prop::collection::vec(topic_strategy(), 0..16),
        removals in prop::collection::vec(topic_strategy(), 0..6),
        filters in prop::collection::vec(filter_strategy(), 1..8),
    ) {
        let mut store = RetainedStore::new();
        let mut live = std::collections::BTreeSet::new();
        for t in &topics {
            store.insert(topic(t), t.clone());
            live.insert(t.clone());
        }
        for t in &removals {
            prop_assert_eq!(store.remove(&topic(t)), live.take(t));
        }
        prop_assert_eq!(store.len(), live.len());
        for f in &filters {
            let expected: Vec<String> = live.iter().filter(|t| oracle(f, t)).cloned().collect();
            prop_assert_eq!(found(&store, f), expected, "filter {}", f);
        }
        store.retain(|_, _| false);
        prop_assert!(store.root.children.is_empty());
    }
}

/// Many retained messages under one level, checked against the oracle for a few filters.
#[test]
fn two_hundred_thousand_retained_match_correctly() {
    const DEVICES: usize = 200_000;
    let mut store = RetainedStore::new();
    let mut topics: Vec<String> = (0..DEVICES).map(|i| format!("dev/{i}/status")).collect();
    topics.extend(["dev", "dev/7", "dev/7/status/x", "$SYS/dev/7/status"].map(String::from));
    for t in &topics {
        store.insert(topic(t), t.clone());
    }
    assert_eq!(store.len(), topics.len());
    for f in [
        "dev/7/status",
        "dev/+/status",
        "dev/#",
        "+/7/#",
        "#",
        "$SYS/#",
        "dev/+",
    ] {
        let mut expected: Vec<String> = topics.iter().filter(|t| oracle(f, t)).cloned().collect();
        expected.sort();
        assert_eq!(found(&store, f), expected, "filter {f}");
    }
    store.retain(|name, _| name.as_str().ends_with("/x"));
    assert_eq!(found(&store, "#"), vec!["dev/7/status/x".to_string()]);
}

/// Prints figures for a million retained messages; run in release with
/// `cargo test -p aviary-core --release -- --ignored --nocapture measure_a_million`.
#[test]
#[ignore = "a measurement, not a check; meaningful only in release builds"]
fn measure_a_million_retained() {
    use std::time::Instant;
    const DEVICES: u64 = 1_000_000;
    let topics: Vec<TopicName> = (0..DEVICES)
        .map(|i| topic(&format!("dev/{i}/status")))
        .collect();
    let started = Instant::now();
    let mut store = RetainedStore::new();
    for (i, t) in topics.iter().enumerate() {
        store.insert(t.clone(), i);
    }
    let inserted = started.elapsed();
    let started = Instant::now();
    let mut found = 0;
    for t in topics.iter().step_by(1000) {
        store.for_each_match(t.as_str(), |_, _| found += 1);
    }
    let exact = started.elapsed();
    let started = Instant::now();
    store.for_each_match("dev/+/status", |_, _| found += 1);
    let plus = started.elapsed();
    let started = Instant::now();
    store.retain(|_, i| i % 2 == 0);
    let retained = started.elapsed();
    println!(
        "1M retained: insert {inserted:?}; exact lookup {:.0} ns; dev/+/status over 1M {plus:?}; \
         retain removing half {retained:?}",
        exact.as_nanos() as f64 / 1000.0
    );
    assert_eq!(found, 1000 + DEVICES);
    assert_eq!(store.len() as u64, DEVICES / 2);
}
