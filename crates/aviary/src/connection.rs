//! One client connection: reads bytes, decodes whole packets and hands them to the broker
//! task in batches; encodes what the broker routes to it into one buffer per batch and
//! writes it with one `write_all`. Owns the socket; knows nothing of MQTT semantics beyond
//! which protocol version to decode and encode with.
//!
//! Reading and writing run concurrently in the same task (so a client that writes without
//! reading cannot deadlock us against it), and an idle connection holds no buffers: the
//! read buffer is allocated once the socket is readable and dropped when it is empty again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aviary_codec::{Packet, ProtocolVersion};
use aviary_core::ConnId;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::auth::{AuthService, PeerCertificate};
use crate::broker_task::Event;
use crate::outbox::{outbox, Outbox};

/// Bytes reserved for a read when the buffer is empty; the buffer grows by doubling while
/// a large packet arrives (the codec refuses packets over the maximum size from their fixed
/// header, which caps the growth).
const READ_CHUNK: usize = 4 * 1024;

/// Most packets sent to the broker task in one event, so one huge read cannot build an
/// unbounded batch.
const MAX_PACKETS_PER_EVENT: usize = 256;

/// Encoded bytes collected before they are written, so a batch of large packets is written
/// in pieces instead of being encoded into one huge buffer.
const WRITE_CHUNK: usize = 64 * 1024;

/// A write that makes no progress for this long means the peer is gone or stuck; the
/// connection is then dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// After we close our side, how long we keep reading (and discarding) so that unread bytes
/// from the client do not turn our close into a reset that could destroy the last packets
/// we sent (the DISCONNECT with the reason) before the client reads them.
const LINGER: Duration = Duration::from_secs(2);

/// What every connection task needs from the server.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionContext {
    /// The broker task's inbox.
    pub(crate) events: mpsc::Sender<Event>,
    /// Largest packet accepted from clients (`mqtt.max_packet_size`), enforced while
    /// decoding, before a body is buffered.
    pub(crate) max_packet_size: u32,
    /// Cancelled when graceful shutdown has waited long enough: connections still open
    /// are then dropped.
    pub(crate) force_close: CancellationToken,
    /// Authenticates CONNECT before the broker sees it; `None`: the broker accepts every
    /// CONNECT's credentials (`handle_packet`).
    pub(crate) auth: Option<Arc<AuthService>>,
    /// The verified client certificate of this connection (set per connection by a TLS
    /// listener).
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
}

/// Why the read side stopped.
enum ReadEnd {
    /// End of stream or an I/O error: the broker must be told the transport is gone.
    Closed,
    /// Undecodable bytes: the broker has been told and will close the connection.
    DecodeError,
    /// The broker task is gone (shutdown).
    BrokerGone,
}

/// Why the write side stopped.
enum WriteEnd {
    /// The broker closed the connection; everything queued was written.
    Done,
    /// Writing failed or stalled: the broker must be told the transport is gone.
    Failed,
}

/// Drives connection `conn` until it is closed by either side or by shutdown.
pub(crate) async fn run(stream: TcpStream, conn: ConnId, peer: SocketAddr, ctx: ConnectionContext) {
    let (sender, outbox) = outbox();
    let open = Event::Open {
        conn,
        peer,
        outbox: sender,
    };
    // Sends in this function are boxed: they happen once per connection, and inline they
    // would enlarge every connection's future for its whole life.
    if Box::pin(ctx.events.send(open)).await.is_err() {
        return; // shutting down
    }
    debug!(conn = conn.0, %peer, "connection open");
    let _panic_guard = PanicGuard {
        conn,
        events: &ctx.events,
    };
    let (mut rd, wr) = stream.into_split();
    // The protocol level of the connection's first CONNECT, or `NO_CONNECT_YET`.
    let version = AtomicU8::new(NO_CONNECT_YET);

    let tell_closed = {
        let reader = read_loop(&mut rd, (conn, peer), &version, &outbox, &ctx);
        let writer = write_loop(wr, &outbox, &version);
        tokio::pin!(reader, writer);
        tokio::select! {
            end = &mut reader => {
                let tell = matches!(end, ReadEnd::Closed);
                if tell {
                    let _ = Box::pin(ctx.events.send(Event::Closed { conn })).await;
                }
                // The broker closes the outbox (after `Closed`, or after a decode error
                // once it has queued its DISCONNECT); the writer then ends.
                tokio::select! {
                    _ = &mut writer => {}
                    () = ctx.force_close.cancelled() => {}
                }
                false
            }
            end = &mut writer => matches!(end, WriteEnd::Failed),
            () = ctx.force_close.cancelled() => false,
        }
    };
    if tell_closed {
        let _ = Box::pin(ctx.events.send(Event::Closed { conn })).await;
    } else {
        Box::pin(linger(&mut rd, &ctx.force_close)).await;
    }
    debug!(conn = conn.0, %peer, "connection closed");
}

