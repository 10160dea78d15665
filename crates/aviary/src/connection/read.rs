//! The read side of a connection: bytes from the socket, decoded into packets, sent to the
//! broker task in batches.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use aviary_codec::{Connect, Packet, TopicCache};
use aviary_core::ConnId;
use bytes::BytesMut;
use tokio::sync::mpsc::error::TrySendError;
use tracing::debug;

use super::{
    version_from_level, Carry, ConnectionContext, Idleness, ReadEnd, Resumable, NO_CONNECT_YET,
};
use crate::auth::AuthService;
use crate::batch::Batch;
use crate::broker_task::Event;
use crate::metrics::WireBytes;
use crate::outbox::Outbox;
use crate::transport::TransportRead;

/// Least bytes reserved when the buffer grows; it grows by doubling while a large packet
/// arrives (the codec refuses packets over the maximum size from their fixed header, which
/// caps the growth).
const READ_CHUNK: usize = 4 * 1024;

/// Most bytes offered to one read of a burst: each read that fills the room it was given
/// makes the next one's four times larger ([`FIRST_READ`], then 4, 16 and 64 KiB).
/// Before, a read got only the room left in the buffer, often one 1 KiB message's worth:
/// the 1→1 benchmark with 1 KiB messages made 10 reads per 16 messages, now 4. Held only
/// while data flows, like the buffer.
pub(crate) const MAX_READ_CHUNK: usize = 64 * 1024;

/// Room below which the buffer is grown before the next read.
const MIN_READ: usize = 256;

/// Bytes reserved for the first read of a burst: most bursts are a few small packets (a
/// PUBLISH, a run of acknowledgements), and a buffer this small comes from the allocator's
/// per-thread cache; a read that fills it is followed by larger ones ([`MAX_READ_CHUNK`]).
const FIRST_READ: usize = 1024;

/// How large the reads of one burst are: the room each read gets grows while reads fill
/// it (see [`MAX_READ_CHUNK`]). Shared by a connection's task and the broker task's own
/// reads (`broker_task::reads`).
#[derive(Debug)]
pub(crate) struct ReadSizing {
    /// Whether the last read filled the room it was given (the socket may hold more).
    filled: bool,
    /// The room the next read gets when the last one filled its room.
    chunk: usize,
}

impl Default for ReadSizing {
    fn default() -> Self {
        Self {
            filled: false,
            chunk: FIRST_READ,
        }
    }
}

impl ReadSizing {
    /// Grows `buf` if the next read needs more room; returns the room it gets. Decoded
    /// packets keep their slices of the buffer, so growing it means a new allocation:
    /// done only when little room is left for the next read, or when the socket holds
    /// more than the room left.
    pub(crate) fn make_room(&self, buf: &mut BytesMut) -> usize {
        let room = buf.capacity() - buf.len();
        if buf.capacity() == 0 && !self.filled {
            buf.reserve(FIRST_READ);
        } else if room < MIN_READ || (self.filled && room < self.chunk) {
            buf.reserve(self.chunk.max(READ_CHUNK).max(buf.len()));
        }
        buf.capacity() - buf.len()
    }

    /// A read took `read` bytes of the `room` it was given.
    pub(crate) fn took(&mut self, read: usize, room: usize) {
        self.filled = read == room;
        if self.filled {
            self.chunk = (self.chunk * 4).min(MAX_READ_CHUNK);
        }
    }

    /// The socket had nothing more.
    pub(crate) fn drained(&mut self) {
        self.filled = false;
    }

    /// Sizing for a burst expected to be about as large as the connection's last one,
    /// `last` bytes: its first read is offered room for all of it (the next power of two,
    /// up to [`MAX_READ_CHUNK`]) instead of growing there from [`FIRST_READ`], a read per
    /// step. A publisher's window of 16 1 KiB messages then takes one read, not three.
    pub(crate) fn expecting(last: usize) -> Self {
        if last <= FIRST_READ {
            return Self::default();
        }
        Self {
            filled: true,
            chunk: last.next_power_of_two().min(MAX_READ_CHUNK),
        }
    }
}

