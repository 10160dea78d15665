//! The broker task: the single owner of the sans-IO [`Broker`]. It receives events from
//! every connection through one bounded channel, feeds them to the broker, fires its
//! timers, and routes what the broker transmits to each connection's [`OutboxSender`].
//!
//! One owner, fed by a channel, rather than a shared lock: every broker operation touches
//! sessions, subscriptions and other connections at once, and a single task processes a
//! whole batch of events without any synchronisation.
//!
//! With a store, each pass (a batch of events, or the timers) ends by handing the
//! broker's store operations to the [`StoreWriter`] as one batch; the pass's transmits
//! wait in a [`CommitGate`] until the writer reports that batch committed (in the
//! default `immediate` durability), so an acknowledgement never leaves before the message
//! it acknowledges is on disk. Later passes queue behind, in order. The broker itself
//! keeps running meanwhile, so many passes share one commit (group commit).

mod conns;
mod inbox;
mod manage;
mod reads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aviary_codec::{Connect, DecodeError, Packet, QoS, ReasonCode};
use aviary_core::authz::Authentication;
use aviary_core::{Broker, ConnId, Transmit};
use bytes::BytesMut;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::batch::Batch;
use crate::metrics::WireBytes;
use crate::outbox::{Delivery, Full, OutboxSender, Pushed};
use crate::outgoing::{Outgoing, WRITE_CHUNK};
use crate::store::{convert_ops, Clock, CommitGate, StoreWriter};
use crate::wake_gate::Gated;
use inbox::FairInbox;

/// Rounds of "deliver, which closed a stuck connection, whose end produced more output"
/// run at the end of one pass; anything beyond waits for the next pass.
const MAX_REENTRY: usize = 8;

pub(crate) use manage::{BrokerGone, BrokerHandle, Counters, ManageCall, ManageCtx, Ops};

/// How often usage is attributed, metrics are refreshed and `$SYS` topics are considered.
const TICK: Duration = Duration::from_secs(1);

/// Events processed in one pass before the broker's output is routed and its timers are
/// checked again, so a flood of events cannot starve them.
const MAX_EVENTS_PER_PASS: usize = 256;

/// Transmits one pass collects (for its commit) before it ends early, so that a burst of
/// fan-out (256 messages to 1,000 subscribers each would be 256,000 transmits, some 25 MiB
/// even in their compact form) does not set the broker's memory. Checked between packets, so one packet's own output
/// (a message to more subscribers than this) may exceed it.
const MAX_TRANSMITS_PER_PASS: usize = 16 * 1024;

/// Events taken from the channel ahead of their turn (see [`FairInbox`]): as many as the
/// channel holds, so a connection's events never wait in the channel behind a flood.
const INBOX_CAPACITY: usize = 4096;

/// What connections (and the server, for shutdown) tell the broker task.
#[derive(Debug)]
pub(crate) enum Event {
    /// A connection was accepted; `outbox` is where its packets go.
    Open {
        conn: ConnId,
        peer: SocketAddr,
        outbox: OutboxSender,
        /// The name of the listener that accepted it.
        listener: Arc<str>,
    },
    /// Packets decoded from one read, in order.
    Packets {
        conn: ConnId,
        packets: Batch<Packet>,
        /// When they were decoded, for the publish-to-deliver latency.
        read_at: Instant,
    },
    /// A CONNECT with the outcome of its authentication (listeners with authentication);
    /// the connection task took its connect-rate tokens before authenticating.
    Connect {
        conn: ConnId,
        connect: Box<Connect>,
        outcome: Authentication,
    },
    /// A CONNECT over the plan's connect rate, refused (CONNACK 0x9F) before any
    /// authentication was attempted: a flood of CONNECTs costs no argon2 or HTTP call.
    ConnectOverRate { conn: ConnId, connect: Box<Connect> },
    /// The credentials of the connection were withdrawn (its certificate revoked): the
    /// broker disconnects it (5.0: DISCONNECT 0x87).
    Revoke { conn: ConnId },
    /// Bytes that could not be decoded; the connection reads no further.
    DecodeError { conn: ConnId, error: DecodeError },
    /// The transport is gone (end of stream, I/O error).
    Closed { conn: ConnId },
    /// A management request, run on the broker (see [`BrokerHandle`]).
    Manage(ManageCall),
    /// A connection's task ends and hands its socket to the broker task, which reads it
    /// itself from now on (`crate::direct_reads`).
    HandOver(Box<crate::direct_reads::Handover>),
    /// Graceful shutdown: disconnect everybody and stop. Sent after the listener stopped,
    /// so no `Open` follows it.
    Shutdown,
}

/// The broker and the routes to its connections.
pub(crate) struct BrokerTask {
    /// The protocol logic.
    broker: Broker,
    /// Inbox of [`Event`]s.
    events: mpsc::Receiver<Event>,
    /// Events taken from `events`, served round robin by connection.
    inbox: FairInbox,
    /// The store, when the broker persists (the server always gives one; unit tests of
    /// the routing may not).
    store: Option<StoreLink>,
    /// `deliver` closed a stuck connection: the broker has new output to route.
    reentered: bool,
    /// The operations side: the connections (their outboxes, whose they are, what usage
    /// saw of them), usage, counters, events, metrics.
    ops: Ops,
    /// Connections whose outboxes got packets with their writers left asleep: flushed
    /// when the task runs out of events (see [`BrokerTask::flush_if_idle`]).
    listed: Vec<ConnId>,
    /// The wire byte counters, for what the task writes itself.
    wire: Arc<WireBytes>,
    /// Passes ended since the listed outboxes were last flushed.
    unflushed_passes: u32,
    /// What the task writes itself is encoded here, one buffer for every flush rather
    /// than an allocation per write.
    scratch: BytesMut,
    /// The connections the task reads itself (`crate::direct_reads`), on a runtime of one
    /// worker thread.
    direct: Option<crate::direct_reads::DirectReads>,
}

/// Passes after which listed outboxes are flushed even while events keep coming.
const MAX_UNFLUSHED_PASSES: u32 = 64;

