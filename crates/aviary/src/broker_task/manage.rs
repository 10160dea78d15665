//! The operations side of the broker task: management requests run on the broker
//! ([`BrokerHandle::call`]), the table of connections ([`ConnTable`]: outboxes and what
//! the core does not keep, listener and username), usage attribution, traffic counters
//! for metrics, and the system event topics (`$events/...` on every client event,
//! `$SYS/broker/...` periodically).
//!
//! A management request is a closure sent through the broker task's own inbox with a
//! oneshot for the reply: it runs between two events, with the broker to itself, so it sees
//! a consistent state and needs no lock; what it makes the broker send is routed as usual.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use aviary_codec::properties::PublishProperties;
use aviary_codec::{Packet, QoS, TopicName};
use aviary_core::{Broker, ConnId, Event as BrokerEvent};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::conns::ConnTable;
use super::{now, BrokerTask, Event};
use crate::rates::Rates;
use crate::usage::{Owner, Usage};

/// Seconds between two publications of the `$SYS/broker/...` statistics.
const SYS_INTERVAL_SECS: u64 = 10;

/// Traffic counters that the core does not keep, exported as metrics (copied by a
/// scrape, `crate::metrics::Snapshot`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    /// PUBLISH packets received, by QoS.
    pub(crate) messages_in: [u64; 3],
    /// PUBLISH packets routed to connections, by QoS.
    pub(crate) messages_out: [u64; 3],
    /// Time from reading a PUBLISH to queueing its deliveries.
    pub(crate) latency: crate::metrics::Histogram,
    /// Time from submitting a pass's store operations to seeing them committed.
    pub(crate) store_commit: crate::metrics::Histogram,
    /// Payload bytes received, by QoS.
    pub(crate) bytes_in: [u64; 3],
    /// Payload bytes routed to connections, by QoS.
    pub(crate) bytes_out: [u64; 3],
    /// CONNACKs sent, by reason code (0 = accepted).
    pub(crate) connacks: HashMap<u8, u64>,
    /// QoS 0 messages dropped because an outbox was full.
    pub(crate) dropped_outbox_full: u64,
}

/// Connections whose usage one slice attributes (8-15 µs a slice, timed in the IoT
/// benchmark; up to ~25 µs with cold caches), so that the once-a-second attribution never
/// holds the deliveries of a pass for long. The broker task runs the slices of a round
/// back to back with a yield between them, so a round of 10,000 active clients takes
/// some 4-8 ms.
const ATTRIBUTION_SLICE: usize = 32;

/// A usage attribution round: started by the tick, worked off a slice per turn of the
/// broker task, in between its passes, when no event is waiting. It visits only the
/// connections listed since the last round ([`ConnTable`]): idle connections cost nothing.
#[derive(Debug, Default)]
struct Attribution {
    /// The Unix second the round's units are counted in (the tick's).
    unix: u64,
    /// Connections still to visit.
    pending: Vec<ConnId>,
    /// Units of the visited connections, per listener (added once each at the end).
    per_listener: Vec<(Arc<str>, u64)>,
}

/// The topics of the `$events/...` messages, validated once.
#[derive(Debug)]
struct EventTopics {
    connected: TopicName,
    disconnected: TopicName,
    subscribed: TopicName,
    unsubscribed: TopicName,
}

impl Default for EventTopics {
    fn default() -> Self {
        let topic = |name: &str| {
            TopicName::new(name).unwrap_or_else(|e| unreachable!("constant topic {name}: {e}"))
        };
        Self {
            connected: topic("$events/client_connected"),
            disconnected: topic("$events/client_disconnected"),
            subscribed: topic("$events/session_subscribed"),
            unsubscribed: topic("$events/session_unsubscribed"),
        }
    }
}

impl EventTopics {
    /// The topic `event` is published on.
    fn get(&self, event: &BrokerEvent) -> &TopicName {
        match event {
            BrokerEvent::Connected { .. } => &self.connected,
            BrokerEvent::Disconnected { .. } => &self.disconnected,
            BrokerEvent::Subscribed { .. } => &self.subscribed,
            BrokerEvent::Unsubscribed { .. } => &self.unsubscribed,
        }
    }
}

