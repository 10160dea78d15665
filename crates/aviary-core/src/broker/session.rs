//! Session state (MQTT 4.1): what outlives a connection when the session is persistent —
//! subscriptions, the outgoing in-flight window and queue with their packet ids, the
//! incoming QoS 2 packet ids awaiting PUBREL, the expiry, a delayed will — plus the
//! outbound half of the current connection ([`Link`]).
//!
//! Everything except the connection's [`Link`] is plain data, so a store can save and
//! load it later (the persistence seam of the durability work).
//!
//! Outgoing QoS 1/2 flow for one message (the spec's 4.3.2 / 4.3.3 from the sender side):
//!
//! ```text
//!   queue ──(window has room)──▶ PUBLISH sent ──PUBACK──▶ done            (QoS 1)
//!                                 Awaiting::PubRec ──PUBREC──▶ PUBREL sent
//!                                 Awaiting::PubComp ──PUBCOMP──▶ done     (QoS 2)
//! ```

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use aviary_codec::{PacketId, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions, TopicFilter};

use super::alias::OutboundAliases;
use super::lazy::{PacketIds, Subscriptions};
use super::message::{Delivery, Message};
use super::outgoing::{pubrel, resend, send_publish};
use super::persist::{store_delivered, store_done, store_state, DeliveryState};
use super::timers::Timer;
use super::{BrokerConfig, ConnId, Effects};

/// Identifies one session instance. A new session for the same client id gets a new id, so
/// stale timers and index entries of a discarded session can never hit its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(crate) u64);

/// One subscription of a session, as stored in the session and in the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The filter as subscribed (for a shared subscription the whole `$share/g/f`, which
    /// tags the messages delivered through it).
    pub(crate) filter: TopicFilter,
    /// Maximum QoS, No Local, Retain As Published, Retain Handling.
    pub(crate) options: SubscriptionOptions,
    /// 5.0 Subscription Identifier, sent back with every matching message [MQTT-3.3.4-3].
    pub(crate) identifier: Option<NonZeroU32>,
}

/// Which acknowledgement an outgoing QoS 1/2 message waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// The variants are named after the packets awaited.
#[allow(clippy::enum_variant_names)]
pub(crate) enum Awaiting {
    /// QoS 1 PUBLISH sent.
    PubAck,
    /// QoS 2 PUBLISH sent (from here on, a shared-group message stays with its member
    /// [MQTT-4.8.2-4]).
    PubRec,
    /// QoS 2 PUBREC received, PUBREL sent: the message may no longer be resent as PUBLISH
    /// (spec 4.3.3).
    PubComp,
}

/// A QoS 1/2 message sent and not yet acknowledged.
#[derive(Clone, Debug)]
pub(crate) struct Inflight {
    /// Our packet id, unique among the session's in-flight messages.
    pub(crate) packet_id: PacketId,
    /// The copy being delivered (kept for resends and shared hand-over).
    pub(crate) delivery: Delivery,
    pub(crate) state: Awaiting,
    /// When it was last (re)sent, for the retry interval.
    pub(crate) sent_at: Instant,
}

/// A delayed will waiting for its time [MQTT-3.1.3-9].
#[derive(Clone, Debug)]
pub(crate) struct PendingWill {
    /// When to publish it.
    pub(crate) at: Instant,
    /// The will as a message.
    pub(crate) message: Arc<Message>,
}

/// The outbound half of the connection a session is attached to: what we need to know
/// about the client to send it PUBLISHes.
#[derive(Debug)]
pub(crate) struct Link {
    /// The connection's id in the shell.
    pub(crate) conn: ConnId,
    /// The dialect PUBLISHes are built for.
    pub(crate) protocol: ProtocolVersion,
    /// In-flight window: 3.x `max_inflight`; 5.0 the client's Receive Maximum (capped).
    pub(crate) window: u16,
    /// The client's Maximum Packet Size (5.0) [MQTT-3.1.2-25].
    pub(crate) max_packet_size: Option<u32>,
    /// Topic aliases we assigned on this connection.
    pub(crate) aliases: OutboundAliases,
    /// Whether the session outlives the connection (for metering QoS 1 messages).
    pub(crate) persistent: bool,
    /// Metered units of the PUBLISHes sent on this connection.
    pub(crate) units: u64,
    /// Resend after the retry interval (3.x; 5.0 forbids it [MQTT-4.4.0-1] unless
    /// `retry_v5` is set).
    pub(crate) retry: bool,
}