/// Most packets sent to the broker task in one event, so one huge read cannot build an
/// unbounded batch.
const MAX_PACKETS_PER_EVENT: usize = 256;

/// The size of an acknowledgement (PUBACK, PUBREC, ...), the smallest packet that comes
/// in numbers: a buffer of `n` bytes holds at most about `n / 4` packets.
const MIN_PACKET_LEN: usize = 4;

/// Most packets the batch of one read is first sized for (it grows beyond if needed).
const FIRST_BATCH_CAPACITY: usize = 32;

/// Reads and decodes until the stream ends or breaks, sending packets to the broker task;
/// pauses while the connection's outbox is long. `carry`: where reading stood when the
/// broker task, which read the connection itself, handed it back (`crate::direct_reads`).
///
/// An `async move` block rather than an `async fn`, which would keep two copies of the
/// arguments in every idle connection's future.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would keep a second copy of its arguments (see above)"
)]
pub(super) fn read_loop<'a>(
    rd: &'a mut impl TransportRead,
    state: &'a Resumable,
    version: &'a AtomicU8,
    idle: &'a Idleness,
    mut carry: Option<Box<Carry>>,
) -> impl Future<Output = ReadEnd> + Send + 'a {
    async move {
        loop {
            // What the broker task read and left, when it handed the connection back (a
            // partial packet, packets behind one that waits for its pause): decoded before
            // the next wait.
            if carry.is_none() {
                // Backpressure: while the client does not read what we send, read nothing
                // more from it (everything it sends would only add answers to the queue).
                state.outbox.wait_for_room().await;
                // Idle: wait for data holding nothing, not even a buffer; or hand the
                // connection to the broker task, which then reads it itself, while both
                // halves wait (a writer still writing is seen at a later read).
                if idle.hand_over_now()
                    && version.load(Ordering::Acquire) != NO_CONNECT_YET
                    && !state.ctx.events.is_closed()
                {
                    return ReadEnd::HandOver;
                }
                idle.waiting(Idleness::READER);
                if rd.readable().await.is_err() {
                    return ReadEnd::Closed;
                }
                // The burst counts the wake (`Idleness::woke`) at its first read that
                // finds bytes: a readiness left over from an earlier event is not the
                // client talking.
            }
            // Boxed (one allocation per burst of reads) so the buffer and the decoding
            // state exist only while data flows.
            let mut burst = Box::pin(read_burst(
                &mut *rd,
                (state.conn, state.peer),
                (version, idle),
                &state.outbox,
                &state.ctx,
                carry.take(),
            ));
            // A forced close (end of graceful shutdown) also ends a burst waiting, e.g. for
            // its authentication or for room in the broker's inbox. Its wait starts only
            // once the burst waits: most bursts never do, and registering with the token
            // and withdrawing again cost a burst two locks.
            let mut forced = None;
            let end = poll_fn(|cx| {
                if let Poll::Ready(end) = burst.as_mut().poll(cx) {
                    return Poll::Ready(end);
                }
                let forced =
                    forced.get_or_insert_with(|| Box::pin(state.ctx.force_close.cancelled()));
                match forced.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(ReadEnd::BrokerGone)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            if let Some(end) = end {
                return end;
            }
        }
    }
}

/// Reads and decodes until the socket has nothing more and no partial packet is buffered
/// (`None`: back to idle), or until reading must stop; starts with what `carry` holds.
/// Without a carry the reader has just woken: its first read that finds bytes tells
/// `idle`, and one that finds none (a spurious readiness) ends the burst unnoticed.
async fn read_burst(
    rd: &mut impl TransportRead,
    (conn, peer): (ConnId, SocketAddr),
    (version, idle): (&AtomicU8, &Idleness),
    outbox: &Outbox,
    ctx: &ConnectionContext,
    carry: Option<Box<Carry>>,
) -> Option<ReadEnd> {
    let mut carry = carry;
    let mut buf = match carry.as_deref_mut() {
        Some(Carry::Input { buf, .. }) => std::mem::take(buf),
        Some(Carry::Ended(_)) => {
            return match carry.map(|c| *c) {
                Some(Carry::Ended(end)) => Some(end),
                _ => None,
            }
        }
        None => BytesMut::new(),
    };
    // Whether to read before decoding: not when starting from what was carried over.
    let mut read = carry.is_none();
    // Whether the reader's wake is still to be told (`Idleness::woke`).
    let mut woke = carry.is_none();
    // The burst's last PUBLISH topic: a client publishing on one topic has it validated
    // and allocated once per burst, not once per message (and held only while data flows).
    let mut topics = TopicCache::default();
    let mut sizing = ReadSizing::default();
    loop {
        if read {
            let room = sizing.make_room(&mut buf);
            match rd.try_read_buf(&mut buf) {
                Ok(0) => return Some(ReadEnd::Closed),
                Ok(n) => {
                    if std::mem::take(&mut woke) {
                        idle.woke(Idleness::READER);
                    }
                    sizing.took(n, room);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    sizing.drained();
                    if buf.is_empty() {
                        return None; // drained (or spurious readiness): back to waiting
                    }
                    // A partial packet is buffered; wait for the rest.
                    if rd.readable().await.is_err() {
                        return Some(ReadEnd::Closed);
                    }
                    continue;
                }
                Err(e) => {
                    debug!(conn = conn.0, error = %e, "read failed");
                    return Some(ReadEnd::Closed);
                }
            }
        }
        read = true;
        // With a packet that waited out its pause over the plan's rates, carried over.
        if let Some(end) = decode_all(
            &mut buf,
            &mut topics,
            (conn, peer),
            version,
            outbox,
            ctx,
            carry.take(),
        )
        .await
        {
            return Some(end);
        }
        outbox.wait_for_room().await;
    }
}

/// Decodes every whole packet in `buf` and sends them to the broker, then counts their
/// wire bytes (here, inside the boxed future, so idle connections do not hold the counts);
/// `Some` when reading must stop.
///
/// The decoding itself is synchronous ([`decode_some`]); this loop only does what needs
/// waiting (sending, authenticating, pausing), so the burst's state, which is moved into a
/// fresh box at every burst of reads, holds one stopping point's worth of it.
async fn decode_all(
    buf: &mut BytesMut,
    topics: &mut TopicCache,
    (conn, peer): (ConnId, SocketAddr),
    version: &AtomicU8,
    outbox: &Outbox,
    ctx: &ConnectionContext,
    carried: Option<Box<Carry>>,
) -> Option<ReadEnd> {
    let mut wire = [0; 4];
    // A packet over the plan's rates, taken once its pause is over (carried over when the
    // broker task, which read the connection, left it waiting for its pause).
    let mut paused = carried.and_then(|c| match *c {
        Carry::Input { paused, .. } => paused,
        Carry::Ended(_) => None,
    });
    let end = loop {
        let (packets, stop) = decode_some(
            (buf, topics),
            (version, outbox),
            ctx,
            &mut wire,
            paused.take(),
        );
        // Whatever stopped decoding, the packets before it go to the broker first.
        if send_packets(conn, packets, ctx).await.is_err() {
            break Some(ReadEnd::BrokerGone);
        }
        match stop {
            Stop::Drained => break None,
            Stop::Full => {}
            Stop::Goodbye => break Some(ReadEnd::Goodbye),
            Stop::Authenticate(auth, connect) => {
                // Boxed: authentication (HTTP, JWKS, argon2) and its request are large,
                // and inline they would be moved with every burst of reads, CONNECT or not.
                if Box::pin(authenticate(auth, connect, (conn, peer), ctx))
                    .await
                    .is_err()
                {
                    break Some(ReadEnd::BrokerGone);
                }
            }
            Stop::Pause(pause, packet) => {
                // Backpressure rather than refusal (crate::rates).
                Box::pin(tokio::time::sleep(pause)).await;
                paused = Some(packet);
            }
            Stop::Undecodable(error) => {
                debug!(conn = conn.0, %error, "undecodable input");
                if send_event(ctx, Event::DecodeError { conn, error })
                    .await
                    .is_err()
                {
                    break Some(ReadEnd::BrokerGone);
                }
                break Some(ReadEnd::DecodeError);
            }
        }
    };
    ctx.wire.add_received(&wire);
    end
}

/// Why [`decode_some`] stopped: what must be done, after sending the packets decoded
/// before it, for decoding to go on.
pub(crate) enum Stop<'a> {
    /// No whole packet is left in the buffer.
    Drained,
    /// The batch holds [`MAX_PACKETS_PER_EVENT`] packets.
    Full,
    /// The batch ends with the client's DISCONNECT: it sends nothing after it
    /// [MQTT-3.14.4-2], so reading ends and the task closes without waiting for its FIN.
    Goodbye,
    /// The connection's first CONNECT, on a listener with authentication (not in the
    /// batch).
    Authenticate(&'a AuthService, Box<Connect>),
    /// A packet over the plan's rates (not in the batch): wait this long, then take it.
    Pause(std::time::Duration, Packet),
    /// The input does not decode.
    Undecodable(aviary_codec::DecodeError),
}

/// Decodes whole packets from `buf` into a batch, adding each one's size to `wire` by its
/// class, until one of [`Stop`]; `paused`, a packet that waited out its pause, is taken
/// first.
pub(crate) fn decode_some<'a>(
    (buf, topics): (&mut BytesMut, &mut TopicCache),
    (version, outbox): (&AtomicU8, &Outbox),
    ctx: &'a ConnectionContext,
    wire: &mut [u64; 4],
    paused: Option<Packet>,
) -> (Batch<Packet>, Stop<'a>) {
    let mut packets = Batch::default();
    if let Some(packet) = paused {
        if let Some(stop) = take(packet, &mut packets, buf.len()) {
            return (packets, stop);
        }
    }
    loop {
        let current = version_from_level(version.load(Ordering::Acquire));
        let before = buf.len();
        let max_packet_size = ctx.max_packet_size.load(Ordering::Relaxed);
        let packet = match aviary_codec::decode_with(buf, current, max_packet_size, topics) {
            Ok(Some(packet)) => packet,
            Ok(None) => return (packets, Stop::Drained),
            Err(error) => return (packets, Stop::Undecodable(error)),
        };
        wire[WireBytes::class(&packet)] += (before - buf.len()) as u64;
        let first_connect = match &packet {
            // Stored before the broker sees the CONNECT, so its CONNACK is encoded in the
            // client's version. Only the first CONNECT fixes the version; a second one is
            // a protocol error the broker answers [MQTT-3.1.0-2].
            Packet::Connect(connect) => {
                let level = connect.protocol.level();
                let first = version
                    .compare_exchange(NO_CONNECT_YET, level, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if first {
                    // The broker task encodes in it too, when it writes itself.
                    outbox.set_level(level);
                }
                first
            }
            _ => false,
        };
        let packet = match (first_connect, &ctx.auth, packet) {
            (true, Some(auth), Packet::Connect(connect)) => {
                return (packets, Stop::Authenticate(auth, connect))
            }
            (_, _, packet) => packet,
        };
        let pause = ctx.rates.pace(&packet);
        if !pause.is_zero() {
            return (packets, Stop::Pause(pause, packet));
        }
        if let Some(stop) = take(packet, &mut packets, before) {
            return (packets, stop);
        }
    }
}

/// Adds `packet` to the batch; the [`Stop`] it makes, if any. `buffered`: the bytes that
/// held it and the packets after it, to size the batch.
fn take(packet: Packet, packets: &mut Batch<Packet>, buffered: usize) -> Option<Stop<'static>> {
    let goodbye = matches!(packet, Packet::Disconnect(_));
    // Beyond one packet, sized once from what was buffered rather than grown (each step a
    // copy of packets of up to 96 bytes): the packet already held, plus at most one per 4
    // bytes (an acknowledgement, the smallest frequent packet) of what is left. A window
    // of 16 acknowledgements (64 bytes) fits.
    packets.push(packet, || {
        (1 + buffered / MIN_PACKET_LEN).clamp(2, FIRST_BATCH_CAPACITY)
    });
    if goodbye {
        Some(Stop::Goodbye)
    } else if packets.len() == MAX_PACKETS_PER_EVENT {
        Some(Stop::Full)
    } else {
        None
    }
}

