//! One client connection: reads bytes, decodes whole packets and hands them to the broker
//! task in batches; encodes what the broker routes to it into one buffer per batch and
//! writes it with one `write_all`. Owns the socket; knows nothing of MQTT semantics beyond
//! which protocol version to decode and encode with.
//!
//! Reading and writing run concurrently in the same task (so a client that writes without
//! reading cannot deadlock us against it), and an idle connection holds no buffers: the
//! read buffer is allocated once the socket is readable and dropped when it is empty again.
//! A plain TCP connection idle for a while goes further (`crate::parking`): its task ends and
//! the socket waits in [`crate::parking`] until there is work, then [`resume`] runs it again.

pub(crate) mod read;
#[cfg(test)]
pub(crate) mod tests;
mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aviary_codec::ProtocolVersion;
use aviary_core::ConnId;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::read::read_loop;
use self::write::write_loop;
use crate::auth::{AuthService, PeerCertificate};
use crate::broker_task::Event;
use crate::outbox::{outbox, Outbox, OutboxSender};
use crate::parking::MAX_STEPS;
use crate::transport::{Transport, TransportRead};
use crate::wake_gate::Gated;

/// After we close our side, how long we keep reading (and discarding) so that unread bytes
/// from the client do not turn our close into a reset that could destroy the last packets
/// we sent (the DISCONNECT with the reason) before the client reads them.
const LINGER: Duration = Duration::from_secs(2);

/// What every connection task needs from the server.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionContext {
    /// The broker task's inbox.
    pub(crate) events: mpsc::Sender<Event>,
    /// Largest packet accepted from clients (`mqtt.max_packet_size`, changed at runtime
    /// by the plan limits), enforced while decoding, before a body is buffered.
    pub(crate) max_packet_size: Arc<AtomicU32>,
    /// The name of the listener that accepted the connection.
    pub(crate) listener: Arc<str>,
    /// The plan's rates: reads pause while this connection's packets are over them.
    pub(crate) rates: Arc<crate::rates::Rates>,
    /// Cancelled when the listener is switched off: a connection accepted just before
    /// that (still in its WebSocket upgrade, say) does not open.
    pub(crate) listener_off: CancellationToken,
    /// Cancelled when graceful shutdown has waited long enough: connections still open
    /// are then dropped.
    pub(crate) force_close: CancellationToken,
    /// Authenticates CONNECT before the broker sees it; `None`: the broker accepts every
    /// CONNECT's credentials (`handle_packet`).
    pub(crate) auth: Option<Arc<AuthService>>,
    /// The verified client certificate of this connection (set per connection by a TLS
    /// listener).
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
    /// The broker's wire byte counters (added to once per read and per written batch).
    pub(crate) wire: Arc<crate::metrics::WireBytes>,
    /// Where idle plain TCP connections are parked; `None`: they never are.
    pub(crate) parker: Option<Arc<crate::parking::Parker>>,
    /// Whether the broker task may write to a plain TCP connection's socket itself
    /// (`crate::outbox`): on a runtime of one worker thread, where a connection's writer
    /// could not run beside it anyway. With more, a push wakes the writer at once, to
    /// write on another thread while the broker task goes on (with the broker task
    /// writing, two cores delivered 10-45 % fewer messages per second at maximum rate).
    pub(crate) direct_writes: bool,
    /// Whether a plain TCP connection that talks is handed to the broker task, which then
    /// reads it itself (`crate::direct_reads`); set with `direct_writes`.
    pub(crate) direct_reads: bool,
}

/// Why the read side stopped.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// End of stream or an I/O error: the broker must be told the transport is gone.
    Closed,
    /// The client sent DISCONNECT, which the broker has (it closes the connection).
    Goodbye,
    /// Undecodable bytes: the broker has been told and will close the connection.
    DecodeError,
    /// The broker task is gone (shutdown).
    BrokerGone,
    /// The client talks and both halves wait with nothing to do: the broker task takes
    /// the connection over (`crate::direct_reads`).
    HandOver,
}

