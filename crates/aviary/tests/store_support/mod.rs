//! Shared by the store's end-to-end tests: the `aviary` binary as a child process that
//! can be killed with SIGKILL and restarted on the same data directory, and a raw MQTT
//! client on `aviary_codec` whose every packet is under the test's control.

#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aviary_codec::properties::{AckProperties, ConnectProperties};
use aviary_codec::{Ack, ConnAck, Connect, Packet, PacketId, ProtocolVersion, ReasonCode};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The broker child process and how to restart it.
pub(crate) struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
    data_dir: std::path::PathBuf,
    /// Extra variables, kept for restarts.
    env: Vec<(String, String)>,
}

impl Broker {
    /// Starts `aviary` on `addr` with its store in `data_dir` and extra `AVIARY_*`
    /// variables.
    pub(crate) fn spawn(addr: SocketAddr, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_aviary"));
        command
            .env("AVIARY_LISTENER_BIND", addr.to_string())
            .env("AVIARY_DATA_DIR", data_dir)
            .env("AVIARY_API_BIND", "127.0.0.1:0")
            .env("AVIARY_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn aviary");
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            env: env
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// SIGKILL, then a new process on the same port, data directory and variables.
    pub(crate) fn crash_and_restart(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        let env = std::mem::take(&mut self.env);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        *self = Self::spawn(self.addr, &self.data_dir, &pairs);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released; the broker binds it right after).
pub(crate) fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A raw MQTT connection.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The dialect of its CONNECT.
    version: ProtocolVersion,
}

/// A CONNECT with keep alive off.
pub(crate) fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    clean_start: bool,
    session_expiry: Option<u32>,
) -> Connect {
    Connect {
        protocol: version,
        clean_start,
        keep_alive: 0,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: session_expiry,
            ..ConnectProperties::default()
        },
    }
}

impl Conn {
    /// Connects as 3.1.1 with clean session 0; retries while the broker is down, until
    /// `deadline`.
    pub(crate) async fn open(addr: SocketAddr, client_id: &str, deadline: Instant) -> Option<Self> {
        let connect = connect_packet(ProtocolVersion::V3_1_1, client_id, false, None);
        Self::open_with(addr, connect, deadline)
            .await
            .map(|(conn, _)| conn)
    }

    /// Connects with `connect`, retrying while the broker is down; returns the CONNACK.
    pub(crate) async fn open_with(
        addr: SocketAddr,
        connect: Connect,
        deadline: Instant,
    ) -> Option<(Self, ConnAck)> {
        let version = connect.protocol;
        let connect = Packet::Connect(Box::new(connect));
        while Instant::now() < deadline {
            if let Ok(stream) = TcpStream::connect(addr).await {
                let mut conn = Self {
                    stream,
                    buf: BytesMut::new(),
                    version,
                };
                if conn.send(&connect).await.is_ok() {
                    if let Ok(Some(Packet::ConnAck(ack))) = conn.recv(Duration::from_secs(10)).await
                    {
                        if ack.reason_code == ReasonCode::SUCCESS {
                            return Some((conn, *ack));
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub(crate) async fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        aviary_codec::encode(packet, self.version, &mut out).expect("encode");
        self.stream.write_all(&out).await
    }

    /// The next packet, `Ok(None)` after `wait` without one, `Err` when the connection
    /// is gone.
    pub(crate) async fn recv(&mut self, wait: Duration) -> std::io::Result<Option<Packet>> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let decoded = aviary_codec::decode(&mut self.buf, self.version, 1 << 20)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(packet) = decoded {
                return Ok(Some(packet));
            }
            match tokio::time::timeout_at(until, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// A success acknowledgement.
pub(crate) fn ack(packet_id: PacketId) -> Ack {
    Ack {
        packet_id,
        reason_code: ReasonCode::SUCCESS,
        properties: AckProperties::default(),
    }
}

/// A packet id.
pub(crate) fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}
