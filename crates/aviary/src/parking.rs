//! Parked connections: plain TCP connections that have had nothing to read or write for a
//! while ([`Parker::idle_period`]: 1 s just after they connect; `listener.park_after`
//! once they have talked after their CONNACK or parked and resumed), held without a
//! task. A running
//! connection costs a tokio task (~640 B with its future) and a tokio I/O registration
//! (~256 B); a parked one costs a slot here (~100 B) and a small waker in its outbox.
//!
//! One thread owns a `mio::Poll` on which every parked socket is registered, with its slot
//! index as the token. A connection leaves the table (resumes: it is registered with tokio
//! again and a new task runs the same driver, `crate::connection::resume`) when
//! * its socket becomes readable, or is hung up or in error (a mio event);
//! * the broker pushes into its outbox or closes it, which covers every way the broker ends
//!   a connection (keep-alive expiry, kick, takeover, listener switched off, plan limits,
//!   graceful shutdown): the outbox's writer waker is a [`SlotWaker`] while parked, which
//!   queues the slot and wakes the poll;
//! * the parker stops (end of shutdown): its sockets are then closed.
//!
//! On a runtime of one worker thread, a connection whose client sends something is handed
//! straight to the broker task, which reads it itself (`crate::direct_reads`), rather than
//! to a new task.
//!
//! Keep-alive needs no timer here: the broker task enforces it and closes the outbox.
//! A slot carries a generation, so a waker or event meant for a connection that has since
//! resumed does not resume the connection that reuses its slot.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;

use aviary_core::ConnId;
use mio::{Events, Interest, Poll, Token};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::broker_task::Event;
use crate::connection::{ConnectionContext, Resumable};
use crate::outbox::Outbox;

/// How long a new connection must stay idle to park. Short, so that a burst of
/// connections (a fleet reconnecting after a restart) does not hold a task and a tokio
/// registration each for long; not shorter, because a client that talks within its first
/// second (subscribes, publishes its first reading) would otherwise park and resume at
/// once, and the resume (a wake of this thread, a new task, a tokio registration) delays
/// that message: with 100 ms, the IoT benchmark's devices (one message a second) each
/// parked before their first message, and p99 rose from ~150 to ~200 µs. A check that
/// finds the connection waiting for its CONNACK doubles the period, one that finds only
/// its setup since the last check keeps it, and a connection that talked after its
/// CONNACK, or a parked and resumed one, moves to `listener.park_after` (see
/// `Idleness::settled`), so a client that talks even now and then parks at most once.
const FIRST_PARK: Duration = Duration::from_secs(1);

/// The idle step of a connection that has parked and resumed: its period is
/// `listener.park_after`. Below it, steps count the checks that found the connection
/// busy.
pub(crate) const MAX_STEPS: u8 = 20;

/// The token of the poll's own waker (slot indices are `u32`s, far below it).
const WAKE_TOKEN: Token = Token(usize::MAX);

/// Events taken from the poll per wait.
const EVENTS_PER_WAIT: usize = 1024;

/// One parked connection: its socket as registered with the poll, and the rest.
#[derive(Debug)]
struct Entry {
    /// The socket.
    stream: mio::net::TcpStream,
    /// The connection's state.
    parked: Held,
    /// Keeps the server's connection tracker from counting this connection as finished:
    /// graceful shutdown waits for parked connections to resume and close.
    _tracked: TaskTrackerToken,
}

/// A parked connection's state: [`Resumable`] without the client's address, which the
/// socket gives back at resume (32 bytes less per parked connection).
#[derive(Debug)]
struct Held {
    /// See [`Resumable::conn`].
    conn: ConnId,
    /// See [`Resumable::level`].
    level: u8,
    /// See [`Resumable::steps`].
    steps: u8,
    /// See [`Resumable::outbox`].
    outbox: Outbox,
    /// See [`Resumable::ctx`].
    ctx: Arc<ConnectionContext>,
    /// See [`Resumable::permit`].
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// The state of `r`, less its address.
    fn new(r: Resumable) -> Self {
        Self {
            conn: r.conn,
            level: r.level,
            steps: r.steps,
            outbox: r.outbox,
            ctx: r.ctx,
            permit: r.permit,
        }
    }

