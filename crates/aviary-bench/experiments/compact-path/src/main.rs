//! An experiment: how small can the code a message runs through be with Aviary's broker
//! core? The core (`aviary_core::Broker`, sans-IO) driven by one `epoll` loop (mio):
//! read a ready socket until it would block, decode, hand each packet to the core, encode
//! what it routes and write it at once. Plain TCP only, no authentication, store, limits
//! beyond the core's, or metrics: a lower bound for a compact path, not a broker.
//!
//! `compact-path --config FILE` reads `bind = "127.0.0.1:PORT"` from an Aviary TOML file,
//! so that `aviary-bench matrix --aviary` can run it in Aviary's slot.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use aviary_codec::{Packet, ProtocolVersion, TopicCache};
use aviary_core::{Broker, BrokerConfig, ConnId, Transmit};
use bytes::BytesMut;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);
const MAX_PACKET: u32 = 1 << 20;

struct Conn {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
    version: ProtocolVersion,
    topics: TopicCache,
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let config = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .ok_or_else(|| std::io::Error::other("usage: compact-path --config FILE"))?;
    let text = std::fs::read_to_string(config)?;
    let bind: SocketAddr = text
        .lines()
        .find_map(|l| l.strip_prefix("bind = \"")?.strip_suffix('"'))
        .and_then(|address| address.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("{config}: no line `bind = \"IP:PORT\"`")))?;
    let mut listener = TcpListener::bind(bind)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut broker = Broker::new(BrokerConfig::default());
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next = 1u64;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        let timeout = broker
            .poll_timeout()
            .map(|due| due.saturating_duration_since(Instant::now()));
        poll.poll(&mut events, timeout)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, peer)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let id = next;
                    next += 1;
                    poll.registry().register(
                        &mut stream,
                        Token(id as usize),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    conns.insert(
                        id,
                        Conn {
                            stream,
                            input: BytesMut::new(),
                            output: BytesMut::new(),
                            version: ProtocolVersion::V3_1_1,
                            topics: TopicCache::default(),
                        },
                    );
                    broker.handle_open(ConnId(id), peer, Instant::now());
                }
                continue;
            }
            let id = event.token().0 as u64;
            if event.is_readable() && !read(&mut broker, &mut conns, id, &mut scratch) {
                close(&mut broker, &mut conns, &poll, id);
                continue;
            }
            route(&mut broker, &mut conns, &poll);
            if event.is_writable() {
                if let Some(conn) = conns.get_mut(&id) {
                    if flush(conn).is_err() {
                        close(&mut broker, &mut conns, &poll, id);
                    }
                }
            }
        }
        let now = Instant::now();
        if broker.poll_timeout().is_some_and(|due| due <= now) {
            broker.handle_timeout(now);
            route(&mut broker, &mut conns, &poll);
        }
    }
}

/// Reads until the socket would block, handing every whole packet to the core; `false`
/// when the connection ended.
fn read(broker: &mut Broker, conns: &mut HashMap<u64, Conn>, id: u64, scratch: &mut [u8]) -> bool {
    let Some(conn) = conns.get_mut(&id) else {
        return true;
    };
    let mut open = true;
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => conn.input.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                open = false;
                break;
            }
        }
    }
    let now = Instant::now();
    loop {
        match aviary_codec::decode_with(&mut conn.input, conn.version, MAX_PACKET, &mut conn.topics)
        {
            Ok(Some(packet)) => {
                if let Packet::Connect(connect) = &packet {
                    conn.version = connect.protocol;
                }
                broker.handle_packet(ConnId(id), packet, now);
            }
            Ok(None) => break,
            Err(error) => {
                broker.handle_decode_error(ConnId(id), &error, now);
                break;
            }
        }
    }
    open
}

/// Encodes what the core routed into each connection's output and writes it. (The list
/// of touched connections is allocated per call: it is in the measured figures, which
/// are therefore a little above what this loop needs.)
fn route(broker: &mut Broker, conns: &mut HashMap<u64, Conn>, poll: &Poll) {
    let mut touched: Vec<u64> = Vec::new();
    while let Some(transmit) = broker.poll_transmit() {
        match transmit {
            Transmit::Packet { conn, packet } => {
                if let Some(c) = conns.get_mut(&conn.0) {
                    let _ = aviary_codec::encode(&packet, c.version, &mut c.output);
                    if !touched.contains(&conn.0) {
                        touched.push(conn.0);
                    }
                }
            }
            Transmit::Close { conn } => {
                if let Some(mut c) = forget(conns, poll, conn.0) {
                    let _ = flush(&mut c);
                }
            }
        }
    }
    for id in touched {
        if conns.get_mut(&id).is_some_and(|conn| flush(conn).is_err()) {
            close(broker, conns, poll, id);
        }
    }
}

/// Writes as much of the output as the socket takes.
fn flush(conn: &mut Conn) -> std::io::Result<()> {
    while !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                let _ = conn.output.split_to(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The connection ended on our side or the client's: the core forgets it, and what that
/// produces (a will message, say) is routed.
fn close(broker: &mut Broker, conns: &mut HashMap<u64, Conn>, poll: &Poll, id: u64) {
    forget(conns, poll, id);
    broker.handle_closed(ConnId(id), Instant::now());
    route(broker, conns, poll);
}

/// Removes a connection from the loop; the socket closes when the returned value drops.
fn forget(conns: &mut HashMap<u64, Conn>, poll: &Poll, id: u64) -> Option<Conn> {
    let mut conn = conns.remove(&id)?;
    let _ = poll.registry().deregister(&mut conn.stream);
    Some(conn)
}
