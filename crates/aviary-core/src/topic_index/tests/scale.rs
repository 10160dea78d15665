//! Scale and depth: a million subscriptions, 30,000-level filters, many pending branches.

use super::*;

#[test]
fn deep_filters_do_not_exhaust_the_stack() {
    // 30,000 levels: well inside the 65,535-byte limit, far too deep for recursion.
    let deep = vec!["x"; 30_000].join("/");
    let deep_plus = vec!["+"; 30_000].join("/");
    let mut index = SubscriptionIndex::new();
    for (key, f) in [&deep, &deep_plus].into_iter().enumerate() {
        index.insert(&filter(f), key, f.clone());
    }
    assert_eq!(matches_of(&index, &topic(&deep)).len(), 2);
    assert_eq!(index.remove(&filter(&deep), &0).as_ref(), Some(&deep));
    assert_eq!(matches_of(&index, &topic(&deep)), vec![deep_plus]);
    // Dropping the remaining deep trie must not recurse either.
    drop(index);
}

#[test]
fn many_pending_plus_branches_spill_and_still_match() {
    // A `+` branch beside the exact one at each of 40 levels: more than fit inline.
    let exact = vec!["x"; 40].join("/");
    let mut filters: Vec<String> = (0..40)
        .map(|d| [vec!["x"; d], vec!["+", "#"]].concat().join("/"))
        .collect();
    filters.push(exact.clone());
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    check(&filters, &exact, &filters);
    check(&filters, "x/y", &["+/#", "x/+/#"]);
}

/// A million subscriptions: 1M distinct exact filters plus wildcards, checked against the
/// oracle on a sample of topics.
#[test]
fn a_million_subscriptions_match_correctly() {
    const DEVICES: usize = 1_000_000;
    let mut index = SubscriptionIndex::new();
    let mut filters = Vec::with_capacity(DEVICES + 100);
    for i in 0..DEVICES {
        filters.push(format!("dev/{i}/telemetry"));
    }
    for i in (0..DEVICES).step_by(50_000) {
        filters.push(format!("dev/{i}/#"));
    }
    for extra in [
        "dev/+/telemetry",
        "dev/+/+",
        "dev/#",
        "#",
        "+/7/telemetry",
        "$share/g/dev/+/telemetry",
    ] {
        filters.push(extra.to_string());
    }
    let parsed: Vec<TopicFilter> = filters.iter().map(|f| filter(f)).collect();
    for (key, (f, parsed)) in filters.iter().zip(&parsed).enumerate() {
        assert_eq!(index.insert(parsed, key, f.clone()), None);
    }
    assert_eq!(index.len(), filters.len());
    for t in [
        "dev/7/telemetry",
        "dev/0/telemetry",
        "dev/999999/telemetry",
        "dev/100000/x/y",
        "dev/1000000/telemetry",
        "dev/5/status",
        "dev",
        "other/7/telemetry",
        "$SYS/7/telemetry",
    ] {
        let mut expected: Vec<String> = filters
            .iter()
            .zip(&parsed)
            .filter(|(_, parsed)| oracle(parsed.match_filter(), t))
            .map(|(f, _)| f.clone())
            .collect();
        expected.sort();
        assert_eq!(matches_of(&index, &topic(t)), expected, "topic {t}");
    }
    for (key, (f, parsed)) in filters.iter().zip(&parsed).enumerate() {
        assert_eq!(index.remove(parsed, &key).as_ref(), Some(f));
    }
    assert!(index.root.is_empty());
}

/// Prints figures for a million subscriptions; run in release with
/// `cargo test -p aviary-core --release -- --ignored --nocapture measure_a_million`.
#[test]
#[ignore = "a measurement, not a check; meaningful only in release builds"]
fn measure_a_million_subscriptions() {
    use std::time::Instant;
    fn rss_mib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096 / (1024 * 1024)
    }
    const DEVICES: u64 = 1_000_000;
    let filters: Vec<TopicFilter> = (0..DEVICES)
        .map(|i| filter(&format!("dev/{i}/telemetry")))
        .collect();
    let topics: Vec<TopicName> = (0..DEVICES)
        .map(|i| topic(&format!("dev/{i}/telemetry")))
        .collect();
    let before = rss_mib();
    let started = Instant::now();
    let mut index = SubscriptionIndex::new();
    for (key, f) in filters.iter().enumerate() {
        index.insert(f, key as u64, ());
    }
    for (key, f) in [
        "dev/+/telemetry",
        "dev/#",
        "+/+/telemetry",
        "$share/g/dev/+/telemetry",
    ]
    .iter()
    .enumerate()
    {
        index.insert(&filter(f), DEVICES + key as u64, ());
    }
    let inserted = started.elapsed();
    let grown = rss_mib().saturating_sub(before);
    let started = Instant::now();
    let mut matched = 0u64;
    for t in &topics {
        index.for_each_match(t, |_| matched += 1);
    }
    let matching = started.elapsed();
    let started = Instant::now();
    for (key, f) in filters.iter().enumerate() {
        index.remove(f, &(key as u64));
    }
    let removed = started.elapsed();
    println!(
        "1M exact + 4 wildcard subscriptions: insert {inserted:?} ({:.0} ns each), ~{grown} MiB RSS; \
         match {:.0} ns per topic ({matched} matches); remove {removed:?}",
        inserted.as_nanos() as f64 / DEVICES as f64,
        matching.as_nanos() as f64 / DEVICES as f64,
    );
    assert_eq!(matched, DEVICES * 5);
}