/// Listed outboxes the task writes itself in one flush; beyond, their writers are woken
/// (a fan-out to a thousand subscribers): a fan-out of QoS 0 messages cost 20 % more CPU
/// per message when every listed outbox was written here (0.34 against 0.27-0.29 µs,
/// one core). One or two is the usual flush of a steady flow: a delivery and an
/// acknowledgement. (Outboxes are listed only on a runtime of one worker thread: see
/// `ConnectionContext::direct_writes`.)
const WRITES_HERE_PER_FLUSH: usize = 8;

/// The broker task's side of the store.
struct StoreLink {
    /// Takes each pass's operations.
    writer: StoreWriter,
    /// Wakes the task on every commit.
    progress: tokio::sync::watch::Receiver<crate::store::Progress>,
    /// Transmits waiting for their pass's commit, each with the read time of the packets
    /// that caused it (for the publish-to-deliver latency, which then includes the wait).
    gate: CommitGate<(Routed, Option<Instant>)>,
    /// Transmits of the pass in progress, likewise stamped.
    pending: Vec<(Routed, Option<Instant>)>,
}

/// A [`Transmit`] as the broker task holds it until its pass ends: the packet already in
/// the compact form it waits in in the outbox (a pass holds up to
/// [`MAX_TRANSMITS_PER_PASS`] of these, and each is moved a few times on its way).
#[derive(Debug)]
enum Routed {
    /// Queue `item` for `conn`.
    Packet { conn: ConnId, item: Outgoing },
    /// Close `conn` after what was queued.
    Close { conn: ConnId },
}

