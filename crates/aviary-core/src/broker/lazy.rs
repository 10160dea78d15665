//! Collections a session holds from its start but most sessions never fill, allocated on
//! first use: an empty std `HashMap`/`HashSet` (with its `RandomState`) is 48 bytes in
//! every session, the `Option<Box<..>>` 8. Idle sessions are the common case (issue 6:
//! memory per idle connection), and the extra indirection is paid only by the sessions
//! that use them, off the message path.

use std::collections::{HashMap, HashSet};

use aviary_codec::{PacketId, TopicFilter};

use super::session::Subscription;

/// A set of packet ids: a session's incoming QoS 2 ids awaiting PUBREL, which most
/// sessions never receive. A hash set because a peer chooses the ids (up to 65,535 of
/// them).
#[derive(Debug, Default)]
#[allow(
    clippy::box_collection,
    reason = "boxing keeps every session 40 bytes smaller; few sessions receive QoS 2"
)]
pub(crate) struct PacketIds(Option<Box<HashSet<PacketId>>>);

impl PacketIds {
    pub(crate) fn contains(&self, id: &PacketId) -> bool {
        self.0.as_ref().is_some_and(|set| set.contains(id))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    /// Adds `id`; false if it was there already.
    pub(crate) fn insert(&mut self, id: PacketId) -> bool {
        self.0.get_or_insert_default().insert(id)
    }

    /// Removes `id`; false if it was not there. The set stays allocated (a QoS 2
    /// publisher would otherwise allocate it again for every message).
    pub(crate) fn remove(&mut self, id: &PacketId) -> bool {
        self.0.as_mut().is_some_and(|set| set.remove(id))
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
