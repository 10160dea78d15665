//! Direct reads: plain TCP connections that the broker task reads itself, with no task of
//! their own, on a runtime of one worker thread (where `crate::outbox`'s direct writes
//! already let the broker task write to them).
//!
//! A connection's task reads its CONNECT; once the client has talked (its reader woke a
//! second time) and both halves wait with nothing to do, the task ends and sends its socket
//! and state to the broker task ([`Handover`], through the inbox, so the broker task has
//! handled every earlier event of the connection before it reads the socket). The broker
//! task keeps them in a slot of [`DirectReads`]; the socket stays registered with tokio,
//! and its read readiness wakes a [`SlotWaker`], which lists the slot and wakes the broker
//! task. There the socket is read, the packets decoded and handed to the broker, and what
//! they cause is written at the end of the pass: one task poll per wake-up, where a task
//! per connection cost a poll of the connection's task, a channel send and a poll of the
//! broker task (issue 6: the code a message runs through is what sets the latency tail).
//!
//! Whatever needs waiting is given back to a task (`crate::connection::hand_back`), with
//! where reading stood ([`Carry`]): the end of the stream or an error (the task meets it
//! again), a pause over the plan's rates, the client's DISCONNECT or undecodable bytes
//! (the task then writes the last packets and closes), a write the socket did not take
//! whole, a client that does not read, the outbox closing (every way the broker ends a
//! connection closes it) and the broker task's end. The outbox's writer waker is the slot's
//! waker while the broker task holds the connection, so those wake it too.
//!
//! A held connection that stays quiet for `listener.park_after` (nothing read, nothing
//! written) is parked (`crate::parking`): a held connection keeps its tokio registration
//! and its slot here (~450 B, and the last topic it published on), a parked one ~150 B.
//! The broker task's tick visits a slice of the slots each second for it
//! ([`DirectReads::sweep`]).
//!
//! A slot carries a generation, so a waker or an event meant for a connection that has
//! since been handed back does not touch the connection that reuses its slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use aviary_core::ConnId;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use aviary_codec::TopicCache;

use crate::connection::{Carry, Resumable};

/// A connection's task hands it to the broker task: its socket (shared with its outbox,
/// which writes to it) and its state.
#[derive(Debug)]
pub(crate) struct Handover {
    /// The socket, registered with tokio.
    pub(crate) stream: Arc<TcpStream>,
    /// Everything else the connection holds.
    pub(crate) state: Resumable,
}

/// A connection the broker task reads.
#[derive(Debug)]
pub(crate) struct Held {
    /// The socket.
    pub(crate) stream: Arc<TcpStream>,
    /// The connection's state.
    pub(crate) state: Resumable,
    /// A partial packet read and not yet decoded, until the rest arrives.
    pub(crate) partial: Option<BytesMut>,
    /// The last PUBLISH topic it sent: a device publishing on its own topic has the name
    /// validated and allocated once while it is held, not once per message.
    pub(crate) topics: TopicCache,
    /// Read from since the sweep last visited it.
    pub(crate) read: bool,
    /// Bytes its last turn read: the next turn's first read gets room for as many
    /// (`ReadSizing::expecting`).
    pub(crate) last_turn_bytes: u32,
    /// When the sweep last found it read from or written to (or it was taken over).
    quiet_since: Instant,
    /// This slot's waker: the socket's read readiness and the outbox wake it.
    waker: Waker,
    /// Keeps the server's connection tracker from counting this connection as finished:
    /// graceful shutdown waits for it to be handed back and closed.
    _tracked: TaskTrackerToken,
}

impl Held {
    /// Arms the socket's read readiness with the slot's waker; `Ready` if the socket is
    /// readable already (or failed: the read says how).
    pub(crate) fn arm(&self) -> Poll<()> {
        let mut cx = Context::from_waker(&self.waker);
        self.stream.poll_read_ready(&mut cx).map(|_| ())
    }
}

/// A slot of the table.
#[derive(Debug, Default)]
struct Slot {
    /// Incremented each time the slot is vacated.
    generation: u32,
    /// The connection held here, if any (out of its slot while the broker task reads it).
    held: Option<Box<Held>>,
}

