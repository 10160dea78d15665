//! The persistence seam: with [`BrokerConfig::persistence`] on, the broker records every
//! change to durable state as a [`StoreOp`] (drained with [`Broker::drain_store_ops`]),
//! and [`Broker::restore`] rebuilds sessions and retained messages from what a store
//! loaded. The core does no I/O: the shell writes the operations and holds back the
//! packets of the same pass (acknowledgements included) until they are committed.
//!
//! What is durable: sessions that outlive their connection (expiry > 0) with their
//! subscriptions, expiry and delayed will; their QoS 1/2 message copies, queued or in
//! flight (with the packet id and whether PUBREL was sent); their incoming QoS 2 packet
//! ids awaiting PUBREL; retained messages; the will of every open connection that has one
//! (a crash of the broker ends the connection abnormally, so the store hands the will back
//! in [`Restore::wills`], or as the session's delayed will). Times are `Instant`s; the
//! shell converts them to wall-clock time so expiry keeps counting while the broker is
//! down.
//!
//! A persisted message copy (a delivery) has a store id, unique and increasing, which also
//! orders a session's copies on load. A message body is written once (by the first copy
//! that refers to it) under its own id.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use aviary_codec::{PacketId, QoS, SubscriptionOptions, TopicFilter, TopicName};

use super::message::{Delivery, Message};
use super::session::{Awaiting, Inflight, PendingWill, Session, SessionId, Subscription};
use super::timers::Timer;
use super::{Broker, Effects};

/// One change to durable state, in the order the broker made it.
#[derive(Clone, Debug)]
pub enum StoreOp {
    /// A persistent session was created or changed.
    SessionPut {
        client_id: Arc<str>,
        session: PersistedSession,
    },
    /// A persisted session ended: it goes with its deliveries and incoming QoS 2 state.
    SessionDeleted { client_id: Arc<str> },
    /// A QoS 1/2 message copy entered a persistent session.
    Delivered {
        client_id: Arc<str>,
        delivery_id: u64,
        delivery: PersistedDelivery,
        state: DeliveryState,
    },
    /// A persisted copy moved on in the QoS flow.
    DeliveryState {
        client_id: Arc<str>,
        delivery_id: u64,
        state: DeliveryState,
    },
    /// A persisted copy is done (acknowledged, dropped, expired, moved to another member).
    DeliveryDone {
        client_id: Arc<str>,
        delivery_id: u64,
    },
    /// An incoming QoS 2 packet id now awaits PUBREL.
    Qos2Received {
        client_id: Arc<str>,
        packet_id: PacketId,
    },
    /// PUBREL came for an incoming QoS 2 packet id.
    Qos2Released {
        client_id: Arc<str>,
        packet_id: PacketId,
    },
    /// A retained message was set on its topic.
    RetainedSet(Arc<Message>),
    /// The retained message of a topic was removed (cleared or expired).
    RetainedCleared(TopicName),
    /// A connection with a will was accepted for `client_id`. Kept until the connection
    /// ends, so that a crash of the broker counts as the abnormal end it is for the
    /// client: the will is published after the restart.
    WillSet {
        client_id: Arc<str>,
        /// 5.0 Will Delay Interval, seconds.
        delay: u32,
        /// The will (its receive time is the CONNECT's; the store sets it when the will
        /// is published).
        message: Arc<Message>,
    },
    /// The connection holding `client_id`'s will ended (its will was published,
    /// scheduled with the session, or discarded), or a restored will was published.
    WillCleared { client_id: Arc<str> },
}

/// A session's durable part.
#[derive(Clone, Debug)]
pub struct PersistedSession {
    /// Seconds the session outlives its connection (u32::MAX: never expires).
    pub expiry_interval: u32,
    /// When it expires, once disconnected; `None` while connected or never.
    pub expires_at: Option<Instant>,
    /// Its subscriptions.
    pub subscriptions: Vec<PersistedSubscription>,
    /// A will waiting for its delay: when, and what.
    pub will: Option<(Instant, Arc<Message>)>,
}

/// One subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedSubscription {
    /// As subscribed (`$share/g/f` included).
    pub filter: TopicFilter,
    /// QoS, No Local, Retain As Published, Retain Handling.
    pub options: SubscriptionOptions,
    /// 5.0 Subscription Identifier.
    pub identifier: Option<NonZeroU32>,
}

/// One session's copy of a message.
#[derive(Clone, Debug)]
pub struct PersistedDelivery {
    /// The message's store id (shared by all its copies).
    pub message_id: u64,
    /// The message.
    pub message: Arc<Message>,
    /// Granted QoS (1 or 2).
    pub qos: QoS,
    /// The RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send.
    pub subscription_ids: Vec<NonZeroU32>,
    /// The shared subscription it was chosen for.
    pub shared: Option<TopicFilter>,
}