/// The operations state kept by the broker task.
#[derive(Debug, Default)]
pub(crate) struct Ops {
    /// The connections: outboxes, owners, what attribution saw of them.
    pub(crate) conns: ConnTable,
    /// Usage over time.
    pub(crate) usage: Usage,
    /// Traffic counters.
    pub(crate) counters: Counters,
    /// The core's total units already attributed.
    attributed_total: u64,
    /// The usage attribution in progress, a slice of connections per turn.
    attribution: Attribution,
    /// The topics of `$events/...` messages.
    event_topics: EventTopics,
    /// Unix minute of the last pruning of stale usage series.
    last_prune_minute: u64,
    /// Unix second of the last `$SYS` publication.
    last_sys: u64,
    /// Which ticks hand freed memory back (`crate::memory`).
    release_gate: crate::memory::ReleaseGate,
    /// Outgoing QoS 1/2 messages queued at connected sessions (the sum of the connections'
    /// values as attribution last saw them).
    pub(crate) queued: usize,
    /// Outgoing QoS 1/2 messages in flight at connected sessions (likewise).
    pub(crate) inflight: usize,
    /// Store batches submitted and not yet seen committed, with when (bounded by the
    /// writer's own queue).
    uncommitted: std::collections::VecDeque<(u64, Instant)>,
    /// When the packets being handled were read (deliveries are measured from it).
    pub(super) read_at: Option<Instant>,
    /// The plan's rates (none in unit tests of the task).
    pub(crate) rates: Option<Arc<Rates>>,
    /// The core's total units already charged to the message rate.
    charged_units: u64,
    /// The counters kept outside the task, for `$SYS` (none in unit tests of the task).
    pub(crate) metrics: Option<crate::metrics::Metrics>,
    /// When the broker started (for `$SYS/broker/uptime`; set at the first tick in unit
    /// tests of the task).
    started: Option<Instant>,
}

impl Ops {
    /// Operations state that reads the wire bytes of `metrics` and admits CONNECTs by
    /// `rates`.
    pub(crate) fn new(metrics: crate::metrics::Metrics, rates: Arc<Rates>) -> Self {
        Self {
            metrics: Some(metrics),
            rates: Some(rates),
            started: Some(super::now()),
            ..Self::default()
        }
    }

    /// Store batch `seq` was submitted now.
    pub(super) fn submitted(&mut self, seq: u64) {
        self.uncommitted.push_back((seq, super::now()));
    }

    /// Every batch up to `seq` is committed: their commit latencies are recorded.
    pub(super) fn committed(&mut self, seq: u64) {
        // Called after every pass: the clock is read only when a batch did commit.
        if self
            .uncommitted
            .front()
            .is_none_or(|&(batch, _)| batch > seq)
        {
            return;
        }
        let now = super::now();
        while let Some(&(batch, at)) = self.uncommitted.front() {
            if batch > seq {
                break;
            }
            self.uncommitted.pop_front();
            self.counters
                .store_commit
                .observe(now.saturating_duration_since(at));
        }
    }

    /// Charges the units the core metered since the last charge to the plan's message
    /// rate, net of the `provisional` tokens the reader already took for them
    /// ([`crate::rates`]).
    pub(super) fn charge_units(&mut self, units_now: u64, provisional: u64) {
        let delta = units_now.saturating_sub(self.charged_units);
        self.charged_units = units_now;
        if let Some(rates) = &self.rates {
            rates.charge(delta as f64 - provisional as f64);
        }
    }

    /// Whether a CONNECT is within the connect rates (always without rates).
    pub(super) fn admit_connect(&self, connect: &aviary_codec::Connect) -> bool {
        self.rates
            .as_ref()
            .is_none_or(|r| r.admit_connect(connect.will.is_some()))
    }

    /// A packet from `conn`, before the broker sees it.
    #[inline]
    pub(super) fn inbound(&mut self, conn: ConnId, packet: &Packet) {
        match packet {
            Packet::Connect(connect) => {
                self.conns.set_username(conn, connect.username.as_deref());
            }
            Packet::Publish(p) => {
                let q = p.qos as usize;
                self.counters.messages_in[q] += 1;
                self.counters.bytes_in[q] += p.payload.len() as u64;
            }
            _ => {}
        }
    }