    /// The state to resume with, the client's address read from `stream` (unspecified in
    /// the logs if the socket has already failed; the next read ends it).
    fn resume(self, stream: &mio::net::TcpStream) -> Resumable {
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Resumable {
            conn: self.conn,
            peer,
            level: self.level,
            steps: self.steps,
            outbox: self.outbox,
            carry: None,
            ctx: self.ctx,
            permit: self.permit,
        }
    }
}

/// A slot of the table.
#[derive(Debug, Default)]
struct Slot {
    /// Incremented each time the slot is vacated.
    generation: u32,
    /// The connection parked here, if any.
    entry: Option<Entry>,
}

/// Slots per page of the table: the table grows a page at a time, so it holds at most one
/// page of slots beyond the most connections parked at once (a `Vec` doubling its
/// capacity would hold up to as many again: ~50 bytes per parked connection at 19,000).
const SLOTS_PER_PAGE: usize = 512;

/// The parked connections by slot, and the vacant slots for reuse.
#[derive(Debug, Default)]
struct Slots {
    /// Every slot ever used, [`SLOTS_PER_PAGE`] to a page (the table never shrinks: it is
    /// as large as the most connections parked at once).
    pages: Vec<Box<[Slot]>>,
    /// Slots handed out so far (the first free one of the last page is at this index).
    /// `u32`, as the slot is in every parked connection's waker: the table cannot hold
    /// more connections than the process has files.
    used: u32,
    /// Indices of vacant slots below `used`.
    vacant: Vec<u32>,
}

impl Slots {
    /// A vacant slot (reused first) and its generation.
    fn vacant(&mut self) -> (u32, u32) {
        let index = self.vacant.pop().unwrap_or_else(|| {
            if self.used as usize == self.pages.len() * SLOTS_PER_PAGE {
                self.pages
                    .push((0..SLOTS_PER_PAGE).map(|_| Slot::default()).collect());
            }
            self.used += 1;
            self.used - 1
        });
        (index, self.slot(index).map_or(0, |s| s.generation))
    }

    /// Puts slot `index` back among the vacant ones (an unfilled slot keeps its
    /// generation; [`Slots::take`] moves it on first).
    fn unused(&mut self, index: u32) {
        self.vacant.push(index);
    }

    /// Slot `index`, if it was ever handed out.
    fn slot(&self, index: u32) -> Option<&Slot> {
        if index >= self.used {
            return None;
        }
        let index = index as usize;
        self.pages
            .get(index / SLOTS_PER_PAGE)
            .and_then(|page| page.get(index % SLOTS_PER_PAGE))
    }

    /// Slot `index` to fill or vacate, if it was ever handed out.
    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot> {
        if index >= self.used {
            return None;
        }
        let index = index as usize;
        self.pages
            .get_mut(index / SLOTS_PER_PAGE)
            .and_then(|page| page.get_mut(index % SLOTS_PER_PAGE))
    }

    /// Takes the entry of slot `index` (of `generation`, if given) and vacates the slot.
    fn take(&mut self, index: u32, generation: Option<u32>) -> Option<Entry> {
        let slot = self.slot_mut(index)?;
        if generation.is_some_and(|g| g != slot.generation) {
            return None;
        }
        let entry = slot.entry.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.unused(index);
        Some(entry)
    }

    /// Takes every parked entry (at stop).
    fn take_all(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.pages
            .iter_mut()
            .flat_map(|page| page.iter_mut())
            .filter_map(|slot| slot.entry.take())
    }
}

/// What the parking thread and the connection tasks share.
#[derive(Debug)]
struct Shared {
    /// Registers parked sockets with the thread's poll.
    registry: mio::Registry,
    /// Wakes the thread's poll (woken slots, stop).
    waker: mio::Waker,
    /// The parked connections.
    slots: Mutex<Slots>,
    /// Slots (index, generation) whose outbox woke them, not yet resumed.
    woken: Mutex<Vec<(u32, u32)>>,
    /// Set by [`Parker::stop`].
    stop: AtomicBool,
    /// Where resumed connections run.
    runtime: tokio::runtime::Handle,
    /// The server's connection tracker (resumed tasks are spawned on it).
    tracker: TaskTracker,
    /// How long a connection is idle before it parks.
    park_after: Duration,
    /// Connections parked now (the `aviary_connections_parked` gauge).
    parked: Arc<AtomicU64>,
}

/// The parked-connection table and its thread. Shared by every plain TCP listener of a
/// server; stopped by [`Parker::stop`] at the end of shutdown.
#[derive(Debug)]
pub(crate) struct Parker {
    /// State shared with the thread and the wakers.
    shared: Arc<Shared>,
}

