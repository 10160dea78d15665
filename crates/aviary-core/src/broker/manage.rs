//! Read and change a running broker from the management side, beyond what `admin` offers:
//! a session's subscriptions (read, add, remove on a live session), retained messages
//! (list, read, delete), shared subscription groups (members and backlog), and the plan
//! limits that apply at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aviary_codec::{Disconnect, Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use aviary_codec::{TopicFilter, TopicName};
use bytes::Bytes;

use super::connection::Connection;
use super::session::Subscription;
use super::{Broker, ConnId, EndReason, Event};

/// One subscription of a session, as the management API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The filter as subscribed (`$share/g/f` for a shared one).
    pub filter: TopicFilter,
    /// Maximum QoS, No Local, Retain As Published, Retain Handling.
    pub options: SubscriptionOptions,
}

/// One retained message, as the management API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedInfo {
    /// Its topic.
    pub topic: TopicName,
    /// The payload (shared, not copied).
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
}

/// One shared subscription group (`$share/{group}/{filter}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedGroupInfo {
    /// The group name.
    pub group: String,
    /// The inner filter.
    pub filter: String,
    /// Client ids of the member sessions, sorted.
    pub members: Vec<String>,
    /// QoS 1/2 messages of this group queued or in flight at its members.
    pub backlog: usize,
}

/// The counters of one connected client (see [`Broker::client_counters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCounters<'a> {
    pub conn: ConnId,
    /// Shared (usage metering keys its series by it without a copy).
    pub client_id: &'a Arc<str>,
    /// Metered units of the connection so far.
    pub units: u64,
    pub inflight: usize,
    pub queued: usize,
}

/// Why a subscription could not be added from the management side.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManageError {
    /// No session has this client id.
    #[error("no session for client id {0:?}")]
    NoSession(String),
    /// The session has `max_subscriptions_per_session` filters already.
    #[error("the session has the maximum number of subscriptions ({0})")]
    TooManySubscriptions(usize),
    /// The filter has more levels than `max_topic_levels`.
    #[error("the filter has more than {0} levels")]
    TooDeep(usize),
}

/// The limits of the plan that can change while the broker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeLimits {
    /// Connections beyond this get CONNACK 0x03 (3.x) / 0x97 (5.0).
    pub max_connections: usize,
    /// Filters beyond this per session are refused in SUBACK.
    pub max_subscriptions_per_session: usize,
    /// Largest packet accepted from clients.
    pub max_packet_size: u32,
    /// Retained messages stored at most.
    pub max_retained: usize,
}

impl Broker {
    /// The subscriptions of the session of `client_id` (connected or not), sorted by filter.
    pub fn session_subscriptions(&self, client_id: &str) -> Option<Vec<SubscriptionInfo>> {
        let session = self.sessions.get(self.client_ids.get(client_id)?)?;
        let mut subs: Vec<SubscriptionInfo> = session
            .subscriptions
            .values()
            .map(|s| SubscriptionInfo {
                filter: s.filter.clone(),
                options: s.options,
            })
            .collect();
        subs.sort_by(|a, b| a.filter.as_str().cmp(b.filter.as_str()));
        Some(subs)
    }

    /// Adds (or replaces) a subscription on the session of `client_id`, as if the client
    /// had subscribed, with the same per-session limits; retained messages are not sent
    /// (the client did not ask). Returns whether it replaced an existing one.
    pub fn add_subscription(
        &mut self,
        client_id: &str,
        filter: TopicFilter,
        options: SubscriptionOptions,
    ) -> Result<bool, ManageError> {
        let sid = *self
            .client_ids
            .get(client_id)
            .ok_or_else(|| ManageError::NoSession(client_id.to_owned()))?;
        if filter.match_filter().split('/').count() > self.config.max_topic_levels {
            return Err(ManageError::TooDeep(self.config.max_topic_levels));
        }
        let limit = self.config.max_subscriptions_per_session;
        let session = self
            .sessions
            .get_mut(&sid)
            .ok_or_else(|| ManageError::NoSession(client_id.to_owned()))?;
        let existed = session.subscriptions.contains_key(&filter);
        if !existed && session.subscriptions.len() >= limit {
            return Err(ManageError::TooManySubscriptions(limit));
        }
        let subscription = Subscription {
            filter: filter.clone(),
            options,
            identifier: None,
        };
        session
            .subscriptions
            .insert(filter.clone(), subscription.clone());
        let conn = session.link.as_ref().map(|l| l.conn);
        let client_id = session.client_id.clone();
        self.index.insert(&filter, sid, subscription);
        if let Some(conn) = conn {
            self.fx.event(|| Event::Subscribed {
                conn,
                client_id,
                filter,
                qos: options.qos,
            });
        }
        Ok(existed)
    }

    /// Removes a subscription from the session of `client_id`; `None` if there is no such
    /// session, else whether the filter was subscribed. Pending messages of a shared group
    /// it leaves go to the other members.
    pub fn remove_subscription(
        &mut self,
        client_id: &str,
        filter: &TopicFilter,
        now: Instant,
    ) -> Option<bool> {
        let sid = *self.client_ids.get(client_id)?;
        let session = self.sessions.get_mut(&sid)?;
        let existed = session.subscriptions.remove(filter).is_some();
        let conn = session.link.as_ref().map(|l| l.conn);
        let client_id = session.client_id.clone();
        self.index.remove(filter, &sid);
        if existed {
            if let Some(conn) = conn {
                self.fx.event(|| Event::Unsubscribed {
                    conn,
                    client_id,
                    filter: filter.clone(),
                });
            }
            if filter.shared().is_some() {
                self.redispatch_shared(sid, Some(filter), true, now);
            }
        }
        Some(existed)
    }