    /// A packet routed to a connection. `routed_at` is when the broker produced it, read
    /// from the clock at most once per drain of its output (a message fanned out to a
    /// thousand subscribers is one clock read, not a thousand).
    pub(super) fn outbound(&mut self, packet: &Packet, routed_at: &mut Option<Instant>) {
        match packet {
            Packet::Publish(p) => {
                let q = p.qos as usize;
                self.counters.messages_out[q] += 1;
                self.counters.bytes_out[q] += p.payload.len() as u64;
                if let Some(read_at) = self.read_at {
                    let now = *routed_at.get_or_insert_with(super::now);
                    self.counters
                        .latency
                        .observe(now.saturating_duration_since(read_at));
                }
            }
            Packet::ConnAck(c) => {
                *self.counters.connacks.entry(c.reason_code.0).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// What a management request sees while it runs on the broker task.
pub(crate) struct ManageCtx<'a> {
    /// The broker, to itself.
    pub(crate) broker: &'a mut Broker,
    /// The operations state.
    pub(crate) ops: &'a mut Ops,
    /// The broker task's clock.
    pub(crate) now: Instant,
}

/// A management request: a closure run on the broker task.
pub(crate) struct ManageCall(Box<dyn FnOnce(&mut ManageCtx<'_>) + Send>);

impl std::fmt::Debug for ManageCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManageCall")
    }
}

/// The broker task stopped (shutdown): management requests get no answer.
#[derive(Debug, thiserror::Error)]
#[error("the broker is shutting down")]
pub(crate) struct BrokerGone;

/// Sends management requests to the broker task.
#[derive(Clone, Debug)]
pub(crate) struct BrokerHandle {
    /// The broker task's inbox.
    pub(crate) events: mpsc::Sender<Event>,
}

impl BrokerHandle {
    /// Runs `f` on the broker task and returns its result.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ManageCtx<'_>) -> R + Send + 'static,
    ) -> Result<R, BrokerGone> {
        let (reply, result) = oneshot::channel();
        let call = ManageCall(Box::new(move |ctx| {
            // The requester may have gone away (HTTP client closed); nothing to do then.
            let _ = reply.send(f(ctx));
        }));
        self.events
            .send(Event::Manage(call))
            .await
            .map_err(|_| BrokerGone)?;
        result.await.map_err(|_| BrokerGone)
    }
}

/// Unix seconds now (usage minutes are wall-clock minutes).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BrokerTask {
    /// Runs a management request; its output is routed by the caller.
    pub(super) fn manage(&mut self, call: ManageCall, now: Instant) {
        let mut ctx = ManageCtx {
            broker: &mut self.broker,
            ops: &mut self.ops,
            now,
        };
        (call.0)(&mut ctx);
    }

    /// Once per [`super::TICK`]: attributes usage, forgets closed connections, publishes
    /// `$SYS` statistics when due and hands freed memory back to the operating system
    /// after a quiet second (`crate::memory::ReleaseGate`). Metrics are not refreshed
    /// here: a scrape copies the counters (`crate::metrics::Snapshot`).
    pub(super) fn tick(&mut self) {
        let unix = unix_now();
        self.drain_broker_events();
        self.start_attribution(unix);
        self.charge_rates(0);
        let ops = &mut self.ops;
        // The ends of the connections closed since the last tick were drained above.
        let (queued, inflight) = ops.conns.sweep();
        ops.queued = ops.queued.saturating_sub(queued);
        ops.inflight = ops.inflight.saturating_sub(inflight);
        if unix / 60 != ops.last_prune_minute {
            ops.last_prune_minute = unix / 60;
            ops.usage.prune(unix);
        }
        if unix >= ops.last_sys + SYS_INTERVAL_SECS {
            ops.last_sys = unix;
            self.publish_sys();
        }
        // Connections the task reads itself that have been quiet for long park.
        let lost = self
            .direct
            .as_mut()
            .map(|d| d.sweep(now()))
            .unwrap_or_default();
        for conn in lost {
            if self.ops.conns.close(conn) {
                self.broker.handle_closed(conn, now());
            }
        }
        self.route_transmits();
        if self.ops.release_gate.at_tick(self.broker.stats().units) {
            crate::memory::release();
        }
    }

    /// Charges the units metered since the last charge to the plan's message rate (a
    /// no-op while it is unlimited); `provisional`: the tokens readers already took.
    pub(super) fn charge_rates(&mut self, provisional: u64) {
        if self
            .ops
            .rates
            .as_ref()
            .is_some_and(|r| r.messages_limited())
        {
            let units = self.broker.stats().units;
            self.ops.charge_units(units, provisional);
        }
    }

    /// Starts attributing the units counted since the last tick: the core's total delta
    /// to the total at once, each listed client's delta (see [`ConnTable`]) to its
    /// listener, user and client id a slice at a time ([`BrokerTask::attribute_slice`]).
    /// All at once, with 10,000 active clients (several hash lookups each, most of them
    /// cache misses), the pass stalled every delivery for milliseconds once a second.
    pub(super) fn start_attribution(&mut self, unix: u64) {
        // A round not finished within a tick (the task was not polled) ends first.
        while self.attribute_slice() {}
        let total = self.broker.stats().units;
        let ops = &mut self.ops;
        ops.usage
            .add_total(unix, total.saturating_sub(ops.attributed_total));
        ops.attributed_total = total;
        let round = &mut ops.attribution;
        round.unix = unix;
        // The finished round's list (empty) takes the listed connections' place, keeping
        // its allocation unless a burst made it large.
        std::mem::swap(&mut round.pending, &mut ops.conns.listed);
        if ops.conns.listed.capacity() > 4 * round.pending.len() + 1024 {
            ops.conns.listed = Vec::new();
        }
    }

    /// Whether an attribution round has connections left to visit.
    pub(super) fn attribution_pending(&self) -> bool {
        !self.ops.attribution.pending.is_empty()
    }

    /// Attributes the deltas of up to [`ATTRIBUTION_SLICE`] connections of the round in
    /// progress and updates the queue gauges by their changes; at its end, the
    /// per-listener sums. Returns whether connections are left.
    pub(super) fn attribute_slice(&mut self) -> bool {
        let ops = &mut self.ops;
        let round = &mut ops.attribution;
        if round.pending.is_empty() {
            return false;
        }
        let from = round.pending.len().saturating_sub(ATTRIBUTION_SLICE);
        for conn in round.pending.drain(from..) {
            // Swept since it was listed: its units were attributed when it ended.
            let Some(entry) = ops.conns.map.get_mut(&conn) else {
                continue;
            };
            entry.listed = false;
            let client = self.broker.client_counter(conn);
            // Its share of the gauges, replaced by what the core has now.
            let (queued, inflight) = client.map_or((0, 0), |c| {
                (
                    u32::try_from(c.queued).unwrap_or(u32::MAX),
                    u16::try_from(c.inflight).unwrap_or(u16::MAX),
                )
            });
            ops.queued = (ops.queued + queued as usize).saturating_sub(entry.queued as usize);
            ops.inflight =
                (ops.inflight + usize::from(inflight)).saturating_sub(usize::from(entry.inflight));
            entry.queued = queued;
            entry.inflight = inflight;
            // Not connected (yet, or any more: the units of its end come with the core's
            // event).
            let Some(client) = client else {
                continue;
            };
            if queued > 0 || inflight > 0 {
                // Its queue may grow without a packet to it (a full window): visited
                // again in the next round until it has nothing waiting.
                entry.listed = true;
                ops.conns.listed.push(conn);
            }
            let delta = client.units.saturating_sub(entry.attributed);
            entry.attributed = client.units;
            if delta == 0 {
                continue; // nothing to attribute, no lookup
            }
            let owner = entry.owner();
            ops.usage.add_user_and_client(
                round.unix,
                owner.username.as_deref(),
                client.client_id,
                delta,
                || Arc::clone(client.client_id),
            );
            // Summed per listener (a handful), added once each at the end.
            match round
                .per_listener
                .iter_mut()
                .find(|(l, _)| Arc::ptr_eq(l, &owner.listener) || **l == *owner.listener)
            {
                Some((_, units)) => *units += delta,
                None => round
                    .per_listener
                    .push((Arc::clone(&owner.listener), delta)),
            }
        }
        if !round.pending.is_empty() {
            return true;
        }
        for (listener, units) in round.per_listener.drain(..) {
            ops.usage.add_listener(round.unix, &listener, units);
        }
        false
    }

    /// Drains the core's events: usage of ended connections, `$events/...` topics. An
    /// event's JSON is built only when a subscription matches its topic: with nobody
    /// subscribed to `$events`, a connect and disconnect cost two JSON documents less
    /// (a third of the broker's instructions per connection in the connection-rate
    /// benchmark).
    pub(super) fn drain_broker_events(&mut self) {
        let mut published = false;
        while let Some(event) = self.broker.poll_event() {
            if let BrokerEvent::Disconnected {
                conn,
                client_id,
                units,
                ..
            } = &event
            {
                self.attribute_end(*conn, client_id, *units);
            }
            let topic = self.ops.event_topics.get(&event);
            if !self.broker.has_subscribers(topic) {
                continue;
            }
            let topic = topic.clone();
            let mut payload = self.event_payload(&event);
            // When it happened, milliseconds since the Unix epoch.
            payload["timestamp"] = serde_json::json!(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()));
            self.publish_system_on(topic, payload.to_string());
            published = true;
        }
        if published {
            self.route_transmits();
        }
    }