/// The current instant from tokio's clock, so `tokio::time::pause()` drives the broker's
/// timers in tests.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl BrokerTask {
    #[cfg(test)]
    pub(crate) fn new(broker: Broker, events: mpsc::Receiver<Event>) -> Self {
        Self::with_ops(broker, events, Ops::default())
    }

    pub(crate) fn with_ops(broker: Broker, events: mpsc::Receiver<Event>, ops: Ops) -> Self {
        let wire = ops.metrics.as_ref().map(|m| m.wire()).unwrap_or_default();
        Self {
            broker,
            events,
            inbox: FairInbox::new(INBOX_CAPACITY),
            store: None,
            reentered: false,
            ops,
            listed: Vec::new(),
            wire,
            unflushed_passes: 0,
            scratch: BytesMut::new(),
            direct: None,
        }
    }

    /// Reads the connections handed to it itself (`crate::direct_reads`).
    pub(crate) fn with_direct_reads(mut self, direct: crate::direct_reads::DirectReads) -> Self {
        self.direct = Some(direct);
        self
    }

    /// Persists through `writer`: transmits wait for the commits of their passes.
    pub(crate) fn with_store(mut self, writer: StoreWriter) -> Self {
        self.store = Some(StoreLink {
            progress: writer.watch(),
            writer,
            gate: CommitGate::default(),
            pending: Vec::new(),
        });
        self
    }

    /// Runs until [`Event::Shutdown`] (or until every sender is gone). Fails only when the
    /// store does: the broker then stops rather than acknowledge what it cannot keep.
    pub(crate) async fn run(mut self) -> anyhow::Result<()> {
        // Gated (`crate::wake_gate`): each is polled only when it fired or was reset, not
        // every time the task runs out of events.
        let mut timer = Gated::new(Box::pin(tokio::time::sleep(std::time::Duration::ZERO)));
        // The tick, first at once, then a whole TICK after the previous one ran (a late
        // tick delays the next rather than bunching them).
        let mut tick = Gated::new(Box::pin(tokio::time::sleep(std::time::Duration::ZERO)));
        loop {
            let deadline = self.broker.poll_timeout();
            if let Some(deadline) = deadline {
                let deadline = tokio::time::Instant::from_std(deadline);
                if timer.inner().deadline() != deadline {
                    timer.inner_mut().as_mut().reset(deadline);
                }
            }
            let holding = self.store.as_ref().is_some_and(|s| s.gate.is_holding());
            let mut stop = false;
            let mut handled = false;
            let backlog = !self.inbox.is_empty();
            let attributing = self.attribution_pending();
            // Biased, events first: when they are waiting (the busy case, every pass) they
            // are handled without polling each timer, and the timers are compared with the
            // clock after the pass instead, so a steady flow of events cannot starve them.
            // The timer branches only wake an idle task; commits are read by `end_pass`.
            // A pass serves the connections the task reads itself and the events alike
            // (whichever woke the task, the other is looked at without waiting), so that
            // neither starves the other.
            let direct = &mut self.direct;
            tokio::select! {
                biased;
                () = std::future::ready(()), if backlog => {
                    stop = self.handle_batch() == Flow::Stop;
                    self.serve_direct_if_woken();
                    handled = true;
                }
                event = self.events.recv(), if !backlog && !self.inbox.closed() => {
                    match event {
                        Some(event) => {
                            self.inbox.push(event);
                            stop = self.handle_batch() == Flow::Stop;
                            self.serve_direct_if_woken();
                            handled = true;
                        }
                        None => stop = true,
                    }
                }
                () = std::future::poll_fn(|cx| match direct.as_mut() {
                    Some(direct) => direct.poll_woken(cx),
                    None => std::task::Poll::Pending,
                }) => {
                    self.serve_direct();
                    if !self.events.is_empty() || !self.inbox.is_empty() {
                        stop = self.handle_batch() == Flow::Stop;
                    }
                    handled = true;
                }
                () = &mut timer, if deadline.is_some() => {}
                changed = wait_commit(&mut self.store), if holding => {
                    if changed.is_err() {
                        return self.fail().await;
                    }
                }
                () = &mut tick => {}
                // Last: a slice of usage attribution runs when nothing else is ready.
                () = std::future::ready(()), if attributing => {}
            }
            let mut now = now();
            let slice_due = self.attribution_pending();
            if handled && (slice_due || tick.inner().deadline().into_std() <= now) {
                // The packets of this pass go out first: the connections' tasks woken for
                // them run before this task is polled again. Run in this poll, a slice
                // (tens of µs with 32 active clients) delayed every delivery of the pass
                // that came due with it; the tick's work likewise.
                if self.end_pass().await.is_err() {
                    return self.fail().await;
                }
                self.flush_listed();
                tokio::task::yield_now().await;
                now = self::now();
            }
            // Usage attribution, a slice per turn (see `attribute_slice`); checked before
            // the tick, so that a round the tick starts begins in the next pass, not in
            // the same one.
            if slice_due {
                self.attribute_slice();
            }
            if tick.inner().deadline().into_std() <= now {
                self.tick();
                tick.inner_mut()
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(now + TICK));
            }
            // Timers may have come due while events were handled.
            if self.broker.poll_timeout().is_some_and(|due| due <= now) {
                self.broker.handle_timeout(now);
                self.route_transmits();
            }
            self.drain_broker_events();
            if self.end_pass().await.is_err() {
                return self.fail().await;
            }
            if stop {
                break;
            }
            self.flush_if_idle();
            if slice_due {
                self.flush_listed();
                // Slices run back to back, each after a yield: tokio polls the sockets
                // (and runs the connections they wake) before this task runs again, so a
                // message that arrives during a round waits for one slice at most. A pause
                // on a timer instead (1 ms, tokio's finest) put a 1-2 ms timeout on every
                // epoll wait for a quarter of each second, and three in four of those
                // wake-ups took ~6 µs longer to return from the wait (IoT, 10,000 clients:
                // 27 % of the broker's wake-ups; measured in a VM, where arming and
                // cancelling the earliest timer is likely what costs).
                tokio::task::yield_now().await;
            }
        }
        self.shutdown().await
    }

    /// Writes (or wakes the writers of) the listed outboxes once the task has nothing
    /// more to handle at once, or after [`MAX_UNFLUSHED_PASSES`]: under load, a
    /// connection's packets of several passes then go out in one write, as they did when
    /// its writer ran only once this task gave the thread up; a lone message goes out at
    /// the end of its pass.
    fn flush_if_idle(&mut self) {
        if self.listed.is_empty() {
            return;
        }
        self.unflushed_passes += 1;
        let idle = self.inbox.is_empty() && self.events.is_empty() && !self.direct_woken();
        if idle || self.unflushed_passes >= MAX_UNFLUSHED_PASSES {
            self.flush_listed();
        }
    }

    /// Writes (or wakes the writers of) the listed outboxes, the last listed first: a
    /// publisher's acknowledgement is routed before the deliveries its message caused
    /// (`Effects::send_at`), and they go out first, as when tokio ran the writers it was
    /// woken for, last woken first.
    fn flush_listed(&mut self) {
        self.unflushed_passes = 0;
        let write_here = self.listed.len() <= WRITES_HERE_PER_FLUSH;
        for conn in self.listed.drain(..).rev() {
            if let Some(outbox) = self.ops.conns.outbox(conn) {
                outbox.flush(write_here, &self.wire, &mut self.scratch);
            }
        }
        // Kept for the next flush unless a large write made it large.
        if self.scratch.capacity() > 2 * WRITE_CHUNK {
            self.scratch = BytesMut::new();
        }
    }

    /// Ends a pass: submits its store operations, then routes what may go out (this pass's
    /// transmits if nothing waits, and those of every committed pass). Outboxes listed on
    /// the way are flushed by [`BrokerTask::flush_if_idle`].
    async fn end_pass(&mut self) -> Result<(), crate::store::WriterGone> {
        for _ in 0..MAX_REENTRY {
            self.reentered = false;
            self.route_transmits();
            let Some(store) = self.store.as_mut() else {
                return Ok(());
            };
            let mut core_ops = Vec::new();
            self.broker.drain_store_ops(&mut core_ops);
            let batch = if core_ops.is_empty() {
                None
            } else {
                let mut ops = Vec::with_capacity(core_ops.len());
                convert_ops(core_ops, &Clock::new(now()), &mut ops);
                let seq = store.writer.submit(ops).await?;
                self.ops.submitted(seq);
                Some(seq)
            };
            // Both modes wait for the commit (`relaxed` only skips its fsync): acknowledging
            // at once let publishers run ahead of the writer by its whole channel, and of
            // their subscribers, whose in-flight windows open far less often than
            // publishers are acknowledged.
            let pass = std::mem::take(&mut store.pending);
            let mut ready = store.gate.pass(batch, pass, |(t, _)| commit_class(t));
            let progress = *store.progress.borrow_and_update();
            if progress.failed {
                return Err(crate::store::WriterGone);
            }
            self.ops.committed(progress.committed);
            store
                .gate
                .release(progress.committed, &mut ready, |(t, _)| transmit_conn(t).0);
            for (transmit, read_at) in ready.drain(..) {
                let current = std::mem::replace(&mut self.ops.read_at, read_at);
                self.send(transmit);
                self.ops.read_at = current;
            }
            // The next pass reuses the allocation (usually this pass's own `pending`),
            // unless one large event made it larger than a pass needs.
            if let Some(store) = self.store.as_mut() {
                if store.pending.capacity() == 0 && ready.capacity() <= MAX_TRANSMITS_PER_PASS {
                    store.pending = ready;
                }
            }
            if !self.reentered {
                break;
            }
        }
        Ok(())
    }

    /// The store failed: stop, never sending what waited for it. Returns the store's error.
    async fn fail(mut self) -> anyhow::Result<()> {
        self.ops.conns.clear();
        if let Some(direct) = self.direct.as_mut() {
            direct.hand_back_all();
        }
        let Some(store) = self.store.take() else {
            anyhow::bail!("the store writer stopped");
        };
        store.writer.close().await.context("the store failed")?;
        anyhow::bail!("the store writer stopped")
    }

    /// Takes what waits in the channel into the inbox and handles up to a bound of events,
    /// round robin by connection.
    fn handle_batch(&mut self) -> Flow {
        self.inbox.fill(&mut self.events);
        for _ in 0..MAX_EVENTS_PER_PASS {
            if self.pass_is_full() {
                break; // the rest waits for the next pass (see the bound's comment)
            }
            let Some(event) = self.inbox.next() else {
                break;
            };
            if self.handle(event) == Flow::Stop {
                return Flow::Stop;
            }
        }
        if self.inbox.stopping() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Whether the pass holds [`MAX_TRANSMITS_PER_PASS`] transmits: no more events (and no
    /// more packets of the event in hand) are handled before they are routed.
    fn pass_is_full(&self) -> bool {
        self.store
            .as_ref()
            .is_some_and(|s| s.pending.len() >= MAX_TRANSMITS_PER_PASS)
    }

    /// Feeds one event to the broker and routes its output.
    fn handle(&mut self, event: Event) -> Flow {
        let now = now();
        match event {
            Event::Open {
                conn,
                peer,
                outbox,
                listener,
            } => {
                self.ops.conns.open(conn, outbox, listener);
                self.broker.handle_open(conn, peer, now);
            }
            Event::Packets {
                conn,
                packets,
                read_at,
            } => {
                // Deliveries routed while these packets are handled are measured from here.
                self.ops.read_at = Some(read_at);
                // The reader took one provisional rate token per PUBLISH (crate::rates);
                // those of the packets handled here are settled below.
                let mut provisional = 0;
                let mut packets = packets.into_iter();
                let mut first = true;
                while let Some(packet) = packets.next() {
                    // The broker may close the connection on any packet; what follows
                    // it on the wire is then ignored. Listed for usage attribution: the
                    // packet may count units or free its in-flight window.
                    if self.ops.conns.touch(conn).is_none() {
                        break;
                    }
                    if !first && self.pass_is_full() {
                        // A read of many PUBLISHes to many subscribers: the rest waits for
                        // the next pass, ahead of this connection's later events, so that
                        // one read cannot fill the broker's memory with transmits.
                        let mut rest = Vec::with_capacity(packets.len() + 1);
                        rest.push(packet);
                        rest.extend(packets);
                        self.inbox.push_front(Event::Packets {
                            conn,
                            packets: rest.into(),
                            read_at,
                        });
                        break;
                    }
                    first = false;
                    if matches!(packet, Packet::Publish(_)) {
                        provisional += crate::rates::PROVISIONAL_UNITS;
                    }
                    self.ops.inbound(conn, &packet);
                    if let Packet::Connect(connect) = &packet {
                        if !self.ops.admit_connect(connect) {
                            // Over the plan's connect rate: CONNACK 0x9F, then close.
                            self.broker.refuse_connect(
                                conn,
                                connect.protocol,
                                ReasonCode::CONNECTION_RATE_EXCEEDED,
                            );
                            self.route_transmits();
                            break;
                        }
                    }
                    self.broker.handle_packet(conn, packet, now);
                    self.route_transmits();
                }
                self.ops.read_at = None;
                // These packets' metered units (their deliveries included) go to the
                // message rate: a debt pauses the publishers' next reads.
                self.charge_rates(provisional);
            }
            Event::Connect {
                conn,
                connect,
                outcome,
            } => {
                if self.ops.conns.touch(conn).is_some() {
                    // The same accounting as a plain CONNECT (its rate was checked by the
                    // connection task, before authentication).
                    let packet = Packet::Connect(connect);
                    self.ops.inbound(conn, &packet);
                    if let Packet::Connect(connect) = packet {
                        self.broker
                            .handle_connect_authenticated(conn, *connect, outcome, now);
                    }
                }
            }
            Event::ConnectOverRate { conn, connect } => {
                if self.ops.conns.is_open(conn) {
                    let protocol = connect.protocol;
                    self.ops.inbound(conn, &Packet::Connect(connect));
                    self.broker.refuse_connect(
                        conn,
                        protocol,
                        ReasonCode::CONNECTION_RATE_EXCEEDED,
                    );
                }
            }
            Event::Revoke { conn } => {
                self.broker.revoke_connection(conn, now);
            }
            Event::DecodeError { conn, error } => {
                if self.ops.conns.is_open(conn) {
                    self.broker.handle_decode_error(conn, &error, now);
                }
            }
            Event::Closed { conn } => {
                if self.ops.conns.close(conn) {
                    self.broker.handle_closed(conn, now);
                }
            }
            Event::Manage(call) => self.manage(call, now),
            Event::HandOver(handover) => match self.direct.as_mut() {
                Some(direct) => direct.take_over(*handover),
                // Not reading connections itself (never handed over then): dropping the
                // socket ends the connection as an I/O error would.
                None => {
                    let conn = handover.state.conn;
                    if self.ops.conns.close(conn) {
                        self.broker.handle_closed(conn, now);
                    }
                }
            },
            Event::Shutdown => return Flow::Stop,
        }
        self.route_transmits();
        Flow::Continue
    }

    /// Drains the broker's output: into the connections' outboxes, or, with a store,
    /// into the pass's pending transmits (sent by `end_pass`).
    fn route_transmits(&mut self) {
        let mut routed_at = None;
        while let Some(transmit) = self.broker.poll_transmit() {
            // Counted (and publish-to-deliver latency measured) when the broker routes
            // the packet, so the figures are the same with or without a store holding it
            // for its commit.
            let routed = match transmit {
                Transmit::Packet { conn, packet } => {
                    self.ops.outbound(&packet, &mut routed_at);
                    Routed::Packet {
                        conn,
                        item: packet.into(),
                    }
                }
                Transmit::Close { conn } => Routed::Close { conn },
            };
            match &mut self.store {
                Some(store) => store.pending.push((routed, self.ops.read_at)),
                None => self.send(routed),
            }
        }
    }

    /// Writes one transmit to its connection.
    #[inline]
    fn send(&mut self, routed: Routed) {
        match routed {
            Routed::Packet { conn, item } => self.deliver(conn, item),
            Routed::Close { conn } => {
                // Dropping the sender closes the outbox: the writer flushes and closes.
                self.ops.conns.close(conn);
            }
        }
        // The core's events are drained by `drain_broker_events` after each pass (usage,
        // `$events` topics).
    }

    /// Queues `packet` for `conn`. A QoS 0 PUBLISH to a connection that is not keeping
    /// up is dropped and counted (see [`delivery`]); any other packet is refused only when
    /// the connection is stuck, and the connection is then closed, since QoS 1/2 flows and
    /// acknowledgements must never be dropped silently.
    #[inline]
    fn deliver(&mut self, conn: ConnId, item: Outgoing) {
        // Listed for usage attribution: the delivery counted units.
        let Some(outbox) = self.ops.conns.touch(conn) else {
            return; // closed in the meantime
        };
        let delivery = delivery(&item);
        match outbox.push(item, delivery) {
            Ok(Pushed::Done) => return,
            Ok(Pushed::List) => {
                self.listed.push(conn);
                return;
            }
            Err(Full) => {}
        }
        if delivery == Delivery::BestEffort {
            self.ops.counters.dropped_outbox_full += 1;
            debug!(
                conn = conn.0,
                total = self.ops.counters.dropped_outbox_full,
                "QoS 0 message dropped: outbox full"
            );
            return;
        }
        warn!(conn = conn.0, "closing slow consumer: outbox full");
        self.ops.conns.close(conn);
        self.broker.handle_closed(conn, now());
        // What `handle_closed` produced (wills) is routed by the running `route_transmits`,
        // or, when this runs from `end_pass`, by its next round.
        self.reentered = true;
    }

    /// Closes the channel, then takes over the connections handed to this task after the
    /// shutdown was sent (a client that talked, or a parked one that woke, just then): they
    /// are served the shutdown's DISCONNECT like the others and handed back to tasks, where
    /// they would otherwise lose their sockets with the channel. Connections that try to
    /// hand over from now on find the channel closed and carry on in their tasks. The
    /// channel's other late events are dropped: the broker no longer serves.
    fn take_last_hand_overs(&mut self) {
        self.events.close();
        // Bounded: a closed channel only gives back what it already held.
        while let Ok(event) = self.events.try_recv() {
            if matches!(event, Event::HandOver(_)) {
                self.handle(event);
            }
        }
    }

    /// Graceful shutdown: the broker disconnects everybody (DISCONNECT 0x8B to 5.0
    /// clients) and every outbox is closed, so each connection writes what it has and
    /// closes.
    async fn shutdown(mut self) -> anyhow::Result<()> {
        self.take_last_hand_overs();
        self.broker.handle_shutdown(now());
        self.route_transmits();
        if self.end_pass().await.is_err() {
            return self.fail().await;
        }
        self.flush_listed();
        // What the last passes hold goes out once committed (the writer is quick to
        // catch up: it only has what is already queued).
        while self.store.as_ref().is_some_and(|s| s.gate.is_holding()) {
            if wait_commit(&mut self.store).await.is_err() || self.end_pass().await.is_err() {
                return self.fail().await;
            }
            self.flush_listed();
        }
        self.ops.conns.clear();
        // Their outboxes are closed: each task writes what is queued and closes.
        if let Some(direct) = self.direct.as_mut() {
            direct.hand_back_all();
        }
        if self.ops.counters.dropped_outbox_full > 0 {
            info!(
                dropped = self.ops.counters.dropped_outbox_full,
                "QoS 0 messages dropped for slow consumers"
            );
        }
        if let Some(store) = self.store.take() {
            let progress = store.writer.close().await.context("the store failed")?;
            info!(
                commits = progress.commits,
                syncs = progress.syncs,
                operations = progress.ops,
                "store closed"
            );
        }
        Ok(())
    }
}

/// The connection of a transmit.
fn transmit_conn(routed: &Routed) -> ConnId {
    match routed {
        Routed::Packet { conn, .. } | Routed::Close { conn } => *conn,
    }
}

/// For the [`CommitGate`]: a transmit's connection, and whether it may leave before its
/// pass's commit. QoS 0/1 deliveries may: after a crash a QoS 1 message is at worst
/// delivered again, which QoS 1 allows. Everything else waits: acknowledgements to
/// publishers (PUBACK, PUBREC, PUBCOMP), QoS 2 deliveries and PUBRELs (their packet id
/// state must be on disk, or a resend after a crash could duplicate), SUBACK, CONNACK,
/// closes.
fn commit_class(routed: &Routed) -> (u64, bool) {
    let may_precede = match routed {
        Routed::Packet {
            item: Outgoing::Publish(p),
            ..
        } => p.qos() != QoS::ExactlyOnce,
        Routed::Packet {
            item: Outgoing::PingResp,
            ..
        } => true,
        _ => false,
    };
    (transmit_conn(routed).0, may_precede)
}

/// Waits for the writer's next report; an error if the writer is gone.
async fn wait_commit(
    store: &mut Option<StoreLink>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match store {
        Some(store) => store.progress.changed().await,
        None => std::future::pending().await,
    }
}

/// How much `packet` may be lost when its connection is not keeping up: a QoS 0 PUBLISH
/// is best effort, unless it sets up a topic alias (a topic together with an alias): losing
/// that would leave the client unable to resolve the alias in later PUBLISHes
/// [MQTT-3.3.2-12].
fn delivery(item: &Outgoing) -> Delivery {
    match item {
        Outgoing::Publish(p) if p.qos() == QoS::AtMostOnce && !p.sets_topic_alias() => {
            Delivery::BestEffort
        }
        _ => Delivery::Reliable,
    }
}

/// Whether the task keeps running after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// Keep going.
    Continue,
    /// [`Event::Shutdown`] arrived.
    Stop,
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use aviary_codec::{PacketId, ProtocolVersion, Publish, TopicName};
    use bytes::{Bytes, BytesMut};

    use super::*;

    fn publish(qos: QoS, topic: &str, alias: Option<u16>) -> Packet {
        let mut publish = Publish {
            dup: false,
            qos,
            retain: false,
            topic: if topic.is_empty() {
                TopicName::empty()
            } else {
                TopicName::new(topic).unwrap()
            },
            packet_id: (qos != QoS::AtMostOnce).then_some(PacketId(NonZeroU16::MIN)),
            properties: Default::default(),
            payload: Bytes::from_static(b"x"),
        };
        publish.properties.topic_alias = alias.and_then(NonZeroU16::new);
        Packet::Publish(publish)
    }

    /// A broker task whose connection 1 has an outbox nobody drains, after a 3.1.1
    /// CONNECT; returns the task and the writer end (kept so the outbox stays open).
    fn task_with_stuck_connection() -> (BrokerTask, crate::outbox::Outbox) {
        let (_tx, rx) = mpsc::channel(1);
        let mut task = BrokerTask::new(Broker::new(Default::default()), rx);
        let (sender, outbox) = crate::outbox::outbox();
        let conn = ConnId(1);
        let peer = "127.0.0.1:50000".parse().unwrap();
        task.handle(Event::Open {
            conn,
            peer,
            outbox: sender,
            listener: "default".into(),
        });
        // CONNECT, 3.1.1, clean session, keep alive 0, client id "c".
        let mut wire = BytesMut::from(
            &[
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x01,
                b'c',
            ][..],
        );
        let connect = aviary_codec::decode(&mut wire, ProtocolVersion::V3_1_1, 1024)
            .unwrap()
            .unwrap();
        task.handle(Event::Packets {
            conn,
            packets: vec![connect].into(),
            read_at: now(),
        });
        assert!(task.ops.conns.is_open(conn), "CONNECT accepted");
        (task, outbox)
    }

    #[test]
    fn long_outbox_drops_and_counts_qos_0_but_keeps_acknowledgements() {
        let (mut task, _outbox) = task_with_stuck_connection();
        // The CONNACK is queued already; fill up to the soft limit.
        for _ in 1..crate::outbox::SOFT_LIMIT {
            task.deliver(ConnId(1), Packet::PingResp.into());
        }
        task.deliver(ConnId(1), publish(QoS::AtMostOnce, "a", None).into());
        task.deliver(ConnId(1), publish(QoS::AtMostOnce, "a", None).into());
        assert_eq!(task.ops.counters.dropped_outbox_full, 2);
        // A burst of acknowledgements beyond the soft limit is not a reason to close.
        task.deliver(ConnId(1), publish(QoS::AtLeastOnce, "a", None).into());
        task.deliver(ConnId(1), Packet::PingResp.into());
        assert!(task.ops.conns.is_open(ConnId(1)), "still connected");
    }

    #[test]
    fn stuck_connection_is_closed_rather_than_lose_qos_1() {
        let (mut task, outbox) = task_with_stuck_connection();
        for _ in 1..crate::outbox::HARD_LIMIT {
            task.deliver(ConnId(1), Packet::PingResp.into());
        }
        task.deliver(ConnId(1), publish(QoS::AtLeastOnce, "a", None).into());
        assert!(!task.ops.conns.is_open(ConnId(1)), "closed");
        assert_eq!(task.ops.counters.dropped_outbox_full, 0);
        // The writer still gets everything queued before the close, then the end.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let batch = rt.block_on(outbox.next_batch()).unwrap();
        assert_eq!(batch.len(), crate::outbox::HARD_LIMIT);
        assert!(rt.block_on(outbox.next_batch()).is_none());
    }

    #[test]
    fn only_plain_qos_0_publishes_are_best_effort() {
        let check =
            |packet: Packet, expected: Delivery| assert_eq!(delivery(&packet.into()), expected);
        check(publish(QoS::AtMostOnce, "a/b", None), Delivery::BestEffort);
        check(publish(QoS::AtMostOnce, "", Some(3)), Delivery::BestEffort);
        check(publish(QoS::AtMostOnce, "a/b", Some(3)), Delivery::Reliable);
        check(publish(QoS::AtLeastOnce, "a/b", None), Delivery::Reliable);
        check(publish(QoS::ExactlyOnce, "a/b", None), Delivery::Reliable);
        check(Packet::PingResp, Delivery::Reliable);
    }

    /// A store whose commits wait for a permit, so a test can watch what waits for them.
    struct PermitStore(std::sync::mpsc::Receiver<()>);

    impl crate::store::SessionStore for PermitStore {
        fn load(
            &mut self,
            _now: crate::store::WallMillis,
        ) -> Result<crate::store::Snapshot, crate::store::StoreError> {
            Ok(Default::default())
        }

        fn commit(
            &mut self,
            _ops: &[crate::store::StoreOp],
            _fsync: crate::store::Fsync,
        ) -> Result<(), crate::store::StoreError> {
            let _ = self.0.recv();
            Ok(())
        }
    }

    /// The packets the outbox holds now (nothing if none arrive within a moment).
    async fn queued(outbox: &crate::outbox::Outbox) -> Vec<Packet> {
        match tokio::time::timeout(std::time::Duration::from_millis(100), outbox.next_batch()).await
        {
            Ok(Some(batch)) => batch.into_iter().map(Packet::from).collect(),
            _ => Vec::new(),
        }
    }

    /// Opens connection `conn` with a 3.1.1 CONNECT (client id `id`) followed by `more`
    /// wire bytes, as one read.
    fn open_with(task: &mut BrokerTask, conn: u64, id: u8, more: &[u8]) -> crate::outbox::Outbox {
        let (sender, outbox) = crate::outbox::outbox();
        task.handle(Event::Open {
            conn: ConnId(conn),
            peer: "127.0.0.1:50000".parse().unwrap(),
            outbox: sender,
            listener: "default".into(),
        });
        let mut wire = BytesMut::from(
            &[
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x01,
                id,
            ][..],
        );
        wire.extend_from_slice(more);
        let mut packets = Vec::new();
        while let Some(p) =
            aviary_codec::decode(&mut wire, ProtocolVersion::V3_1_1, 1 << 20).unwrap()
        {
            packets.push(p);
        }
        task.handle(Event::Packets {
            conn: ConnId(conn),
            packets: packets.into(),
            read_at: now(),
        });
        outbox
    }

    /// A connection handed to the broker task after the shutdown was sent (it waits in
    /// the channel behind `Shutdown`) is still served the shutdown's DISCONNECT (0x8B)
    /// and closed, instead of losing its socket with the channel.
    #[tokio::test]
    async fn a_hand_over_sent_after_the_shutdown_gets_its_disconnect() {
        use tokio::io::AsyncReadExt as _;
        let (tx, rx) = mpsc::channel(8);
        let tracker = tokio_util::task::TaskTracker::new();
        let direct = crate::direct_reads::DirectReads::new(tracker.clone(), None, Arc::default());
        let mut task =
            BrokerTask::new(Broker::new(Default::default()), rx).with_direct_reads(direct);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        // A 5.0 client, connected (its CONNACK waits in the outbox).
        let (sender, outbox) = crate::outbox::outbox();
        task.handle(Event::Open {
            conn: ConnId(1),
            peer,
            outbox: sender,
            listener: "default".into(),
        });
        let mut wire = BytesMut::from(crate::connection::tests::CONNECT_V5);
        let packet = aviary_codec::decode(&mut wire, ProtocolVersion::V5, 1024)
            .unwrap()
            .unwrap();
        task.handle(Event::Packets {
            conn: ConnId(1),
            packets: vec![packet].into(),
            read_at: now(),
        });
        task.route_transmits();
        // The shutdown, then the connection's hand-over behind it.
        tx.send(Event::Shutdown).await.unwrap();
        let state = crate::connection::Resumable {
            conn: ConnId(1),
            peer,
            level: 5,
            steps: crate::parking::MAX_STEPS,
            outbox,
            ctx: Arc::new(crate::connection::tests::context(tx.clone())),
            carry: None,
            permit: None,
        };
        let handover = crate::direct_reads::Handover {
            stream: Arc::new(server),
            state,
        };
        tx.send(Event::HandOver(Box::new(handover))).await.unwrap();
        task.run().await.unwrap();
        // The client gets its CONNACK, the DISCONNECT with 0x8B, then the end of the
        // stream (without the fix the hand-over is dropped with the channel: the socket
        // closes with nothing written).
        let mut received = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_end(&mut received),
        )
        .await;
        assert!(read.is_ok(), "the connection was closed");
        let mut received = BytesMut::from(&received[..]);
        let mut got = Vec::new();
        while let Some(p) = aviary_codec::decode(&mut received, ProtocolVersion::V5, 1024).unwrap()
        {
            got.push(p);
        }
        assert!(matches!(got.first(), Some(Packet::ConnAck(_))), "{got:?}");
        match got.get(1) {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, aviary_codec::ReasonCode(0x8B), "{d:?}")
            }
            other => panic!("expected the shutdown's DISCONNECT, got {other:?}"),
        }
        // The connection's task lingers until the client closes too.
        drop(client);
        tracker.close();
        tracker.wait().await;
    }

    /// Decodes 3.1.1 wire bytes into packets.
    fn packets(wire: &[u8]) -> Vec<Packet> {
        let mut wire = BytesMut::from(wire);
        let mut packets = Vec::new();
        while let Some(p) = aviary_codec::decode(&mut wire, ProtocolVersion::V3_1_1, 1024).unwrap()
        {
            packets.push(p);
        }
        packets
    }

    /// Attribution visits only the connections that had a packet in or out (or messages
    /// waiting) since the last round; every unit still lands in usage once, and the queue
    /// gauges follow messages queued without any packet to their connection.
    #[test]
    fn attribution_visits_only_connections_with_news() {
        let (_tx, rx) = mpsc::channel(1);
        let config = aviary_core::BrokerConfig {
            max_inflight: 1,
            emit_events: true, // as the server sets it: usage of ends comes with them
            ..Default::default()
        };
        let mut task = BrokerTask::new(Broker::new(config), rx);
        // Subscriber "s" (QoS 1 on "t"), publisher "p", idle "i".
        let subscribe = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x01];
        let _s = open_with(&mut task, 1, b's', &subscribe);
        let _p = open_with(&mut task, 2, b'p', &[]);
        let _i = open_with(&mut task, 3, b'i', &[]);
        // Seconds from now (the tick below reads the wall clock).
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let round = |task: &mut BrokerTask, second: u64| {
            task.start_attribution(t0 + second);
            let mut slices = 0;
            while task.attribute_slice() {
                slices += 1;
                assert!(slices < 10);
            }
        };
        // Usage of each client equals the core's count of its units.
        let exact = |task: &BrokerTask| {
            for (conn, id) in [(1, "s"), (2, "p"), (3, "i")] {
                let units = task.broker.client_counter(ConnId(conn)).unwrap().units;
                assert_eq!(task.ops.usage.clients[id].total, units, "client {id}");
            }
        };
        round(&mut task, 0);
        exact(&task);
        // The series' key is the core's client id, shared, not a copy.
        let (key, _) = task.ops.usage.clients.get_key_value("i").unwrap();
        let core_id = task.broker.client_counter(ConnId(3)).unwrap().client_id;
        assert!(Arc::ptr_eq(key, core_id));
        let idle_units = task.ops.usage.clients["i"].total;
        assert!(idle_units > 0, "its CONNECT counts");
        // Nothing happened since: the next round visits nobody.
        task.start_attribution(t0 + 1);
        assert!(
            !task.attribution_pending(),
            "idle connections are not visited"
        );
        // Three QoS 1 messages: the subscriber's window (1) takes one, two wait queued.
        let publish = |id: u8| [0x32, 0x06, 0x00, 0x01, b't', 0x00, id, b'x'];
        let three: Vec<u8> = (1..=3).flat_map(publish).collect();
        task.handle(Event::Packets {
            conn: ConnId(2),
            packets: packets(&three).into(),
            read_at: now(),
        });
        round(&mut task, 2);
        exact(&task);
        assert_eq!((task.ops.queued, task.ops.inflight), (2, 1));
        // Two more while the window is full: nothing goes to the subscriber, yet it is
        // visited (it has messages waiting) and the gauge follows.
        let two: Vec<u8> = (4..=5).flat_map(publish).collect();
        task.handle(Event::Packets {
            conn: ConnId(2),
            packets: packets(&two).into(),
            read_at: now(),
        });
        round(&mut task, 3);
        exact(&task);
        assert_eq!((task.ops.queued, task.ops.inflight), (4, 1));
        // The idle client becomes active (QoS 0 to a topic nobody subscribed): its new
        // units are attributed.
        task.handle(Event::Packets {
            conn: ConnId(3),
            packets: packets(&[0x30, 0x04, 0x00, 0x01, b'u', b'x']).into(),
            read_at: now(),
        });
        round(&mut task, 4);
        exact(&task);
        assert!(task.ops.usage.clients["i"].total > idle_units);
        // The subscriber goes: its share leaves the gauges, the units of its end land.
        task.handle(Event::Closed { conn: ConnId(1) });
        task.drain_broker_events();
        assert_eq!((task.ops.queued, task.ops.inflight), (0, 0));
        round(&mut task, 5);
        task.tick();
        assert_eq!(task.ops.conns.open_count(), 2);
        let units = task.broker.stats().units;
        assert_eq!(task.ops.usage.total.total, units);
        assert_eq!(task.ops.usage.listeners["default"].total, units);
        let clients: u64 = task.ops.usage.clients.values().map(|s| s.total).sum();
        assert_eq!(clients, units, "every unit once");
    }

    #[tokio::test]
    async fn one_read_of_many_publishes_is_cut_at_the_transmit_bound() {
        let (_permits, gate) = std::sync::mpsc::channel();
        let writer = crate::store::StoreWriter::spawn(
            Box::new(PermitStore(gate)),
            crate::store::Durability::Immediate,
            crate::store::DEFAULT_LIVENESS_INTERVAL,
        )
        .unwrap();
        let (_tx, rx) = mpsc::channel(1);
        let mut task = BrokerTask::new(Broker::new(Default::default()), rx).with_store(writer);
        // 17 subscribers of "t" at QoS 0 (no store operations: nothing waits for a commit).
        let subscribers: Vec<_> = (0..17u8)
            .map(|i| {
                let subscribe = [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00];
                open_with(&mut task, u64::from(i) + 1, b'a' + i, &subscribe)
            })
            .collect();
        task.end_pass().await.unwrap();
        for outbox in &subscribers {
            let _connack_and_suback = outbox.next_batch().await;
        }
        // One read of 1,000 PUBLISHes (payload: their index): 17,000 transmits, more than
        // one pass holds.
        let mut publishes = Vec::new();
        for i in 0..1000u16 {
            let [hi, lo] = i.to_be_bytes();
            publishes.extend_from_slice(&[0x30, 0x05, 0x00, 0x01, b't', hi, lo]);
        }
        let _publisher = open_with(&mut task, 100, b'z', &[]);
        let mut wire = BytesMut::from(&publishes[..]);
        let mut packets = Vec::new();
        while let Some(p) = aviary_codec::decode(&mut wire, ProtocolVersion::V3_1_1, 1024).unwrap()
        {
            packets.push(p);
        }
        task.inbox.push(Event::Packets {
            conn: ConnId(100),
            packets: packets.into(),
            read_at: now(),
        });
        let mut passes = 0;
        while !task.inbox.is_empty() {
            assert_eq!(task.handle_batch(), Flow::Continue);
            let held = task.store.as_ref().unwrap().pending.len();
            assert!(
                held < MAX_TRANSMITS_PER_PASS + 17,
                "{held} transmits in one pass"
            );
            task.end_pass().await.unwrap();
            passes += 1;
            assert!(passes <= 3, "the rest is handled in the next pass");
        }
        assert_eq!(passes, 2);
        // Every subscriber has every message, once, in order.
        for outbox in &subscribers {
            let got: Vec<u16> = queued(outbox)
                .await
                .into_iter()
                .map(|p| match p {
                    Packet::Publish(p) => u16::from_be_bytes([p.payload[0], p.payload[1]]),
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            assert_eq!(got, (0..1000).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn acknowledgements_wait_for_the_commit_of_their_pass() {
        acknowledgements_wait_for_commits(crate::store::Durability::Immediate).await;
    }

    /// Relaxed skips the fsync, not the commit: publishers are paced by the store.
    #[tokio::test]
    async fn relaxed_acknowledgements_wait_for_the_commit_too() {
        acknowledgements_wait_for_commits(crate::store::Durability::Relaxed).await;
    }

    async fn acknowledgements_wait_for_commits(durability: crate::store::Durability) {
        let (permits, gate) = std::sync::mpsc::channel();
        let writer = crate::store::StoreWriter::spawn(
            Box::new(PermitStore(gate)),
            durability,
            crate::store::DEFAULT_LIVENESS_INTERVAL,
        )
        .unwrap();
        let (_tx, rx) = mpsc::channel(1);
        let config = aviary_core::BrokerConfig {
            persistence: true,
            ..Default::default()
        };
        let mut task = BrokerTask::new(Broker::new(config), rx).with_store(writer);
        let mut progress = task.store.as_ref().unwrap().writer.watch();
        let (sender, outbox) = crate::outbox::outbox();
        let conn = ConnId(1);
        task.handle(Event::Open {
            conn,
            peer: "127.0.0.1:50000".parse().unwrap(),
            outbox: sender,
            listener: "default".into(),
        });
        // CONNECT 3.1.1 clean session 0 "c", SUBSCRIBE "t" QoS 1, PUBLISH QoS 1 on "t".
        let mut wire = BytesMut::from(
            &[
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x00, 0x00, 0x01,
                b'c', 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x01, 0x32, 0x06, 0x00, 0x01, b't',
                0x00, 0x07, b'x',
            ][..],
        );
        let mut packets = Vec::new();
        while let Some(p) = aviary_codec::decode(&mut wire, ProtocolVersion::V3_1_1, 1024).unwrap()
        {
            packets.push(p);
        }
        task.handle(Event::Packets {
            conn,
            packets: packets.into(),
            read_at: now(),
        });
        task.end_pass().await.unwrap();
        // The session, the subscription and the queued copy are not committed: CONNACK,
        // SUBACK, PUBACK and the delivery all wait.
        assert_eq!(queued(&outbox).await, []);
        permits.send(()).unwrap();
        progress.wait_for(|p| p.committed >= 1).await.unwrap();
        task.end_pass().await.unwrap();
        let out = queued(&outbox).await;
        assert!(matches!(out[0], Packet::ConnAck(_)), "{out:?}");
        assert!(matches!(out[1], Packet::SubAck(_)), "{out:?}");
        assert!(
            out.iter().any(|p| matches!(p, Packet::PubAck(_))),
            "{out:?}"
        );
        assert!(
            out.iter().any(|p| matches!(p, Packet::Publish(_))),
            "{out:?}"
        );
        drop(permits);
    }
}