    /// Retained messages whose topic matches `filter` (`#` for all), sorted by topic, at
    /// most `limit` of them.
    pub fn retained_messages(&self, filter: &str, limit: usize) -> Vec<RetainedInfo> {
        let mut found = Vec::new();
        self.retained.for_each_match(filter, |topic, m| {
            found.push(RetainedInfo {
                topic: topic.clone(),
                payload: m.payload.clone(),
                qos: m.qos,
            });
        });
        found.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        found.truncate(limit);
        found
    }

    /// The retained message of `topic`, if any.
    pub fn retained_message(&self, topic: &TopicName) -> Option<RetainedInfo> {
        self.retained.get(topic).map(|m| RetainedInfo {
            topic: topic.clone(),
            payload: m.payload.clone(),
            qos: m.qos,
        })
    }

    /// Deletes the retained message of `topic`; whether there was one.
    pub fn delete_retained(&mut self, topic: &TopicName) -> bool {
        self.retained.remove(topic).is_some()
    }

    /// Every shared subscription group with its members and backlog, sorted by group and
    /// filter.
    pub fn shared_groups(&self) -> Vec<SharedGroupInfo> {
        let mut groups: BTreeMap<(String, String), SharedGroupInfo> = BTreeMap::new();
        for (_, session) in self.sessions.iter() {
            for filter in session.subscriptions.keys() {
                let Some(shared) = filter.shared() else {
                    continue;
                };
                let key = (shared.group.to_owned(), shared.filter.to_owned());
                let group = groups.entry(key).or_insert_with(|| SharedGroupInfo {
                    group: shared.group.to_owned(),
                    filter: shared.filter.to_owned(),
                    members: Vec::new(),
                    backlog: 0,
                });
                group.members.push(session.client_id.to_string());
                let tagged = |d: &super::message::Delivery| d.shared.as_ref() == Some(filter);
                group.backlog += session.queued().filter(|d| tagged(d)).count()
                    + session.inflight().filter(|i| tagged(&i.delivery)).count();
            }
        }
        let mut groups: Vec<SharedGroupInfo> = groups.into_values().collect();
        for group in &mut groups {
            group.members.sort();
        }
        groups
    }

    /// For every connected client, without allocating: its connection, client id, metered
    /// units so far, and outgoing QoS 1/2 messages in flight and queued (metrics walk this
    /// once a second).
    pub fn client_counters(&self) -> impl Iterator<Item = ClientCounters<'_>> + '_ {
        self.connections
            .keys()
            .filter_map(|conn| self.client_counter(*conn))
    }

    /// [`Broker::client_counters`] of one connection; `None` unless it is connected
    /// (usage metering walks the connections a slice at a time, by id).
    pub fn client_counter(&self, conn: ConnId) -> Option<ClientCounters<'_>> {
        let c = self.connections.get(&conn)?.connected()?;
        let session = self.sessions.get(&c.session)?;
        Some(ClientCounters {
            conn,
            client_id: &c.client_id,
            units: c.units + session.link.as_ref().map_or(0, |l| l.units),
            inflight: session.inflight_len(),
            queued: session.queued_len(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> RuntimeLimits {
        RuntimeLimits {
            max_connections: self.config.max_connections,
            max_subscriptions_per_session: self.config.max_subscriptions_per_session,
            max_packet_size: self.config.max_packet_size,
            max_retained: self.config.max_retained,
        }
    }

    /// Changes the limits; they apply to the next CONNECT, SUBSCRIBE and packet. Existing
    /// connections and subscriptions over a lowered limit are kept.
    pub fn set_limits(&mut self, limits: RuntimeLimits) {
        self.config.max_connections = limits.max_connections;
        self.config.max_subscriptions_per_session = limits.max_subscriptions_per_session;
        self.config.max_packet_size = limits.max_packet_size;
        self.config.max_retained = limits.max_retained;
    }

    /// Refuses the CONNECT that `conn` just sent, before the broker processes it (the
    /// shell's connect-rate limit): CONNACK with `code` (3.x: its return-code mapping), then
    /// close. Only for a connection that has not completed CONNECT; returns whether it was
    /// refused.
    pub fn refuse_connect(
        &mut self,
        conn: ConnId,
        protocol: ProtocolVersion,
        code: ReasonCode,
    ) -> bool {
        if !matches!(self.connections.get(&conn), Some(Connection::Connecting(_))) {
            return false;
        }
        self.connections.remove(&conn);
        self.refuse(conn, protocol, code, "connection rate exceeded", None);
        true
    }

    /// Closes connection `conn` from the management side (a listener switched off):
    /// 5.0 gets DISCONNECT 0x98 first; a connection still before CONNECT is just closed.
    /// Returns whether the connection was open.
    pub fn disconnect_connection(&mut self, conn: ConnId, now: Instant) -> bool {
        match self.protocol_of(conn) {
            Some(protocol) => {
                if protocol.is_v5() {
                    self.fx.send(
                        conn,
                        Packet::Disconnect(Disconnect::with_reason(
                            ReasonCode::ADMINISTRATIVE_ACTION,
                        )),
                    );
                }
                self.fx.close(conn);
                self.end_connection(conn, EndReason::Administrative, now);
                true
            }
            None if self.connections.contains_key(&conn) => {
                self.close_silently(conn);
                true
            }
            None => false,
        }
    }
}