/// A session's connection, or its expiry while it has none: the two are never needed
/// together, and the expiry fits beside `Link`'s niche (the enum is no larger than
/// `Link`; the session 16 bytes smaller than with both). Read like an `Option<Link>`.
#[derive(Debug)]
pub(crate) enum Attachment {
    /// Connected.
    Connected(Link),
    /// Disconnected; when the session expires (`None`: never, or not set yet).
    Offline { expires_at: Option<Instant> },
}

impl Attachment {
    pub(crate) fn as_ref(&self) -> Option<&Link> {
        match self {
            Self::Connected(link) => Some(link),
            Self::Offline { .. } => None,
        }
    }

    pub(crate) fn as_mut(&mut self) -> Option<&mut Link> {
        match self {
            Self::Connected(link) => Some(link),
            Self::Offline { .. } => None,
        }
    }

    pub(crate) fn is_some(&self) -> bool {
        matches!(self, Self::Connected(_))
    }

    /// Detaches the link; the session is then offline with no expiry set.
    pub(crate) fn take(&mut self) -> Option<Link> {
        match std::mem::replace(self, Self::Offline { expires_at: None }) {
            Self::Connected(link) => Some(link),
            Self::Offline { .. } => None,
        }
    }

    /// When a disconnected session expires (`None` while connected or never).
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        match self {
            Self::Connected(_) => None,
            Self::Offline { expires_at } => *expires_at,
        }
    }

    /// Sets the expiry of a disconnected session (ignored while connected).
    pub(crate) fn set_expires_at(&mut self, at: Instant) {
        if let Self::Offline { expires_at } = self {
            *expires_at = Some(at);
        }
    }
}

/// The outgoing QoS 1/2 state of a session. Allocated with its first QoS 1/2 message
/// (an idle session never has one, and the two deques alone are 64 bytes) and kept while
/// the session stays connected, so a subscriber receiving QoS 1/2 allocates it once;
/// freed when the connection ends if nothing is left in it ([`Session::unlink`]).
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Sent and unacknowledged, in send order (the order resends keep [MQTT-4.6.0-1]).
    pub(crate) inflight: VecDeque<Inflight>,
    /// QoS 1/2 messages waiting for room in the window (bounded, see [`QueueOverflow`]).
    ///
    /// [`QueueOverflow`]: super::QueueOverflow
    pub(crate) queue: VecDeque<Delivery>,
    /// Sum of [`Delivery::size`] over `queue` (bounded by `max_queued_bytes`).
    pub(crate) queued_bytes: usize,
    /// No message in `queue` expires before this (`None`: none of them can expire). A
    /// bound, not exact (removals leave it as is), so that a full queue is scanned for
    /// expired messages only when one may be there, not on every message that arrives
    /// while it is full (a scan of up to `max_queued_messages` each time).
    pub(crate) queue_expiry: Option<Instant>,
    /// The retry timer currently scheduled (lazy timers: others are stale).
    pub(crate) retry_at: Option<Instant>,
    /// No packet id in `inflight` is above this (an upper bound: removals leave it as is;
    /// [`Outbound::push_inflight`] keeps it true). Ids are allocated in increasing order
    /// until they wrap, so a fresh id is usually above it and needs no scan of the window.
    pub(crate) id_bound: u16,
}

