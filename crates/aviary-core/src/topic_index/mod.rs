//! The subscription index: topic filter → subscribers, with `+`, `#`, the `$`-topic rule
//! [MQTT-4.7.2-1] and shared subscription groups (`$share/{group}/{filter}`), fast with a
//! million subscriptions.
//!
//! It is a trie with one node per filter level: exact levels in a short list or, for nodes
//! with many children, a hash map (`children.rs`); `+` and `#` in their own slots. Matching a topic walks its levels once, following the exact child,
//! the `+` child and reporting the `#` slot at each node, so the cost grows with the topic's
//! depth and the number of wildcard branches that actually match, not with the number of
//! subscriptions. Matching allocates nothing in practice: branches still to visit wait on a
//! small stack inside the call frame (`Pending`), which spills to the heap only when more
//! than 16 `+` branches are pending at once. Nothing recurses (a filter may
//! have 30,000 levels), and remove prunes nodes left empty, so memory follows the live
//! subscriptions under churn.

pub(crate) mod children;
mod node;
mod shared;
#[cfg(test)]
mod tests;

use std::hash::Hash;

use aviary_codec::{TopicFilter, TopicName};

use node::{Leaf, Node};

/// Subscriptions keyed by subscriber `K` (a session key) with per-subscription data `V`
/// (options, subscription identifier).
///
/// A plain filter holds at most one subscription per key (a second insert replaces it
/// [MQTT-3.8.4-3]). A shared filter `$share/g/f` is stored under `f` in group `g`; each
/// group delivers a message to one member, round robin.
#[derive(Debug)]
pub struct SubscriptionIndex<K, V> {
    /// The trie's root: the level before a topic's first level (holds `#` and `+` filters
    /// that start with a wildcard, and the first exact levels).
    root: Node<K, V>,
    /// Plain subscriptions plus shared members, kept so `len` is O(1).
    len: usize,
}

/// One match for a published topic.
#[derive(Debug)]
pub enum Match<'a, K, V> {
    /// A plain subscription of `key`.
    Plain {
        /// The subscriber.
        key: &'a K,
        /// Its subscription's data (options, identifier).
        value: &'a V,
    },
    /// A shared group whose filter matches; the caller picks a member with
    /// [`SubscriptionIndex::next_shared_member`] (round robin) or by its own rule.
    Shared {
        /// The share name.
        group: &'a str,
        /// The inner filter (without `$share/{group}/`), as `next_shared_member` wants it.
        filter: &'a str,
    },
}

/// One level of a (non-shared) filter, as the trie sees it.
#[derive(Clone, Copy, Debug)]
enum Step<'a> {
    Exact(&'a str),
    Plus,
    Hash,
}

/// The levels of a valid filter; `#` is always the last [MQTT-4.7.1-2].
fn steps(filter: &str) -> impl Iterator<Item = Step<'_>> + Clone {
    filter.split('/').map(|level| match level {
        "+" => Step::Plus,
        "#" => Step::Hash,
        exact => Step::Exact(exact),
    })
}

impl<K: Clone + Eq + Hash, V> SubscriptionIndex<K, V> {
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the replaced value.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let leaf = self.leaf_entry(filter.match_filter());
        let old = match filter.shared() {
            None => leaf.plain.insert(key, value),
            Some(share) => leaf
                .group_entry(share.group, share.filter)
                .insert(key, value),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`'s subscription to `filter`; returns its value if it existed.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let inner = filter.match_filter();
        let leaf = self.leaf_mut(inner)?;
        let removed = match filter.shared() {
            None => leaf.plain.remove(key)?,
            Some(share) => leaf.remove_member(share.group, key)?,
        };
        let now_empty = leaf.is_empty();
        self.len -= 1;
        if now_empty {
            self.prune(inner);
        }
        Some(removed)
    }

    /// Calls `f` for every plain subscription and every shared group that matches `topic`.
    ///
    /// The empty name of an unresolved topic alias matches nothing.
    pub fn for_each_match(&self, topic: &TopicName, mut f: impl FnMut(Match<'_, K, V>)) {
        let mut rest = Some(topic.as_str()).filter(|t| !t.is_empty());
        let Some(first) = next_level(&mut rest) else {
            return;
        };
        let mut pending = Pending::new();
        // Filters starting with a wildcard don't match `$` topics [MQTT-4.7.2-1]; at the
        // root those are exactly the `#` slot and the `+` child.
        if !topic.is_dollar() {
            if let Some(hash) = &self.root.hash {
                report(hash, &mut f);
            }
            if let Some(plus) = &self.root.plus {
                pending.push(plus, rest);
            }
        }
        if let Some(child) = self.root.children.get(first) {
            pending.push(child, rest);
        }
        while let Some((node, rest)) = pending.pop() {
            walk(node, rest, &mut pending, &mut f);
        }
    }

