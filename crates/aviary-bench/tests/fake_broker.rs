//! The client against a scripted broker on a loopback socket, with literal wire bytes:
//! behaviours that real brokers only show by timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_bench::client::subscriber::{self, SubscriberControl};
use aviary_bench::client::{ConnectOptions, Connection, Progress};
use aviary_codec::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A resumed session's queued messages may arrive in the same segment as CONNACK; the
/// subscriber must handle them without waiting for more bytes (which never come until
/// they are acknowledged).
#[tokio::test]
async fn messages_arriving_with_connack_are_acknowledged() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let broker = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = sock.read(&mut buf).await.unwrap(); // CONNECT
        let mut out = vec![0x20, 0x02, 0x01, 0x00]; // CONNACK, session present
                                                    // PUBLISH QoS 1, topic "t", packet id 7, 16-byte stamp: publisher 0, sequence 0.
        out.extend_from_slice(&[0x32, 2 + 1 + 2 + 16, 0x00, 0x01, b't', 0x00, 0x07]);
        out.extend_from_slice(&[0u8; 16]);
        sock.write_all(&out).await.unwrap();
        // Expect PUBACK for packet id 7.
        let mut ack = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut ack))
            .await
            .expect("PUBACK within 5 s")
            .unwrap();
        assert_eq!(ack, [0x40, 0x02, 0x00, 0x07]);
    });
    let options = ConnectOptions {
        broker: addr,
        source_ip: None,
        client_id: "resumed".into(),
        version: ProtocolVersion::V3_1_1,
        clean_start: false,
        keep_alive: 0,
    };
    let conn = Connection::open(&options).await.unwrap();
    assert!(conn.session_present);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let progress = Arc::new(Progress::default());
    let control = SubscriberControl {
        stop: stop_rx,
        progress: Arc::clone(&progress),
        epoch: Instant::now(),
        publishers: 1,
    };
    let task = tokio::spawn(subscriber::run(conn, control));
    broker.await.unwrap();
    let _ = stop_tx.send(true);
    let report = task.await.unwrap();
    assert_eq!(report.received, 1);
    assert_eq!(progress.received(), 1);
    assert_eq!(report.tracker.check(&[(0, 1)]).missing, 0);
}