/// Tells the broker a connection is gone if its task unwinds from a panic (a bug, e.g. in
/// the codec), so the broker does not keep a session attached to a dead connection.
struct PanicGuard<'a> {
    /// The connection this task drives.
    conn: ConnId,
    /// The broker task's inbox.
    events: &'a mpsc::Sender<Event>,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Cannot await while unwinding; if the inbox is full the broker learns of the
            // loss only through keep alive.
            let _ = self.events.try_send(Event::Closed { conn: self.conn });
        }
    }
}

/// Reads and decodes until the stream ends or breaks, sending packets to the broker task;
/// pauses while the connection's outbox is long.
async fn read_loop(
    rd: &mut OwnedReadHalf,
    (conn, peer): (ConnId, SocketAddr),
    version: &AtomicU8,
    outbox: &Outbox,
    ctx: &ConnectionContext,
) -> ReadEnd {
    let mut buf = BytesMut::new();
    loop {
        // Backpressure: while the client does not read what we send, read nothing more
        // from it (everything it sends would only add answers to the queue).
        outbox.wait_for_room().await;
        if buf.is_empty() {
            // Idle: wait for data without holding a buffer.
            buf = BytesMut::new();
            if rd.readable().await.is_err() {
                return ReadEnd::Closed;
            }
        }
        buf.reserve(READ_CHUNK.max(buf.len()));
        match rd.try_read_buf(&mut buf) {
            Ok(0) => return ReadEnd::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if buf.is_empty() {
                    continue; // spurious readiness: back to waiting
                }
                // A partial packet is buffered; wait for the rest.
                if rd.readable().await.is_err() {
                    return ReadEnd::Closed;
                }
                continue;
            }
            Err(e) => {
                debug!(conn = conn.0, error = %e, "read failed");
                return ReadEnd::Closed;
            }
        }
        // Boxed (one allocation per read) so the decoding state does not sit in every
        // idle connection's future.
        if let Some(end) = Box::pin(decode_all(&mut buf, (conn, peer), version, ctx)).await {
            return end;
        }
    }
}

/// Decodes every whole packet in `buf` and sends them to the broker; `Some` when reading
/// must stop.
async fn decode_all(
    buf: &mut BytesMut,
    (conn, peer): (ConnId, SocketAddr),
    version: &AtomicU8,
    ctx: &ConnectionContext,
) -> Option<ReadEnd> {
    let mut packets = Vec::new();
    loop {
        let current = version_from_level(version.load(Ordering::Acquire));
        match aviary_codec::decode(buf, current, ctx.max_packet_size) {
            Ok(Some(packet)) => {
                let mut first_connect = false;
                if let Packet::Connect(connect) = &packet {
                    // Stored before the broker sees the CONNECT, so its CONNACK is encoded
                    // in the client's version. Only the first CONNECT fixes the version; a
                    // second one is a protocol error the broker answers [MQTT-3.1.0-2].
                    first_connect = version
                        .compare_exchange(
                            NO_CONNECT_YET,
                            connect.protocol.level(),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok();
                }
                if let (Packet::Connect(connect), Some(auth), true) =
                    (&packet, &ctx.auth, first_connect)
                {
                    // Authenticated here, off the broker task; what follows the CONNECT
                    // waits, so the broker sees it after the outcome.
                    let request = AuthService::request(connect, peer, ctx.certificate.clone());
                    let batch = std::mem::take(&mut packets);
                    if send_packets(conn, batch, ctx).await.is_err() {
                        return Some(ReadEnd::BrokerGone);
                    }
                    let outcome = auth.authenticate(&request).await;
                    if let Packet::Connect(connect) = packet {
                        let event = Event::Connect {
                            conn,
                            connect,
                            outcome,
                        };
                        if ctx.events.send(event).await.is_err() {
                            return Some(ReadEnd::BrokerGone);
                        }
                    }
                    continue;
                }
                packets.push(packet);
                if packets.len() == MAX_PACKETS_PER_EVENT {
                    let batch = std::mem::take(&mut packets);
                    if send_packets(conn, batch, ctx).await.is_err() {
                        return Some(ReadEnd::BrokerGone);
                    }
                }
            }
            Ok(None) => break,
            Err(error) => {
                debug!(conn = conn.0, %error, "undecodable input");
                if send_packets(conn, packets, ctx).await.is_err()
                    || ctx
                        .events
                        .send(Event::DecodeError { conn, error })
                        .await
                        .is_err()
                {
                    return Some(ReadEnd::BrokerGone);
                }
                return Some(ReadEnd::DecodeError);
            }
        }
    }
    if send_packets(conn, packets, ctx).await.is_err() {
        return Some(ReadEnd::BrokerGone);
    }
    None
}

/// Sends a batch of packets to the broker task (nothing when empty); `Err` when the broker
/// task is gone.
async fn send_packets(
    conn: ConnId,
    packets: Vec<Packet>,
    ctx: &ConnectionContext,
) -> Result<(), ()> {
    if packets.is_empty() {
        return Ok(());
    }
    ctx.events
        .send(Event::Packets { conn, packets })
        .await
        .map_err(|_| ())
}

/// Writes everything the broker routes to this connection; when the broker closes the
/// outbox, shuts the write side down (TCP FIN after the last packet).
async fn write_loop(mut wr: OwnedWriteHalf, outbox: &Outbox, version: &AtomicU8) -> WriteEnd {
    while let Some(batch) = outbox.next_batch().await {
        let current = version_from_level(version.load(Ordering::Acquire));
        // Boxed (one allocation per batch) so the encoding and write state does not sit in
        // every idle connection's future.
        if !Box::pin(write_batch(&mut wr, batch, current)).await {
            return WriteEnd::Failed;
        }
    }
    let _ = Box::pin(tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown())).await;
    WriteEnd::Done
}

