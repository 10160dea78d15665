//! The connection driver over real loopback TCP, with the test standing in for the
//! broker task: it receives the events and holds the outbox sender.

use aviary_codec::{ConnAck, DecodeError, Packet, ReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::outbox::{Delivery, OutboxSender};

/// A context for connections whose broker task is the test (`tx` is its inbox), without
/// authentication or parking.
pub(crate) fn context(tx: mpsc::Sender<Event>) -> ConnectionContext {
    ConnectionContext {
        events: tx,
        max_packet_size: Arc::new(AtomicU32::new(1024)),
        listener: "default".into(),
        listener_off: CancellationToken::new(),
        rates: Arc::new(crate::rates::Rates::new(
            &crate::limits::PlanLimits::defaults(&aviary_core::BrokerConfig::default()),
        )),
        force_close: CancellationToken::new(),
        auth: None,
        certificate: None,
        wire: Arc::default(),
        parker: None,
        direct_writes: true,
        direct_reads: false,
    }
}

/// A connection task under test and the client socket talking to it.
struct Harness {
    client: TcpStream,
    events: mpsc::Receiver<Event>,
    outbox: OutboxSender,
    task: tokio::task::JoinHandle<()>,
    /// The connection's wire byte counters (what its reader and writer count).
    wire: Arc<crate::metrics::WireBytes>,
}

async fn harness() -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    let (tx, mut events) = mpsc::channel(16);
    let ctx = context(tx);
    let wire = Arc::clone(&ctx.wire);
    let task = tokio::spawn(run(server, ConnId(7), peer, ctx, None));
    let Some(Event::Open { conn, outbox, .. }) = events.recv().await else {
        panic!("expected Open");
    };
    assert_eq!(conn, ConnId(7));
    Harness {
        client,
        events,
        outbox,
        task,
        wire,
    }
}

