//! The subscription index: topic filter → subscribers, with `+`, `#`, the `$`-topic rule
//! [MQTT-4.7.2-1] and shared subscription groups (`$share/{group}/{filter}`), fast with a
//! million subscriptions.

use std::hash::Hash;

use aviary_codec::{TopicFilter, TopicName};

/// Subscriptions keyed by subscriber `K` (a session key) with per-subscription data `V`
/// (options, subscription identifier).
///
/// A plain filter holds at most one subscription per key (a second insert replaces it
/// [MQTT-3.8.4-3]). A shared filter `$share/g/f` is stored under `f` in group `g`; each
/// group delivers a message to one member, round robin.
#[derive(Debug)]
pub struct SubscriptionIndex<K, V> {
    _todo: std::marker::PhantomData<(K, V)>,
}

/// One match for a published topic.
#[derive(Debug)]
pub enum Match<'a, K, V> {
    /// A plain subscription of `key`.
    Plain { key: &'a K, value: &'a V },
    /// A shared group whose filter matches; the caller picks a member with
    /// [`SubscriptionIndex::next_shared_member`] (round robin) or by its own rule.
    Shared { group: &'a str, filter: &'a str },
}

impl<K: Clone + Eq + Hash, V> SubscriptionIndex<K, V> {
    pub fn new() -> Self {
        todo!("topic index helper")
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the replaced value.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let _ = (filter, key, value);
        todo!("topic index helper")
    }

    /// Removes `key`'s subscription to `filter`; returns its value if it existed.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let _ = (filter, key);
        todo!("topic index helper")
    }

    /// Calls `f` for every plain subscription and every shared group that matches `topic`.
    pub fn for_each_match(&self, topic: &TopicName, f: impl FnMut(Match<'_, K, V>)) {
        let _ = (topic, f);
        todo!("topic index helper")
    }

    /// The next member of a shared group in round-robin order, with its value, skipping
    /// members for which `eligible` is false; `None` if no member is eligible.
    pub fn next_shared_member(
        &mut self,
        group: &str,
        filter: &str,
        eligible: impl FnMut(&K) -> bool,
    ) -> Option<(K, &V)> {
        let _ = (group, filter, eligible);
        todo!("topic index helper")
    }

    /// The number of subscriptions (plain and shared members).
    pub fn len(&self) -> usize {
        todo!("topic index helper")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + Hash, V> Default for SubscriptionIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}