/// Where a persisted copy stands in the outgoing flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting behind the window.
    Queued,
    /// PUBLISH sent with this packet id (resent with DUP=1 on resumption).
    Sent(PacketId),
    /// QoS 2 PUBREL sent (resent as PUBREL, never as PUBLISH).
    Released(PacketId),
}

/// What a store loaded, for [`Broker::restore`].
#[derive(Debug, Default)]
pub struct Restore {
    /// Persistent sessions, all disconnected.
    pub sessions: Vec<RestoredSession>,
    /// Retained messages.
    pub retained: Vec<Arc<Message>>,
    /// Larger than every store id on disk (message and delivery ids).
    pub next_id: u64,
    /// Wills to publish at once, by client id: of connections open when the broker
    /// stopped whose session did not outlive them, and of sessions that expired while it
    /// was down.
    pub wills: Vec<(Arc<str>, Arc<Message>)>,
}

/// One persisted session.
#[derive(Debug)]
pub struct RestoredSession {
    /// Its client identifier.
    pub client_id: Arc<str>,
    /// Subscriptions, expiry (a `None` expiry time starts counting now), delayed will.
    pub session: PersistedSession,
    /// Its copies in delivery order.
    pub deliveries: Vec<RestoredDelivery>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: Vec<PacketId>,
}

/// One persisted copy.
#[derive(Debug)]
pub struct RestoredDelivery {
    /// Its store id.
    pub delivery_id: u64,
    /// The copy.
    pub delivery: PersistedDelivery,
    /// Queued, sent or released.
    pub state: DeliveryState,
}

impl Effects {
    /// A fresh store id.
    pub(crate) fn next_store_id(&mut self) -> u64 {
        let id = self.next_store_id;
        self.next_store_id += 1;
        id
    }

    /// Records a store operation (callers check `persist` first when building it costs).
    pub(crate) fn store(&mut self, op: StoreOp) {
        if self.persist {
            self.store_ops.push(op);
        }
    }
}

/// A copy enters the session of `client_id` in `state`: persisted (with a new id) if the
/// session is (a function of the session's fields rather than a method, so that the
/// session code can call it while it holds its outbound state).
///
/// Inlined: it runs twice for every QoS 1/2 copy, and most sessions are not persisted.
#[inline]
pub(crate) fn store_delivered(
    persisted: bool,
    client_id: &Arc<str>,
    delivery: &mut Delivery,
    state: DeliveryState,
    fx: &mut Effects,
) {
    if persisted && delivery.qos != QoS::AtMostOnce {
        record_delivered(client_id, delivery, state, fx);
    }
}

/// The recording part of [`store_delivered`].
fn record_delivered(
    client_id: &Arc<str>,
    delivery: &mut Delivery,
    state: DeliveryState,
    fx: &mut Effects,
) {
    if let Some(delivery_id) = delivery.store_id {
        // Already persisted in this session (moved from the queue into the window).
        fx.store(StoreOp::DeliveryState {
            client_id: client_id.clone(),
            delivery_id,
            state,
        });
        return;
    }
    let delivery_id = fx.next_store_id();
    let message_id = *delivery.message.store_id.get_or_init(|| fx.next_store_id());
    delivery.store_id = Some(delivery_id);
    fx.store(StoreOp::Delivered {
        client_id: client_id.clone(),
        delivery_id,
        delivery: PersistedDelivery {
            message_id,
            message: delivery.message.clone(),
            qos: delivery.qos,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
            shared: delivery.shared.clone(),
        },
        state,
    });
}

impl Session {
    /// The durable part of the session.
    fn persisted_view(&self) -> PersistedSession {
        PersistedSession {
            expiry_interval: self.expiry_interval,
            expires_at: self.link.expires_at(),
            subscriptions: self
                .subscriptions
                .values()
                .map(|s| PersistedSubscription {
                    filter: s.filter.clone(),
                    options: s.options,
                    identifier: s.identifier,
                })
                .collect(),
            will: self
                .pending_will
                .as_ref()
                .map(|w| (w.at, w.message.clone())),
        }
    }
}

/// A persisted copy of `client_id`'s session moved on.
pub(crate) fn store_state(
    client_id: &Arc<str>,
    delivery: &Delivery,
    state: DeliveryState,
    fx: &mut Effects,
) {
    if let Some(delivery_id) = delivery.store_id {
        fx.store(StoreOp::DeliveryState {
            client_id: client_id.clone(),
            delivery_id,
            state,
        });
    }
}

/// A persisted copy of `client_id`'s session is done.
pub(crate) fn store_done(client_id: &Arc<str>, delivery: &Delivery, fx: &mut Effects) {
    if let Some(delivery_id) = delivery.store_id {
        fx.store(StoreOp::DeliveryDone {
            client_id: client_id.clone(),
            delivery_id,
        });
    }
}