/// The waker a parked connection's outbox holds: queues the slot and wakes the thread.
/// Holds the table weakly, so a waker left in an outbox keeps nothing alive.
struct SlotWaker {
    /// The table.
    shared: Weak<Shared>,
    /// The slot (u32: the waker is allocated per parked connection).
    index: u32,
    /// The slot's generation when the connection parked.
    generation: u32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.woken).push((self.index, self.generation));
            if let Err(e) = shared.waker.wake() {
                warn!(error = %e, "cannot wake the parking thread");
            }
        }
    }
}

/// A lock that a panic elsewhere does not make unusable (every critical section here leaves
/// the table consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Parker {
    /// Starts the parking thread. Must be called inside the tokio runtime the connections
    /// run on; `parked` is the gauge of parked connections.
    pub(crate) fn start(
        park_after: Duration,
        tracker: TaskTracker,
        parked: Arc<AtomicU64>,
    ) -> io::Result<Arc<Self>> {
        let poll = Poll::new()?;
        let shared = Arc::new(Shared {
            registry: poll.registry().try_clone()?,
            waker: mio::Waker::new(poll.registry(), WAKE_TOKEN)?,
            slots: Mutex::default(),
            woken: Mutex::default(),
            stop: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
            tracker,
            park_after,
            parked,
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("aviary-parking".to_owned())
            .spawn(move || serve(poll, &thread_shared))?;
        Ok(Arc::new(Self { shared }))
    }

    /// `listener.park_after`.
    pub(crate) fn park_after(&self) -> Duration {
        self.shared.park_after
    }

    /// Whether connections park at all (`listener.park_after` is not zero).
    pub(crate) fn parks(&self) -> bool {
        !self.shared.park_after.is_zero()
    }

    /// How long a connection at idle step `steps` must stay idle to park: [`FIRST_PARK`]
    /// doubled `steps` times, never more than `listener.park_after`, and that from
    /// [`MAX_STEPS`] (it has parked and resumed).
    pub(crate) fn idle_period(&self, steps: u8) -> Duration {
        if steps >= MAX_STEPS {
            return self.shared.park_after;
        }
        FIRST_PARK
            .saturating_mul(1 << steps)
            .min(self.shared.park_after)
    }

    /// Parks a connection whose task is ending. If it cannot be parked (the poll refuses
    /// the socket), it resumes at once.
    pub(crate) fn park(&self, stream: std::net::TcpStream, parked: Resumable) {
        let shared = &self.shared;
        let mut stream = mio::net::TcpStream::from_std(stream);
        let mut slots = lock(&shared.slots);
        let (index, generation) = slots.vacant();
        if let Err(e) =
            shared
                .registry
                .register(&mut stream, Token(index as usize), Interest::READABLE)
        {
            // The slot stays vacant (it was not filled).
            slots.unused(index);
            drop(slots);
            debug!(conn = parked.conn.0, error = %e, "cannot park; resuming");
            spawn_resumed(shared, stream, parked);
            return;
        }
        // Under the table's lock, so a wake (which needs the lock to resume) finds the
        // entry in place.
        parked.outbox.park(Waker::from(Arc::new(SlotWaker {
            shared: Arc::downgrade(shared),
            index,
            generation,
        })));
        // `vacant` has just handed this slot out, so it is there.
        if let Some(slot) = slots.slot_mut(index) {
            slot.entry = Some(Entry {
                stream,
                parked: Held::new(parked),
                _tracked: shared.tracker.token(),
            });
        }
        shared.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops the thread and closes the sockets still parked (their broker is gone).
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.shared.waker.wake() {
            warn!(error = %e, "cannot wake the parking thread to stop it");
        }
    }

    /// Connections parked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        let slots = lock(&self.shared.slots);
        (0..slots.used)
            .filter(|&i| slots.slot(i).is_some_and(|s| s.entry.is_some()))
            .count()
    }
}

