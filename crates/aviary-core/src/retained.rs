//! Retained messages: at most one per topic name, found by topic filter (with the `$` rule)
//! when a subscription is made.

use aviary_codec::TopicName;

/// Retained messages of type `V` keyed by topic name, searchable by filter.
#[derive(Debug)]
pub struct RetainedStore<V> {
    _todo: std::marker::PhantomData<V>,
}

impl<V> RetainedStore<V> {
    pub fn new() -> Self {
        todo!("topic index helper")
    }

    /// Sets (or replaces) the retained message of `topic`; returns the previous one.
    pub fn insert(&mut self, topic: TopicName, message: V) -> Option<V> {
        let _ = (topic, message);
        todo!("topic index helper")
    }

    /// Removes the retained message of `topic`.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        let _ = topic;
        todo!("topic index helper")
    }

    /// Calls `f` for each retained message whose topic matches `filter` (a plain filter, the
    /// matching part of a shared one), honouring [MQTT-4.7.2-1].
    pub fn for_each_match(&self, filter: &str, f: impl FnMut(&TopicName, &V)) {
        let _ = (filter, f);
        todo!("topic index helper")
    }

    /// Removes every message for which `keep` is false (e.g. expired ones).
    pub fn retain(&mut self, keep: impl FnMut(&TopicName, &V) -> bool) {
        let _ = keep;
        todo!("topic index helper")
    }

    pub fn len(&self) -> usize {
        todo!("topic index helper")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}