impl Outbound {
    /// Appends to the queue, keeping `queued_bytes` and `queue_expiry` true.
    fn push(&mut self, delivery: Delivery) {
        self.queued_bytes += delivery.size();
        self.queue_expiry = earlier(self.queue_expiry, delivery.message.expires_at());
        self.queue.push_back(delivery);
    }

    /// Records a message sent and unacknowledged (the only way into `inflight`, so that
    /// `id_bound` stays true).
    pub(crate) fn push_inflight(&mut self, entry: Inflight) {
        self.id_bound = self.id_bound.max(entry.packet_id.get());
        self.inflight.push_back(entry);
    }

    /// The next packet id from `next` that is not in flight. Callers guarantee a free id
    /// exists: the window is at most 65,535 and they only allocate while
    /// `inflight.len() < window`.
    fn allocate_packet_id(&mut self, next: &mut u16) -> PacketId {
        loop {
            let raw = *next;
            *next = raw.checked_add(1).unwrap_or(1);
            let Some(id) = PacketId::new(raw) else {
                continue;
            };
            // Above every id in flight: free without looking.
            if raw > self.id_bound {
                return id;
            }
            // Otherwise scan, and tighten the bound to the exact maximum on the way (after
            // the ids wrap, the old high ones are soon acknowledged).
            let mut taken = false;
            let mut max = 0;
            for entry in &self.inflight {
                let inflight = entry.packet_id.get();
                taken |= inflight == raw;
                max = max.max(inflight);
            }
            self.id_bound = max;
            if !taken {
                return id;
            }
        }
    }

    /// Schedules the retry timer of session `sid` if none is (called with messages in
    /// flight).
    fn schedule_retry(
        &mut self,
        sid: SessionId,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) {
        if let (Some(interval), None) = (config.retry_interval(), self.retry_at) {
            let at = now + interval;
            self.retry_at = Some(at);
            fx.timers.schedule(at, Timer::Retry(sid));
        }
    }
}

/// One session. Every connection has one (clean ones too), so its size is paid per idle
/// connection: what most sessions never use is boxed on first use ([`Outbound`],
/// [`Subscriptions`], [`PacketIds`], the delayed will), the expiry shares its place with
/// the link ([`Attachment`]); `session_stays_small` pins the size.
#[derive(Debug)]
pub(crate) struct Session {
    /// This instance's id (the index key).
    pub(crate) id: SessionId,
    /// The client identifier owning the session.
    pub(crate) client_id: Arc<str>,
    /// At most one per filter [MQTT-3.8.4-3]; mirrored in the broker's index.
    pub(crate) subscriptions: Subscriptions,
    /// Seconds the session outlives its connection; 0 ends it with the connection,
    /// u32::MAX never expires.
    pub(crate) expiry_interval: u32,
    /// The next packet id to try; ids still in flight are skipped.
    pub(crate) next_packet_id: u16,
    /// Whether the store holds this session (it outlives its connection and persistence
    /// is on): its QoS 1/2 copies are then persisted too.
    pub(crate) persisted: bool,
    /// In-flight window, queue and retry timer; `None` until the first QoS 1/2 message.
    pub(crate) outbound: Option<Box<Outbound>>,
    /// Incoming QoS 2 packet ids whose PUBLISH was accepted and whose PUBREL has not come:
    /// a re-sent PUBLISH with one of them is not delivered again (spec 4.3.3).
    pub(crate) incoming_qos2: PacketIds,
    /// A will waiting for its delay after the connection was lost (boxed: rare).
    pub(crate) pending_will: Option<Box<PendingWill>>,
    /// The connection while connected, else when the session expires.
    pub(crate) link: Attachment,
}

impl Session {
    pub(crate) fn new(id: SessionId, client_id: Arc<str>) -> Self {
        Self {
            id,
            client_id,
            subscriptions: Subscriptions::default(),
            expiry_interval: 0,
            next_packet_id: 1,
            persisted: false,
            outbound: None,
            incoming_qos2: PacketIds::default(),
            pending_will: None,
            link: Attachment::Offline { expires_at: None },
        }
    }

