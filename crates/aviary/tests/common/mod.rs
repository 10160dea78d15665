//! Shared harness of the end-to-end tests: a broker on 127.0.0.1:0 with a throw-away data
//! directory, and [`RawClient`], a byte-level MQTT client whose packets are written as literal
//! hex. Every wait is bounded by [`WAIT`] (or a shorter explicit duration).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aviary::RunningServer;
use aviary_codec::{Packet, ProtocolVersion};
use aviary_core::BrokerConfig;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Upper bound on any single wait for the broker.
pub const WAIT: Duration = Duration::from_secs(5);

/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

/// A running broker, its data directory removed when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    server: Option<RunningServer>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    /// Graceful shutdown, bounded by [`WAIT`].
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            timeout(WAIT, server.shutdown())
                .await
                .expect("shutdown timed out")
                .expect("shutdown failed");
        }
    }
}

/// A whole server on 127.0.0.1:0 (no management API) with `tweak` applied to its whole
/// configuration; its data directory lives as long as the returned `TempDir`.
pub async fn start_server(
    tweak: impl FnOnce(&mut aviary::Config),
) -> (aviary::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = aviary::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.listener.bind = "127.0.0.1:0".parse().unwrap();
    config.api.enabled = false;
    tweak(&mut config);
    let server = tokio::time::timeout(WAIT, aviary::start(config))
        .await
        .unwrap()
        .unwrap();
    (server, dir)
}

/// Starts a broker on 127.0.0.1:0 with the defaults, changed by `tweak`.
pub async fn start_broker(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = aviary::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.listener.bind = "127.0.0.1:0".parse().expect("addr");
    config.api.bind = "127.0.0.1:0".parse().expect("addr");
    tweak(&mut config.mqtt);
    let server = timeout(WAIT, aviary::start(config))
        .await
        .expect("broker start timed out")
        .expect("broker failed to start");
    TestBroker {
        addr: server.mqtt_addr(),
        server: Some(server),
        _dir: dir,
    }
}

/// Parses "10 0c 00 04" (whitespace ignored) into bytes.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {text:?}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(s, 16).unwrap_or_else(|_| panic!("bad hex {s:?} in {text:?}"))
        })
        .collect()
}

/// Formats bytes as "10 0c 00 04".
pub fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A variable byte integer (remaining length, property length) as hex.
pub fn varint_hex(mut n: usize) -> String {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
    to_hex(&out)
}

/// A UTF-8 string with its two-byte length, as hex.
pub fn str_hex(s: &str) -> String {
    let len = s.len() as u16;
    format!("{} {}", to_hex(&len.to_be_bytes()), to_hex(s.as_bytes()))
}

/// A whole packet: first byte, computed remaining length, then the body hex.
pub fn packet_hex(first: u8, body: &str) -> String {
    let body = hex(body);
    format!("{first:02x} {} {}", varint_hex(body.len()), to_hex(&body))
}

/// CONNECT for MQTT 3.1 (protocol name "MQIsdp", level 3) with Clean Session.
pub fn connect_v31_hex(client_id: &str, keep_alive: u16) -> String {
    let ka = to_hex(&keep_alive.to_be_bytes());
    packet_hex(
        0x10,
        &format!("00 06 4d 51 49 73 64 70 03 02 {ka} {}", str_hex(client_id)),
    )
}

/// CONNECT for MQTT 3.1.1 (level 4) with the given connect flags byte (0x02 = Clean Session).
pub fn connect_v311_hex(client_id: &str, flags: u8, keep_alive: u16) -> String {
    let ka = to_hex(&keep_alive.to_be_bytes());
    packet_hex(
        0x10,
        &format!(
            "00 04 4d 51 54 54 04 {flags:02x} {ka} {}",
            str_hex(client_id)
        ),
    )
}

/// CONNECT for MQTT 5.0 (level 5) with the given flags and CONNECT properties (hex, without
/// their length).
pub fn connect_v5_hex(client_id: &str, flags: u8, keep_alive: u16, props: &str) -> String {
    let ka = to_hex(&keep_alive.to_be_bytes());
    let props = hex(props);
    packet_hex(
        0x10,
        &format!(
            "00 04 4d 51 54 54 05 {flags:02x} {ka} {} {} {}",
            varint_hex(props.len()),
            to_hex(&props),
            str_hex(client_id)
        ),
    )
}