/// Queues `packet` as the broker task does, flushing the outbox at once if the push
/// listed it.
fn send(outbox: &OutboxSender, packet: Packet) {
    if outbox.push(packet, Delivery::Reliable).unwrap() == crate::outbox::Pushed::List {
        outbox.flush(
            true,
            &crate::metrics::WireBytes::default(),
            &mut bytes::BytesMut::new(),
        );
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
pub(crate) const CONNECT_V5: &[u8] = &[
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
    send(&h.outbox, Packet::ConnAck(Box::new(connack)));
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
    send(&h.outbox, Packet::ConnAck(Box::new(connack)));
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

/// A client that sends much at once is read in a few reads that grow: each read is one
/// event to the broker task. 48 messages of ~1 KiB took 48 reads when a read got only the
/// room left in the buffer (now 1, 4, 16 and 64 KiB offered: 4 reads).
#[tokio::test]
async fn a_large_burst_is_read_in_few_growing_reads() {
    let mut h = harness().await;
    // PUBLISH, QoS 0, 5.0, topic "t", no properties, 990 bytes of payload: 997 bytes.
    let mut publish = vec![0x30, 0xe2, 0x07, 0x00, 0x01, b't', 0x00];
    publish.extend(std::iter::repeat_n(0xab, 990));
    assert_eq!(publish.len(), 997);
    let mut burst = CONNECT_V5.to_vec();
    for _ in 0..48 {
        burst.extend_from_slice(&publish);
    }
    // One write before the connection's task next runs (a current-thread runtime): the
    // whole burst waits in the socket when it reads.
    h.client.write_all(&burst).await.unwrap();
    let mut got = Vec::new();
    let mut events = 0;
    while got.len() < 49 && events < 49 {
        match h.events.recv().await {
            Some(Event::Packets { packets, .. }) => got.extend(packets),
            other => panic!("expected packets, got {other:?}"),
        }
        events += 1;
    }
    assert!(matches!(got[0], Packet::Connect(_)), "{:?}", got[0]);
    assert_eq!(got.len(), 49);
    for packet in &got[1..] {
        let Packet::Publish(p) = packet else {
            panic!("expected PUBLISH, got {packet:?}");
        };
        assert_eq!((p.topic.as_str(), p.payload.len()), ("t", 990));
    }
    assert!(events <= 5, "{events} reads for one burst of 47,871 bytes");
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
    // The client ended the stream: the task closes without lingering.
    h.task.await.unwrap();
    drop(h.client);
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
        send(&h.outbox, Packet::PingResp);
    }
    drop(h.outbox);
    assert_eq!(
        read_to_end(&mut h.client).await,
        [0xd0, 0x00, 0xd0, 0x00, 0xd0, 0x00]
    );
    drop(h.client); // ends the linger after our close
    h.task.await.unwrap();
}

/// DISCONNECT, MQTT 5.0, normal disconnection, no properties.
const DISCONNECT_V5: &[u8] = &[0xe0, 0x00];

#[tokio::test]
async fn after_a_disconnect_the_task_closes_without_waiting_for_the_clients_fin() {
    let mut h = harness().await;
    h.client.write_all(CONNECT_V5).await.unwrap();
    h.client.write_all(DISCONNECT_V5).await.unwrap();
    let got = packets(&mut h.events, 2).await;
    assert!(
        matches!(&got[..], [Packet::Connect(_), Packet::Disconnect(_)]),
        "{got:?}"
    );
    // The broker closes the outbox for the DISCONNECT; the client keeps its side open.
    drop(h.outbox);
    assert!(read_to_end(&mut h.client).await.is_empty());
    // The task ends on its own: it does not linger for the client's FIN (up to 2 s).
    tokio::time::timeout(Duration::from_millis(1500), h.task)
        .await
        .expect("the task lingered after the client's DISCONNECT")
        .unwrap();
    drop(h.client);
}

#[tokio::test]
async fn a_close_of_the_brokers_own_lingers_while_the_client_still_sends() {
    let mut h = harness().await;
    h.client.write_all(CONNECT_V5).await.unwrap();
    packets(&mut h.events, 1).await;
    // The broker ends the connection (keep alive, say) while the client talks on.
    drop(h.outbox);
    assert!(read_to_end(&mut h.client).await.is_empty());
    h.client.write_all(PINGREQ).await.unwrap();
    // Still reading and discarding: no reset that could destroy what we sent last.
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.client.write_all(PINGREQ).await.unwrap();
    assert!(
        !h.task.is_finished(),
        "the task closed before the client did"
    );
    drop(h.client); // the client's FIN ends the linger
    tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .expect("the linger did not end at the client's FIN")
        .unwrap();
}

/// Every idle connection holds its task's future; the rarely used states (decoding,
/// writing, sends, lingering) are boxed and the idle waits keep their wakers outside the
/// future, so that it stays small. Measured at 440 bytes with rustc 1.95 (432 before a
/// connection could be handed to the broker task, 344 before the parking state, 816
/// before the waits and the argument copies were taken out); the bound
/// leaves room for compiler changes but catches a large state slipping in inline (tokio rounds a task up to a
/// multiple of 128 bytes, so every 128 counts).
#[tokio::test]
async fn connection_future_stays_small() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let ctx = context(tx);
    let peer = listener.local_addr().unwrap();
    // The socket permit the listener's wrapper used to hold is inside now (16 bytes), and
    // the park timer's handle and the idle flags (~40): 448 with all of it. A connection
    // idle for `listener.park_after` holds no future at all (`crate::parking`).
    let future = run(stream, ConnId(1), peer, ctx, None);
    assert!(
        std::mem::size_of_val(&future) <= 448,
        "{}",
        std::mem::size_of_val(&future)
    );
}

/// When `settled` completes for a connection whose halves do what `script` does at the
/// given seconds after it opened (then both wait), in seconds of paused time.
async fn settles_after(script: &[(u64, u8)]) -> u64 {
    let parker = crate::parking::Parker::start(
        std::time::Duration::from_secs(10),
        tokio_util::task::TaskTracker::new(),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    )
    .unwrap();
    let idle = Idleness::new(false, false);
    idle.waiting(Idleness::READER);
    idle.waiting(Idleness::WRITER);
    let start = tokio::time::Instant::now();
    let (_sender, outbox) = crate::outbox::outbox();
    let settled = idle.settled(&parker, 0, &outbox);
    tokio::pin!(settled);
    let mut script = script.iter().peekable();
    let elapsed = loop {
        let next = script
            .peek()
            .map(|(at, _)| start + std::time::Duration::from_secs(*at));
        tokio::select! {
            () = &mut settled => break start.elapsed().as_secs(),
            () = tokio::time::sleep_until(next.unwrap_or(start + std::time::Duration::from_secs(3600))), if next.is_some() => {
                let (_, side) = script.next().unwrap();
                idle.woke(*side);
                idle.waiting(*side);
            }
        }
    };
    parker.stop();
    elapsed
}

#[tokio::test(start_paused = true)]
async fn a_client_that_only_connected_parks_after_a_busy_check_and_a_quiet_one() {
    // The CONNACK is written at once; checks at 1 s (busy: the CONNACK) and, a first
    // period later, 2 s (idle).
    assert_eq!(settles_after(&[(0, Idleness::WRITER)]).await, 2);
}

#[tokio::test(start_paused = true)]
async fn a_connack_held_up_by_a_connect_burst_is_followed_by_a_first_period() {
    // The broker writes the CONNACK only at 2 s: the check at 1 s finds it waiting (the
    // period doubles), the one at 3 s finds the CONNACK written since (back to the first
    // period), the one at 4 s finds it idle. (Before: the doubled periods went on, 7 s.)
    assert_eq!(settles_after(&[(2, Idleness::WRITER)]).await, 4);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_talks_after_its_connack_is_next_checked_after_park_after() {
    // It publishes at 0 s, just after its CONNACK: the 1 s check finds it talked, so the
    // next check is `park_after` (10 s) later, at 11 s, and finds it idle.
    let script = [(0, Idleness::WRITER), (0, Idleness::READER)];
    assert_eq!(settles_after(&script).await, 11);
    // Talking again before that check keeps it a period longer.
    let script = [
        (0, Idleness::WRITER),
        (0, Idleness::READER),
        (5, Idleness::READER),
    ];
    assert_eq!(settles_after(&script).await, 21);
}

/// The broker task writes a listed outbox itself while the writer waits
/// (`OutboxSender::flush`); what the socket does not take is left, encoded, to the writer,
/// and everything arrives once and in order.
#[tokio::test]
async fn what_the_socket_does_not_take_from_the_brokers_own_write_is_finished_by_the_writer() {
    let mut h = harness().await;
    // Once the reader has sent the CONNECT, the task has polled its writer too: it waits.
    h.client.write_all(CONNECT_V5).await.unwrap();
    packets(&mut h.events, 1).await;
    let wire = crate::metrics::WireBytes::default();
    let payload = bytes::Bytes::from(vec![0x5a; 60_000]);
    // 15 MB while the client reads nothing: more than loopback buffers hold.
    const COUNT: u16 = 256;
    let mut written_here = 0;
    for id in 1..=COUNT {
        let publish = Packet::Publish(aviary_codec::Publish {
            dup: false,
            qos: aviary_codec::QoS::AtLeastOnce,
            retain: false,
            topic: aviary_codec::TopicName::new("big").unwrap(),
            packet_id: aviary_codec::PacketId::new(id),
            properties: Default::default(),
            payload: payload.clone(),
        });
        if h.outbox.push(publish, Delivery::Reliable).unwrap() == crate::outbox::Pushed::List {
            h.outbox.flush(true, &wire, &mut bytes::BytesMut::new());
            written_here += 1;
        }
    }
    assert!(
        written_here >= 1,
        "the broker task wrote while the writer waited"
    );
    drop(h.outbox);
    let received = read_to_end(&mut h.client).await;
    let mut bytes = bytes::BytesMut::from(&received[..]);
    let mut ids = Vec::new();
    while let Some(packet) = aviary_codec::decode(&mut bytes, ProtocolVersion::V5, 1 << 20).unwrap()
    {
        match packet {
            Packet::Publish(p) if p.payload == payload => {
                ids.push(p.packet_id.map_or(0, aviary_codec::PacketId::get));
            }
            other => panic!("expected the PUBLISHes, got {other:?}"),
        }
    }
    assert!(
        bytes.is_empty(),
        "{} bytes of a partial packet",
        bytes.len()
    );
    assert_eq!(ids, (1..=COUNT).collect::<Vec<_>>());
    // Every byte counted once: by the broker task for what it encoded (the rest it left
    // included), by the writer for the others.
    let by_task = wire.totals().1;
    assert!(by_task >= 60_000, "the task counted {by_task}");
    assert_eq!(by_task + h.wire.totals().1, received.len() as u64);
    drop(h.client); // ends the linger after our close
    h.task.await.unwrap();
}

/// A connection whose hand-over the broker task no longer takes (it closed its channel
/// while shutting down) carries on in its task: what the broker routes still reaches the
/// client, and it closes when the outbox closes, instead of losing its socket.
#[tokio::test]
async fn a_hand_over_the_broker_no_longer_takes_leaves_the_connection_in_its_task() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    // Room for one event: the hand-over waits behind the PINGREQ's.
    let (tx, mut events) = mpsc::channel(1);
    let mut ctx = context(tx);
    ctx.direct_reads = true;
    let task = tokio::spawn(run(server, ConnId(7), peer, ctx, None));
    let Some(Event::Open { outbox, .. }) = events.recv().await else {
        panic!("expected Open");
    };
    client.write_all(CONNECT_V5).await.unwrap();
    packets(&mut events, 1).await;
    let mut pingresp = [0u8; 2];
    send(&outbox, Packet::PingResp);
    client.read_exact(&mut pingresp).await.unwrap();
    // The client talks again: once both halves wait, the task hands the connection over.
    client.write_all(PINGREQ).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    events.close();
    // Left to the connection's writer, as a flush of many outboxes does (the broker task
    // writes only a few itself): only a task still serving the connection writes it.
    if outbox.push(Packet::PingResp, Delivery::Reliable).unwrap() == crate::outbox::Pushed::List {
        let wire = crate::metrics::WireBytes::default();
        outbox.flush(false, &wire, &mut bytes::BytesMut::new());
    }
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut pingresp));
    assert!(
        matches!(read.await, Ok(Ok(_))),
        "the connection is still served"
    );
    assert_eq!(pingresp, [0xd0, 0x00]);
    drop(outbox);
    let rest = tokio::time::timeout(Duration::from_secs(10), read_to_end(&mut client)).await;
    assert_eq!(rest.ok(), Some(Vec::new()), "closed with the outbox");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the task ends")
        .unwrap();
}
