//! The exact-level children of a trie node, shared by the subscription index and the
//! retained store: a short Vec for the many nodes with a few children, a hash map for the
//! few nodes with many.

use std::collections::HashMap;

/// Above this many children a node's exact children move into a hash map.
const MANY_CHILDREN: usize = 8;
/// Below this many the hash map moves back into a Vec (hysteresis against churn).
const FEW_CHILDREN: usize = 4;

/// The exact-level children of a node. Most nodes have one child or none (`dev/{id}` has only
/// `telemetry`), where an empty hash map would cost 48 bytes and a one-entry one several
/// hundred; a few nodes (`dev`) have a million, where a linear search would be hopeless. The
/// hash map is boxed so the common case stays small (the enum is one Vec wide), and it holds
/// boxed nodes so that the slack of its load factor costs 24-byte buckets, not node-sized ones
/// (1M `dev/{i}/telemetry` subscriptions: about 70 MiB less, no slower to match).
#[derive(Debug)]
pub(crate) enum Children<N> {
    Few(Vec<(Box<str>, N)>),
    #[allow(
        clippy::box_collection,
        reason = "boxing keeps every node 24 bytes smaller; only a few nodes have this variant"
    )]
    Many(Box<HashMap<Box<str>, Box<N>>>),
}

impl<N> Children<N> {
    pub(crate) fn get(&self, level: &str) -> Option<&N> {
        match self {
            Self::Few(list) => list.iter().find(|(l, _)| **l == *level).map(|(_, n)| n),
            Self::Many(map) => map.get(level).map(|n| &**n),
        }
    }

    pub(crate) fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Self::Few(list) => list.iter_mut().find(|(l, _)| **l == *level).map(|(_, n)| n),
            Self::Many(map) => map.get_mut(level).map(|n| &mut **n),
        }
    }

    /// The child for `level`, created empty if missing.
    pub(crate) fn get_or_insert(&mut self, level: &str) -> &mut N
    where
        N: Default,
    {
        if let Self::Few(list) = self {
            if list.len() >= MANY_CHILDREN && !list.iter().any(|(l, _)| **l == *level) {
                let map = std::mem::take(list)
                    .into_iter()
                    .map(|(l, n)| (l, Box::new(n)))
                    .collect();
                *self = Self::Many(Box::new(map));
            }
        }
        match self {
            Self::Few(list) => {
                let pos = match list.iter().position(|(l, _)| **l == *level) {
                    Some(pos) => pos,
                    None => {
                        list.reserve_exact(1);
                        list.push((level.into(), N::default()));
                        list.len() - 1
                    }
                };
                &mut list[pos].1
            }
            Self::Many(map) => {
                // Two lookups instead of `entry`, which would allocate the key every time.
                if !map.contains_key(level) {
                    map.insert(level.into(), Box::new(N::default()));
                }
                map.get_mut(level)
                    .expect("the child was inserted just above")
                    .as_mut()
            }
        }
    }

    /// Removes the child for `level` (and its subtree), giving memory back as the set shrinks.
    pub(crate) fn remove(&mut self, level: &str) {
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
                    let list: Vec<_> = std::mem::take(&mut **map)
                        .into_iter()
                        .map(|(l, n)| (l, *n))
                        .collect();
                    *self = Self::Few(list);
                } else if map.capacity() > 4 * map.len() {
                    // Amortised: only when a quarter full.
                    map.shrink_to_fit();
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(map) => map.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every child with its level, in no particular order.
    pub(crate) fn iter(&self) -> ChildIter<'_, N> {
        match self {
            Self::Few(list) => ChildIter::Few(list.iter()),
            Self::Many(map) => ChildIter::Many(map.iter()),
        }
    }

    /// Moves every child onto `stack` (for an iterative drop).
    pub(crate) fn drain_into(&mut self, stack: &mut Vec<N>) {
        match self {
            Self::Few(list) => stack.extend(list.drain(..).map(|(_, n)| n)),
            Self::Many(map) => stack.extend(map.drain().map(|(_, n)| *n)),
        }
    }
}

/// An iterator over a node's children, as a nameable type so that walks can keep one per
/// level on an explicit stack (memory bounded by depth, not by fan-out).
#[derive(Debug)]
pub(crate) enum ChildIter<'a, N> {
    Few(std::slice::Iter<'a, (Box<str>, N)>),
    Many(std::collections::hash_map::Iter<'a, Box<str>, Box<N>>),
}

impl<'a, N> Iterator for ChildIter<'a, N> {
    type Item = (&'a str, &'a N);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Few(iter) => iter.next().map(|(level, node)| (&**level, node)),
            Self::Many(iter) => iter.next().map(|(level, node)| (&**level, &**node)),
        }
    }
}
