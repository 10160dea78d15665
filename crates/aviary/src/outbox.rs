//! A connection's outbound queue: packets the broker task has routed to one connection and
//! its writer has not yet encoded. Bounded; the broker side never waits on it.
//!
//! Two bounds, because packets differ in what losing them means:
//! * at [`SOFT_LIMIT`] queued packets, best-effort packets (QoS 0 PUBLISHes) are refused
//!   (the broker task drops and counts them);
//! * at [`SOFT_LIMIT`] queued *reliable* packets the connection's reader pauses, so a client
//!   that does not read its acknowledgements stops being read from (backpressure). Only
//!   reliable packets count here: a subscriber on a slow link that loses QoS 0 messages
//!   must still be read from, or its PINGREQs would go unread and keep alive would end it;
//! * reliable packets (everything else) are refused only at [`HARD_LIMIT`], a safety net
//!   that a working connection never reaches: QoS 1/2 PUBLISHes are bounded by the in-flight
//!   window and acknowledgements by the paused reader. Refusal closes the connection.
//!
//! A single soft bound for everything would close healthy fast clients: the broker task
//! handles a whole batch of events without yielding, so one pass can queue more than a
//! thousand PUBACKs for a fast publisher before its writer gets to run.
//!
//! Why not a `tokio::sync::mpsc` channel per connection: tokio allocates its channel
//! storage in blocks of 32 slots, and a `Packet` is over 200 bytes, so every idle
//! connection would hold ~7 KiB before sending anything. This queue is a [`Batch`] that
//! is empty (unallocated) while idle and allocates nothing for a single packet, plus the
//! wakers of the writer and of a paused reader; items are [`Outgoing`]s, a third of a
//! `Packet`, since a fan-out burst queues a window of deliveries for every subscriber;
//! the writer takes the whole queue at once, which also batches everything pending into
//! one write. The `std::sync::Mutex` is held only to push one packet, to take the queue or
//! to store a waker, never across an `.await`.
//!
//! Why wakers rather than `tokio::sync::Notify`: a waiting `Notified` future is a
//! ~70-byte list node that lives inside the waiting task's future, so in every idle
//! connection's task; the poll functions here keep the waker in the shared state instead
//! (16 bytes), and their futures hold only a reference.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use crate::connection::version_from_level;
use crate::metrics::WireBytes;
use crate::outgoing::{Outgoing, TYPICAL_OVERHEAD, WRITE_CHUNK};

/// Queued packets at which best-effort packets are refused and reading pauses.
pub(crate) const SOFT_LIMIT: usize = 1024;

/// Queued packets at which even reliable packets are refused: the connection is stuck.
pub(crate) const HARD_LIMIT: usize = 128 * SOFT_LIMIT;

/// How much a packet may be lost when its connection's queue is long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// May be dropped at [`SOFT_LIMIT`] (a QoS 0 PUBLISH).
    BestEffort,
    /// Refused only at [`HARD_LIMIT`], which closes the connection.
    Reliable,
}

/// The state shared by the broker side ([`OutboxSender`]) and the connection ([`Outbox`]).
#[derive(Debug, Default)]
struct Shared {
    /// The queue, whether the broker side is done, and who waits.
    state: Mutex<State>,
}

/// What is behind the mutex.
#[derive(Debug, Default)]
struct State {
    /// Packets in the order the broker produced them, each in its compact queued form.
    queue: Batch,
    /// How many of `queue` are [`Delivery::Reliable`] (what pauses the reader).
    /// (`u32`: at most [`HARD_LIMIT`]. This field, the flags, the level and the boxed
    /// reader's waker keep every connection's outbox at 128 bytes, an allocator size
    /// class; the test below pins it.)
    reliable: u32,
    /// [`CLOSED`], [`WRITER_IDLE`], [`LISTED`], [`WROTE`].
    flags: u8,
    /// The protocol level the connection's packets are encoded in (see
    /// `connection::version_from_level`).
    level: u8,
    /// The writer waiting for packets (woken after a push or a close).
    writer: Option<Waker>,
    /// A paused reader waiting for room (woken when the writer takes the queue or the
    /// outbox closes); boxed, since readers rarely pause.
    reader: Option<Box<Waker>>,
    /// The socket, while a task drives a plain TCP connection: the broker task may then
    /// write a batch itself (see [`OutboxSender::flush`]).
    direct: Option<Arc<TcpStream>>,
}