    /// The next member of a shared group in round-robin order, with its value, skipping
    /// members for which `eligible` is false; `None` if no member is eligible.
    ///
    /// `filter` is the group's inner filter, as reported in [`Match::Shared`].
    pub fn next_shared_member(
        &mut self,
        group: &str,
        filter: &str,
        eligible: impl FnMut(&K) -> bool,
    ) -> Option<(K, &V)> {
        let leaf = self.leaf_mut(filter)?;
        let group = leaf.group_mut(group)?;
        let (key, value) = group.next(eligible)?;
        Some((key.clone(), value))
    }

    /// The number of subscriptions (plain and shared members).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of members of a shared group (0 if there is no such group).
    pub fn shared_len(&self, group: &str, filter: &str) -> usize {
        let mut node = &self.root;
        for step in steps(filter) {
            let next = match step {
                Step::Exact(level) => node.children.get(level),
                Step::Plus => node.plus.as_deref(),
                Step::Hash => {
                    return node.hash.as_ref().map_or(0, |leaf| group_len(leaf, group));
                }
            };
            let Some(next) = next else { return 0 };
            node = next;
        }
        group_len(&node.leaf, group)
    }

    /// The leaf for `filter` (not shared), creating the nodes on its path.
    fn leaf_entry(&mut self, filter: &str) -> &mut Leaf<K, V> {
        let mut node = &mut self.root;
        for step in steps(filter) {
            node = match step {
                Step::Exact(level) => node.children.get_or_insert(level),
                Step::Plus => node.plus.get_or_insert_with(|| Box::new(Node::new())),
                Step::Hash => return node.hash.get_or_insert_with(|| Box::new(Leaf::new())),
            };
        }
        &mut node.leaf
    }

    /// The leaf for `filter` (not shared) if its path exists.
    fn leaf_mut(&mut self, filter: &str) -> Option<&mut Leaf<K, V>> {
        let mut node = &mut self.root;
        for step in steps(filter) {
            node = match step {
                Step::Exact(level) => node.children.get_mut(level)?,
                Step::Plus => node.plus.as_deref_mut()?,
                Step::Hash => return node.hash.as_deref_mut(),
            };
        }
        Some(&mut node.leaf)
    }

    /// Removes the nodes on `filter`'s path that hold nothing but the path itself, after the
    /// filter's leaf became empty. Two passes (find the cut, then cut) instead of recursion,
    /// so a filter of 30,000 levels cannot exhaust the stack.
    fn prune(&mut self, filter: &str) {
        // `cut = Some(i)`: step `i` leads to the shallowest node from which everything down
        // the path is removable.
        let mut cut = None;
        let mut node = &self.root;
        let mut path = steps(filter).enumerate().peekable();
        while let Some((i, step)) = path.next() {
            let last = path.peek().is_none();
            let removable = match step {
                Step::Hash => node.hash.as_ref().is_some_and(|leaf| leaf.is_empty()),
                Step::Exact(_) | Step::Plus => {
                    let child = match step {
                        Step::Exact(level) => node.children.get(level),
                        _ => node.plus.as_deref(),
                    };
                    let Some(child) = child else { return };
                    node = child;
                    if last {
                        child.is_empty()
                    } else {
                        child.leaf.is_empty() && child.child_count() == 1
                    }
                }
            };
            match (removable, cut) {
                (false, _) => cut = None,
                (true, None) => cut = Some(i),
                (true, Some(_)) => {}
            }
        }
        let Some(cut) = cut else { return };
        let mut node = &mut self.root;
        let mut path = steps(filter);
        for step in path.by_ref().take(cut) {
            node = match step {
                Step::Exact(level) => match node.children.get_mut(level) {
                    Some(child) => child,
                    None => return,
                },
                Step::Plus => match node.plus.as_deref_mut() {
                    Some(child) => child,
                    None => return,
                },
                Step::Hash => return,
            };
        }
        match path.next() {
            Some(Step::Exact(level)) => node.children.remove(level),
            Some(Step::Plus) => node.plus = None,
            Some(Step::Hash) => node.hash = None,
            None => {}
        }
    }
}