/// CONNECT (3.1.1 or 5.0) with clean session / clean start, keep alive 60, and a user name and
/// password (`None`: flag off).
pub fn connect_with_credentials_hex(
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
) -> String {
    let mut flags = 0x02u8;
    let mut payload = str_hex(client_id);
    if let Some(user) = user {
        flags |= 0x80;
        payload = format!("{payload} {}", str_hex(user));
    }
    if let Some(password) = password {
        flags |= 0x40;
        let len = password.len() as u16;
        payload = format!(
            "{payload} {} {}",
            to_hex(&len.to_be_bytes()),
            to_hex(password)
        );
    }
    let (level, props) = match version {
        ProtocolVersion::V5 => ("05", "00"),
        _ => ("04", ""),
    };
    packet_hex(
        0x10,
        &format!("00 04 4d 51 54 54 {level} {flags:02x} 00 3c {props} {payload}"),
    )
}

/// Sends CONNECT with user name and password (see [`connect_with_credentials_hex`]) and
/// returns the client with the CONNACK code (after a refusal the connection closes).
pub async fn connect_code(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
) -> (RawClient, u8) {
    let mut c = RawClient::open(addr, version).await;
    c.send_hex(&connect_with_credentials_hex(
        version, client_id, user, password,
    ))
    .await;
    let frame = c.read_frame().await;
    assert_eq!(
        frame.first,
        0x20,
        "expected CONNACK, got {}",
        to_hex(&frame.raw())
    );
    (c, frame.body[1])
}

/// One whole packet as read from the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Type and flags.
    pub first: u8,
    /// Everything after the remaining length.
    pub body: Vec<u8>,
}

impl Frame {
    /// The packet type (high nibble).
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// The whole packet's bytes.
    pub fn raw(&self) -> Vec<u8> {
        let mut out = vec![self.first];
        out.extend(hex(&varint_hex(self.body.len())));
        out.extend(&self.body);
        out
    }

    /// The packet id of an ack or SUBACK/UNSUBACK (first two body bytes).
    pub fn packet_id(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
}

/// What the next read from the broker gave.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// EOF or reset; carries the bytes of an incomplete packet, if any.
    Closed(Vec<u8>),
    /// Nothing within the wait.
    Silent,
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A unique, short (≤ 8 bytes, so it fits tight `max_client_id_len` configs) client id for
/// this test process.
pub fn unique_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let head: String = prefix.chars().take(2).collect();
    format!("{head}{n}")
}

/// A byte-level client. Sends literal hex, reads whole frames.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    /// Used to decode what the broker sends.
    pub version: ProtocolVersion,
}

impl RawClient {
    /// Opens a TCP connection; nothing is sent.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// A connected 3.1.1 client (Clean Session, keep alive 60 s).
    pub async fn connect_v311(addr: SocketAddr, client_id: &str) -> Self {
        Self::connect_v311_with(addr, client_id, 0x02, 60).await
    }

    /// A connected 3.1.1 client with explicit flags and keep alive; returns after CONNACK 0.
    pub async fn connect_v311_with(
        addr: SocketAddr,
        client_id: &str,
        flags: u8,
        keep_alive: u16,
    ) -> Self {
        let mut c = Self::open(addr, ProtocolVersion::V3_1_1).await;
        c.send_hex(&connect_v311_hex(client_id, flags, keep_alive))
            .await;
        let ack = c.expect_connack(0x00).await;
        assert_eq!(ack.body.len(), 2, "3.1.1 CONNACK has two bytes: {ack:?}");
        c
    }

    /// A connected 5.0 client (Clean Start, keep alive 60 s, no properties).
    pub async fn connect_v5(addr: SocketAddr, client_id: &str) -> Self {
        Self::connect_v5_with(addr, client_id, 0x02, 60, "").await.0
    }

    /// A connected 5.0 client; returns it and its CONNACK.
    pub async fn connect_v5_with(
        addr: SocketAddr,
        client_id: &str,
        flags: u8,
        keep_alive: u16,
        props: &str,
    ) -> (Self, Frame) {
        let mut c = Self::open(addr, ProtocolVersion::V5).await;
        c.send_hex(&connect_v5_hex(client_id, flags, keep_alive, props))
            .await;
        let ack = c.expect_connack(0x00).await;
        (c, ack)
    }

    /// Writes literal hex bytes.
    pub async fn send_hex(&mut self, text: &str) {
        self.send(&hex(text)).await;
    }