/// Flag: the broker side is gone; after the queue drains, the writer closes the connection.
const CLOSED: u8 = 1;
/// Flag: the writer waits for packets, with nothing of an earlier batch left to write: the
/// socket is free for the broker task's writes.
const WRITER_IDLE: u8 = 2;
/// Flag: the broker task has listed the outbox for its next flush (pushes then leave the
/// writer asleep).
const LISTED: u8 = 4;
/// Flag: the broker task wrote to the socket since the connection's last idleness check.
const WROTE: u8 = 8;
/// Flag: the connection has no task; the broker task reads it (`crate::direct_reads`) and
/// writes everything it can itself. The writer's waker is then the broker task's, which
/// hands the connection back to a task for what it cannot do.
const HANDED: u8 = 16;

impl State {
    /// Whether `flag` is set.
    fn is(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Sets or clears `flag`.
    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Encodes the queue and writes it to the attached socket; `true` if the socket took
    /// it all. Otherwise the rest (all of it, if the socket is full or failing: the writer
    /// then meets the error and reports it) is queued, already encoded, for the writer.
    /// `estimate` is the queue's [`Batch::estimate`]; `out` is the caller's scratch buffer,
    /// reused from one write to the next (only a rest the socket did not take is copied).
    fn write_queue(&mut self, estimate: usize, wire: &WireBytes, out: &mut BytesMut) -> bool {
        let Some(stream) = &self.direct else {
            return false;
        };
        let batch = std::mem::take(&mut self.queue);
        let version = version_from_level(self.level);
        out.clear();
        out.reserve(estimate);
        let mut sent = [0; 4];
        for item in batch {
            item.encode_counted(version, out, &mut sent);
        }
        wire.add_sent(&sent);
        self.flags |= WROTE;
        let written = stream.try_write(out).unwrap_or(0);
        if written == out.len() {
            self.reliable = 0;
            return true;
        }
        let rest = Bytes::copy_from_slice(&out[written..]);
        self.queue = Batch::One(Outgoing::Encoded(rest));
        self.reliable = 1;
        // The writer owns the socket until it has written this and waits again: later
        // pushes wake it rather than list the outbox (which would copy the rest again
        // with each pass while the socket stays full).
        self.set(WRITER_IDLE, false);
        false
    }

    /// Takes the paused reader's waker.
    fn take_reader(&mut self) -> Option<Waker> {
        self.reader.take().map(|waker| *waker)
    }
}

/// The connection's end: its writer takes batches, its reader waits for room.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Shared with the one [`OutboxSender`].
    shared: Arc<Shared>,
}

/// The broker task's end. Dropping it closes the outbox: the writer then writes what is
/// queued and closes the connection.
#[derive(Debug)]
pub(crate) struct OutboxSender {
    /// Shared with the connection's [`Outbox`].
    shared: Arc<Shared>,
}

/// The queue is at the limit for the packet's [`Delivery`]; the packet was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// What a push asks of the broker task.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Nothing: the writer was woken, or the outbox is already listed for the flush.
    Done,
    /// List the outbox and [`OutboxSender::flush`] it once the broker task runs out of
    /// events: its writer was left asleep, so that the broker task can write the packets
    /// itself.
    List,
}

/// A new outbox and its sender.
pub(crate) fn outbox() -> (OutboxSender, Outbox) {
    let shared = Arc::new(Shared::default());
    (
        OutboxSender {
            shared: Arc::clone(&shared),
        },
        Outbox { shared },
    )
}

/// The capacity of the queue a [`Batch`] allocates at its second packet: the default
/// in-flight window (`mqtt.max_inflight`), so that a window of deliveries to a subscriber
/// or of acknowledgements to a publisher is queued without a growth step (each a copy).
const FIRST_QUEUE_CAPACITY: usize = 16;