    /// Whether a connection is attached.
    pub(crate) fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// The messages sent and unacknowledged, in send order.
    pub(crate) fn inflight(&self) -> impl Iterator<Item = &Inflight> {
        self.outbound.iter().flat_map(|o| o.inflight.iter())
    }

    /// The messages waiting for room in the window, in order.
    pub(crate) fn queued(&self) -> impl Iterator<Item = &Delivery> {
        self.outbound.iter().flat_map(|o| o.queue.iter())
    }

    /// How many messages are in flight.
    pub(crate) fn inflight_len(&self) -> usize {
        self.outbound.as_ref().map_or(0, |o| o.inflight.len())
    }

    /// How many messages are queued.
    pub(crate) fn queued_len(&self) -> usize {
        self.outbound.as_ref().map_or(0, |o| o.queue.len())
    }

    /// The retry timer currently scheduled.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.outbound.as_ref().and_then(|o| o.retry_at)
    }

    /// The connection ended: detaches its link (returned) and cancels the retry timer;
    /// an outbound state with nothing left in it is freed (a disconnected session keeps
    /// only what it must deliver later).
    pub(crate) fn unlink(&mut self) -> Option<Link> {
        if let Some(out) = &mut self.outbound {
            out.retry_at = None;
            if out.inflight.is_empty() && out.queue.is_empty() {
                self.outbound = None;
            }
        }
        self.link.take()
    }

    /// Hands one message copy to the session: sent now, queued, or dropped (counted).
    pub(crate) fn deliver(
        &mut self,
        delivery: Delivery,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) {
        if delivery.message.is_expired(now) {
            fx.stats.dropped.expired += 1;
            return;
        }
        let Some(link) = self.link.as_mut() else {
            // Offline: QoS 0 is not queued (as Mosquitto's default), QoS 1/2 is.
            if delivery.qos == QoS::AtMostOnce {
                fx.stats.dropped.qos0_offline += 1;
            } else {
                self.enqueue(delivery, fx, config, now);
            }
            return;
        };
        if delivery.qos == QoS::AtMostOnce {
            send_publish(link, &delivery, None, false, fx, now);
        } else if self
            .outbound
            .as_ref()
            .is_none_or(|o| o.queue.is_empty() && o.inflight.len() < usize::from(link.window))
        {
            self.start_inflight(delivery, fx, config, now);
        } else {
            self.enqueue(delivery, fx, config, now);
        }
    }

    /// Queues a QoS 1/2 message behind the window, applying the overflow policy to both
    /// limits (count and bytes).
    fn enqueue(
        &mut self,
        mut delivery: Delivery,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) {
        let size = delivery.size();
        let full = |o: &Outbound| {
            o.queue.len() >= config.max_queued_messages
                || o.queued_bytes + size > config.max_queued_bytes
        };
        let client_id = &self.client_id;
        let out = &mut **self.outbound.get_or_insert_default();
        if full(out) && out.queue_expiry.is_some_and(|at| now > at) {
            // Make room from expired messages before dropping live ones.
            let before = out.queue.len();
            let bytes = &mut out.queued_bytes;
            let mut earliest: Option<Instant> = None;
            out.queue.retain(|d| {
                let keep = !d.message.is_expired(now);
                if keep {
                    earliest = earlier(earliest, d.message.expires_at());
                } else {
                    *bytes -= d.size();
                    store_done(client_id, d, fx);
                }
                keep
            });
            out.queue_expiry = earliest;
            fx.stats.dropped.expired += (before - out.queue.len()) as u64;
        }
        if full(out) {
            fx.stats.dropped.queue_full += 1;
            match config.queue_overflow {
                super::QueueOverflow::DropNew => return,
                super::QueueOverflow::DropOldest => {
                    // Each pass removes one message, so this ends.
                    while full(out) {
                        let Some(oldest) = out.queue.pop_front() else {
                            // Nothing can wait (a limit of 0, or one message too large).
                            return;
                        };
                        out.queued_bytes -= oldest.size();
                        store_done(client_id, &oldest, fx);
                    }
                }
            }
        }
        store_delivered(
            self.persisted,
            client_id,
            &mut delivery,
            DeliveryState::Queued,
            fx,
        );
        out.push(delivery);
    }

    /// Appends to the queue (restoring a session).
    pub(crate) fn push_queued(&mut self, delivery: Delivery) {
        self.outbound.get_or_insert_default().push(delivery);
    }

    /// Moves queued messages into the window while it has room.
    pub(crate) fn pump(&mut self, fx: &mut Effects, config: &BrokerConfig, now: Instant) {
        // Each pass removes one queued message, so this ends.
        loop {
            let (Some(link), Some(out)) = (self.link.as_ref(), &mut self.outbound) else {
                return;
            };
            if out.inflight.len() >= usize::from(link.window) {
                return;
            }
            let Some(delivery) = out.queue.pop_front() else {
                return;
            };
            out.queued_bytes -= delivery.size();
            if delivery.message.is_expired(now) {
                fx.stats.dropped.expired += 1;
                store_done(&self.client_id, &delivery, fx);
                continue;
            }
            self.start_inflight(delivery, fx, config, now);
        }
    }

    /// Sends a QoS 1/2 message with a fresh packet id and records it in flight.
    fn start_inflight(
        &mut self,
        mut delivery: Delivery,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) {
        let out = &mut **self.outbound.get_or_insert_default();
        let packet_id = out.allocate_packet_id(&mut self.next_packet_id);
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if !send_publish(link, &delivery, Some(packet_id), false, fx, now) {
            // Too large: behave as if delivered [MQTT-3.1.2-25]; the id was not used.
            self.next_packet_id = packet_id.get();
            store_done(&self.client_id, &delivery, fx);
            return;
        }
        let retry = link.retry;
        store_delivered(
            self.persisted,
            &self.client_id,
            &mut delivery,
            DeliveryState::Sent(packet_id),
            fx,
        );
        let state = if delivery.qos == QoS::AtLeastOnce {
            Awaiting::PubAck
        } else {
            Awaiting::PubRec
        };
        out.push_inflight(Inflight {
            packet_id,
            delivery,
            state,
            sent_at: now,
        });
        if retry {
            out.schedule_retry(self.id, fx, config, now);
        }
    }

    /// Removes the in-flight entry at `pos` (from [`Session::position`]): its message is
    /// done.
    fn complete(&mut self, pos: usize, fx: &mut Effects) {
        // Acks mostly come in order: the front is the cheap case of `remove`.
        let take = |o: &mut Box<Outbound>| match pos {
            0 => o.inflight.pop_front(),
            _ => o.inflight.remove(pos),
        };
        if let Some(done) = self.outbound.as_mut().and_then(take) {
            store_done(&self.client_id, &done.delivery, fx);
        }
    }

    /// PUBACK from the client: the QoS 1 message is done.
    pub(crate) fn handle_puback(
        &mut self,
        packet_id: PacketId,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) {
        if let Some(pos) = self.position(packet_id, |s| s == Awaiting::PubAck) {
            self.complete(pos, fx);
            self.pump(fx, config, now);
        }
    }

    /// PUBREC from the client: answer PUBREL, or drop the message if the client refused
    /// it (5.0 reason code ≥ 0x80). Returns false for an unknown packet id.
    pub(crate) fn handle_pubrec(
        &mut self,
        packet_id: PacketId,
        reason_code: ReasonCode,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) -> bool {
        let Some(pos) = self.position(packet_id, |s| s != Awaiting::PubAck) else {
            return false;
        };
        if reason_code.is_error() {
            self.complete(pos, fx);
            self.pump(fx, config, now);
            return true;
        }
        let Some(entry) = self.outbound.as_mut().and_then(|o| o.inflight.get_mut(pos)) else {
            return false;
        };
        entry.state = Awaiting::PubComp;
        entry.sent_at = now;
        store_state(
            &self.client_id,
            &entry.delivery,
            DeliveryState::Released(packet_id),
            fx,
        );
        if let Some(link) = self.link.as_ref() {
            fx.send(link.conn, pubrel(packet_id));
        }
        true
    }

    /// PUBCOMP from the client: the QoS 2 message is done.
    pub(crate) fn handle_pubcomp(
        &mut self,
        packet_id: PacketId,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) {
        if let Some(pos) = self.position(packet_id, |s| s == Awaiting::PubComp) {
            self.complete(pos, fx);
            self.pump(fx, config, now);
        }
    }

    /// Index of the in-flight entry with `packet_id` in an accepted state. Acks mostly come
    /// in order, so the match is usually at the front.
    fn position(&self, packet_id: PacketId, state: impl Fn(Awaiting) -> bool) -> Option<usize> {
        self.outbound
            .as_ref()?
            .inflight
            .iter()
            .position(|e| e.packet_id == packet_id && state(e.state))
    }

    /// Session resumed on a new connection: resend every unacknowledged message in its
    /// original order, PUBLISH with DUP=1 or PUBREL [MQTT-4.4.0-1], then fill the window.
    pub(crate) fn resume(&mut self, fx: &mut Effects, config: &BrokerConfig, now: Instant) {
        let (Some(link), Some(out)) = (self.link.as_mut(), self.outbound.as_mut()) else {
            // Nothing in flight or queued.
            return;
        };
        let client_id = &self.client_id;
        out.inflight.retain_mut(|entry| {
            entry.sent_at = now;
            let keep = resend(link, entry, fx, now);
            if !keep {
                store_done(client_id, &entry.delivery, fx);
            }
            keep
        });
        out.retry_at = None;
        if link.retry && !out.inflight.is_empty() {
            out.schedule_retry(self.id, fx, config, now);
        }
        self.pump(fx, config, now);
    }

    /// The retry timer fired: resend what has waited a whole interval (3.x).
    pub(crate) fn handle_retry_timer(
        &mut self,
        at: Instant,
        fx: &mut Effects,
        config: &BrokerConfig,
        now: Instant,
    ) {
        let Some(out) = self.outbound.as_mut().filter(|o| o.retry_at == Some(at)) else {
            return; // stale entry
        };
        out.retry_at = None;
        let (Some(link), Some(interval)) = (self.link.as_mut(), config.retry_interval()) else {
            return;
        };
        let client_id = &self.client_id;
        out.inflight.retain_mut(|entry| {
            if entry.sent_at + interval > now {
                return true;
            }
            entry.sent_at = now;
            let keep = resend(link, entry, fx, now);
            if !keep {
                store_done(client_id, &entry.delivery, fx);
            }
            keep
        });
        if let Some(oldest) = out.inflight.iter().map(|e| e.sent_at).min() {
            let at = oldest + interval;
            out.retry_at = Some(at);
            fx.timers.schedule(at, Timer::Retry(self.id));
        }
    }

    /// The distinct shared subscriptions (optionally only `only`) that tag messages this
    /// session could hand to another group member: QoS 1 in flight, or queued (not sent
    /// yet). A QoS 2 message in flight stays: its delivery must be completed with this
    /// member, or not at all [MQTT-4.8.2-4, MQTT-4.8.2-5].
    pub(crate) fn shared_filters_pending(&self, only: Option<&TopicFilter>) -> Vec<TopicFilter> {
        let mut filters: Vec<TopicFilter> = Vec::new();
        let inflight = self
            .inflight()
            .filter(|e| e.state == Awaiting::PubAck)
            .map(|e| &e.delivery);
        for delivery in inflight.chain(self.queued()) {
            if let Some(filter) = &delivery.shared {
                if only.is_none_or(|o| o == filter) && !filters.contains(filter) {
                    filters.push(filter.clone());
                }
            }
        }
        filters
    }

    /// Removes and returns the messages of those shared subscriptions (QoS 1 in flight,
    /// then queued), in order.
    /// Each leaves this session's store entries; the taker persists its own copy.
    pub(crate) fn take_shared(
        &mut self,
        filters: &[TopicFilter],
        fx: &mut Effects,
    ) -> Vec<Delivery> {
        let mut taken = Vec::new();
        let Some(out) = self.outbound.as_mut() else {
            return taken;
        };
        let tagged = |d: &Delivery| d.shared.as_ref().is_some_and(|f| filters.contains(f));
        let client_id = &self.client_id;
        out.inflight.retain(|e| {
            let take = e.state == Awaiting::PubAck && tagged(&e.delivery);
            if take {
                store_done(client_id, &e.delivery, fx);
                taken.push(Delivery {
                    store_id: None,
                    ..e.delivery.clone()
                });
            }
            !take
        });
        let bytes = &mut out.queued_bytes;
        out.queue.retain(|d| {
            let take = tagged(d);
            if take {
                *bytes -= d.size();
                store_done(client_id, d, fx);
                taken.push(Delivery {
                    store_id: None,
                    ..d.clone()
                });
            }
            !take
        });
        taken
    }
}