/// The slots woken since the broker task last looked, and the broker task's waker.
#[derive(Debug, Default)]
struct Woken {
    /// (slot, generation), in the order they woke.
    slots: Vec<(u32, u32)>,
    /// The broker task, waiting for a slot to wake.
    task: Option<Waker>,
}

/// What the slots' wakers share with the broker task.
#[derive(Debug, Default)]
struct Shared {
    /// Behind a lock: a socket's readiness is reported by tokio's I/O driver, which
    /// may run on another thread than the broker task.
    woken: Mutex<Woken>,
}

impl Shared {
    /// The list; a poisoned lock is still usable (every critical section leaves it whole).
    fn lock(&self) -> MutexGuard<'_, Woken> {
        self.woken.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The waker of one slot: lists the slot and wakes the broker task. Holds the list
/// weakly, so a waker left in a socket's registration keeps nothing alive.
struct SlotWaker {
    /// The list.
    shared: Weak<Shared>,
    /// The slot.
    index: u32,
    /// The slot's generation when the connection was handed over.
    generation: u32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let task = {
            let mut woken = shared.lock();
            woken.slots.push((self.index, self.generation));
            woken.task.take()
        };
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// The connections the broker task reads itself, by slot. Owned by the broker task.
#[derive(Debug)]
pub(crate) struct DirectReads {
    /// Every slot ever used (the table is as large as the most connections held at once).
    slots: Vec<Slot>,
    /// Indices of vacant slots.
    vacant: Vec<u32>,
    /// What the wakers share.
    shared: Arc<Shared>,
    /// Woken slots taken from the shared list, served in turn.
    turns: VecDeque<(u32, u32)>,
    /// The server's connection tracker: tasks handed back are spawned on it.
    tracker: TaskTracker,
    /// Where connections quiet for its `listener.park_after` go; `None`: they stay.
    parker: Option<Arc<crate::parking::Parker>>,
    /// The next slot the sweep visits.
    sweep_at: usize,
    /// Connections held now (the `aviary_connections_direct` gauge).
    held: Arc<AtomicU64>,
    /// The read buffer lent to each turn ([`DirectReads::lend_buffer`]).
    scratch: BytesMut,
}

/// Capacity above which a turn's buffer is not kept for the next one (the reads of a
/// burst grow up to this; a buffer grown for one large packet goes with it).
const SCRATCH_MAX: usize = crate::connection::read::MAX_READ_CHUNK;

/// Slots the sweep visits per tick: at 20,000 held connections, each is visited every
/// 40 s, for ~10-20 µs of the broker task per tick.
const SWEEP_PER_TICK: usize = 512;

impl DirectReads {
    /// An empty table; connections handed back run on `tracker`, quiet ones park with
    /// `parker`; `held` is the gauge of connections held.
    pub(crate) fn new(
        tracker: TaskTracker,
        parker: Option<Arc<crate::parking::Parker>>,
        held: Arc<AtomicU64>,
    ) -> Self {
        Self {
            slots: Vec::new(),
            vacant: Vec::new(),
            shared: Arc::default(),
            turns: VecDeque::new(),
            tracker,
            parker: parker.filter(|p| p.parks()),
            sweep_at: 0,
            held,
            scratch: BytesMut::new(),
        }
    }

    /// The buffer a turn reads into: the one the last turn gave back. The packets decoded
    /// from it keep their slices of it, so while none of them outlives its pass (QoS 0
    /// messages, acknowledgements) the next turns read into the same allocation, where a
    /// buffer per turn cost two allocations a message (the buffer, and the shared header
    /// the first packet's slice adds) when each read holds one message.
    pub(crate) fn lend_buffer(&mut self) -> BytesMut {
        std::mem::take(&mut self.scratch)
    }

    /// Takes back a turn's buffer with nothing left in it (a partial packet stays with
    /// its connection).
    pub(crate) fn return_buffer(&mut self, buf: BytesMut) {
        if buf.is_empty() && buf.capacity() > 0 && buf.capacity() <= SCRATCH_MAX {
            self.scratch = buf;
        }
    }