/// What the writer takes from the outbox: everything queued, in order (most batches are a
/// single packet, held without allocating).
pub(crate) type Batch = crate::batch::Batch<Outgoing>;

impl Batch {
    /// Bytes the batch is expected to encode to (payloads plus a typical header).
    pub(crate) fn estimate(&self) -> usize {
        let mut bytes = 0;
        self.for_each(|item| bytes += item.message_len() + TYPICAL_OVERHEAD);
        bytes
    }
}

impl Shared {
    /// The state; a poisoned lock is still usable (the state is a queue and a flag, and
    /// every critical section leaves it consistent).
    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OutboxSender {
    /// Queues `packet` unless the queue is at the limit for `delivery`.
    #[inline]
    pub(crate) fn push(
        &self,
        packet: impl Into<Outgoing>,
        delivery: Delivery,
    ) -> Result<Pushed, Full> {
        let writer = {
            let mut state = self.shared.lock();
            let limit = match delivery {
                Delivery::BestEffort => SOFT_LIMIT,
                Delivery::Reliable => HARD_LIMIT,
            };
            if state.queue.len() >= limit {
                return Err(Full);
            }
            state.queue.push(packet.into(), || FIRST_QUEUE_CAPACITY);
            if delivery == Delivery::Reliable {
                state.reliable += 1;
            }
            if state.direct.is_some() && state.is(WRITER_IDLE) {
                // The broker task writes (or wakes the writer) when it flushes.
                if state.is(LISTED) {
                    return Ok(Pushed::Done);
                }
                state.set(LISTED, true);
                return Ok(Pushed::List);
            }
            state.writer.take()
        };
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(Pushed::Done)
    }

    /// The broker task's flush of a listed outbox (once it has run out of events): what
    /// is queued is encoded and written to the socket here, if `write_here`, the
    /// connection's writer waits with nothing left to write, and the socket takes it all
    /// at once; otherwise the writer is woken for it (with the bytes the socket did not
    /// take, if any). Saves the connection's task a wake-up and a poll for most
    /// deliveries and acknowledgements. `scratch` is the buffer the packets are encoded
    /// in, kept by the caller for its next flush.
    ///
    /// The lock is held during the write, so the writer, the reader (waiting for room)
    /// and the parking of the connection wait for a `send` syscall at most.
    pub(crate) fn flush(&self, write_here: bool, wire: &WireBytes, scratch: &mut BytesMut) {
        let mut state = self.shared.lock();
        state.set(LISTED, false);
        if state.queue.is_empty() {
            return;
        }
        let mut reader = None;
        let estimate = state.queue.estimate();
        // A connection the broker task reads itself has no writer to wake short of a new
        // task: it is written here whatever the flush's size or the batch's.
        let handed = state.is(HANDED);
        if (write_here || handed)
            && state.is(WRITER_IDLE)
            && !state.is(CLOSED)
            && state.direct.is_some()
            && (estimate <= WRITE_CHUNK || handed)
        {
            // The queue is taken: a paused reader has room again.
            reader = state.take_reader();
            if state.write_queue(estimate, wire, scratch) {
                drop(state);
                if let Some(reader) = reader {
                    reader.wake();
                }
                return;
            }
        }
        let writer = state.writer.take();
        drop(state);
        for waker in [writer, reader].into_iter().flatten() {
            waker.wake();
        }
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        let (writer, reader) = {
            let mut state = self.shared.lock();
            state.set(CLOSED, true);
            (state.writer.take(), state.take_reader())
        };
        for waker in [writer, reader].into_iter().flatten() {
            waker.wake();
        }
    }
}

impl Outbox {
    /// Waits until packets are queued and takes all of them, in order; `None` once the
    /// sender is gone and nothing is left.
    pub(crate) async fn next_batch(&self) -> Option<Batch> {
        poll_fn(|cx| self.poll_next_batch(cx)).await
    }

