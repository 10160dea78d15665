//! Tests of the subscription index: matching rules (one `check` line per case), insert and
//! remove, a proptest against a reference matcher; round robin in `shared.rs`, scale and depth
//! in `scale.rs`.

mod scale;
mod shared;

use proptest::prelude::*;

use super::*;

/// The reference matcher, independent of the trie.
use aviary_codec::topic_matches as oracle;

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

/// What `index` reports for `topic`, sorted: a plain match as its value, a shared one as
/// `$share/{group}/{filter}`.
fn matches_of(index: &SubscriptionIndex<usize, String>, topic: &TopicName) -> Vec<String> {
    let mut found = Vec::new();
    index.for_each_match(topic, |m| match m {
        Match::Plain { value, .. } => found.push(value.clone()),
        Match::Shared { group, filter } => found.push(format!("$share/{group}/{filter}")),
    });
    found.sort();
    found
}

/// Subscribes one key per filter (value = the filter) and checks what `topic` matches.
#[track_caller]
fn check(filters: &[&str], topic_name: &str, expected: &[&str]) {
    let mut index = SubscriptionIndex::new();
    for (key, f) in filters.iter().enumerate() {
        index.insert(&filter(f), key, f.to_string());
    }
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        matches_of(&index, &topic(topic_name)),
        expected,
        "topic {topic_name}"
    );
}

#[test]
fn exact_filters_match_only_their_topic() {
    check(&["a/b", "a/c", "a", "a/b/c"], "a/b", &["a/b"]);
}

#[test]
fn mqtt_4_7_1_2_hash_matches_parent() {
    check(&["a/#"], "a", &["a/#"]);
    check(&["a/+/#"], "a/b", &["a/+/#"]);
    check(&["+/#"], "a", &["+/#"]);
    check(&["a/#"], "ab", &[]);
}

#[test]
fn mqtt_4_7_1_2_hash_matches_every_level_below() {
    check(
        &["#", "a/#", "a/b/#", "b/#"],
        "a/b/c/d",
        &["#", "a/#", "a/b/#"],
    );
}

#[test]
fn mqtt_4_7_1_3_plus_matches_exactly_one_level() {
    check(&["a/+", "+", "+/+/+"], "a/b/c", &["+/+/+"]);
    check(&["a/+", "+/b", "+/+"], "a/b", &["a/+", "+/b", "+/+"]);
    check(&["a/+"], "a", &[]);
}

#[test]
fn mqtt_4_7_1_3_plus_matches_empty_levels() {
    check(&["a/+/c", "a//c"], "a//c", &["a/+/c", "a//c"]);
    check(&["+/a", "/a", "+/+"], "/a", &["+/a", "/a", "+/+"]);
    check(&["+"], "/a", &[]);
    check(&["a/+"], "a/", &["a/+"]);
}

#[test]
fn mqtt_4_7_3_empty_levels_are_levels() {
    check(&["a/b", "a//b", "a/b/"], "a//b", &["a//b"]);
    check(&["/"], "/", &["/"]);
    check(&["#", "/#"], "/", &["#", "/#"]);
}

#[test]
fn mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcards() {
    check(&["#", "+/x", "+/+", "+"], "$SYS/x", &[]);
    check(&["#", "+"], "$SYS", &[]);
    check(
        &["$SYS/#", "$SYS/+", "$SYS/x"],
        "$SYS/x",
        &["$SYS/#", "$SYS/+", "$SYS/x"],
    );
}

#[test]
fn mqtt_4_7_2_1_dollar_rule_is_only_for_the_first_level() {
    check(&["a/+", "a/#", "#"], "a/$x", &["a/+", "a/#", "#"]);
    check(&["+", "#"], "x$", &["+", "#"]);
}

#[test]
fn mqtt_4_8_2_shared_groups_are_reported_once_each() {
    check(
        &["$share/g/a/+", "$share/h/a/+", "$share/g/a/+", "a/+"],
        "a/b",
        &["$share/g/a/+", "$share/h/a/+", "a/+"],
    );
    check(
        &["$share/g/#", "$share/g/a/#"],
        "a",
        &["$share/g/#", "$share/g/a/#"],
    );
}