    /// Visits the next slice of the slots: a connection found quiet (nothing read or
    /// written) for `listener.park_after` since a visit last found it busy is parked.
    /// Returns the connections whose sockets could not be parked (closed: the broker must
    /// be told).
    pub(crate) fn sweep(&mut self, now: Instant) -> Vec<ConnId> {
        let mut lost = Vec::new();
        let Some(parker) = self.parker.clone() else {
            return lost;
        };
        let park_after = parker.park_after();
        for _ in 0..SWEEP_PER_TICK.min(self.slots.len()) {
            if self.sweep_at >= self.slots.len() {
                self.sweep_at = 0;
            }
            let index = self.sweep_at;
            self.sweep_at += 1;
            let Some(held) = self.slots.get_mut(index).and_then(|s| s.held.as_mut()) else {
                continue;
            };
            // `take_wrote` also clears the flag for the next visit.
            let wrote = held.state.outbox.take_wrote();
            if std::mem::take(&mut held.read) || wrote {
                held.quiet_since = now;
                continue;
            }
            if now.saturating_duration_since(held.quiet_since) < park_after
                || held.partial.is_some()
            {
                continue;
            }
            let Some(held) = self.vacate(index) else {
                continue;
            };
            if let Err(conn) = park(&parker, *held) {
                lost.push(conn);
            }
        }
        lost
    }

    /// Takes the connection out of slot `index` for good and vacates the slot.
    fn vacate(&mut self, index: usize) -> Option<Box<Held>> {
        let held = self.slots.get_mut(index)?.held.take()?;
        self.release(index);
        Some(held)
    }

