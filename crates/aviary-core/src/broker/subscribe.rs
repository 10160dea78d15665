//! SUBSCRIBE and UNSUBSCRIBE (3.8, 3.10): per-filter validation and limits, replacing an
//! existing subscription [MQTT-3.8.4-3], SUBACK with granted QoS, retained messages per
//! Retain Handling [MQTT-3.3.1-9, MQTT-3.3.1-10, MQTT-3.3.1-11], UNSUBACK.

use std::sync::Arc;
use std::time::Instant;

use aviary_codec::properties::AckProperties;
use aviary_codec::{Packet, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe};

use super::connection::Connection;
use super::message::Delivery;
use super::publish::error_text;
use super::session::{SessionId, Subscription};
use super::{Broker, ConnId, Event};

impl Broker {
    pub(super) fn handle_subscribe(&mut self, conn: ConnId, subscribe: Subscribe, now: Instant) {
        let Some(c) = self.connections.get(&conn).and_then(Connection::connected) else {
            return;
        };
        let v5 = c.protocol.is_v5();
        let problem_info = c.problem_info;
        let sid = c.session;
        let client_id = c.client_id.clone();
        // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
        if subscribe
            .filters
            .iter()
            .any(|(filter, options)| options.no_local && filter.shared().is_some())
        {
            return self.fail(
                conn,
                ReasonCode::PROTOCOL_ERROR,
                "no local on a shared subscription",
                now,
            );
        }
        let identifier = subscribe.properties.subscription_identifier;
        let mut reason_codes = Vec::with_capacity(subscribe.filters.len());
        let mut send_retained = Vec::new();
        for (filter, options) in subscribe.filters {
            if filter.match_filter().split('/').count() > self.config.max_topic_levels {
                reason_codes.push(if v5 {
                    ReasonCode::TOPIC_FILTER_INVALID
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            // Authorization per filter, against the current authorizer (5.0 0x87, 3.x 0x80).
            let request = crate::authz::Request::Subscribe {
                filter: &filter,
                qos: options.qos,
            };
            if self.authorize(conn, &request) == crate::authz::Effect::Deny {
                reason_codes.push(if v5 {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            let Some(session) = self.sessions.get_mut(&sid) else {
                return;
            };
            // Replacing an existing filter does not count against the limit twice.
            let existed = session.subscriptions.contains_key(&filter);
            if !existed && session.subscriptions.len() >= self.config.max_subscriptions_per_session
            {
                reason_codes.push(if v5 {
                    ReasonCode::QUOTA_EXCEEDED
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            let subscription = Subscription {
                filter: filter.clone(),
                options,
                identifier,
            };
            session
                .subscriptions
                .insert(filter.clone(), subscription.clone());
            self.index.insert(&filter, sid, subscription.clone());
            reason_codes.push(ReasonCode(options.qos as u8));
            self.fx.event(|| Event::Subscribed {
                conn,
                client_id: client_id.clone(),
                filter: filter.clone(),
                qos: options.qos,
            });
            // Shared subscriptions get no retained messages (spec 4.8.2, as Mosquitto).
            let wanted = match options.retain_handling {
                RetainHandling::SendOnSubscribe => true,
                RetainHandling::SendOnNewSubscribe => !existed,
                RetainHandling::DoNotSend => false,
            };
            if wanted && filter.shared().is_none() {
                send_retained.push(subscription);
            }
        }
        self.persist_session(sid);
        // One reason string for the SUBACK: the first refusal's [MQTT-3.1.2-29].
        let reason_string = problem_info
            .then(|| reason_codes.iter().find_map(|c| error_text(*c)))
            .flatten()
            .map(str::to_owned);
        self.send_explained(
            conn,
            Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                properties: AckProperties {
                    reason_string,
                    ..AckProperties::default()
                },
                reason_codes,
            }),
        );
        for subscription in &send_retained {
            self.send_retained(sid, subscription, now);
        }
    }

    /// Sends the retained messages matching a new subscription, RETAIN=1 [MQTT-3.3.1-9],
    /// QoS downgraded, with the subscription's identifier.
    fn send_retained(&mut self, sid: SessionId, subscription: &Subscription, now: Instant) {
        let mut found = std::mem::take(&mut self.scratch_retained);
        found.clear();
        self.retained
            .for_each_match(subscription.filter.match_filter(), |_, m| {
                found.push(Arc::clone(m));
            });
        if let Some(session) = self.sessions.get_mut(&sid) {
            for message in found.drain(..) {
                let delivery = Delivery {
                    qos: subscription.options.qos.min(message.qos),
                    retain: true,
                    subscription_ids: subscription.identifier.into_iter().collect(),
                    shared: None,
                    store_id: None,
                    message,
                };
                session.deliver(delivery, &mut self.fx, &self.config, now);
            }
        }
        self.scratch_retained = found;
    }

    pub(super) fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        unsubscribe: Unsubscribe,
        now: Instant,
    ) {
        let Some(c) = self.connections.get(&conn).and_then(Connection::connected) else {
            return;
        };
        let v5 = c.protocol.is_v5();
        let sid = c.session;
        let client_id = c.client_id.clone();
        let mut reason_codes = Vec::with_capacity(unsubscribe.filters.len());
        let mut left_groups = Vec::new();
        for filter in &unsubscribe.filters {
            let existed = self
                .sessions
                .get_mut(&sid)
                .and_then(|s| s.subscriptions.remove(filter))
                .is_some();
            self.index.remove(filter, &sid);
            if existed {
                self.fx.event(|| Event::Unsubscribed {
                    conn,
                    client_id: client_id.clone(),
                    filter: filter.clone(),
                });
                if filter.shared().is_some() {
                    left_groups.push(filter);
                }
            }
            reason_codes.push(if existed {
                ReasonCode::SUCCESS
            } else {
                ReasonCode::NO_SUBSCRIPTION_EXISTED
            });
        }
        if !v5 {
            reason_codes.clear(); // 3.x UNSUBACK has no payload
        }
        self.persist_session(sid);
        self.fx.send(
            conn,
            Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
                properties: AckProperties::default(),
                reason_codes,
            }),
        );
        // After the UNSUBACK: the member's pending messages of the groups it left go to
        // other members.
        for filter in left_groups {
            self.redispatch_shared(sid, Some(filter), true, now);
        }
    }
}