/// Why the write side stopped.
enum WriteEnd {
    /// The broker closed the connection; everything queued was written.
    Done,
    /// Writing failed or stalled: the broker must be told the transport is gone.
    Failed,
}

/// How a connection's task ends.
enum TaskEnd {
    /// The transport failed: the broker must be told.
    TellClosed,
    /// The connection is closed on our side: read out what the peer still sends.
    Linger,
    /// The client ended the connection (end of stream, an I/O error, or DISCONNECT):
    /// it sends nothing more, so unless bytes are still unread the socket is closed at
    /// once. Closed before the client's FIN arrives, the socket is already orphaned when
    /// it does: no wake-up of this process (and, on loopback, of its CPU) for a FIN.
    Close,
    /// Idle for long enough: hand the connection to the parker.
    Park,
    /// Talking, and both halves wait: hand the connection to the broker task, which reads
    /// it itself from now on (`crate::direct_reads`).
    HandOver,
}

/// Where a connection's reader starts when the broker task, which read it itself
/// (`crate::direct_reads`), hands it back to a task.
#[derive(Debug)]
pub(crate) enum Carry {
    /// Bytes read and not decoded yet (a partial packet, or packets behind `paused`), and
    /// a decoded packet waiting for its pause over the plan's rates.
    Input {
        buf: bytes::BytesMut,
        paused: Option<aviary_codec::Packet>,
    },
    /// Reading has ended (the client's DISCONNECT, or undecodable bytes the broker has
    /// been told of).
    Ended(ReadEnd),
}

impl Carry {
    /// Nothing read and left: the reader starts by waiting.
    pub(crate) fn nothing() -> Self {
        Self::Input {
            buf: bytes::BytesMut::new(),
            paused: None,
        }
    }
}

