//! Retained messages: at most one per topic name, found by topic filter (with the `$` rule)
//! when a subscription is made [MQTT-3.3.1-5, MQTT-3.3.1-6].
//!
//! A trie with one node per topic level; a message lives at the node of its topic, together
//! with the [`TopicName`] so lookups can hand it back. A filter walks the trie level by level:
//! an exact level follows one child, `+` every child, `#` the whole subtree including the node
//! it hangs from (`a/#` finds `a`). Walks use an explicit stack, never recursion, because a
//! topic may have tens of thousands of levels; nodes left empty by a removal are pruned.

#[cfg(test)]
mod tests;

use aviary_codec::TopicName;

use crate::topic_index::children::{ChildIter, Children};

/// Retained messages of type `V` keyed by topic name, searchable by filter.
#[derive(Debug)]
pub struct RetainedStore<V> {
    /// The level before a topic's first level; it never holds a message itself.
    root: Node<V>,
    /// Number of stored messages, so `len` is O(1).
    len: usize,
}

/// One topic level.
#[derive(Debug)]
struct Node<V> {
    /// The next levels, by level string (the empty string is a level too).
    children: Children<Self>,
    /// The message retained on the topic that ends here, with that topic's name.
    message: Option<(TopicName, V)>,
}

impl<V> Node<V> {
    fn new() -> Self {
        Self {
            children: Children::Few(Vec::new()),
            message: None,
        }
    }
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Drop for Node<V> {
    /// Dismantles the subtree with a stack: the derived drop would recurse once per level and
    /// overflow on a topic with tens of thousands of levels.
    fn drop(&mut self) {
        let mut stack = Vec::new();
        self.children.drain_into(&mut stack);
        while let Some(mut node) = stack.pop() {
            node.children.drain_into(&mut stack);
        }
    }
}

/// Pending work of a filter walk. The stack holds at most a few entries per trie level, so
/// `dev/+/status` over a million devices needs no million-entry buffer.
enum Work<'a, 'f, V> {
    /// Match the rest of the filter (`None`: no levels left) at `node`.
    Walk(&'a Node<V>, Option<&'f str>),
    /// A `+` level: match the rest of the filter below each remaining child.
    Plus(ChildIter<'a, Node<V>>, Option<&'f str>, Dollar),
    /// A `#` level: report every message at and below each remaining child.
    Subtree(ChildIter<'a, Node<V>>, Dollar),
}

/// Whether a wildcard level may visit children whose level starts with `$`: not for the first
/// level of a filter [MQTT-4.7.2-1].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dollar {
    Visit,
    Skip,
}

impl<V> RetainedStore<V> {
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// Sets (or replaces) the retained message of `topic`; returns the previous one.
    ///
    /// The empty name of an unresolved topic alias names no topic: nothing is stored and
    /// `message` is dropped (the caller resolves aliases first).
    pub fn insert(&mut self, topic: TopicName, message: V) -> Option<V> {
        if topic.is_empty() {
            return None;
        }
        let mut node = &mut self.root;
        for level in topic.levels() {
            node = node.children.get_or_insert(level);
        }
        let old = node.message.replace((topic, message)).map(|(_, old)| old);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the retained message of `topic`.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        if topic.is_empty() {
            return None;
        }
        let mut node = &mut self.root;
        for level in topic.levels() {
            node = node.children.get_mut(level)?;
        }
        let (_, message) = node.message.take()?;
        let now_empty = node.children.is_empty();
        self.len -= 1;
        if now_empty {
            self.prune(topic);
        }
        Some(message)
    }

    /// The retained message of `topic`, if any.
    pub fn get(&self, topic: &TopicName) -> Option<&V> {
        if topic.is_empty() {
            return None;
        }
        let mut node = &self.root;
        for level in topic.levels() {
            node = node.children.get(level)?;
        }
        node.message.as_ref().map(|(_, message)| message)
    }

