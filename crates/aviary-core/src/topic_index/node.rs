//! The trie's building blocks: one [`Node`] per filter level, the subscriptions that end at
//! it ([`Leaf`]) and the small-or-large set of plain subscribers ([`Subscribers`]).

use std::collections::HashMap;
use std::hash::Hash;

use super::shared::SharedGroup;

/// One level of a filter. `#` has no children (it is always the last level
/// [MQTT-4.7.1-2]), so it holds only a [`Leaf`].
#[derive(Debug)]
pub(super) struct Node<K, V> {
    /// Children for exact level strings (including the empty level of `a//b`).
    pub(super) children: Children<K, V>,
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

/// Above this many children a node's exact children move into a hash map.
const MANY_CHILDREN: usize = 8;
/// Below this many the hash map moves back into a Vec (hysteresis against churn).
const FEW_CHILDREN: usize = 4;

/// The exact-level children of a node. Most nodes have one child or none (`dev/{id}` has only
/// `telemetry`), where an empty hash map would cost 48 bytes and a one-entry one several
/// hundred; a few nodes (`dev`) have a million, where a linear search would be hopeless. The
/// hash map is boxed so the common case stays small (the enum is one Vec wide).
#[derive(Debug)]
pub(super) enum Children<K, V> {
    Few(Vec<(Box<str>, Node<K, V>)>),
    #[allow(
        clippy::box_collection,
        reason = "boxing keeps every node 24 bytes smaller; only a few nodes have this variant"
    )]
    Many(Box<HashMap<Box<str>, Node<K, V>>>),
}

impl<K, V> Children<K, V> {
    pub(super) fn get(&self, level: &str) -> Option<&Node<K, V>> {
        match self {
            Self::Few(list) => list.iter().find(|(l, _)| **l == *level).map(|(_, n)| n),
            Self::Many(map) => map.get(level),
        }
    }

    pub(super) fn get_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        match self {
            Self::Few(list) => list.iter_mut().find(|(l, _)| **l == *level).map(|(_, n)| n),
            Self::Many(map) => map.get_mut(level),
        }
    }

    /// The child for `level`, created empty if missing.
    pub(super) fn get_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        if let Self::Few(list) = self {
            if list.len() >= MANY_CHILDREN && !list.iter().any(|(l, _)| **l == *level) {
                let map = std::mem::take(list).into_iter().collect();
                *self = Self::Many(Box::new(map));
            }
        }
        match self {
            Self::Few(list) => {
                let pos = match list.iter().position(|(l, _)| **l == *level) {
                    Some(pos) => pos,
                    None => {
                        list.reserve_exact(1);
                        list.push((level.into(), Node::new()));
                        list.len() - 1
                    }
                };
                &mut list[pos].1
            }
            Self::Many(map) => {
                // Two lookups instead of `entry`, which would allocate the key every time.
                if !map.contains_key(level) {
                    map.insert(level.into(), Node::new());
                }
                map.get_mut(level)
                    .expect("the child was inserted just above")
            }
        }
    }

    /// Removes the child for `level` (and its subtree), giving memory back as the set shrinks.
    pub(super) fn remove(&mut self, level: &str) {
        match self {
            Self::Few(list) => {
                if let Some(pos) = list.iter().position(|(l, _)| **l == *level) {
                    list.swap_remove(pos);
                    list.shrink_to_fit();
                }
            }
            Self::Many(map) => {
                map.remove(level);
                if map.len() < FEW_CHILDREN {
                    let list: Vec<_> = std::mem::take(&mut **map).into_iter().collect();
                    *self = Self::Few(list);
                } else if map.capacity() > 4 * map.len() {
                    // Amortised: only when a quarter full.
                    map.shrink_to_fit();
                }
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every child onto `stack` (for the iterative drop).
    fn drain_into(&mut self, stack: &mut Vec<Node<K, V>>) {
        match self {
            Self::Few(list) => stack.extend(list.drain(..).map(|(_, n)| n)),
            Self::Many(map) => stack.extend(map.drain().map(|(_, n)| n)),
        }
    }
}

/// The subscriptions whose filter ends at one node (or at its `#` slot).
#[derive(Debug)]
pub(super) struct Leaf<K, V> {
    /// Plain subscriptions, at most one per key [MQTT-3.8.4-3].
    pub(super) plain: Subscribers<K, V>,
    /// Shared groups on this filter, each with its members; few per filter, so a Vec.
    pub(super) shared: Vec<SharedGroup<K, V>>,
}

impl<K, V> Leaf<K, V> {
    pub(super) fn new() -> Self {
        Self {
            plain: Subscribers::Few(Vec::new()),
            shared: Vec::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_empty()
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
