//! The trie's building blocks: one [`Node`] per filter level, the subscriptions that end at
//! it ([`Leaf`]) and the small-or-large set of plain subscribers ([`Subscribers`]).

use std::collections::HashMap;
use std::hash::Hash;

use super::children::Children;
use super::shared::SharedGroup;

/// One level of a filter. `#` has no children (it is always the last level
/// [MQTT-4.7.1-2]), so it holds only a [`Leaf`].
#[derive(Debug)]
pub(super) struct Node<K, V> {
    /// Children for exact level strings (including the empty level of `a//b`).
    pub(super) children: Children<Self>,
    /// The `+` child: matches any one level [MQTT-4.7.1-3].
    pub(super) plus: Option<Box<Self>>,
    /// Subscriptions to `{this node's path}/#`: they match this level and everything below.
    pub(super) hash: Option<Box<Leaf<K, V>>>,
    /// Subscriptions whose filter ends exactly at this node.
    pub(super) leaf: Leaf<K, V>,
}

impl<K, V> Node<K, V> {
    pub(super) fn new() -> Self {
        Self {
            children: Children::Few(Vec::new()),
            plus: None,
            hash: None,
            leaf: Leaf::new(),
        }
    }

    /// How many child slots are in use (exact, `+` and `#`).
    pub(super) fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    /// Whether the node holds nothing and can be pruned.
    pub(super) fn is_empty(&self) -> bool {
        self.leaf.is_empty()
            && self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
    }
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Dismantles the subtree with a stack: the derived drop would recurse once per level and
    /// overflow on a filter with tens of thousands of levels.
    fn drop(&mut self) {
        let mut stack = Vec::new();
        self.children.drain_into(&mut stack);
        stack.extend(self.plus.take().map(|plus| *plus));
        while let Some(mut node) = stack.pop() {
            node.children.drain_into(&mut stack);
            stack.extend(node.plus.take().map(|plus| *plus));
        }
    }
}

/// The subscriptions whose filter ends at one node (or at its `#` slot).
#[derive(Debug)]
pub(super) struct Leaf<K, V> {
    /// Plain subscriptions, at most one per key [MQTT-3.8.4-3].
    pub(super) plain: Subscribers<K, V>,
    /// Shared groups on this filter, each with its members. Few filters have any, so the
    /// list is boxed (8 bytes in every node instead of 24) and absent when empty.
    #[allow(
        clippy::box_collection,
        reason = "keeps every trie node 16 bytes smaller; most nodes have no shared groups"
    )]
    shared: Option<Box<Vec<SharedGroup<K, V>>>>,
}

impl<K, V> Leaf<K, V> {
    pub(super) fn new() -> Self {
        Self {
            plain: Subscribers::Few(Vec::new()),
            shared: None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_none()
    }

    /// The shared groups on this filter.
    pub(super) fn groups(&self) -> &[SharedGroup<K, V>] {
        self.shared.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<K: Eq, V> Leaf<K, V> {
    pub(super) fn group_mut(&mut self, name: &str) -> Option<&mut SharedGroup<K, V>> {
        let groups = self.shared.as_deref_mut()?;
        groups.iter_mut().find(|g| *g.name == *name)
    }

    /// The group `name`, created empty (for inner filter `filter`) if missing.
    pub(super) fn group_entry(&mut self, name: &str, filter: &str) -> &mut SharedGroup<K, V> {
        let groups = self.shared.get_or_insert_with(Box::default);
        let pos = match groups.iter().position(|g| *g.name == *name) {
            Some(pos) => pos,
            None => {
                groups.push(SharedGroup::new(name, filter));
                groups.len() - 1
            }
        };
        &mut groups[pos]
    }

    /// Removes `key` from group `name`, dropping the group when it empties.
    pub(super) fn remove_member(&mut self, name: &str, key: &K) -> Option<V> {
        let groups = self.shared.as_deref_mut()?;
        let pos = groups.iter().position(|g| *g.name == *name)?;
        let removed = groups[pos].remove(key)?;
        if groups[pos].is_empty() {
            // The order of groups on a filter carries no meaning.
            groups.swap_remove(pos);
            if groups.is_empty() {
                self.shared = None;
            }
        }
        Some(removed)
    }
}

/// Above this many subscribers a filter's plain subscriptions move into a hash map.
const MANY: usize = 16;
/// Below this many a hash map moves back into a Vec (lower than [`MANY`] so that churn at the
/// boundary does not convert back and forth).
const FEW: usize = 8;

/// Plain subscribers of one filter. Most filters have one or a few subscribers, for which a
/// Vec is smaller and faster than a hash map; a popular filter (`#`, `sensors/+`) can have
/// many, where a linear search on unsubscribe would be quadratic under churn.
#[derive(Debug)]
pub(super) enum Subscribers<K, V> {
    Few(Vec<(K, V)>),
    #[allow(
        clippy::box_collection,
        reason = "boxing keeps every leaf 24 bytes smaller; only popular filters use this variant"
    )]
    Many(Box<HashMap<K, V>>),
}

impl<K: Eq + Hash, V> Subscribers<K, V> {
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Self::Few(list) => {
                if let Some(slot) = list.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(&mut slot.1, value));
                }
                if list.len() < MANY {
                    // One filter per subscriber is the common case: don't reserve 4 slots.
                    list.reserve_exact(1);
                    list.push((key, value));
                } else {
                    let mut map: HashMap<K, V> = std::mem::take(list).into_iter().collect();
                    map.insert(key, value);
                    *self = Self::Many(Box::new(map));
                }
                None
            }
            Self::Many(map) => map.insert(key, value),
        }
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        match self {
            Self::Few(list) => {
                let pos = list.iter().position(|(k, _)| k == key)?;
                let (_, value) = list.swap_remove(pos);
                if list.is_empty() {
                    // Release the allocation of a filter nobody subscribes to any more.
                    *list = Vec::new();
                }
                Some(value)
            }
            Self::Many(map) => {
                let value = map.remove(key)?;
                if map.len() < FEW {
                    *self = Self::Few(std::mem::take(&mut **map).into_iter().collect());
                }
                Some(value)
            }
        }
    }
}

impl<K, V> Subscribers<K, V> {
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn for_each<'a>(&'a self, mut f: impl FnMut(&'a K, &'a V)) {
        match self {
            Self::Few(list) => list.iter().for_each(|(k, v)| f(k, v)),
            Self::Many(map) => map.iter().for_each(|(k, v)| f(k, v)),
        }
    }
}