impl Drop for Parker {
    /// A server that fails to start (or is dropped without its shutdown) does not leave
    /// the thread behind. While connections are parked they hold the parker (through their
    /// context), so this runs only once none is.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The parking thread: waits on the poll and resumes the connections it reports, and those
/// their outboxes woke, until stopped.
fn serve(mut poll: Poll, shared: &Shared) {
    let mut events = Events::with_capacity(EVENTS_PER_WAIT);
    let mut woken = Vec::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            warn!(error = %e, "the parking poll failed; parked connections are closed");
            break;
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        for event in &events {
            if let Ok(index) = u32::try_from(event.token().0) {
                resume(shared, index, None); // not the poll's own waker
            }
        }
        std::mem::swap(&mut woken, &mut *lock(&shared.woken));
        for (index, generation) in woken.drain(..) {
            resume(shared, index, Some(generation));
        }
    }
    // Stopping: the broker is gone, so nothing is left to do for these connections.
    let mut slots = lock(&shared.slots);
    let closed = slots.take_all().count();
    shared.parked.store(0, Ordering::Relaxed);
    if closed > 0 {
        debug!(closed, "parked connections closed at stop");
    }
}

/// Resumes the connection in slot `index` (if it is still there, and of `generation` when
/// given).
fn resume(shared: &Shared, index: u32, generation: Option<u32>) {
    let Some(entry) = lock(&shared.slots).take(index, generation) else {
        return; // resumed already: a second event, or a stale one
    };
    shared.parked.fetch_sub(1, Ordering::Relaxed);
    let Entry {
        mut stream,
        parked,
        _tracked,
    } = entry;
    if let Err(e) = shared.registry.deregister(&mut stream) {
        debug!(conn = parked.conn.0, error = %e, "cannot deregister a parked socket");
    }
    let parked = parked.resume(&stream);
    // Data from the client, on a runtime where the broker task reads connections that
    // talk itself: it takes the connection over at once, with no task in between.
    if generation.is_none() && parked.ctx.direct_reads {
        hand_to_broker(shared, stream, parked);
    } else {
        spawn_resumed(shared, stream, parked);
    }
    // `_tracked` drops only now, after the resumed task is tracked.
}

/// Hands a parked connection whose client sent something to the broker task, which reads
/// it itself from now on (`crate::direct_reads`); through its inbox, behind the
/// connection's earlier events.
fn hand_to_broker(shared: &Shared, stream: mio::net::TcpStream, parked: Resumable) {
    let Some((stream, parked)) = register(shared, stream, parked) else {
        return;
    };
    let events = parked.ctx.events.clone();
    let handover = Box::new(crate::direct_reads::Handover {
        stream: Arc::new(stream),
        state: parked,
    });
    match events.try_send(Event::HandOver(handover)) {
        Ok(()) => {}
        Err(tokio::sync::mpsc::error::TrySendError::Full(event)) => {
            let send = async move {
                if let Err(refused) = events.send(event).await {
                    crate::connection::resume_refused(refused.0).await;
                }
            };
            shared.runtime.spawn(shared.tracker.track_future(send));
        }
        // The broker task takes no more events (shutting down): the connection resumes
        // in a task, which writes the shutdown's DISCONNECT and closes.
        Err(tokio::sync::mpsc::error::TrySendError::Closed(event)) => {
            let resumed = crate::connection::resume_refused(event);
            shared.runtime.spawn(shared.tracker.track_future(resumed));
        }
    }
}

/// Runs a connection again in a new task on the runtime.
fn spawn_resumed(shared: &Shared, stream: mio::net::TcpStream, parked: Resumable) {
    if let Some((stream, parked)) = register(shared, stream, parked) {
        let task = crate::connection::resume(stream, parked);
        shared.runtime.spawn(shared.tracker.track_future(task));
    }
}