    /// Writes bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write failed");
    }

    /// Writes bytes, tolerating a connection the broker already closed.
    pub async fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = timeout(WAIT, self.stream.write_all(bytes)).await;
    }

    /// Half-closes the write side (the broker sees EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// The next frame, EOF, or silence within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.take_frame() {
                return Next::Frame(frame);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Next::Silent,
                Ok(Ok(0)) | Ok(Err(_)) => return Next::Closed(self.buf.split().to_vec()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let mut len = 0usize;
        let mut i = 1;
        loop {
            let byte = *self.buf.get(i)?;
            len += usize::from(byte & 0x7f) << (7 * (i - 1));
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            assert!(i <= 4, "broker sent a remaining length over 4 bytes");
        }
        if self.buf.len() < i + len {
            return None;
        }
        let first = self.buf[0];
        self.buf.advance(i);
        let body = self.buf.split_to(len).to_vec();
        Some(Frame { first, body })
    }

    /// The next frame; panics on EOF or after [`WAIT`].
    pub async fn read_frame(&mut self) -> Frame {
        match self.next(WAIT).await {
            Next::Frame(f) => f,
            Next::Closed(rest) => panic!("connection closed (trailing bytes {})", to_hex(&rest)),
            Next::Silent => panic!("nothing received within {WAIT:?}"),
        }
    }

    /// The next packet, decoded with `aviary_codec` for this client's version.
    pub async fn read_packet(&mut self) -> Packet {
        let frame = self.read_frame().await;
        self.decode(&frame)
    }

    /// Decodes a frame with `aviary_codec`.
    pub fn decode(&self, frame: &Frame) -> Packet {
        let mut bytes = BytesMut::from(&frame.raw()[..]);
        aviary_codec::decode(&mut bytes, self.version, u32::MAX)
            .unwrap_or_else(|e| panic!("cannot decode {}: {e}", to_hex(&frame.raw())))
            .unwrap_or_else(|| panic!("incomplete frame {}", to_hex(&frame.raw())))
    }

    /// Expects exactly these bytes as the next packet.
    pub async fn expect_hex(&mut self, text: &str) {
        let frame = self.read_frame().await;
        assert_eq!(
            to_hex(&frame.raw()),
            to_hex(&hex(text)),
            "unexpected packet"
        );
    }

    /// Expects an acknowledgement (`first` byte, packet id) whose reason code, if any, is
    /// a success (below 0x80; e.g. 0x10 No matching subscribers).
    pub async fn expect_ack(&mut self, first: u8, packet_id: u16) -> Frame {
        let frame = self.read_frame().await;
        assert_eq!(
            frame.first,
            first,
            "unexpected packet {}",
            to_hex(&frame.raw())
        );
        assert_eq!(frame.packet_id(), packet_id, "{}", to_hex(&frame.raw()));
        if let Some(&code) = frame.body.get(2) {
            assert!(code < 0x80, "error reason code in {}", to_hex(&frame.raw()));
        }
        frame
    }

    /// Expects EOF within [`WAIT`] with nothing sent before it.
    pub async fn expect_closed(&mut self) {
        match self.next(WAIT).await {
            Next::Closed(rest) => assert!(rest.is_empty(), "partial packet {}", to_hex(&rest)),
            Next::Frame(f) => panic!("expected close, got packet {}", to_hex(&f.raw())),
            Next::Silent => panic!("connection still open after {WAIT:?}"),
        }
    }

    /// Expects nothing (no packet, no close) for [`QUIET`].
    pub async fn expect_silence(&mut self) {
        match self.next(QUIET).await {
            Next::Silent => {}
            Next::Frame(f) => panic!("expected silence, got {}", to_hex(&f.raw())),
            Next::Closed(_) => panic!("expected silence, connection closed"),
        }
    }

    /// Expects a CONNACK with this return/reason code; returns it.
    pub async fn expect_connack(&mut self, code: u8) -> Frame {
        let frame = self.read_frame().await;
        assert_eq!(
            frame.first,
            0x20,
            "expected CONNACK, got {}",
            to_hex(&frame.raw())
        );
        assert_eq!(
            frame.body.get(1).copied(),
            Some(code),
            "CONNACK code in {}",
            to_hex(&frame.raw())
        );
        frame
    }

    /// 5.0: expects DISCONNECT with `reason`, then EOF.
    pub async fn expect_disconnect(&mut self, reason: u8) {
        let frame = self.read_frame().await;
        assert_eq!(
            frame.first,
            0xe0,
            "expected DISCONNECT, got {}",
            to_hex(&frame.raw())
        );
        let got = frame.body.first().copied().unwrap_or(0x00);
        assert_eq!(
            got,
            reason,
            "DISCONNECT reason code in {}",
            to_hex(&frame.raw())
        );
        self.expect_closed().await;
    }

    /// A bad CONNECT in 5.0: the server MAY send CONNACK with `code` before closing
    /// [MQTT-3.1.4-1], [MQTT-4.13.1]: accepts exactly that CONNACK then EOF, or EOF alone.
    pub async fn expect_connack_code_or_closed(&mut self, code: u8) {
        match self.next(WAIT).await {
            Next::Closed(rest) => assert!(rest.is_empty(), "partial packet {}", to_hex(&rest)),
            Next::Frame(frame) => {
                assert_eq!(
                    frame.first,
                    0x20,
                    "expected CONNACK or close, got {}",
                    to_hex(&frame.raw())
                );
                assert_eq!(
                    frame.body.get(1).copied(),
                    Some(code),
                    "CONNACK {}",
                    to_hex(&frame.raw())
                );
                self.expect_closed().await;
            }
            Next::Silent => panic!("connection still open after {WAIT:?}"),
        }
    }

    /// SUBSCRIBE (one filter, QoS `qos`) and expect its SUBACK granting `qos`.
    pub async fn subscribe(&mut self, packet_id: u16, filter: &str, qos: u8) {
        let pid = to_hex(&packet_id.to_be_bytes());
        let props = if self.version.is_v5() { "00" } else { "" };
        self.send_hex(&packet_hex(
            0x82,
            &format!("{pid} {props} {} {qos:02x}", str_hex(filter)),
        ))
        .await;
        let ack = self.read_frame().await;
        assert_eq!(
            ack.first,
            0x90,
            "expected SUBACK, got {}",
            to_hex(&ack.raw())
        );
        assert_eq!(ack.packet_id(), packet_id);
        assert_eq!(
            ack.body.last().copied(),
            Some(qos),
            "SUBACK {}",
            to_hex(&ack.raw())
        );
    }

    /// PUBLISH at `qos` (0 or 1/2 with `packet_id`), no properties.
    pub async fn publish(&mut self, topic: &str, qos: u8, packet_id: u16, payload: &[u8]) {
        let pid = if qos > 0 {
            to_hex(&packet_id.to_be_bytes())
        } else {
            String::new()
        };
        let props = if self.version.is_v5() { "00" } else { "" };
        self.send_hex(&packet_hex(
            0x30 | (qos << 1),
            &format!("{} {pid} {props} {}", str_hex(topic), to_hex(payload)),
        ))
        .await;
    }

    /// PINGREQ → PINGRESP: the connection is open and served.
    pub async fn ping(&mut self) {
        self.send_hex("c0 00").await;
        self.expect_hex("d0 00").await;
    }
}

