//! Collections a session holds from its start but most sessions never fill, allocated on
//! first use: an empty std `HashMap`/`HashSet` (with its `RandomState`) is 48 bytes in
//! every session, the `Option<Box<..>>` 8. Idle sessions are the common case (issue 6:
//! memory per idle connection), and the extra indirection is paid only by the sessions
//! that use them, off the message path.

use std::collections::{HashMap, HashSet};

use aviary_codec::{PacketId, TopicFilter};

use super::session::Subscription;

/// A set of packet ids: a session's incoming QoS 2 ids awaiting PUBREL, which most
/// sessions never receive. A peer chooses the ids (up to 65,535 of them), so a large set
/// is a hash set with std's SipHash; a QoS 2 publisher usually has a few in flight, where
/// a short list is searched faster than a SipHash is computed (three look-ups per
/// message: contains, insert, remove).
#[derive(Debug, Default)]
pub(crate) struct PacketIds(Option<Box<IdSet>>);

/// Up to this many ids live in a list.
const FEW_IDS: usize = 16;
/// Below this many a hash set goes back to a list (lower than [`FEW_IDS`], so that a
/// publisher at the boundary does not convert back and forth).
const BACK_TO_LIST: usize = 8;

/// The ids, in a list or, beyond [`FEW_IDS`], a hash set.
#[derive(Debug)]
enum IdSet {
    Few(Vec<PacketId>),
    Many(HashSet<PacketId>),
}

impl Default for IdSet {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl PacketIds {
    pub(crate) fn contains(&self, id: &PacketId) -> bool {
        match self.0.as_deref() {
            None => false,
            Some(IdSet::Few(list)) => list.contains(id),
            Some(IdSet::Many(set)) => set.contains(id),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self.0.as_deref() {
            None => 0,
            Some(IdSet::Few(list)) => list.len(),
            Some(IdSet::Many(set)) => set.len(),
        }
    }

    /// Adds `id`; false if it was there already.
    pub(crate) fn insert(&mut self, id: PacketId) -> bool {
        let ids = self.0.get_or_insert_default();
        match &mut **ids {
            IdSet::Few(list) => {
                if list.contains(&id) {
                    return false;
                }
                if list.len() < FEW_IDS {
                    list.push(id);
                } else {
                    let mut set: HashSet<PacketId> = list.drain(..).collect();
                    set.insert(id);
                    **ids = IdSet::Many(set);
                }
                true
            }
            IdSet::Many(set) => set.insert(id),
        }
    }

    /// Removes `id`; false if it was not there. The set stays allocated (a QoS 2
    /// publisher would otherwise allocate it again for every message).
    pub(crate) fn remove(&mut self, id: &PacketId) -> bool {
        let Some(ids) = self.0.as_deref_mut() else {
            return false;
        };
        match ids {
            IdSet::Few(list) => {
                let Some(pos) = list.iter().position(|i| i == id) else {
                    return false;
                };
                // The order of the ids carries no meaning.
                list.swap_remove(pos);
                true
            }
            IdSet::Many(set) => {
                let removed = set.remove(id);
                if set.len() < BACK_TO_LIST {
                    *ids = IdSet::Few(set.drain().collect());
                }
                removed
            }
        }
    }
}

impl Extend<PacketId> for PacketIds {
    fn extend<I: IntoIterator<Item = PacketId>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

/// A session's subscriptions by filter, at most one per filter [MQTT-3.8.4-3]. Many
/// connections never subscribe (publish-only devices, clients that only send); the map
/// is created with the first subscription and stays allocated. Keyed with std's SipHash:
/// the filters are chosen by the peer. Read on SUBSCRIBE/UNSUBSCRIBE and by the
/// management side; routing reads the broker's index, not this.
#[derive(Debug, Default)]
#[allow(
    clippy::box_collection,
    reason = "boxing keeps every session 40 bytes smaller; many never subscribe"
)]
pub(crate) struct Subscriptions(Option<Box<HashMap<TopicFilter, Subscription>>>);

impl Subscriptions {
    pub(crate) fn contains_key(&self, filter: &TopicFilter) -> bool {
        self.0.as_ref().is_some_and(|map| map.contains_key(filter))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    /// Adds or replaces the subscription of `filter`; the one replaced.
    pub(crate) fn insert(
        &mut self,
        filter: TopicFilter,
        subscription: Subscription,
    ) -> Option<Subscription> {
        self.0.get_or_insert_default().insert(filter, subscription)
    }

    /// Removes the subscription of `filter`, if any.
    pub(crate) fn remove(&mut self, filter: &TopicFilter) -> Option<Subscription> {
        self.0.as_mut().and_then(|map| map.remove(filter))
    }

    /// The filters, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &TopicFilter> {
        self.0.iter().flat_map(|map| map.keys())
    }

    /// The subscriptions, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Subscription> {
        self.0.iter().flat_map(|map| map.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    /// The set answers the same in its list form, across the switch to a hash set and back.
    #[test]
    fn packet_ids_behave_as_a_set_in_both_forms() {
        let mut ids = PacketIds::default();
        assert!(!ids.contains(&id(1)));
        assert!(!ids.remove(&id(1)));
        for n in 1..=40 {
            assert!(ids.insert(id(n * 7)), "{n}");
            assert!(!ids.insert(id(n * 7)), "{n} twice");
            assert_eq!(ids.len(), usize::from(n));
        }
        assert!(matches!(ids.0.as_deref(), Some(IdSet::Many(_))));
        assert!((1..=40).all(|n| ids.contains(&id(n * 7))));
        assert!(!ids.contains(&id(8)));
        for n in 1..=36 {
            assert!(ids.remove(&id(n * 7)), "{n}");
            assert!(!ids.remove(&id(n * 7)), "{n} twice");
            assert!(!ids.contains(&id(n * 7)));
        }
        assert!(matches!(ids.0.as_deref(), Some(IdSet::Few(_))));
        assert_eq!(ids.len(), 4);
        assert!((37..=40).all(|n| ids.contains(&id(n * 7))));
        assert!(ids.insert(id(5)));
        assert!(ids.remove(&id(5)));
        assert!(!ids.contains(&id(5)));
    }
}
