//! Between the core and the store: core [`aviary_core::StoreOp`]s (with `Instant`s and
//! codec types) become store [`StoreOp`]s (wall-clock milliseconds, plain strings), and a
//! loaded [`Snapshot`] becomes the core's [`Restore`]. A [`Clock`] pairs one `Instant`
//! with the wall clock at the same moment, so absolute times survive a restart.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aviary_codec::properties::PublishProperties;
use aviary_codec::{PacketId, QoS, RetainHandling, SubscriptionOptions, TopicFilter, TopicName};
use aviary_core::{
    DeliveryState as CoreState, Message, PersistedDelivery, PersistedSession,
    PersistedSubscription, Restore, RestoredDelivery, RestoredSession, StoreOp as CoreOp,
};
use bytes::Bytes;

use super::record::{
    DeliveryRecord, DeliveryState, LiveWillRecord, MessageRecord, SessionRecord, Snapshot, StoreOp,
    SubscriptionRecord, WallMillis, WillRecord,
};
use super::{wall_millis, StoreError};

/// One instant of the broker's monotonic clock and the wall clock at the same moment.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// The broker's `now`.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch at `instant`.
    pub wall: WallMillis,
}

impl Clock {
    /// Pairs `instant` (the broker's now) with the system's wall clock.
    pub fn new(instant: Instant) -> Self {
        Self {
            instant,
            wall: wall_millis(SystemTime::now()),
        }
    }

    /// The wall-clock time of `at`.
    pub fn wall_of(&self, at: Instant) -> WallMillis {
        if at >= self.instant {
            let ahead = millis(at - self.instant);
            self.wall.saturating_add(ahead)
        } else {
            self.wall.saturating_sub(millis(self.instant - at))
        }
    }

