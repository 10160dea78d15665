//! Shared subscription groups: round robin, eligibility, fairness when members leave.

use super::*;

fn group_of(keys: &[u32]) -> SubscriptionIndex<u32, u32> {
    let mut index = SubscriptionIndex::new();
    for &key in keys {
        index.insert(&filter("$share/g/a/+"), key, key * 10);
    }
    index
}

fn next(index: &mut SubscriptionIndex<u32, u32>) -> Option<u32> {
    index
        .next_shared_member("g", "a/+", |_| true)
        .map(|(k, _)| k)
}

#[test]
fn mqtt_4_8_2_round_robin_visits_members_in_turn() {
    let mut index = group_of(&[1, 2, 3]);
    let picks: Vec<_> = (0..7).map(|_| next(&mut index).unwrap()).collect();
    assert_eq!(picks, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(
        index.next_shared_member("g", "a/+", |_| true),
        Some((2, &20))
    );
    assert_eq!(index.shared_len("g", "a/+"), 3);
}

#[test]
fn round_robin_skips_ineligible_members() {
    let mut index = group_of(&[1, 2, 3]);
    let picks: Vec<_> = (0..4)
        .map(|_| index.next_shared_member("g", "a/+", |k| *k != 2).unwrap().0)
        .collect();
    assert_eq!(picks, [1, 3, 1, 3]);
    assert_eq!(index.next_shared_member("g", "a/+", |_| false), None);
}

#[test]
fn round_robin_unknown_group_or_filter_is_none() {
    let mut index = group_of(&[1]);
    assert_eq!(index.next_shared_member("h", "a/+", |_| true), None);
    assert_eq!(index.next_shared_member("g", "a/b", |_| true), None);
    assert_eq!(index.next_shared_member("g", "a/#", |_| true), None);
}

#[test]
fn round_robin_stays_fair_when_members_leave() {
    let group = filter("$share/g/a/+");
    // Removing the member whose turn is next passes the turn to the one after it.
    let mut index = group_of(&[1, 2, 3]);
    assert_eq!(next(&mut index), Some(1));
    index.remove(&group, &2);
    assert_eq!(next(&mut index), Some(3));
    assert_eq!(next(&mut index), Some(1));
    // Removing a member that already had its turn does not make anyone skip theirs.
    let mut index = group_of(&[1, 2, 3]);
    assert_eq!(next(&mut index), Some(1));
    assert_eq!(next(&mut index), Some(2));
    index.remove(&group, &1);
    assert_eq!(next(&mut index), Some(3));
    assert_eq!(next(&mut index), Some(2));
    // Removing the last member when the cursor points at it wraps to the first.
    let mut index = group_of(&[1, 2, 3]);
    next(&mut index);
    next(&mut index);
    index.remove(&group, &3);
    assert_eq!(next(&mut index), Some(1));
    // A new member joins at the end of the round.
    index.insert(&group, 4, 40);
    assert_eq!(next(&mut index), Some(2));
    assert_eq!(next(&mut index), Some(4));
    // Replacing a member's value keeps its turn.
    assert_eq!(index.insert(&group, 1, 11), Some(10));
    assert_eq!(
        index.next_shared_member("g", "a/+", |_| true),
        Some((1, &11))
    );
    for key in [1, 2, 4] {
        assert!(index.remove(&group, &key).is_some());
    }
    assert_eq!(next(&mut index), None);
    assert!(index.root.is_empty());
}

#[test]
fn shared_matches_name_the_group_for_next_shared_member() {
    let mut index = SubscriptionIndex::new();
    for f in ["$share/g/#", "$share/g/a/+/#", "$share/h/a/b"] {
        index.insert(&filter(f), 1u32, f);
        index.insert(&filter(f), 2u32, f);
    }
    let mut groups = Vec::new();
    index.for_each_match(&topic("a/b"), |m| {
        if let Match::Shared { group, filter } = m {
            groups.push((group.to_string(), filter.to_string()));
        }
    });
    groups.sort();
    assert_eq!(groups.len(), 3);
    for (group, inner) in &groups {
        let full = format!("$share/{group}/{inner}");
        let (first, value) = index.next_shared_member(group, inner, |_| true).unwrap();
        assert_eq!((first, *value), (1, full.as_str()));
        let (second, _) = index.next_shared_member(group, inner, |_| true).unwrap();
        assert_eq!(second, 2);
    }
    assert_eq!(index.len(), 6);
}