/// Matches the rest of a topic from `node`, which matched the previous level. Follows the
/// exact branch and leaves `+` branches that have an exact sibling on `pending`.
fn walk<'a, 't, K, V, F: FnMut(Match<'a, K, V>)>(
    mut node: &'a Node<K, V>,
    mut rest: Option<&'t str>,
    pending: &mut Pending<'a, 't, K, V>,
    f: &mut F,
) {
    loop {
        // `prefix/#` matches `prefix` itself and everything below [MQTT-4.7.1-2].
        if let Some(hash) = &node.hash {
            report(hash, f);
        }
        let Some(level) = next_level(&mut rest) else {
            report(&node.leaf, f);
            return;
        };
        node = match (node.children.get(level), node.plus.as_deref()) {
            (Some(exact), Some(plus)) => {
                pending.push(plus, rest);
                exact
            }
            (Some(next), None) | (None, Some(next)) => next,
            (None, None) => return,
        };
    }
}

/// Takes the next level off the rest of a topic. `None` means no levels are left;
/// `Some("")` is an empty level still to match (`a/` has two levels).
fn next_level<'t>(rest: &mut Option<&'t str>) -> Option<&'t str> {
    let topic = rest.take()?;
    // `/` is ASCII, so its byte offset is a char boundary on both sides.
    match find_slash(topic.as_bytes()) {
        Some(at) => {
            *rest = topic.get(at + 1..);
            topic.get(..at)
        }
        None => Some(topic),
    }
}

/// The offset of the first `/` in `bytes`, eight bytes at a time. Levels are short, where
/// `split_once`'s general search (`memchr`) costs more to set up than it saves, and this
/// runs for every level of every message.
fn find_slash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const SLASHES: u64 = u64::from_ne_bytes([b'/'; 8]);
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        // A zero byte where `bytes` has a `/`. The lowest byte flagged is exact: a borrow
        // of the subtraction only flags bytes above a zero byte.
        let x = u64::from_le_bytes(*chunk) ^ SLASHES;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = bytes.get(at..)?;
    tail.iter().position(|&b| b == b'/').map(|p| at + p)
}

/// A branch still to walk: a node and the topic levels left below it.
type Branch<'a, 't, K, V> = (&'a Node<K, V>, Option<&'t str>);

/// How many pending branches a match keeps in its own frame before spilling to the heap.
const PENDING_INLINE: usize = 16;

/// Branches of a match still to walk. A few live
/// in the caller's frame; more (a pathological set of filters) spill to a Vec.
struct Pending<'a, 't, K, V> {
    /// The first branches, without allocating.
    inline: [Option<Branch<'a, 't, K, V>>; PENDING_INLINE],
    /// How many of `inline` are in use.
    len: usize,
    /// Branches beyond [`PENDING_INLINE`]; empty (unallocated) in practice.
    spill: Vec<Branch<'a, 't, K, V>>,
}

impl<'a, 't, K, V> Pending<'a, 't, K, V> {
    fn new() -> Self {
        Self {
            inline: [None; PENDING_INLINE],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, node: &'a Node<K, V>, rest: Option<&'t str>) {
        if self.len < PENDING_INLINE {
            self.inline[self.len] = Some((node, rest));
            self.len += 1;
        } else {
            self.spill.push((node, rest));
        }
    }

    fn pop(&mut self) -> Option<Branch<'a, 't, K, V>> {
        if let Some(branch) = self.spill.pop() {
            return Some(branch);
        }
        self.len = self.len.checked_sub(1)?;
        self.inline[self.len].take()
    }
}

/// Reports every subscription of a matching leaf: each plain one, and each group once.
fn report<'a, K, V, F: FnMut(Match<'a, K, V>)>(leaf: &'a Leaf<K, V>, f: &mut F) {
    leaf.plain
        .for_each(|key, value| f(Match::Plain { key, value }));
    for group in leaf.groups() {
        f(Match::Shared {
            group: &group.name,
            filter: &group.filter,
        });
    }
}

fn group_len<K: Eq, V>(leaf: &Leaf<K, V>, group: &str) -> usize {
    leaf.groups()
        .iter()
        .find(|g| *g.name == *group)
        .map_or(0, |g| g.len())
}

impl<K: Clone + Eq + Hash, V> Default for SubscriptionIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}