/// The earlier of two optional instants (`None` is "never").
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_codec::properties::PublishProperties;
    use aviary_codec::TopicName;

    /// An in-flight entry with packet id `id`.
    fn entry(id: u16, now: Instant) -> Inflight {
        let message = Message::restored(
            None,
            TopicName::new("t").unwrap(),
            bytes::Bytes::new(),
            QoS::AtLeastOnce,
            false,
            PublishProperties::default(),
            now,
            None,
        );
        Inflight {
            packet_id: PacketId::new(id).unwrap(),
            delivery: Delivery {
                message: Arc::new(message),
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Vec::new(),
                shared: None,
                store_id: None,
            },
            state: Awaiting::PubAck,
            sent_at: now,
        }
    }

    /// Allocates one id from `next` and puts it in flight.
    fn allocate(out: &mut Outbound, next: &mut u16, now: Instant) -> u16 {
        let id = out.allocate_packet_id(next).get();
        out.push_inflight(entry(id, now));
        id
    }

    /// The fast path (an id above the bound needs no scan) never hands out an id in flight:
    /// ids in flight out of order (a restored session), across the wrap, and after acks
    /// removed the entries that set the bound.
    #[test]
    fn packet_ids_in_flight_are_never_reused() {
        let now = Instant::now();
        let mut out = Outbound::default();
        // Restored out of order: 7 then 3; the next id to try is 2.
        out.push_inflight(entry(7, now));
        out.push_inflight(entry(3, now));
        let mut next = 2;
        let ids: Vec<u16> = (0..6).map(|_| allocate(&mut out, &mut next, now)).collect();
        assert_eq!(ids, [2, 4, 5, 6, 8, 9]);

        // Across the wrap: 65,534 and 65,535 in flight with 1 and 2; 3 and 4 were acked.
        let mut out = Outbound::default();
        let mut next = 65_534;
        for _ in 0..2 {
            allocate(&mut out, &mut next, now);
        }
        out.push_inflight(entry(1, now));
        out.push_inflight(entry(2, now));
        let ids: Vec<u16> = (0..3).map(|_| allocate(&mut out, &mut next, now)).collect();
        assert_eq!(ids, [3, 4, 5]);
        // The high ids are acknowledged: the bound tightens and ids keep coming in order,
        // still skipping the ones in flight.
        out.inflight.retain(|e| e.packet_id.get() < 100);
        out.push_inflight(entry(7, now));
        let ids: Vec<u16> = (0..3).map(|_| allocate(&mut out, &mut next, now)).collect();
        assert_eq!(ids, [6, 8, 9]);
        assert!(out.id_bound < 100, "bound tightened: {}", out.id_bound);
        let mut seen: Vec<u16> = out.inflight.iter().map(|e| e.packet_id.get()).collect();
        let count = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), count, "no id twice in flight");
    }
}