/// Registers a parked connection's socket with tokio again (inside the runtime's context,
/// so what runs it next needs nothing more). `None` if that fails: the socket is closed,
/// and the broker is told the connection is gone.
fn register(
    shared: &Shared,
    stream: mio::net::TcpStream,
    parked: Resumable,
) -> Option<(tokio::net::TcpStream, Resumable)> {
    let registered = {
        let _runtime = shared.runtime.enter();
        tokio::net::TcpStream::from_std(std::net::TcpStream::from(stream))
    };
    match registered {
        Ok(stream) => Some((stream, parked)),
        Err(e) => {
            debug!(conn = parked.conn.0, error = %e, "cannot resume a parked connection");
            let closed = async move {
                let conn = parked.conn;
                let _ = parked.ctx.events.send(Event::Closed { conn }).await;
            };
            shared.runtime.spawn(shared.tracker.track_future(closed));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_idle_period_doubles_from_1_s_up_to_park_after() {
        let parker = Parker::start(
            Duration::from_secs(10),
            TaskTracker::new(),
            Arc::new(AtomicU64::new(0)),
        )
        .unwrap();
        let periods: Vec<_> = (0..6).map(|n| parker.idle_period(n)).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            periods,
            [
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000)
            ]
        );
        assert_eq!(parker.idle_period(MAX_STEPS), ms(10_000), "parked once");
        assert_eq!(parker.idle_period(u8::MAX), ms(10_000));
        parker.stop();
    }

    #[test]
    fn slots_are_reused_and_stale_generations_resume_nothing() {
        let mut slots = Slots::default();
        let (a, gen_a) = slots.vacant();
        assert_eq!((a, gen_a), (0, 0));
        // Filling is the parker's job; a vacant slot has nothing to take.
        assert!(slots.take(a, None).is_none());
        let (b, _) = slots.vacant();
        assert_eq!(b, 1, "an unfilled slot is not handed out twice");
        slots.unused(a);
        let (again, generation) = slots.vacant();
        assert_eq!((again, generation), (a, 0));
    }

    #[test]
    fn the_table_grows_a_page_at_a_time_and_every_slot_is_reachable() {
        let mut slots = Slots::default();
        let page = SLOTS_PER_PAGE as u32;
        for expected in 0..=page {
            let (index, generation) = slots.vacant();
            assert_eq!((index, generation), (expected, 0));
            assert!(slots.slot(index).is_some());
        }
        assert_eq!(
            slots.pages.len(),
            2,
            "a second page only for the slot beyond the first"
        );
        assert!(slots.slot(page + 1).is_none(), "not handed out yet");
        assert!(slots.take(page * 4, None).is_none());
    }

    /// A parked loopback connection: the parker's end and the client's end.
    async fn park_one(
        parker: &Parker,
        ctx: &Arc<ConnectionContext>,
        permits: &Arc<tokio::sync::Semaphore>,
        conn: u64,
    ) -> (crate::outbox::OutboxSender, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let (sender, outbox) = crate::outbox::outbox();
        let parked = Resumable {
            conn: ConnId(conn),
            peer,
            level: 4,
            steps: 0,
            outbox,
            carry: None,
            ctx: Arc::clone(ctx),
            permit: Some(Arc::clone(permits).try_acquire_owned().unwrap()),
        };
        parker.park(server, parked);
        (sender, client)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_vacated_slot_is_reused_and_an_old_waker_does_not_resume_its_new_occupant() {
        let (events, mut inbox) = tokio::sync::mpsc::channel(16);
        let ctx = Arc::new(crate::connection::tests::context(events));
        let tracker = TaskTracker::new();
        let gauge = Arc::new(AtomicU64::new(0));
        let parker =
            Parker::start(Duration::from_secs(60), tracker.clone(), Arc::clone(&gauge)).unwrap();
        let permits = Arc::new(tokio::sync::Semaphore::new(4));

        let (first, _first_client) = park_one(&parker, &ctx, &permits, 1).await;
        assert_eq!((parker.len(), gauge.load(Ordering::Relaxed)), (1, 1));
        // Keep the first connection's parked waker, as a late wake would use it.
        let stale = {
            let slots = lock(&parker.shared.slots);
            let slot = slots.slot(0).unwrap();
            let entry = slot.entry.as_ref().unwrap();
            (0, slot.generation, entry.parked.conn)
        };
        // The broker closes the first connection: it resumes (its task ends once the
        // socket closes), and its slot is vacated.
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while parker.len() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "not resumed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(gauge.load(Ordering::Relaxed), 0);

        let (_second, _second_client) = park_one(&parker, &ctx, &permits, 2).await;
        {
            let slots = lock(&parker.shared.slots);
            assert_eq!(slots.used, 1, "the vacated slot was reused");
            let slot = slots.slot(0).unwrap();
            let entry = slot.entry.as_ref().unwrap();
            assert_eq!(entry.parked.conn, ConnId(2));
            assert_ne!(slot.generation, stale.1);
        }
        // A wake meant for the first connection leaves the second one parked.
        Waker::from(Arc::new(SlotWaker {
            shared: Arc::downgrade(&parker.shared),
            index: stale.0,
            generation: stale.1,
        }))
        .wake();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            parker.len(),
            1,
            "a stale wake resumed the slot's new occupant"
        );
        assert_eq!(stale.2, ConnId(1));

        parker.stop();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while parker.len() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "not closed at stop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The broker closed the first connection itself: it was not told of a close.
        assert!(inbox.try_recv().is_err());
    }
}