    /// Slot `index`, whose connection has been taken out, is vacant: its generation moves
    /// on, so wakes meant for that connection touch nothing.
    fn release(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            slot.generation = slot.generation.wrapping_add(1);
            self.vacant.push(u32::try_from(index).unwrap_or(u32::MAX));
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes a connection over from its task. If a task is needed already (its outbox
    /// closed, or a write waits), it is handed back at once.
    pub(crate) fn take_over(&mut self, handover: Handover) {
        let index = self.vacant.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            // At most as many slots as the process has sockets.
            u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
        });
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return spawn(
                &self.tracker,
                handover.stream,
                handover.state,
                Carry::nothing(),
            );
        };
        let waker = Waker::from(Arc::new(SlotWaker {
            shared: Arc::downgrade(&self.shared),
            index,
            generation: slot.generation,
        }));
        let stream = Arc::clone(&handover.stream);
        if !handover.state.outbox.hand_over(stream, waker.clone()) {
            self.vacant.push(index);
            return spawn(
                &self.tracker,
                handover.stream,
                handover.state,
                Carry::nothing(),
            );
        }
        let held = Box::new(Held {
            stream: handover.stream,
            state: handover.state,
            partial: None,
            topics: TopicCache::default(),
            read: false,
            last_turn_bytes: 0,
            quiet_since: Instant::now(),
            waker,
            _tracked: self.tracker.token(),
        });
        // Bytes may have arrived since the task last waited.
        if held.arm().is_ready() {
            self.turns.push_back((index, slot.generation));
        }
        slot.held = Some(held);
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// Completes when a slot has woken (or one waits for its turn).
    pub(crate) fn poll_woken(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.turns.is_empty() {
            return Poll::Ready(());
        }
        let mut woken = self.shared.lock();
        if woken.slots.is_empty() {
            match &woken.task {
                Some(task) if task.will_wake(cx.waker()) => {}
                _ => woken.task = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        self.turns.extend(woken.slots.drain(..));
        Poll::Ready(())
    }

    /// Whether a slot has woken, without waiting.
    pub(crate) fn any_woken(&mut self) -> bool {
        if self.turns.is_empty() {
            let mut woken = self.shared.lock();
            self.turns.extend(woken.slots.drain(..));
        }
        !self.turns.is_empty()
    }

    /// The next woken connection, out of its slot (put it back with
    /// [`DirectReads::put_back`] or hand it back with [`DirectReads::hand_back`]); stale
    /// wakes are skipped.
    pub(crate) fn next_woken(&mut self) -> Option<(u32, Box<Held>)> {
        while let Some((index, generation)) = self.turns.pop_front() {
            let Some(slot) = self.slots.get_mut(index as usize) else {
                continue;
            };
            if slot.generation != generation {
                continue; // handed back since: the slot is vacant or someone else's
            }
            if let Some(held) = slot.held.take() {
                return Some((index, held));
            }
        }
        None
    }

    /// Puts a connection back in its slot; `again`: it has more to read than its turn
    /// took, so it waits for another turn.
    pub(crate) fn put_back(&mut self, index: u32, held: Box<Held>, again: bool) {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        if again {
            self.turns.push_back((index, slot.generation));
        }
        slot.held = Some(held);
    }

    /// Hands a connection taken with [`DirectReads::next_woken`] back to a task, its
    /// reader starting from `carry`, and vacates its slot.
    pub(crate) fn hand_back(&mut self, index: u32, held: Held, carry: Option<Carry>) {
        self.release(index as usize);
        let Held {
            stream,
            state,
            partial,
            ..
        } = held;
        let carry = carry.unwrap_or_else(|| Carry::Input {
            buf: partial.unwrap_or_default(),
            paused: None,
        });
        spawn(&self.tracker, stream, state, carry);
    }

    /// Hands every connection back (the broker task ends: their outboxes are closed, so
    /// each task writes what is queued and closes).
    pub(crate) fn hand_back_all(&mut self) {
        let held: Vec<_> = self
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(index, slot)| Some((index as u32, slot.held.take()?)))
            .collect();
        let count = held.len();
        for (index, held) in held {
            self.hand_back(index, *held, None);
        }
        if count > 0 {
            debug!(count, "connections handed back at the broker task's end");
        }
    }
}

/// Parks a quiet connection: its socket leaves tokio for the parking thread's poll. `Err`
/// with the connection if its socket cannot (it is closed).
fn park(parker: &crate::parking::Parker, held: Held) -> Result<(), ConnId> {
    let Held { stream, state, .. } = held;
    let conn = state.conn;
    // The outbox lets go of the socket (and of the slot's waker; the parker puts its own).
    state.outbox.detach();
    state.outbox.hand_back();
    let stream = Arc::try_unwrap(stream).map_err(|_| conn)?;
    match stream.into_std() {
        Ok(stream) => {
            debug!(conn = conn.0, "quiet connection parked");
            parker.park(stream, state);
            Ok(())
        }
        Err(e) => {
            debug!(conn = conn.0, error = %e, "cannot park a quiet connection; closed");
            Err(conn)
        }
    }
}

/// Runs a connection in a task again, its reader starting from `carry`.
fn spawn(tracker: &TaskTracker, stream: Arc<TcpStream>, mut state: Resumable, carry: Carry) {
    state.outbox.hand_back();
    state.carry = Some(Box::new(carry));
    tracker.spawn(crate::connection::hand_back(stream, state));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DirectReads {
        DirectReads::new(TaskTracker::new(), None, Arc::default())
    }

    /// The buffer a turn gives back empty is the next turn's, allocation and all; one with
    /// a partial packet in it, or grown past a burst's reads, is not kept.
    #[test]
    fn the_next_turn_reads_into_the_buffer_the_last_one_gave_back() {
        let mut direct = table();
        assert_eq!(
            direct.lend_buffer().capacity(),
            0,
            "nothing to lend at first"
        );
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(b"one packet");
        drop(buf.split_to(10).freeze()); // decoded and handled within the turn
        let tail = buf.as_ptr();
        direct.return_buffer(buf);
        let lent = direct.lend_buffer();
        assert_eq!((lent.as_ptr(), lent.capacity()), (tail, 1024 - 10));
        assert_eq!(direct.lend_buffer().capacity(), 0, "lent once");

        let mut partial = BytesMut::with_capacity(1024);
        partial.extend_from_slice(b"half a pac");
        direct.return_buffer(partial);
        assert_eq!(
            direct.lend_buffer().capacity(),
            0,
            "a partial packet is not lent on"
        );

        direct.return_buffer(BytesMut::with_capacity(SCRATCH_MAX + 1));
        assert_eq!(direct.lend_buffer().capacity(), 0, "too large to keep");
    }
}