    /// [`Outbox::next_batch`] as a poll function: the waker is kept in the shared state.
    fn poll_next_batch(&self, cx: &mut Context<'_>) -> Poll<Option<Batch>> {
        let mut state = self.shared.lock();
        // Set again below if the writer goes back to waiting.
        state.set(WRITER_IDLE, false);
        if !state.queue.is_empty() {
            // Take rather than drain: the idle connection then holds no queue memory.
            let batch = std::mem::take(&mut state.queue);
            state.reliable = 0;
            let reader = state.take_reader();
            drop(state);
            if let Some(reader) = reader {
                reader.wake();
            }
            return Poll::Ready(Some(batch));
        }
        if state.is(CLOSED) {
            return Poll::Ready(None);
        }
        register(&mut state.writer, cx);
        state.set(WRITER_IDLE, true);
        Poll::Pending
    }

    /// Lets the broker task write to `stream` itself while the writer waits (see
    /// [`OutboxSender::flush`]); for plain TCP connections, while a task drives them.
    pub(crate) fn attach(&self, stream: Arc<TcpStream>) {
        let mut state = self.shared.lock();
        state.direct = Some(stream);
        // Until the writer of the task that attaches polls.
        state.set(WRITER_IDLE, false);
    }

    /// Withdraws the socket given to [`Outbox::attach`]: the task driving the connection
    /// ends (closes or parks), and the socket must close or be parked with it. Waits for
    /// a write of the broker task in progress.
    pub(crate) fn detach(&self) {
        let mut state = self.shared.lock();
        state.direct = None;
        state.set(WRITER_IDLE, false);
    }

    /// The protocol level to encode in (the reader sets it from the first CONNECT).
    pub(crate) fn set_level(&self, level: u8) {
        self.shared.lock().level = level;
    }

    /// Whether the broker task wrote to the connection since the last call: activity for
    /// the idleness check (`connection::Idleness`), as a batch of the writer is.
    pub(crate) fn take_wrote(&self) -> bool {
        let mut state = self.shared.lock();
        let wrote = state.is(WROTE);
        state.set(WROTE, false);
        wrote
    }

    /// Waits while [`SOFT_LIMIT`] or more reliable packets are queued (the client is not
    /// reading what we send), so that the reader stops producing more answers. Returns at
    /// once when the sender is gone.
    pub(crate) async fn wait_for_room(&self) {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if (state.reliable as usize) < SOFT_LIMIT || state.is(CLOSED) {
                return Poll::Ready(());
            }
            match &mut state.reader {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(Box::new(cx.waker().clone())),
            }
            Poll::Pending
        })
        .await;
    }
}

impl Outbox {
    /// Hands the connection's writes to the broker task (`crate::direct_reads`): its
    /// task has ended with the writer waiting, or it was parked; `stream` is its socket,
    /// and `waker` (the broker task's, for this connection) replaces the writer's and is
    /// woken when a task is needed again (the socket did not take a whole write, or the
    /// outbox closed). `false`, changing nothing, if one is needed already.
    pub(crate) fn hand_over(&self, stream: Arc<TcpStream>, waker: Waker) -> bool {
        let mut state = self.shared.lock();
        // A writer that is not waiting has the rest of a write queued.
        if state.is(CLOSED) || (!state.is(WRITER_IDLE) && !state.queue.is_empty()) {
            return false;
        }
        state.direct = Some(stream);
        state.reader = None;
        state.writer = Some(waker);
        state.set(WRITER_IDLE, true);
        state.set(HANDED, true);
        true
    }

    /// The broker task hands the connection back to a task, which attaches the socket
    /// again (see [`Outbox::attach`]).
    pub(crate) fn hand_back(&self) {
        let mut state = self.shared.lock();
        state.writer = None;
        state.set(HANDED, false);
    }

    /// Whether a connection the broker task reads itself needs a task: the outbox
    /// closed, the socket did not take a whole write, or the client does not read what
    /// it is sent (its reads then pause: see [`Outbox::wait_for_room`]).
    pub(crate) fn needs_task(&self) -> bool {
        let state = self.shared.lock();
        state.is(CLOSED) || !state.is(WRITER_IDLE) || state.reliable as usize >= SOFT_LIMIT
    }