    /// Attributes the last units of an ended connection, and takes its share of the
    /// queue gauges away.
    fn attribute_end(&mut self, conn: ConnId, client_id: &Arc<str>, units: u64) {
        let ops = &mut self.ops;
        let Some(entry) = ops.conns.map.get_mut(&conn) else {
            return;
        };
        let delta = units.saturating_sub(entry.attributed);
        entry.attributed = units;
        ops.queued = ops.queued.saturating_sub(entry.queued as usize);
        ops.inflight = ops.inflight.saturating_sub(usize::from(entry.inflight));
        entry.queued = 0;
        entry.inflight = 0;
        let owner = entry.owner();
        let owner = Owner {
            listener: &owner.listener,
            user: owner.username.as_deref(),
            client: client_id,
        };
        ops.usage.add(unix_now(), owner, delta);
    }

    /// The JSON of a `$events/...` message (without its timestamp).
    fn event_payload(&self, event: &BrokerEvent) -> serde_json::Value {
        match event {
            BrokerEvent::Connected {
                conn,
                client_id,
                protocol,
                clean_start,
                session_present,
            } => {
                let entry = self.ops.conns.get(*conn);
                serde_json::json!({
                    "client_id": &**client_id,
                    "username": entry.and_then(|e| e.username()),
                    "listener": entry.map(|e| &**e.listener()),
                    "peer": self.broker.connection_peer(*conn).map(|p| p.to_string()),
                    "protocol": crate::api::protocol_name(*protocol),
                    "clean_start": clean_start,
                    "session_present": session_present,
                })
            }
            BrokerEvent::Disconnected {
                client_id, reason, ..
            } => serde_json::json!({
                "client_id": &**client_id,
                "reason": format!("{reason:?}"),
            }),
            BrokerEvent::Subscribed {
                client_id,
                filter,
                qos,
                ..
            } => serde_json::json!({
                "client_id": &**client_id,
                "filter": filter.as_str(),
                "qos": *qos as u8,
            }),
            BrokerEvent::Unsubscribed {
                client_id, filter, ..
            } => serde_json::json!({
                "client_id": &**client_id,
                "filter": filter.as_str(),
            }),
        }
    }

