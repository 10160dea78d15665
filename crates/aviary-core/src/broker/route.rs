//! Fan-out of one message to the sessions whose subscriptions match (3.3.4 / 4.8):
//! overlapping subscriptions of a session give one copy at the highest granted QoS with
//! every subscription identifier [MQTT-3.3.4-2, MQTT-3.3.4-3, MQTT-3.3.4-5]; QoS is
//! downgraded to the subscription's [MQTT-3.8.4-8]; No Local [MQTT-3.8.3-3]; RETAIN as
//! published or 0 [MQTT-3.3.1-12, MQTT-3.3.1-13]; each shared group gives the message to one
//! member, round robin among connected members, else to a member whose session waits
//! offline. A member that leaves hands its queued and unacknowledged QoS 1 messages of
//! the group on; a QoS 2 message in flight is completed with its member or dropped with
//! its session [MQTT-4.8.2-4, MQTT-4.8.2-5].

use std::sync::Arc;
use std::time::Instant;

use aviary_codec::TopicFilter;

use super::message::{Delivery, Message};
use super::session::SessionId;
use super::{Broker, PlainMatch};
use crate::topic_index::Match;

impl Broker {
    /// Delivers `message` to every matching session; true if anything matched.
    pub(super) fn route(&mut self, message: &Arc<Message>, now: Instant) -> bool {
        let mut plain = std::mem::take(&mut self.scratch_plain);
        let mut shared = std::mem::take(&mut self.scratch_shared);
        plain.clear();
        shared.clear();
        // The publisher's session, looked up (a hash of its client id) only when a No Local
        // subscription matches: most messages meet none.
        let client_ids = &self.client_ids;
        let mut publisher = None;
        let mut matched = false;
        self.index.for_each_match(&message.topic, |m| match m {
            Match::Plain { key, value } => {
                matched = true;
                if value.options.no_local {
                    let publisher = *publisher.get_or_insert_with(|| {
                        message
                            .publisher
                            .as_ref()
                            .and_then(|id| client_ids.get(id))
                            .copied()
                    });
                    if Some(*key) == publisher {
                        return;
                    }
                }
                plain.push(PlainMatch {
                    session: *key,
                    options: value.options,
                    identifier: value.identifier,
                });
            }
            Match::Shared { group, filter } => {
                matched = true;
                shared.push((group.to_owned(), filter.to_owned()));
            }
        });

        // Merge overlapping subscriptions of one session into one copy.
        if plain.len() > 1 {
            plain.sort_unstable_by_key(|m| m.session);
        }
        let mut rest = plain.as_slice();
        while let Some(first) = rest.first() {
            let same = rest
                .iter()
                .take_while(|m| m.session == first.session)
                .count();
            let (group, tail) = rest.split_at(same);
            rest = tail;
            let mut qos = group[0].options.qos;
            let mut as_published = false;
            let mut subscription_ids = Vec::new();
            for m in group {
                qos = qos.max(m.options.qos);
                as_published |= m.options.retain_as_published;
                subscription_ids.extend(m.identifier);
            }
            let delivery = Delivery {
                message: message.clone(),
                qos: qos.min(message.qos),
                retain: message.retain && as_published,
                subscription_ids,
                shared: None,
                store_id: None,
            };
            if let Some(session) = self.sessions.get_mut(&first.session) {
                session.deliver(delivery, &mut self.fx, &self.config, now);
            }
        }

        for (group, filter) in &shared {
            self.deliver_shared(message, group, filter, None, now);
        }
        self.scratch_plain = plain;
        self.scratch_shared = shared;
        matched
    }

    /// Gives `message` to one member of a shared group (other than `exclude`): the next
    /// connected one in round-robin order, else the next one with a waiting session.
    /// Returns false if the group has no such member.
    fn deliver_shared(
        &mut self,
        message: &Arc<Message>,
        group: &str,
        filter: &str,
        exclude: Option<SessionId>,
        now: Instant,
    ) -> bool {
        let sessions = &self.sessions;
        let connected = |k: &SessionId| {
            Some(*k) != exclude && sessions.get(k).is_some_and(|s| s.is_connected())
        };
        let member = match self.index.next_shared_member(group, filter, connected) {
            Some((key, sub)) => Some((key, sub.clone())),
            None => self
                .index
                .next_shared_member(group, filter, |k| Some(*k) != exclude)
                .map(|(key, sub)| (key, sub.clone())),
        };
        let Some((sid, sub)) = member else {
            return false;
        };
        let delivery = Delivery {
            message: message.clone(),
            qos: sub.options.qos.min(message.qos),
            retain: message.retain && sub.options.retain_as_published,
            subscription_ids: sub.identifier.into_iter().collect(),
            shared: Some(sub.filter),
            store_id: None,
        };
        if let Some(session) = self.sessions.get_mut(&sid) {
            session.deliver(delivery, &mut self.fx, &self.config, now);
        }
        true
    }

    /// A shared-group member is leaving (disconnected, session ending, or unsubscribed
    /// from `only`): its messages of those groups that are queued, or in flight at QoS 1,
    /// go to other members (QoS 2 in flight stays [MQTT-4.8.2-4, MQTT-4.8.2-5]). With `require_connected` (the member's session lives
    /// on) they move only if another member is connected; otherwise to any other member,
    /// and are dropped (counted) if there is none.
    pub(super) fn redispatch_shared(
        &mut self,
        from: SessionId,
        only: Option<&TopicFilter>,
        require_connected: bool,
        now: Instant,
    ) {
        let Some(session) = self.sessions.get(&from) else {
            return;
        };
        let filters = session.shared_filters_pending(only);
        if filters.is_empty() {
            return;
        }
        let sessions = &self.sessions;
        let index = &mut self.index;
        let (filters, orphaned): (Vec<TopicFilter>, Vec<TopicFilter>) =
            filters.into_iter().partition(|f| {
                let Some(shared) = f.shared() else {
                    return false;
                };
                let eligible = |k: &SessionId| {
                    *k != from
                        && (!require_connected || sessions.get(k).is_some_and(|s| s.is_connected()))
                };
                index
                    .next_shared_member(shared.group, shared.filter, eligible)
                    .is_some()
            });
        if !require_connected && !orphaned.is_empty() {
            // The session is being discarded and nobody else can take these.
            if let Some(session) = self.sessions.get_mut(&from) {
                let lost = session.take_shared(&orphaned, &mut self.fx).len();
                self.fx.stats.dropped.shared_no_member += lost as u64;
            }
        }
        if filters.is_empty() {
            return;
        }
        let Some(session) = self.sessions.get_mut(&from) else {
            return;
        };
        let taken = session.take_shared(&filters, &mut self.fx);
        session.pump(&mut self.fx, &self.config, now);
        for delivery in taken {
            let Some(filter) = delivery.shared.as_ref() else {
                continue;
            };
            let Some(shared) = filter.shared() else {
                continue;
            };
            let (group, inner) = (shared.group.to_owned(), shared.filter.to_owned());
            if !self.deliver_shared(&delivery.message, &group, &inner, Some(from), now) {
                self.fx.stats.dropped.shared_no_member += 1;
            }
        }
    }
}