    /// The instant of a wall-clock time; `None` if it lies before what `Instant` can
    /// represent (long before this boot).
    pub fn instant_of(&self, wall: WallMillis) -> Option<Instant> {
        if wall >= self.wall {
            self.instant
                .checked_add(Duration::from_millis(wall - self.wall))
        } else {
            self.instant
                .checked_sub(Duration::from_millis(self.wall - wall))
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Converts a pass's core operations into store operations, appending to `out`. A message
/// delivered to many sessions in the pass is converted (and its payload copied) once.
pub fn convert_ops(ops: Vec<CoreOp>, clock: &Clock, out: &mut Vec<StoreOp>) {
    let mut bodies: std::collections::HashMap<u64, Arc<MessageRecord>> = Default::default();
    out.extend(ops.into_iter().map(|op| convert_op(op, clock, &mut bodies)));
}

fn convert_op(
    op: CoreOp,
    clock: &Clock,
    bodies: &mut std::collections::HashMap<u64, Arc<MessageRecord>>,
) -> StoreOp {
    match op {
        CoreOp::SessionPut { client_id, session } => StoreOp::PutSession {
            client_id: client_id.to_string(),
            session: session_record(&session, clock),
        },
        CoreOp::SessionDeleted { client_id } => StoreOp::DeleteSession {
            client_id: client_id.to_string(),
        },
        CoreOp::Delivered {
            client_id,
            delivery_id,
            delivery,
            state,
        } => StoreOp::Deliver {
            client_id: client_id.to_string(),
            delivery_id,
            message: bodies
                .entry(delivery.message_id)
                .or_insert_with(|| Arc::new(message_record(&delivery.message, clock)))
                .clone(),
            delivery: DeliveryRecord {
                message_id: delivery.message_id,
                qos: delivery.qos as u8,
                retain: delivery.retain,
                subscription_ids: delivery.subscription_ids.iter().map(|i| i.get()).collect(),
                shared: delivery.shared.map(|f| f.as_str().to_owned()),
            },
            state: state_record(state),
        },
        CoreOp::DeliveryState {
            client_id,
            delivery_id,
            state,
        } => StoreOp::SetDeliveryState {
            client_id: client_id.to_string(),
            delivery_id,
            state: state_record(state),
        },
        CoreOp::DeliveryDone {
            client_id,
            delivery_id,
        } => StoreOp::DeleteDelivery {
            client_id: client_id.to_string(),
            delivery_id,
        },
        CoreOp::Qos2Received {
            client_id,
            packet_id,
        } => StoreOp::Qos2Received {
            client_id: client_id.to_string(),
            packet_id: packet_id.get(),
        },
        CoreOp::Qos2Released {
            client_id,
            packet_id,
        } => StoreOp::Qos2Released {
            client_id: client_id.to_string(),
            packet_id: packet_id.get(),
        },
        CoreOp::RetainedSet(message) => StoreOp::PutRetained {
            message: Arc::new(message_record(&message, clock)),
        },
        CoreOp::RetainedCleared(topic) => StoreOp::DeleteRetained {
            topic: topic.as_str().to_owned(),
        },
        CoreOp::WillSet {
            client_id,
            delay,
            message,
        } => StoreOp::PutWill {
            client_id: client_id.to_string(),
            will: LiveWillRecord {
                delay,
                ended_at: None,
                message: message_record(&message, clock),
            },
        },
        CoreOp::WillCleared { client_id } => StoreOp::DeleteWill {
            client_id: client_id.to_string(),
        },
    }
}

fn state_record(state: CoreState) -> DeliveryState {
    match state {
        CoreState::Queued => DeliveryState::Queued,
        CoreState::Sent(id) => DeliveryState::Sent {
            packet_id: id.get(),
        },
        CoreState::Released(id) => DeliveryState::Released {
            packet_id: id.get(),
        },
    }
}

fn session_record(session: &PersistedSession, clock: &Clock) -> SessionRecord {
    SessionRecord {
        expiry_interval: session.expiry_interval,
        expires_at: session.expires_at.map(|at| clock.wall_of(at)),
        subscriptions: session
            .subscriptions
            .iter()
            .map(|s| SubscriptionRecord {
                filter: s.filter.as_str().to_owned(),
                qos: s.options.qos as u8,
                no_local: s.options.no_local,
                retain_as_published: s.options.retain_as_published,
                retain_handling: s.options.retain_handling as u8,
                identifier: s.identifier.map(NonZeroU32::get),
            })
            .collect(),
        will: session.will.as_ref().map(|(at, message)| WillRecord {
            at: clock.wall_of(*at),
            message: message_record(message, clock),
        }),
    }
}

fn message_record(message: &Message, clock: &Clock) -> MessageRecord {
    let p = &message.properties;
    MessageRecord {
        topic: message.topic.as_str().to_owned(),
        payload: message.payload.to_vec(),
        qos: message.qos as u8,
        retain: message.retain,
        received_at: clock.wall_of(message.received_at),
        expiry_interval: p.message_expiry_interval,
        publisher: message.publisher.as_ref().map(|p| p.to_string()),
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.as_ref().map(|t| t.as_str().to_owned()),
        correlation_data: p.correlation_data.as_ref().map(|d| d.to_vec()),
        user_properties: p.user_properties.clone(),
    }
}

/// Turns what the store loaded into the core's [`Restore`]. A record that does not make
/// a valid topic, filter, QoS or packet id means the file was damaged: an error, never a
/// silent skip.
pub fn restore_from(
    snapshot: Snapshot,
    clock: &Clock,
    path: &std::path::Path,
) -> Result<Restore, StoreError> {
    let damaged = |detail: String| StoreError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let mut restore = Restore {
        next_id: snapshot.next_id,
        ..Restore::default()
    };
    for record in snapshot.retained {
        // Retained messages have no message id: a session storing a copy gives one.
        restore.retained.push(Arc::new(
            core_message(None, &record, clock).map_err(damaged)?,
        ));
    }
    for (client_id, record) in snapshot.wills {
        let message = core_message(None, &record, clock)
            .map_err(|e| damaged(format!("will of {client_id:?}: {e}")))?;
        restore
            .wills
            .push((client_id.as_str().into(), Arc::new(message)));
    }
    // Messages shared by several deliveries become one `Arc` again.
    let mut shared: std::collections::HashMap<u64, Arc<Message>> = Default::default();
    for stored in snapshot.sessions {
        let client_id: Arc<str> = stored.client_id.as_str().into();
        let what = |e: String| damaged(format!("session {:?}: {e}", stored.client_id));
        let session = core_session(&stored.session, clock).map_err(what)?;
        let mut deliveries = Vec::with_capacity(stored.deliveries.len());
        for d in stored.deliveries {
            let id = d.delivery.message_id;
            let message = match shared.get(&id) {
                Some(m) => m.clone(),
                None => {
                    let m = Arc::new(core_message(Some(id), &d.message, clock).map_err(what)?);
                    shared.insert(id, m.clone());
                    m
                }
            };
            let qos = QoS::from_bits(d.delivery.qos)
                .filter(|q| *q != QoS::AtMostOnce)
                .ok_or_else(|| what(format!("delivery QoS {}", d.delivery.qos)))?;
            let shared_filter = d
                .delivery
                .shared
                .as_deref()
                .map(TopicFilter::new)
                .transpose()
                .map_err(|e| what(format!("shared filter: {e}")))?;
            let state = match d.state {
                DeliveryState::Queued => CoreState::Queued,
                DeliveryState::Sent { packet_id } => CoreState::Sent(
                    PacketId::new(packet_id).ok_or_else(|| what("packet id 0".into()))?,
                ),
                DeliveryState::Released { packet_id } => CoreState::Released(
                    PacketId::new(packet_id).ok_or_else(|| what("packet id 0".into()))?,
                ),
            };
            deliveries.push(RestoredDelivery {
                delivery_id: d.delivery_id,
                delivery: PersistedDelivery {
                    message_id: id,
                    message,
                    qos,
                    retain: d.delivery.retain,
                    subscription_ids: d
                        .delivery
                        .subscription_ids
                        .iter()
                        .filter_map(|i| NonZeroU32::new(*i))
                        .collect(),
                    shared: shared_filter,
                },
                state,
            });
        }
        let incoming_qos2 = stored
            .incoming_qos2
            .iter()
            .filter_map(|id| PacketId::new(*id))
            .collect();
        restore.sessions.push(RestoredSession {
            client_id,
            session,
            deliveries,
            incoming_qos2,
        });
    }
    Ok(restore)
}

fn core_session(record: &SessionRecord, clock: &Clock) -> Result<PersistedSession, String> {
    let mut subscriptions = Vec::with_capacity(record.subscriptions.len());
    for s in &record.subscriptions {
        let filter = TopicFilter::new(&s.filter).map_err(|e| format!("filter: {e}"))?;
        let qos = QoS::from_bits(s.qos).ok_or_else(|| format!("QoS {}", s.qos))?;
        let retain_handling = match s.retain_handling {
            0 => RetainHandling::SendOnSubscribe,
            1 => RetainHandling::SendOnNewSubscribe,
            2 => RetainHandling::DoNotSend,
            other => return Err(format!("retain handling {other}")),
        };
        subscriptions.push(PersistedSubscription {
            filter,
            options: SubscriptionOptions {
                qos,
                no_local: s.no_local,
                retain_as_published: s.retain_as_published,
                retain_handling,
            },
            identifier: s.identifier.and_then(NonZeroU32::new),
        });
    }
    let will = match &record.will {
        Some(w) => Some((
            clock.instant_of(w.at).unwrap_or(clock.instant),
            Arc::new(core_message(None, &w.message, clock)?),
        )),
        None => None,
    };
    Ok(PersistedSession {
        expiry_interval: record.expiry_interval,
        expires_at: record
            .expires_at
            .map(|at| clock.instant_of(at).unwrap_or(clock.instant)),
        subscriptions,
        will,
    })
}

/// A core message from its record. When its receive time lies before what `Instant` can
/// hold, it is received "now" with the expiry interval shortened by the time waited, which
/// gives the same remaining expiry.
fn core_message(id: Option<u64>, record: &MessageRecord, clock: &Clock) -> Result<Message, String> {
    let topic = TopicName::new(&record.topic).map_err(|e| format!("topic: {e}"))?;
    let qos = QoS::from_bits(record.qos).ok_or_else(|| format!("QoS {}", record.qos))?;
    let response_topic = record
        .response_topic
        .as_deref()
        .map(TopicName::new)
        .transpose()
        .map_err(|e| format!("response topic: {e}"))?;
    let mut expiry = record.expiry_interval;
    let received_at = match clock.instant_of(record.received_at) {
        Some(at) => at,
        None => {
            let waited = clock.wall.saturating_sub(record.received_at) / 1000;
            expiry =
                expiry.map(|e| u32::try_from(u64::from(e).saturating_sub(waited)).unwrap_or(0));
            clock.instant
        }
    };
    let properties = PublishProperties {
        payload_format_indicator: record.payload_format_indicator,
        message_expiry_interval: expiry,
        topic_alias: None,
        response_topic,
        correlation_data: record.correlation_data.clone().map(Bytes::from),
        user_properties: record.user_properties.clone(),
        subscription_identifiers: Vec::new(),
        content_type: record.content_type.clone(),
    };
    let message = Message::restored(
        id,
        topic,
        Bytes::from(record.payload.clone()),
        qos,
        record.retain,
        properties,
        received_at,
        record.publisher.as_deref().map(Arc::from),
    );
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_both_ways() {
        let clock = Clock {
            instant: Instant::now(),
            wall: 1_000_000,
        };
        let later = clock.instant + Duration::from_millis(2_500);
        assert_eq!(clock.wall_of(later), 1_002_500);
        assert_eq!(clock.instant_of(1_002_500), Some(later));
        if let Some(earlier) = clock.instant.checked_sub(Duration::from_millis(500)) {
            assert_eq!(clock.wall_of(earlier), 999_500);
            assert_eq!(clock.instant_of(999_500), Some(earlier));
        }
    }

    #[test]
    fn a_message_received_before_the_instant_range_keeps_its_remaining_expiry() {
        let clock = Clock {
            instant: Instant::now(),
            wall: u64::MAX / 2,
        };
        let record = MessageRecord {
            topic: "a/b".into(),
            payload: b"x".to_vec(),
            qos: 1,
            retain: false,
            // Far before this boot: not representable as an Instant.
            received_at: u64::MAX / 2 - 1_000_000_000_000,
            expiry_interval: Some(u32::MAX),
            publisher: None,
            payload_format_indicator: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: vec![],
        };
        let message = core_message(Some(5), &record, &clock).unwrap();
        // Either the instant could go that far back, or the interval was shortened: the
        // remaining expiry is the same.
        let waited = clock.instant.duration_since(message.received_at).as_secs();
        let interval = u64::from(message.properties.message_expiry_interval.unwrap());
        assert_eq!(interval - waited, u64::from(u32::MAX) - 1_000_000_000);
        assert_eq!(message.store_id(), Some(5));
        assert_eq!(
            core_message(None, &record, &clock).unwrap().store_id(),
            None
        );
    }

    #[test]
    fn invalid_records_are_errors_not_skips() {
        let clock = Clock::new(Instant::now());
        let mut record = SessionRecord {
            expiry_interval: 10,
            expires_at: None,
            subscriptions: vec![SubscriptionRecord {
                filter: "a/#/b".into(),
                qos: 1,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
                identifier: None,
            }],
            will: None,
        };
        assert!(core_session(&record, &clock).is_err());
        record.subscriptions[0].filter = "a/#".into();
        record.subscriptions[0].qos = 3;
        assert!(core_session(&record, &clock).is_err());
    }
}