impl Broker {
    /// Moves the store operations recorded since the last call into `out`, in order.
    /// Call after each pass of `handle_*` calls, before writing that pass's transmits.
    pub fn drain_store_ops(&mut self, out: &mut Vec<StoreOp>) {
        out.append(&mut self.fx.store_ops);
    }

    /// Saves a session's durable part if it outlives its connection; deletes it from the
    /// store if it was saved and no longer does.
    pub(super) fn persist_session(&mut self, sid: SessionId) {
        if !self.fx.persist {
            return;
        }
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        if session.expiry_interval > 0 {
            session.persisted = true;
            let op = StoreOp::SessionPut {
                client_id: session.client_id.clone(),
                session: session.persisted_view(),
            };
            self.fx.store(op);
        } else if session.persisted {
            session.persisted = false;
            // Its copies are deleted with it; they are no longer persisted.
            if let Some(out) = &mut session.outbound {
                for entry in &mut out.inflight {
                    entry.delivery.store_id = None;
                }
                for delivery in &mut out.queue {
                    delivery.store_id = None;
                }
            }
            let client_id = session.client_id.clone();
            self.fx.store(StoreOp::SessionDeleted { client_id });
        }
    }

    /// Rebuilds sessions and retained messages from a store, before any connection is
    /// opened, and publishes the wills the store says are due. Sessions come back
    /// disconnected: their expiry runs from their stored expiry time (the store gives
    /// sessions that were connected when the broker stopped one), or from `now` if they
    /// have none.
    pub fn restore(&mut self, restore: Restore, now: Instant) {
        self.fx.next_store_id = self.fx.next_store_id.max(restore.next_id);
        for message in restore.retained {
            let topic = message.topic.clone();
            self.retained.insert(topic, message.clone());
            self.schedule_retained_sweep(&message, now);
        }
        for restored in restore.sessions {
            self.restore_session(restored, now);
        }
        // After the sessions, so persistent subscribers get them.
        for (client_id, message) in restore.wills {
            self.publish_will(message, now);
            self.fx.store(StoreOp::WillCleared { client_id });
        }
    }

    fn restore_session(&mut self, restored: RestoredSession, now: Instant) {
        let RestoredSession {
            client_id,
            session: persisted,
            deliveries,
            incoming_qos2,
        } = restored;
        if let Some(old) = self.client_ids.get(&client_id).copied() {
            self.end_session(old, now);
        }
        let sid = SessionId(self.next_session_id);
        self.next_session_id += 1;
        let mut session = Session::new(sid, client_id.clone());
        session.persisted = true;
        session.expiry_interval = persisted.expiry_interval;
        for sub in persisted.subscriptions {
            let subscription = Subscription {
                filter: sub.filter.clone(),
                options: sub.options,
                identifier: sub.identifier,
            };
            self.index.insert(&sub.filter, sid, subscription.clone());
            session.subscriptions.insert(sub.filter, subscription);
        }
        let mut max_packet_id = 0;
        for restored in deliveries {
            let d = restored.delivery;
            let delivery = Delivery {
                message: d.message,
                qos: d.qos,
                retain: d.retain,
                subscription_ids: d.subscription_ids,
                shared: d.shared,
                store_id: Some(restored.delivery_id),
            };
            let (packet_id, state) = match restored.state {
                DeliveryState::Queued => {
                    session.push_queued(delivery);
                    continue;
                }
                DeliveryState::Sent(id) if delivery.qos == QoS::AtLeastOnce => {
                    (id, Awaiting::PubAck)
                }
                DeliveryState::Sent(id) => (id, Awaiting::PubRec),
                DeliveryState::Released(id) => (id, Awaiting::PubComp),
            };
            max_packet_id = max_packet_id.max(packet_id.get());
            session
                .outbound
                .get_or_insert_default()
                .push_inflight(Inflight {
                    packet_id,
                    delivery,
                    state,
                    sent_at: now,
                });
        }
        session.next_packet_id = max_packet_id.checked_add(1).unwrap_or(1);
        session.incoming_qos2.extend(incoming_qos2);
        if let Some((at, message)) = persisted.will {
            // A will whose time passed while the broker was down goes out at once.
            let at = at.max(now);
            session.pending_will = Some(Box::new(PendingWill { at, message }));
            self.fx.timers.schedule(at, Timer::Will(sid));
        }
        let expiry = persisted.expiry_interval;
        if expiry != u32::MAX {
            let at = persisted
                .expires_at
                .unwrap_or_else(|| now + std::time::Duration::from_secs(u64::from(expiry)))
                .max(now);
            session.link.set_expires_at(at);
            self.fx.timers.schedule(at, Timer::SessionExpiry(sid));
        }
        self.client_ids.insert(client_id, sid);
        self.sessions.insert(sid, Box::new(session));
    }
}