#[test]
fn mqtt_4_7_2_1_shared_groups_follow_the_dollar_rule() {
    check(&["$share/g/#", "$share/g/+/x"], "$SYS/x", &[]);
    check(&["$share/g/$SYS/#"], "$SYS/x", &["$share/g/$SYS/#"]);
}

#[test]
fn empty_alias_topic_matches_nothing() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("#"), 1, "#".to_string());
    assert!(matches_of(&index, &TopicName::empty()).is_empty());
}

#[test]
fn mqtt_3_8_4_3_insert_replaces_and_returns_old_value() {
    let mut index = SubscriptionIndex::new();
    assert_eq!(index.insert(&filter("a/+"), 1, "one"), None);
    assert_eq!(index.insert(&filter("a/+"), 1, "two"), Some("one"));
    assert_eq!(index.insert(&filter("a/+"), 2, "three"), None);
    assert_eq!(index.insert(&filter("$share/g/a/+"), 1, "s1"), None);
    assert_eq!(index.insert(&filter("$share/g/a/+"), 1, "s2"), Some("s1"));
    assert_eq!(index.len(), 3);
    let mut plain = Vec::new();
    index.for_each_match(&topic("a/x"), |m| {
        if let Match::Plain { key, value } = m {
            plain.push((*key, *value));
        }
    });
    plain.sort();
    assert_eq!(plain, vec![(1, "two"), (2, "three")]);
}

#[test]
fn remove_returns_value_and_prunes() {
    let mut index = SubscriptionIndex::new();
    index.insert(&filter("a/b/c"), 1, 10);
    index.insert(&filter("a/b"), 2, 20);
    index.insert(&filter("a/+/#"), 3, 30);
    index.insert(&filter("$share/g/a/b/c"), 4, 40);
    assert_eq!(index.remove(&filter("a/b/c"), &2), None);
    assert_eq!(index.remove(&filter("x"), &1), None);
    assert_eq!(index.remove(&filter("$share/h/a/b/c"), &4), None);
    assert_eq!(index.remove(&filter("a/b/c"), &1), Some(10));
    assert_eq!(index.remove(&filter("a/b/c"), &1), None);
    assert_eq!(index.len(), 3);
    assert_eq!(index.remove(&filter("$share/g/a/b/c"), &4), Some(40));
    assert_eq!(index.remove(&filter("a/+/#"), &3), Some(30));
    assert!(index.root.children.get("a").unwrap().plus.is_none());
    assert!(index
        .root
        .children
        .get("a")
        .unwrap()
        .children
        .get("b")
        .unwrap()
        .children
        .is_empty());
    assert_eq!(index.remove(&filter("a/b"), &2), Some(20));
    assert!(index.is_empty());
    assert!(index.root.is_empty());
}

#[test]
fn churn_leaves_the_trie_empty() {
    let filters = [
        "a",
        "a/b",
        "a/b/c",
        "a/+",
        "a/+/c",
        "+/+",
        "#",
        "a/#",
        "a//b",
        "/",
        "/#",
        "$SYS/x",
        "$share/g/a/+",
        "$share/h/a/+",
        "$share/g/#",
        "+/b/#",
    ];
    let mut index = SubscriptionIndex::new();
    // A fixed pseudo-random sequence of subscribes and unsubscribes (bounded: 20,000 steps).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut live = std::collections::HashSet::new();
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let f = filters[(state % filters.len() as u64) as usize];
        let key = (state >> 32) % 5;
        if live.contains(&(f, key)) {
            assert_eq!(index.remove(&filter(f), &key), Some(key));
            live.remove(&(f, key));
        } else {
            assert_eq!(index.insert(&filter(f), key, key), None);
            live.insert((f, key));
        }
        assert_eq!(index.len(), live.len());
    }
    for (f, key) in live.drain() {
        assert_eq!(index.remove(&filter(f), &key), Some(key));
    }
    assert!(index.is_empty());
    assert!(index.root.is_empty(), "trie not pruned: {:?}", index.root);
}