    /// Calls `f` for each retained message whose topic matches `filter` (a plain filter, the
    /// matching part of a shared one), honouring [MQTT-4.7.2-1].
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&TopicName, &V)) {
        if filter.is_empty() {
            return;
        }
        let mut report = |node: &Node<V>| {
            if let Some((topic, message)) = &node.message {
                f(topic, message);
            }
        };
        let mut stack = vec![Work::Walk(&self.root, Some(filter))];
        while let Some(work) = stack.last_mut() {
            let next = match work {
                Work::Walk(node, rest) => {
                    let (node, mut rest) = (*node, *rest);
                    stack.pop();
                    // Only the root's children start a topic, so only they can be `$` topics.
                    let dollar = if std::ptr::eq(node, &self.root) {
                        Dollar::Skip
                    } else {
                        Dollar::Visit
                    };
                    match next_level(&mut rest) {
                        None => {
                            report(node);
                            None
                        }
                        Some("#") => {
                            // `a/#` matches `a` itself [MQTT-4.7.1-2].
                            report(node);
                            Some(Work::Subtree(node.children.iter(), dollar))
                        }
                        Some("+") => Some(Work::Plus(node.children.iter(), rest, dollar)),
                        Some(exact) => node
                            .children
                            .get(exact)
                            .map(|child| Work::Walk(child, rest)),
                    }
                }
                Work::Plus(children, rest, dollar) => {
                    let rest = *rest;
                    match next_visible(children, *dollar) {
                        Some(child) => Some(Work::Walk(child, rest)),
                        None => {
                            stack.pop();
                            None
                        }
                    }
                }
                Work::Subtree(children, dollar) => match next_visible(children, *dollar) {
                    Some(child) => {
                        report(child);
                        Some(Work::Subtree(child.children.iter(), Dollar::Visit))
                    }
                    None => {
                        stack.pop();
                        None
                    }
                },
            };
            stack.extend(next);
        }
    }

    /// Removes every message for which `keep` is false (e.g. expired ones).
    pub fn retain(&mut self, mut keep: impl FnMut(&TopicName, &V) -> bool) {
        // Find first, then remove (with pruning) by name: a traversal that mutates and
        // prunes as it goes would need recursion or parent pointers.
        let mut doomed = Vec::new();
        let mut stack = vec![self.root.children.iter()];
        while let Some(children) = stack.last_mut() {
            let Some((_, node)) = children.next() else {
                stack.pop();
                continue;
            };
            if let Some((topic, message)) = &node.message {
                if !keep(topic, message) {
                    doomed.push(topic.clone());
                }
            }
            stack.push(node.children.iter());
        }
        for topic in doomed {
            self.remove(&topic);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the nodes on `topic`'s path that hold nothing but the path, after its message
    /// was removed from a childless node. Two passes (find the cut, then cut), no recursion.
    fn prune(&mut self, topic: &TopicName) {
        // `cut = Some(i)`: level `i` leads to the shallowest node from which everything down
        // the path is empty apart from the path itself.
        let mut cut = None;
        let mut node = &self.root;
        let mut path = topic.levels().enumerate().peekable();
        while let Some((i, level)) = path.next() {
            let Some(child) = node.children.get(level) else {
                return;
            };
            let last = path.peek().is_none();
            let removable =
                child.message.is_none() && child.children.len() == if last { 0 } else { 1 };
            match (removable, cut) {
                (false, _) => cut = None,
                (true, None) => cut = Some(i),
                (true, Some(_)) => {}
            }
            node = child;
        }
        let Some(cut) = cut else { return };
        let mut node = &mut self.root;
        let mut path = topic.levels();
        for level in path.by_ref().take(cut) {
            match node.children.get_mut(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = path.next() {
            node.children.remove(level);
        }
    }
}

/// Takes the next level off the rest of a filter. `None` means no levels are left;
/// `Some("")` is an empty level still to match.
fn next_level<'f>(rest: &mut Option<&'f str>) -> Option<&'f str> {
    let filter = rest.take()?;
    match filter.split_once('/') {
        Some((level, tail)) => {
            *rest = Some(tail);
            Some(level)
        }
        None => Some(filter),
    }
}

/// The next child a wildcard may visit.
fn next_visible<'a, V>(
    children: &mut ChildIter<'a, Node<V>>,
    dollar: Dollar,
) -> Option<&'a Node<V>> {
    children
        .find(|(level, _)| dollar == Dollar::Visit || !level.starts_with('$'))
        .map(|(_, child)| child)
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        Self::new()
    }
}