/// The first CONNECT of a connection on a listener with authentication: authenticated
/// here, off the broker task, after the packets decoded before it have gone to the broker;
/// what follows it waits, so the broker sees it after the outcome. `Err` when the broker
/// task is gone.
async fn authenticate(
    auth: &AuthService,
    connect: Box<Connect>,
    (conn, peer): (ConnId, SocketAddr),
    ctx: &ConnectionContext,
) -> Result<(), ()> {
    let request = AuthService::request(&connect, peer, ctx.certificate.clone());
    // The connect rate is checked before authenticating: CONNECTs over it are refused
    // (0x9F) without costing an argon2 hash or an HTTP call.
    if !ctx.rates.admit_connect(connect.will.is_some()) {
        return send_event(ctx, Event::ConnectOverRate { conn, connect }).await;
    }
    let outcome = auth.authenticate(&request).await;
    let event = Event::Connect {
        conn,
        connect,
        outcome,
    };
    send_event(ctx, event).await
}

/// Sends a batch of packets to the broker task (nothing when empty); see [`send_event`].
fn send_packets(conn: ConnId, packets: Batch<Packet>, ctx: &ConnectionContext) -> SendEvent<'_> {
    if packets.is_empty() {
        return SendEvent::Done(Ok(()));
    }
    let event = Event::Packets {
        conn,
        packets,
        read_at: tokio::time::Instant::now().into_std(),
    };
    send_event(ctx, event)
}

