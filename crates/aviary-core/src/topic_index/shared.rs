//! One shared subscription group (`$share/{group}/{filter}` [MQTT-4.8.2]): its members in
//! subscription order and the round-robin cursor that picks who gets the next message.

/// The members of one group on one filter.
#[derive(Debug)]
pub(super) struct SharedGroup<K, V> {
    /// The share name, reported in [`super::Match::Shared`].
    pub(super) name: Box<str>,
    /// The inner filter, reported in [`super::Match::Shared`] (the trie node does not know
    /// its own path).
    pub(super) filter: Box<str>,
    /// Members in the order they joined; round robin walks this list.
    members: Vec<(K, V)>,
    /// Index of the member to try first for the next message. Always `< members.len()`
    /// unless the group is empty (then 0).
    cursor: usize,
}

impl<K: Eq, V> SharedGroup<K, V> {
    pub(super) fn new(name: &str, filter: &str) -> Self {
        Self {
            name: name.into(),
            filter: filter.into(),
            members: Vec::new(),
            cursor: 0,
        }
    }

    /// Adds `key` at the end of the round, or replaces its value in place (keeping its turn).
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(slot) = self.members.iter_mut().find(|(k, _)| *k == key) {
            return Some(std::mem::replace(&mut slot.1, value));
        }
        self.members.push((key, value));
        None
    }

    /// Removes `key`. The member that was next stays next (or, if it was `key`, the one after
    /// it), so removing members never makes anyone skip or repeat a turn.
    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let pos = self.members.iter().position(|(k, _)| k == key)?;
        let (_, value) = self.members.remove(pos);
        if pos < self.cursor {
            self.cursor -= 1;
        }
        if self.cursor >= self.members.len() {
            self.cursor = 0;
        }
        Some(value)
    }

    /// The next eligible member from the cursor on, advancing the cursor past it.
    pub(super) fn next(&mut self, mut eligible: impl FnMut(&K) -> bool) -> Option<(&K, &V)> {
        let len = self.members.len();
        let found = (0..len)
            .map(|i| (self.cursor + i) % len)
            .find(|&idx| eligible(&self.members[idx].0))?;
        self.cursor = (found + 1) % len;
        let (key, value) = &self.members[found];
        Some((key, value))
    }

    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}