/// A fresh 3.1.1 client and a fresh 5.0 client each subscribe, publish QoS 1 to
/// themselves and receive it: the broker still serves others.
pub async fn assert_broker_still_serves(addr: SocketAddr) {
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let id = unique_id("bystander");
        let mut c = if version.is_v5() {
            RawClient::connect_v5(addr, &id).await
        } else {
            RawClient::connect_v311(addr, &id).await
        };
        let topic = format!("still/serves/{id}");
        c.subscribe(1, &topic, 1).await;
        c.publish(&topic, 1, 2, b"alive").await;
        let mut got_puback = false;
        let mut got_publish = false;
        for _ in 0..2 {
            let frame = c.read_frame().await;
            match frame.kind() {
                4 => {
                    assert_eq!(frame.packet_id(), 2);
                    got_puback = true;
                }
                3 => {
                    let Packet::Publish(p) = c.decode(&frame) else {
                        unreachable!()
                    };
                    assert_eq!(p.topic.as_str(), topic);
                    assert_eq!(&p.payload[..], b"alive");
                    assert_eq!(p.qos, aviary_codec::QoS::AtLeastOnce);
                    let pid = p.packet_id.expect("QoS 1 has a packet id").get();
                    c.send_hex(&format!("40 02 {}", to_hex(&pid.to_be_bytes())))
                        .await;
                    got_publish = true;
                }
                _ => panic!("unexpected {}", to_hex(&frame.raw())),
            }
        }
        assert!(got_puback && got_publish);
        c.ping().await;
    }
}