/// Sends `event` to the broker task: at once, when its inbox has room (nearly always), or
/// else when the returned future is awaited and room comes; its output is `Err` when the
/// broker task is gone.
///
/// Plain functions rather than `async fn`s: an `async fn`'s state holds its event until
/// it completes, and every caller's state holds that state at its `.await`, so each level
/// added a copy of the event (and of the batch in it) to the burst's state, which is moved
/// into a fresh box at every burst of reads. That state was 1,288 bytes: in the IoT
/// scenario, a kilobyte copied into memory not in the cache for every message.
fn send_event(ctx: &ConnectionContext, event: Event) -> SendEvent<'_> {
    match ctx.events.try_send(event) {
        Ok(()) => SendEvent::Done(Ok(())),
        Err(TrySendError::Full(event)) => SendEvent::Waiting(Box::pin(async move {
            ctx.events.send(event).await.map_err(|_| ())
        })),
        Err(TrySendError::Closed(_)) => SendEvent::Done(Err(())),
    }
}

/// A send to the broker task ([`send_event`]): done, or waiting for room in a box, so
/// that awaiting it adds a pointer to the caller's state.
enum SendEvent<'a> {
    Done(Result<(), ()>),
    Waiting(Pin<Box<dyn Future<Output = Result<(), ()>> + Send + 'a>>),
}