#[test]
fn many_subscribers_on_one_filter_switch_representation_and_back() {
    let mut index = SubscriptionIndex::new();
    for key in 0..100 {
        index.insert(&filter("#"), key, key);
    }
    let mut seen = 0;
    index.for_each_match(&topic("a"), |_| seen += 1);
    assert_eq!(seen, 100);
    assert_eq!(index.insert(&filter("#"), 7, 70), Some(7));
    for key in 0..100 {
        assert!(index.remove(&filter("#"), &key).is_some());
    }
    assert!(index.root.is_empty());
}
/// Filters with 1..=4 levels drawn from a small alphabet, so that random sets collide.
fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$x", "+", "#"]);
    (
        prop::collection::vec(level, 1..=4),
        prop::option::of(prop::sample::select(vec!["g", "h"])),
    )
        .prop_map(|(levels, share)| {
            let inner = levels.join("/");
            match share {
                Some(group) => format!("$share/{group}/{inner}"),
                None => inner,
            }
        })
}

fn topic_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "", "$x"]);
    prop::collection::vec(level, 1..=4).prop_map(|levels| levels.join("/"))
}

proptest! {
    #[test]
    fn matches_agree_with_the_oracle(
        subs in prop::collection::vec((filter_strategy(), 0usize..3), 0..24),
        removals in prop::collection::vec(0usize..24, 0..8),
        topics in prop::collection::vec(topic_strategy(), 1..8),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut live = std::collections::BTreeMap::new();
        for (f, key) in &subs {
            // Invalid filters (`#` not last) are not representable; skip them.
            let Ok(parsed) = TopicFilter::new(f) else { continue };
            index.insert(&parsed, *key, f.clone());
            live.insert((f.clone(), *key), parsed);
        }
        for r in removals {
            let Some(((f, key), parsed)) = live.iter().nth(r).map(|(k, v)| (k.clone(), v.clone())) else { continue };
            prop_assert_eq!(index.remove(&parsed, &key), Some(f.clone()));
            live.remove(&(f, key));
        }
        prop_assert_eq!(index.len(), live.len());
        for t in &topics {
            // A single empty level is not a valid topic name.
            let Ok(name) = TopicName::new(t) else { continue };
            let mut expected: Vec<String> = Vec::new();
            for ((f, _), parsed) in &live {
                if oracle(parsed.match_filter(), t) {
                    expected.push(f.clone());
                }
            }
            // Shared groups are reported once per (group, filter), not per member.
            expected.sort();
            expected.dedup_by(|a, b| a == b && a.starts_with("$share/"));
            prop_assert_eq!(matches_of(&index, &name), expected, "topic {}", t);
        }
        for ((_, key), parsed) in std::mem::take(&mut live) {
            prop_assert!(index.remove(&parsed, &key).is_some());
        }
        prop_assert!(index.root.is_empty());
    }
}

/// `next_level` (a word-at-a-time scan) splits like `split('/')`: empty levels at either end and in
/// the middle, and multi-byte characters next to the separator.
#[test]
fn next_level_splits_like_split_on_slash() {
    for name in [
        "a",
        "a/b",
        "a/",
        "/",
        "//",
        "/a",
        "a//b",
        "é/ü/ß",
        "日本/語/",
        "ab/cd/ef/gh",
        // Levels around the 8-byte steps of the scan, slashes at either end of a step.
        "abcdefg/h",
        "abcdefgh/i",
        "abcdefghi/j",
        "abcdefghijklmno/p",
        "abcdefghijklmnop/",
        "abcdefghijklmnopq",
        "/abcdefghijklmnop",
        "é日本語ü/ßabcdef/日本語日本語日本語/",
        "\u{7f}\u{80}ÿ\u{ff}/Ā",
        "........////........",
    ] {
        let mut rest = Some(name);
        let mut levels = Vec::new();
        while let Some(level) = next_level(&mut rest) {
            levels.push(level);
        }
        assert_eq!(levels, name.split('/').collect::<Vec<_>>(), "{name:?}");
    }
}