/// Everything a connection holds besides its socket and its task: what it starts with,
/// and what it is parked with (`crate::parking`) and resumed from.
#[derive(Debug)]
pub(crate) struct Resumable {
    /// The connection.
    pub(crate) conn: ConnId,
    /// The client's address (logs, and the authentication of its CONNECT).
    pub(crate) peer: SocketAddr,
    /// The protocol level of its first CONNECT, or [`NO_CONNECT_YET`].
    pub(crate) level: u8,
    /// Its idle step: how many checks found it busy ([`MAX_STEPS`] once it has parked),
    /// which sets how long it must be idle to park ([`crate::parking::Parker::idle_period`]).
    pub(crate) steps: u8,
    /// Where the broker task routes its packets.
    pub(crate) outbox: Outbox,
    /// Its listener's context.
    pub(crate) ctx: Arc<ConnectionContext>,
    /// Where its reader starts, when the broker task, which read the connection itself,
    /// hands it back to a task (`crate::direct_reads`); `None` otherwise.
    pub(crate) carry: Option<Box<Carry>>,
    /// Its socket permit (see `crate::listener`), released when the connection ends;
    /// `None` where the listener holds it (the kinds that never park).
    #[allow(
        dead_code,
        reason = "held, never read: dropping it releases the permit"
    )]
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// Drives connection `conn` until it is closed by either side or by shutdown, or until it
/// parks (plain TCP only, see [`crate::parking`]).
///
/// Memory: an idle connection is this future waiting in two places, the socket becoming
/// readable and the outbox getting packets; everything else (decoding, writing, sends to
/// the broker task, lingering) is boxed while it runs. The future is an `async move`
/// block rather than an `async fn` because the latter keeps two copies of its arguments
/// for its whole life, and the stream is split before the block so that the block holds
/// only the halves. Graceful shutdown's force close is watched only by the boxed parts: an
/// idle connection ends by itself then, because the broker task, which has stopped by that
/// time, has closed its outbox. A plain TCP listener shares one context (`Arc`) between
/// its connections; a caller that made a context for this connection alone passes it by
/// value.
pub(crate) fn run<T: Transport>(
    stream: T,
    conn: ConnId,
    peer: SocketAddr,
    ctx: impl Into<Arc<ConnectionContext>>,
    permit: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = ()> + Send {
    let (rd, wr) = stream.split();
    let (sender, outbox) = outbox();
    let state = Resumable {
        conn,
        peer,
        level: NO_CONNECT_YET,
        steps: 0,
        outbox,
        carry: None,
        ctx: ctx.into(),
        permit,
    };
    serve::<T>(rd, wr, state, Some(sender))
}

/// Runs a parked connection again (its socket registered with tokio by the caller), as
/// [`run`] does after the open.
pub(crate) fn resume(
    stream: tokio::net::TcpStream,
    state: Resumable,
) -> impl Future<Output = ()> + Send {
    let (rd, wr) = Transport::split(stream);
    serve::<tokio::net::TcpStream>(rd, wr, state, None)
}

/// Runs a connection the broker task read itself (`crate::direct_reads`) in a task again,
/// its reader starting from `state.carry`, or one whose hand-over it refused
/// ([`resume_refused`]).
pub(crate) fn hand_back(
    stream: Arc<tokio::net::TcpStream>,
    state: Resumable,
) -> impl Future<Output = ()> + Send {
    let (rd, wr) = crate::transport::tcp_halves(stream);
    serve::<tokio::net::TcpStream>(rd, wr, state, None)
}

/// The body of a connection's task: announces a new connection to the broker (`open`,
/// the broker's end of its outbox), then reads and writes until the connection closes or
/// parks. Takes everything by value and uses it in place (no field is moved out), so the
/// future holds one copy of each: an `async move` block rather than an `async fn`, which
/// would keep a second copy of its arguments.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would keep a second copy of its arguments (see above)"
)]
fn serve<T: Transport>(
    mut rd: T::Reader,
    mut wr: T::Writer,
    mut state: Resumable,
    open: Option<OutboxSender>,
) -> impl Future<Output = ()> + Send {
    async move {
        if let Some(sender) = open {
            if state.ctx.listener_off.is_cancelled() {
                return; // its listener was switched off in the meantime
            }
            let open = Event::Open {
                conn: state.conn,
                peer: state.peer,
                outbox: sender,
                listener: Arc::clone(&state.ctx.listener),
            };
            // Sends in this function are boxed: they happen once per connection, and inline
            // they would enlarge every connection's future for its whole life.
            if Box::pin(state.ctx.events.send(open)).await.is_err() {
                return; // shutting down
            }
            debug!(conn = state.conn.0, peer = %state.peer, "connection open");
        }
        let ctx = &*state.ctx;
        // Plain TCP: the broker task may write to the socket itself while the writer waits.
        if let Some(stream) = T::direct(&wr).filter(|_| ctx.direct_writes) {
            state.outbox.attach(stream);
        }
        let version = AtomicU8::new(state.level);
        // A resumed connection has parked before, so its CONNACK is long written; one the
        // broker task hands back has talked.
        let carry = state.carry.take();
        let idle = Idleness::new(state.steps == MAX_STEPS, carry.is_some());
        if T::PARKABLE && ctx.direct_reads && T::direct(&wr).is_some() {
            idle.may_hand_over();
        }
        let panic_guard = PanicGuard(&state);

        let end = {
            let reader = read_loop(&mut rd, &state, &version, &idle, carry);
            let writer = write_loop(
                &mut wr,
                &state.outbox,
                &version,
                &ctx.force_close,
                &ctx.wire,
                &idle,
            );
            // Boxed while it waits: the timer is not part of every connection's future.
            // Gated: polled only when its timer fired, not at every wake of the task.
            let park = async {
                match ctx.parker.as_deref().filter(|p| T::PARKABLE && p.parks()) {
                    Some(parker) => {
                        let settled = idle.settled(parker, state.steps, &state.outbox);
                        Box::new(Gated::new(Box::pin(settled))).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(reader, writer, park);
            // Biased: each branch ends the task, so their order only saves drawing a
            // random number at every wake.
            tokio::select! {
                biased;
                end = &mut reader => if matches!(end, ReadEnd::HandOver) {
                    TaskEnd::HandOver
                } else {
                    let tell = matches!(end, ReadEnd::Closed);
                    let client_ended = matches!(end, ReadEnd::Closed | ReadEnd::Goodbye);
                    let force_close = &ctx.force_close;
                    let events = &ctx.events;
                    let writer = &mut writer;
                    Box::pin(async move {
                        if tell {
                            let _ = events.send(Event::Closed { conn: state.conn }).await;
                        }
                        // The broker closes the outbox (after `Closed`, or after a decode
                        // error once it has queued its DISCONNECT); the writer then ends.
                        tokio::select! {
                            _ = writer => {}
                            () = force_close.cancelled() => {}
                        }
                    })
                    .await;
                    if client_ended {
                        TaskEnd::Close
                    } else {
                        TaskEnd::Linger
                    }
                },
                end = &mut writer => match end {
                    WriteEnd::Failed => TaskEnd::TellClosed,
                    WriteEnd::Done => TaskEnd::Linger,
                },
                // Both halves wait with nothing to do (checked when the timer fires, in this
                // poll: dropping them now loses nothing).
                () = &mut park => TaskEnd::Park,
            }
        };
        if !matches!(end, TaskEnd::HandOver) {
            // The socket closes or parks with this task: the broker task writes no more.
            state.outbox.detach();
        }
        match end {
            TaskEnd::TellClosed => {
                let _ = Box::pin(ctx.events.send(Event::Closed { conn: state.conn })).await;
            }
            TaskEnd::Linger => Box::pin(linger(&mut rd, &ctx.force_close)).await,
            TaskEnd::Close => {
                if has_unread(&mut rd) {
                    Box::pin(linger(&mut rd, &ctx.force_close)).await;
                }
            }
            TaskEnd::Park => {
                drop(panic_guard);
                match (T::into_std(rd, wr), state.ctx.parker.clone()) {
                    (Ok(stream), Some(parker)) => {
                        debug!(conn = state.conn.0, peer = %state.peer, "connection parked");
                        state.level = version.into_inner();
                        // Once resumed, it parks only after `listener.park_after`.
                        state.steps = MAX_STEPS;
                        parker.park(stream, state);
                    }
                    (Err(e), _) => {
                        debug!(conn = state.conn.0, error = %e, "cannot park; connection dropped");
                        let _ = Box::pin(state.ctx.events.send(Event::Closed { conn: state.conn }))
                            .await;
                    }
                    // Unreachable: parking needs a parker.
                    (Ok(_), None) => {}
                }
                return;
            }
            TaskEnd::HandOver => {
                drop(panic_guard);
                // Handed over only with a socket (see `may_hand_over` above); without one
                // the connection ends like a failed transport.
                let Some(stream) = T::direct(&wr) else {
                    let _ =
                        Box::pin(state.ctx.events.send(Event::Closed { conn: state.conn })).await;
                    return;
                };
                drop((rd, wr));
                let events = state.ctx.events.clone();
                state.level = version.into_inner();
                state.steps = MAX_STEPS;
                let conn = state.conn;
                let handover = crate::direct_reads::Handover { stream, state };
                // Through the inbox, behind the connection's earlier events: the broker
                // task reads nothing of it before it has handled those.
                let event = Event::HandOver(Box::new(handover));
                // Boxed, like the other sends here, with what follows a refusal.
                Box::pin(hand_over_to_broker(events, event, conn)).await;
                return;
            }
        }
        debug!(conn = state.conn.0, peer = %state.peer, "connection closed");
    }
}

/// Sends a connection's hand-over to the broker task; if it no longer takes events, the
/// connection goes on here ([`resume_refused`]).
async fn hand_over_to_broker(events: mpsc::Sender<Event>, event: Event, conn: ConnId) {
    match events.send(event).await {
        Ok(()) => debug!(conn = conn.0, "connection handed to the broker task"),
        Err(mpsc::error::SendError(event)) => resume_refused(event).await,
    }
}

/// Runs a connection whose hand-over the broker task no longer takes (it is shutting
/// down, `BrokerTask::take_last_hand_overs`) in a task again: it writes what its outbox
/// holds (the shutdown's DISCONNECT) and ends when the broker closes the outbox. Boxed
/// (and type-erased, since a connection's task may end up here): only this rare path
/// pays for it.
pub(crate) fn resume_refused(event: Event) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    match event {
        Event::HandOver(handover) => Box::pin(hand_back(handover.stream, handover.state)),
        _ => Box::pin(std::future::ready(())),
    }
}

/// Which halves of a connection wait with nothing to do, and whether either did anything
/// since the last check: what decides parking. Touched by the reader once per burst of
/// reads and by the writer once per batch; the same task polls both, so relaxed loads and
/// stores are enough.
#[derive(Debug, Default)]
pub(super) struct Idleness(AtomicU8);

impl Idleness {
    /// The reader waits for the socket to become readable.
    pub(super) const READER: u8 = 1;
    /// The writer waits for packets in the outbox.
    pub(super) const WRITER: u8 = 2;
    /// Either half did something since the last check.
    const ACTIVE: u8 = 4;
    /// The writer has written (the CONNACK first; a write the broker task made for it is
    /// seen at the next check): a connection still waiting for its CONNACK never parks,
    /// or a connect burst that keeps the broker task busy for longer than the first idle
    /// period would park and resume every connection it holds up.
    const STARTED: u8 = 8;
    /// Either half did something after the CONNACK was written: the client talks (it
    /// published, subscribed, pinged or was sent a message), it did not only connect.
    const TALKED: u8 = 16;
    /// The reader has woken for data once (the CONNECT, usually).
    const READ_ONCE: u8 = 32;
    /// The reader has woken for data more than once: the client talks, so it is handed
    /// to the broker task once both halves wait (`crate::direct_reads`); a client that
    /// only connects is left to park.
    const READ_AGAIN: u8 = 64;
    /// The connection may be handed to the broker task (plain TCP, on a runtime of one
    /// worker thread).
    const HANDS_OVER: u8 = 128;

    /// The state of a connection's halves at the start of its task; `started`: its
    /// CONNACK was written by an earlier task (it is resuming).
    /// `handed_back`: the broker task, which read the connection itself, hands it back
    /// (it has talked, so it is handed over again as soon as both halves wait).
    pub(super) fn new(started: bool, handed_back: bool) -> Self {
        let bits = if handed_back {
            Self::STARTED | Self::TALKED | Self::READ_ONCE | Self::READ_AGAIN
        } else if started {
            // It parked after its CONNACK and has woken for something: its next read is
            // the client talking again.
            Self::STARTED | Self::READ_ONCE
        } else {
            0
        };
        Self(AtomicU8::new(bits))
    }

    /// The connection may be handed to the broker task.
    fn may_hand_over(&self) {
        let bits = self.0.load(Ordering::Relaxed);
        self.0.store(bits | Self::HANDS_OVER, Ordering::Relaxed);
    }

    /// Whether to hand the connection to the broker task now that its reader waits: it
    /// may be, the client has talked and the writer waits with nothing to do.
    pub(super) fn hand_over_now(&self) -> bool {
        let all = Self::HANDS_OVER | Self::WRITER | Self::READ_AGAIN;
        self.0.load(Ordering::Relaxed) & all == all
    }

    /// `side` starts waiting with nothing to do.
    pub(super) fn waiting(&self, side: u8) {
        let bits = self.0.load(Ordering::Relaxed);
        self.0.store(bits | side, Ordering::Relaxed);
    }

    /// `side` has work.
    pub(super) fn woke(&self, side: u8) {
        let bits = self.0.load(Ordering::Relaxed);
        // The writer's first batch is the CONNACK's; the reader's wakes are counted
        // (see READ_AGAIN).
        let first = if side == Self::WRITER {
            Self::STARTED
        } else if bits & Self::READ_ONCE != 0 {
            Self::READ_AGAIN
        } else {
            Self::READ_ONCE
        };
        // Work after the CONNACK's batch (STARTED is set by the write of that batch).
        let talked = if bits & Self::STARTED != 0 {
            Self::TALKED
        } else {
            0
        };
        self.0.store(
            (bits & !side) | Self::ACTIVE | first | talked,
            Ordering::Relaxed,
        );
    }

    /// Completes once both halves have waited through a whole idle period (so between one
    /// and two periods after the last activity). The period is
    /// `parker.idle_period(steps)`; a check that finds the connection still waiting for
    /// its CONNACK doubles it (a connect burst holds the broker up), one that finds only
    /// its setup since the last check (its CONNECT read, its CONNACK written) goes back to
    /// the first period, and one finding that the client talked after its CONNACK (not
    /// only connected) moves it straight to `listener.park_after`: each check is a timer and a
    /// wake of the task, and 10,000 devices that connected together and publish every
    /// second would otherwise be checked together at 1, 3, 7 and 15 s (or, with the
    /// rule of waiting a whole busy period after the CONNACK, at 1 and 3 s), delaying the
    /// messages that arrive meanwhile (the IoT benchmark's p99).
    async fn settled(&self, parker: &crate::parking::Parker, mut steps: u8, outbox: &Outbox) {
        loop {
            tokio::time::sleep(parker.idle_period(steps)).await;
            if outbox.take_wrote() {
                // The broker task wrote to the socket for the waiting writer
                // (`crate::outbox`): as if the writer had written a batch.
                self.woke(Self::WRITER);
                self.waiting(Self::WRITER);
            }
            let bits = self.0.load(Ordering::Relaxed);
            // TALKED is kept: once set, every later check is `park_after` apart.
            self.0.store(bits & !Self::ACTIVE, Ordering::Relaxed);
            if bits & (Self::READER | Self::WRITER | Self::STARTED | Self::ACTIVE)
                == Self::READER | Self::WRITER | Self::STARTED
            {
                return;
            }
            steps = if bits & Self::TALKED != 0 {
                MAX_STEPS
            } else if bits & Self::STARTED != 0 {
                // Only the connection's setup (its CONNECT, its CONNACK) since the last
                // check: it parks a first period after that, not a doubled one.
                0
            } else {
                steps.saturating_add(1).min(MAX_STEPS)
            };
        }
    }
}

/// Tells the broker a connection is gone if its task unwinds from a panic (a bug, e.g. in
/// the codec), so the broker does not keep a session attached to a dead connection.
/// (One reference to the connection's state: every connection's future holds it.)
struct PanicGuard<'a>(&'a Resumable);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Cannot await while unwinding; if the inbox is full the broker learns of the
            // loss only through keep alive.
            let conn = self.0.conn;
            let _ = self.0.ctx.events.try_send(Event::Closed { conn });
        }
    }
}

/// Whether bytes from the peer wait unread (closing now would answer with a reset).
fn has_unread(rd: &mut impl TransportRead) -> bool {
    let mut probe = [0u8; 64];
    // Nothing (would block), the end of the stream, or a broken socket: nothing to protect.
    matches!(rd.try_read(&mut probe), Ok(n) if n > 0)
}

/// Reads and discards until the peer closes, for at most [`LINGER`].
async fn linger(rd: &mut impl TransportRead, force_close: &CancellationToken) {
    let drain = async {
        // On the heap and only while lingering: the future of every connection stays small.
        let mut scratch = vec![0u8; 512];
        loop {
            if rd.readable().await.is_err() {
                return;
            }
            match rd.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(LINGER, drain) => {}
        () = force_close.cancelled() => {}
    }
}

/// Protocol level stored while no CONNECT has been decoded.
const NO_CONNECT_YET: u8 = 0;

/// The version to decode and encode with for a level stored by the reader. Before
/// CONNECT (and for the CONNACK refusing an unsupported version) that is 3.1.1, whose
/// CONNACK every client version can read.
pub(crate) fn version_from_level(level: u8) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V3_1,
        5 => ProtocolVersion::V5,
        _ => ProtocolVersion::V3_1_1,
    }
}