    /// Hands the outbox's wake-up to `waker` while the connection is parked and no task
    /// polls it (`crate::parking`): it replaces the writer's waker and is woken by the next
    /// push or by the close, at once if either already happened. The wakers of the task
    /// that parks are dropped, so they do not keep that task's memory alive.
    pub(crate) fn park(&self, waker: Waker) {
        let mut state = self.shared.lock();
        state.reader = None;
        if !state.queue.is_empty() || state.is(CLOSED) {
            state.writer = None;
            drop(state);
            waker.wake();
            return;
        }
        state.writer = Some(waker);
    }
}

/// Keeps the waker of the task polling now in `slot` (the connection's writer).
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use aviary_codec::Packet;

    use super::*;

    #[test]
    fn an_outbox_stays_in_the_128_byte_size_class() {
        // Every connection holds one: the shared state plus the `Arc`'s two counters.
        let allocated = size_of::<Shared>() + 2 * size_of::<usize>();
        assert!(allocated <= 128, "an outbox allocates {allocated} bytes");
    }

    #[tokio::test]
    async fn batches_everything_pending_then_reports_close() {
        let (tx, rx) = outbox();
        assert_eq!(
            tx.push(Packet::PingResp, Delivery::Reliable),
            Ok(Pushed::Done)
        );
        assert_eq!(
            tx.push(Packet::PingResp, Delivery::Reliable),
            Ok(Pushed::Done)
        );
        assert_eq!(rx.next_batch().await.map(|b| b.len()), Some(2));
        assert_eq!(
            tx.push(Packet::PingResp, Delivery::Reliable),
            Ok(Pushed::Done)
        );
        drop(tx);
        let batch = rx.next_batch().await;
        assert_eq!(
            batch.map(|b| b.len()),
            Some(1),
            "queued packets outlive the sender"
        );
        assert!(rx.next_batch().await.is_none());
    }

    #[tokio::test]
    async fn best_effort_is_refused_at_the_soft_limit_reliable_at_the_hard_limit() {
        let (tx, _rx) = outbox();
        for _ in 0..SOFT_LIMIT {
            assert_eq!(
                tx.push(Packet::PingResp, Delivery::BestEffort),
                Ok(Pushed::Done)
            );
        }
        assert_eq!(tx.push(Packet::PingResp, Delivery::BestEffort), Err(Full));
        for _ in SOFT_LIMIT..HARD_LIMIT {
            assert_eq!(
                tx.push(Packet::PingResp, Delivery::Reliable),
                Ok(Pushed::Done)
            );
        }
        assert_eq!(tx.push(Packet::PingResp, Delivery::Reliable), Err(Full));
    }

    #[tokio::test]
    async fn wakes_a_waiting_writer() {
        let (tx, rx) = outbox();
        let writer = tokio::spawn(async move { rx.next_batch().await.map(|b| b.len()) });
        tokio::task::yield_now().await;
        assert_eq!(
            tx.push(Packet::PingResp, Delivery::Reliable),
            Ok(Pushed::Done)
        );
        assert_eq!(writer.await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn reader_waits_for_room_until_the_writer_takes_the_queue() {
        let (tx, rx) = outbox();
        let rx = Arc::new(rx);
        for _ in 0..SOFT_LIMIT {
            assert_eq!(
                tx.push(Packet::PingResp, Delivery::Reliable),
                Ok(Pushed::Done)
            );
        }
        let reader = tokio::spawn({
            let rx = Arc::clone(&rx);
            async move { rx.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "paused while the queue is full");
        assert_eq!(rx.next_batch().await.map(|b| b.len()), Some(SOFT_LIMIT));
        reader.await.unwrap();
        // Room is there at once otherwise.
        rx.wait_for_room().await;
    }

    /// Counts its wakes.
    #[derive(Default)]
    struct CountWakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_parked_outbox_wakes_its_parker_on_push_close_or_pending_work() {
        let wakes = |c: &Arc<CountWakes>| c.0.load(std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = outbox();
        let counter = Arc::new(CountWakes::default());
        rx.park(Waker::from(Arc::clone(&counter)));
        assert_eq!(wakes(&counter), 0, "nothing to do yet");
        assert_eq!(
            tx.push(Packet::PingResp, Delivery::Reliable),
            Ok(Pushed::Done)
        );
        assert_eq!(wakes(&counter), 1, "a push wakes the parker");
        // Parking again with work queued wakes at once.
        let again = Arc::new(CountWakes::default());
        rx.park(Waker::from(Arc::clone(&again)));
        assert_eq!(wakes(&again), 1);
        let (tx, rx) = outbox();
        let closed = Arc::new(CountWakes::default());
        rx.park(Waker::from(Arc::clone(&closed)));
        drop(tx);
        assert_eq!(wakes(&closed), 1, "a close wakes the parker");
    }

    /// A connection handed to the broker task (`crate::direct_reads`): every flush is
    /// written there, however many outboxes it flushes and however large the batch; its
    /// waker fires only when a task is needed (here: the close).
    #[tokio::test]
    async fn a_handed_outbox_is_written_by_the_broker_task_and_wakes_it_for_a_task_only() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (tx, rx) = outbox();
        let counter = Arc::new(CountWakes::default());
        let wakes = |c: &Arc<CountWakes>| c.0.load(std::sync::atomic::Ordering::SeqCst);
        let server = Arc::new(server);
        rx.attach(Arc::clone(&server));
        // A rest of a write waits for a task's writer.
        rx.shared.lock().queue = Batch::One(Outgoing::Encoded(Bytes::from_static(b"x")));
        assert!(
            !rx.hand_over(Arc::clone(&server), Waker::from(Arc::clone(&counter))),
            "not while a write waits"
        );
        // The writer takes it and waits with nothing to write, as a task's does before
        // it ends.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(rx.poll_next_batch(&mut cx).is_ready());
        assert!(rx.poll_next_batch(&mut cx).is_pending());
        assert!(rx.hand_over(server, Waker::from(Arc::clone(&counter))));
        assert!(!rx.needs_task());
        let wire = WireBytes::default();
        let mut scratch = BytesMut::new();
        // A flush of many outboxes (`write_here` false) and a batch over WRITE_CHUNK.
        let big = Bytes::from(vec![7u8; WRITE_CHUNK + 1]);
        for _ in 0..3 {
            let publish = Packet::Publish(aviary_codec::Publish {
                dup: false,
                qos: aviary_codec::QoS::AtMostOnce,
                retain: false,
                topic: aviary_codec::TopicName::new("t").unwrap(),
                packet_id: None,
                properties: Default::default(),
                payload: big.clone(),
            });
            assert_eq!(tx.push(publish, Delivery::Reliable), Ok(Pushed::List));
            tx.flush(false, &wire, &mut scratch);
            // Type, a 3-byte length, the topic, the payload (a socket buffer's worth).
            let mut got = vec![0u8; 1 + 3 + 3 + WRITE_CHUNK + 1];
            client.read_exact(&mut got).await.unwrap();
        }
        assert_eq!(wakes(&counter), 0, "written by the flush, no task woken");
        assert!(!rx.needs_task());
        drop(tx);
        assert_eq!(wakes(&counter), 1, "the close needs a task");
        assert!(rx.needs_task());
    }

    #[tokio::test]
    async fn best_effort_packets_do_not_pause_the_reader() {
        let (tx, rx) = outbox();
        for _ in 0..SOFT_LIMIT {
            assert_eq!(
                tx.push(Packet::PingResp, Delivery::BestEffort),
                Ok(Pushed::Done)
            );
        }
        for _ in 1..SOFT_LIMIT {
            assert_eq!(
                tx.push(Packet::PingResp, Delivery::Reliable),
                Ok(Pushed::Done)
            );
        }
        // 2047 queued, 1023 of them reliable: a QoS 0 flood alone never stops reading.
        rx.wait_for_room().await;
    }
}