    /// Publishes the `$SYS/broker/...` statistics (QoS 0, not retained), named as
    /// Mosquitto names its own where there is an equivalent.
    fn publish_sys(&mut self) {
        let stats = self.broker.stats();
        let started = *self.ops.started.get_or_insert_with(super::now);
        let uptime = super::now().saturating_duration_since(started).as_secs();
        self.publish_system("$SYS/broker/uptime", format!("{uptime} seconds"));
        if let Some(metrics) = &self.ops.metrics {
            let (received, sent) = metrics.wire().totals();
            self.publish_system("$SYS/broker/bytes/received", received.to_string());
            self.publish_system("$SYS/broker/bytes/sent", sent.to_string());
        }
        let values = [
            ("$SYS/broker/clients/connected", stats.connections as u64),
            (
                "$SYS/broker/clients/disconnected",
                stats.sessions.saturating_sub(stats.connections) as u64,
            ),
            ("$SYS/broker/sessions", stats.sessions as u64),
            (
                "$SYS/broker/subscriptions/count",
                stats.subscriptions as u64,
            ),
            ("$SYS/broker/retained messages/count", stats.retained as u64),
            ("$SYS/broker/messages/received", stats.messages_in),
            ("$SYS/broker/messages/sent", stats.messages_out),
            ("$SYS/broker/usage/units", stats.units),
        ];
        for (topic, value) in values {
            self.publish_system(topic, value.to_string());
        }
        self.publish_system("$SYS/broker/version", env!("CARGO_PKG_VERSION").to_owned());
    }

    /// Publishes one system message at QoS 0, not retained.
    fn publish_system(&mut self, topic: &str, payload: String) {
        // The topics above are constants that are valid topic names.
        let Ok(topic) = TopicName::new(topic) else {
            return;
        };
        self.publish_system_on(topic, payload);
    }

    /// Publishes a system message (QoS 0, not retained) on `topic`.
    fn publish_system_on(&mut self, topic: TopicName, payload: String) {
        self.broker.publish(
            topic,
            Bytes::from(payload),
            QoS::AtMostOnce,
            false,
            PublishProperties::default(),
            now(),
        );
    }
}