/// Encodes `batch` in `version` and writes it, in pieces of about [`WRITE_CHUNK`] bytes;
/// `false` when writing failed.
async fn write_batch(
    wr: &mut OwnedWriteHalf,
    batch: VecDeque<Packet>,
    version: ProtocolVersion,
) -> bool {
    let mut out = BytesMut::new();
    for packet in batch {
        if let Err(error) = aviary_codec::encode(&packet, version, &mut out) {
            // The broker produced a packet this version cannot carry: a bug there, but not
            // a reason to drop the connection.
            warn!(%error, ?packet, "cannot encode packet; skipped");
            continue;
        }
        if out.len() >= WRITE_CHUNK {
            if !write(wr, &out).await {
                return false;
            }
            out.clear();
        }
    }
    out.is_empty() || write(wr, &out).await
}

/// Writes all of `bytes`; `false` on error or when the peer stops reading for too long.
async fn write(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "write failed");
            false
        }
        Err(_) => {
            debug!("write timed out");
            false
        }
    }
}

/// Reads and discards until the peer closes, for at most [`LINGER`].
async fn linger(rd: &mut OwnedReadHalf, force_close: &CancellationToken) {
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

/// The version to decode and encode with for a level stored by [`decode_all`]. Before
/// CONNECT (and for the CONNACK refusing an unsupported version) that is 3.1.1, whose
/// CONNACK every client version can read.
fn version_from_level(level: u8) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V3_1,
        5 => ProtocolVersion::V5,
        _ => ProtocolVersion::V3_1_1,
    }
}

#[cfg(test)]
mod tests {
    //! The connection driver over real loopback TCP, with the test standing in for the
    //! broker task: it receives the events and holds the outbox sender.

    use aviary_codec::{ConnAck, DecodeError, ReasonCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::outbox::{Delivery, OutboxSender};

    /// A connection task under test and the client socket talking to it.
    struct Harness {
        client: TcpStream,
        events: mpsc::Receiver<Event>,
        outbox: OutboxSender,
        task: tokio::task::JoinHandle<()>,
    }

    async fn harness() -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let (tx, mut events) = mpsc::channel(16);
        let ctx = ConnectionContext {
            events: tx,
            max_packet_size: 1024,
            force_close: CancellationToken::new(),
            auth: None,
            certificate: None,
        };
        let task = tokio::spawn(run(server, ConnId(7), peer, ctx));
        let Some(Event::Open { conn, outbox, .. }) = events.recv().await else {
            panic!("expected Open");
        };
        assert_eq!(conn, ConnId(7));
        Harness {
            client,
            events,
            outbox,
            task,
        }
    }

    /// Collects decoded packets from events until `n` have arrived (bounded by `n` events).
    async fn packets(events: &mut mpsc::Receiver<Event>, n: usize) -> Vec<Packet> {
        let mut all = Vec::new();
        for _ in 0..n {
            match events.recv().await {
                Some(Event::Packets { packets, .. }) => all.extend(packets),
                other => panic!("expected packets, got {other:?}"),
            }
            if all.len() >= n {
                break;
            }
        }
        all
    }

    /// Reads until EOF (bounded by the peer closing).
    async fn read_to_end(client: &mut TcpStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        client.read_to_end(&mut bytes).await.unwrap();
        bytes
    }

    /// CONNECT, MQTT 5.0, clean start, keep alive 60, empty client id, no properties.
    const CONNECT_V5: &[u8] = &[
        0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x00,
    ];
    const PINGREQ: &[u8] = &[0xc0, 0x00];

