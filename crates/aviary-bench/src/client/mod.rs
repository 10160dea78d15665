//! A minimal MQTT client for load generation, on our own codec over tokio TCP: just enough
//! to connect, subscribe, publish with a pipelined in-flight window and acknowledge
//! deliveries at every QoS. Each connection is one task that owns its socket and both of
//! its buffers; writes are batched (many packets per `write`) and reads decode every packet
//! in the buffer before the next syscall, so the generator costs little CPU per message.
//!
//! * [`Connection::open`] does TCP connect + CONNECT/CONNACK;
//! * [`Connection::subscribe`] does SUBSCRIBE/SUBACK;
//! * [`publisher::run`] and [`subscriber::run`] then drive the connection to the end;
//! * [`pace`]: fixed-rate publishers' due times, stamps and sub-millisecond timer.

pub mod pace;
pub mod publisher;
pub mod subscriber;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aviary_codec::properties::ConnectProperties;
use aviary_codec::{
    decode, encode, Connect, Disconnect, Packet, PacketId, ProtocolVersion, QoS, ReasonCode,
    Subscribe, SubscriptionOptions, TopicFilter,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;

/// The largest packet we accept from a broker: big enough for any benchmark payload.
const MAX_PACKET: u32 = 1 << 20;
/// How long CONNECT and SUBSCRIBE may wait for their acknowledgement.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the load generator's client can go wrong with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("broker sent a bad packet: {0}")]
    Decode(#[from] aviary_codec::DecodeError),
    #[error("cannot encode: {0}")]
    Encode(#[from] aviary_codec::EncodeError),
    /// CONNACK with a failure code.
    #[error("connection refused with reason code {0:#04x}")]
    Refused(u8),
    /// SUBACK with a failure code for one of the filters.
    #[error("subscription to {filter} refused with reason code {code:#04x}")]
    SubscribeRefused { filter: String, code: u8 },
    /// The broker sent something the exchange did not allow at that point.
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("broker closed the connection")]
    Closed,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// Deliveries received by all subscribers of a run: read by the runner (to see when all
/// arrived) and by the publishers' end-to-end credit, which wait on `advanced`.
#[derive(Debug, Default)]
pub struct Progress {
    received: AtomicU64,
    /// Wakes the publisher that has waited longest for credit after every batch of
    /// deliveries; it takes what it can use and wakes the next while credit is left
    /// (`client::publisher`). Waking every waiting publisher instead (up to 1,000 tasks
    /// per batch, each woken from the subscribers' thread with a write to the runtime's
    /// event fd) took a quarter of the generator's CPU and set the fan-in rate.
    pub advanced: Notify,
}

impl Progress {
    /// Counts `n` deliveries and wakes the first publisher waiting for credit.
    pub fn add(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        self.advanced.notify_one();
    }

    /// Deliveries so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// How to connect one client.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    pub broker: SocketAddr,
    /// Local address to bind before connecting (127.0.0.x spreads ephemeral ports over
    /// several source addresses when tens of thousands of connections are needed).
    pub source_ip: Option<IpAddr>,
    pub client_id: String,
    pub version: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0); persistent-session scenarios clear it.
    pub clean_start: bool,
    /// Seconds; 0 (no keep alive) unless a scenario outlives the broker's patience.
    pub keep_alive: u16,
}

/// An open MQTT connection after a successful CONNACK.
#[derive(Debug)]
pub struct Connection {
    pub(crate) stream: TcpStream,
    /// Bytes read but not yet decoded.
    pub(crate) rbuf: BytesMut,
    /// Encoded packets not yet written.
    pub(crate) wbuf: BytesMut,
    pub(crate) version: ProtocolVersion,
    /// From CONNACK: whether the broker resumed a stored session.
    pub session_present: bool,
}

impl Connection {
    /// Connects over TCP and completes CONNECT/CONNACK.
    pub async fn open(options: &ConnectOptions) -> Result<Self, ClientError> {
        let socket = match options.broker {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = options.source_ip {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(options.broker).await?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(256),
            version: options.version,
            session_present: false,
        };
        let mut properties = ConnectProperties::default();
        if options.version.is_v5() && !options.clean_start {
            // 5.0 ends a session at disconnect unless asked otherwise [MQTT-3.1.2-23].
            properties.session_expiry_interval = Some(u32::MAX);
        }
        let connect = Packet::Connect(Box::new(Connect {
            protocol: options.version,
            clean_start: options.clean_start,
            keep_alive: options.keep_alive,
            client_id: options.client_id.clone(),
            will: None,
            username: None,
            password: None,
            properties,
        }));
        conn.send(&connect).await?;
        match conn.recv_timeout("CONNACK").await? {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::SUCCESS => {
                conn.session_present = ack.session_present;
                Ok(conn)
            }
            Packet::ConnAck(ack) => Err(ClientError::Refused(ack.reason_code.0)),
            other => Err(ClientError::Protocol(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Subscribes to each filter at `qos` in one SUBSCRIBE and checks every grant.
    pub async fn subscribe(
        &mut self,
        filters: &[TopicFilter],
        qos: QoS,
    ) -> Result<(), ClientError> {
        let packet_id = PacketId::new(1).ok_or(ClientError::Protocol("packet id".into()))?;
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id,
            properties: Default::default(),
            filters: filters
                .iter()
                .map(|f| (f.clone(), SubscriptionOptions::with_qos(qos)))
                .collect(),
        });
        self.send(&subscribe).await?;
        // Messages may already flow (retained, or a resumed session): those before SUBACK
        // are a protocol surprise for a benchmark, reported as such.
        match self.recv_timeout("SUBACK").await? {
            Packet::SubAck(ack) if ack.packet_id == packet_id => {
                for (filter, code) in filters.iter().zip(&ack.reason_codes) {
                    if code.0 >= 0x80 {
                        return Err(ClientError::SubscribeRefused {
                            filter: filter.as_str().to_owned(),
                            code: code.0,
                        });
                    }
                }
                Ok(())
            }
            other => Err(ClientError::Protocol(format!(
                "expected SUBACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Sends DISCONNECT and waits (briefly) for the broker to close, so that the TCP
    /// TIME_WAIT state lands on the broker's side and our ephemeral ports stay free.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        let packet = Packet::Disconnect(Disconnect::with_reason(ReasonCode::NORMAL_DISCONNECTION));
        self.send(&packet).await?;
        let wait_close = async {
            loop {
                self.rbuf.clear();
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        // Bounded: a broker that does not close within a second is closed on.
        let _ = tokio::time::timeout(Duration::from_secs(1), wait_close).await;
        Ok(())
    }

    /// PINGREQ, and waits for PINGRESP (at most [`HANDSHAKE_TIMEOUT`]).
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.send(&Packet::PingReq).await?;
        match self.recv_timeout("PINGRESP").await? {
            Packet::PingResp => Ok(()),
            other => Err(ClientError::Protocol(format!(
                "expected PINGRESP, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Encodes one packet and writes everything pending.
    async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        encode(packet, self.version, &mut self.wbuf)?;
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// The next packet, waiting at most [`HANDSHAKE_TIMEOUT`].
    async fn recv_timeout(&mut self, what: &'static str) -> Result<Packet, ClientError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.recv())
            .await
            .map_err(|_| ClientError::Timeout(what))?
    }

    /// The next packet.
    async fn recv(&mut self) -> Result<Packet, ClientError> {
        loop {
            if let Some(packet) = decode(&mut self.rbuf, self.version, MAX_PACKET)? {
                return Ok(packet);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}