impl Future for SendEvent<'_> {
    type Output = Result<(), ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Done(result) => Poll::Ready(*result),
            Self::Waiting(wait) => wait.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Transport;

    /// A connection whose last burst was a window of 16 1 KiB messages gets room for all
    /// of it in its next first read; one whose last burst was small starts small, and a
    /// huge one is capped.
    #[test]
    fn a_burst_like_the_last_one_is_offered_room_for_all_of_it() {
        let window = 16 * 1_046;
        let sizing = ReadSizing::expecting(window);
        let mut buf = BytesMut::new();
        let room = sizing.make_room(&mut buf);
        assert!(room >= window, "room {room} for a {window}-byte burst");
        assert!(
            room <= 2 * window,
            "room {room}: at most twice the last burst"
        );
        // Leftover room too small for the burst: a buffer that has it.
        let mut leftover = BytesMut::with_capacity(8 * 1024);
        assert!(sizing.make_room(&mut leftover) >= window);

        for small in [0, 64, FIRST_READ] {
            let mut buf = BytesMut::new();
            let room = ReadSizing::expecting(small).make_room(&mut buf);
            assert_eq!(room, FIRST_READ, "after a burst of {small} bytes");
        }
        let mut buf = BytesMut::new();
        let room = ReadSizing::expecting(10 * MAX_READ_CHUNK).make_room(&mut buf);
        assert!(
            (MAX_READ_CHUNK..2 * MAX_READ_CHUNK).contains(&room),
            "{room}"
        );
    }

    /// A read of 16 acknowledgements (64 bytes) is batched in one allocation sized for all
    /// of them, counting the first packet already held (it was one short, and grew).
    #[test]
    fn a_window_of_acknowledgements_fits_the_batch_it_starts() {
        let mut packets = Batch::default();
        let acks = 16;
        for i in 0..acks {
            let left = (acks - i) * MIN_PACKET_LEN;
            // Any packet of the smallest size sizes the batch alike.
            assert!(take(Packet::PingReq, &mut packets, left).is_none());
        }
        let Batch::Many(items) = packets else {
            panic!("16 packets are held in a Vec");
        };
        assert_eq!(items.len(), acks);
        assert_eq!(
            items.capacity(),
            acks,
            "sized at the second packet, never grown"
        );
    }

    /// A burst's state is boxed at every wake-up that finds data, into a block the cache
    /// rarely holds (see [`send_event`]): 696 bytes with rustc 1.95, 1,288 when the sends
    /// and the decoding were nested `async fn`s. The bound catches such copies slipping
    /// back in.
    #[tokio::test]
    async fn a_burst_of_reads_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let stream = tokio::net::TcpStream::connect(peer).await.unwrap();
        let (mut rd, _wr) = Transport::split(stream);
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let ctx = super::super::tests::context(tx);
        let (_sender, outbox) = crate::outbox::outbox();
        let version = AtomicU8::new(NO_CONNECT_YET);
        let idle = Idleness::default();
        let burst = read_burst(
            &mut rd,
            (ConnId(1), peer),
            (&version, &idle),
            &outbox,
            &ctx,
            None,
        );
        let size = std::mem::size_of_val(&burst);
        assert!(size <= 768, "{size}");
    }

    /// A reader woken by a readiness that finds nothing to read (on a runtime of several
    /// threads, an event of the socket's other direction can leave a read readiness set)
    /// does not count as the client talking: idle clients that only connected were kept
    /// from parking for `listener.park_after` instead of a second.
    #[tokio::test]
    async fn a_wake_that_reads_nothing_is_not_the_client_talking() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(peer).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (mut rd, _wr) = Transport::split(server);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let ctx = super::super::tests::context(tx);
        let (_sender, outbox) = crate::outbox::outbox();
        let version = AtomicU8::new(NO_CONNECT_YET);
        let idle = Idleness::default();
        let bits = || idle.0.load(Ordering::Relaxed);
        let peer_and_conn = (ConnId(1), peer);
        // A burst from a wake, as the read loop runs it.
        macro_rules! burst {
            () => {
                read_burst(
                    &mut rd,
                    peer_and_conn,
                    (&version, &idle),
                    &outbox,
                    &ctx,
                    None,
                )
                .await
            };
        }
        // Nothing to read: the burst ends at once and the wake is not counted.
        assert!(burst!().is_none());
        assert_eq!(bits() & (Idleness::READ_ONCE | Idleness::ACTIVE), 0);
        // The CONNECT: counted as the reader's first wake.
        client
            .write_all(super::super::tests::CONNECT_V5)
            .await
            .unwrap();
        rd.readable().await.unwrap();
        assert!(burst!().is_none());
        assert!(rx.recv().await.is_some(), "the CONNECT went to the broker");
        let once = Idleness::READ_ONCE | Idleness::ACTIVE;
        assert_eq!(bits() & once, once);
        assert_eq!(bits() & Idleness::READ_AGAIN, 0);
        // Another wake that finds nothing: still read once, not again.
        assert!(burst!().is_none());
        assert_eq!(bits() & Idleness::READ_AGAIN, 0);
    }
}