    #[tokio::test]
    async fn packets_of_one_read_arrive_in_order_and_connect_sets_the_version() {
        let mut h = harness().await;
        h.client
            .write_all(&[CONNECT_V5, PINGREQ].concat())
            .await
            .unwrap();
        let got = packets(&mut h.events, 2).await;
        assert!(
            matches!(&got[..], [Packet::Connect(c), Packet::PingReq] if c.protocol == ProtocolVersion::V5),
            "{got:?}"
        );
        // After a 5.0 CONNECT, a CONNACK is encoded as 5.0: with a property length byte.
        let connack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::SUCCESS,
            properties: Default::default(),
        };
        h.outbox
            .push(Packet::ConnAck(connack), Delivery::Reliable)
            .unwrap();
        drop(h.outbox);
        assert_eq!(
            read_to_end(&mut h.client).await,
            [0x20, 0x03, 0x00, 0x00, 0x00]
        );
        drop(h.client); // ends the linger after our close
        h.task.await.unwrap();
    }

    #[tokio::test]
    async fn mqtt_3_1_2_2_refused_version_is_answered_in_3_1_1() {
        let mut h = harness().await;
        // CONNECT with protocol level 6.
        let connect = [
            0x10, 0x0c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3c, 0x00, 0x00,
        ];
        h.client.write_all(&connect).await.unwrap();
        match h.events.recv().await {
            Some(Event::DecodeError { conn, error }) => {
                assert_eq!(conn, ConnId(7));
                assert_eq!(error, DecodeError::UnsupportedProtocolVersion { level: 6 });
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
        let connack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            properties: Default::default(),
        };
        h.outbox
            .push(Packet::ConnAck(connack), Delivery::Reliable)
            .unwrap();
        drop(h.outbox);
        // 3.1.1 return code 0x01: unacceptable protocol version [MQTT-3.1.2-2].
        assert_eq!(read_to_end(&mut h.client).await, [0x20, 0x02, 0x00, 0x01]);
        drop(h.client); // ends the linger after our close
        h.task.await.unwrap();
    }

    #[tokio::test]
    async fn packet_split_across_reads_is_reassembled() {
        let mut h = harness().await;
        for byte in CONNECT_V5 {
            h.client.write_all(&[*byte]).await.unwrap();
            h.client.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        let got = packets(&mut h.events, 1).await;
        assert!(matches!(&got[..], [Packet::Connect(_)]), "{got:?}");
    }

    #[tokio::test]
    async fn end_of_stream_reports_closed_and_the_task_ends_when_the_broker_lets_go() {
        let mut h = harness().await;
        h.client.shutdown().await.unwrap();
        assert!(matches!(
            h.events.recv().await,
            Some(Event::Closed { conn: ConnId(7) })
        ));
        drop(h.outbox);
        drop(h.client); // ends the linger after our close
        h.task.await.unwrap();
    }

    #[tokio::test]
    async fn oversized_packet_is_a_decode_error() {
        let mut h = harness().await;
        // PUBLISH announcing 2000 bytes against a maximum of 1024: refused from the header.
        h.client.write_all(&[0x30, 0xd0, 0x0f]).await.unwrap();
        assert!(matches!(
            h.events.recv().await,
            Some(Event::DecodeError {
                error: DecodeError::PacketTooLarge { .. },
                ..
            })
        ));
    }

    #[tokio::test]
    async fn closing_the_outbox_flushes_then_closes_the_socket() {
        let mut h = harness().await;
        for _ in 0..3 {
            h.outbox.push(Packet::PingResp, Delivery::Reliable).unwrap();
        }
        drop(h.outbox);
        assert_eq!(
            read_to_end(&mut h.client).await,
            [0xd0, 0x00, 0xd0, 0x00, 0xd0, 0x00]
        );
        drop(h.client); // ends the linger after our close
        h.task.await.unwrap();
    }

    /// Every idle connection holds its task's future; the rarely used states (decoding,
    /// writing, sends, lingering) are boxed so that it stays small. Measured at 816 bytes
    /// with rustc 1.95; the bound leaves room for compiler changes but catches a large
    /// state slipping in inline.
    #[tokio::test]
    async fn connection_future_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let ctx = ConnectionContext {
            events: tx,
            max_packet_size: 1024,
            force_close: CancellationToken::new(),
            auth: None,
            certificate: None,
        };
        let peer = listener.local_addr().unwrap();
        let future = run(stream, ConnId(1), peer, ctx);
        assert!(
            std::mem::size_of_val(&future) <= 1200,
            "{}",
            std::mem::size_of_val(&future)
        );
    }
}
