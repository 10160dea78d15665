//! Per-connection protocol state, as an enum of structs. A connection that is closed is
//! removed from the broker's table (the `Closed` state is absence), so a late packet or
//! timer for it finds nothing and is ignored.
//!
//! ```text
//!   handle_open ──▶ Connecting ──CONNECT accepted──▶ Connected ──▶ (removed)
//!                      │  └─ CONNECT refused: CONNACK ≥ 0x80, Close ─▶ (removed)
//!                      └─ any other packet, decode error, connect timeout ─▶ (removed)
//!   Connected: PUBLISH/SUBSCRIBE/… ; DISCONNECT, keep alive timeout, protocol error,
//!   takeover by the same client id, transport closed, shutdown ─▶ (removed)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_codec::{ProtocolVersion, Will};

use super::alias::InboundAliases;
use super::metering::CONNECT_UNITS;
use super::session::SessionId;
use super::{ConnId, IdMap};
use crate::authz::Principal;

/// The state of one transport connection. No larger than `Connected` (`Connecting` fits
/// beside its niche, `connection_stays_small` checks it), and boxed as a whole in
/// [`Connections`].
#[derive(Debug)]
pub(crate) enum Connection {
    /// Transport open, CONNECT not yet received [MQTT-3.1.0-1].
    Connecting(Connecting),
    /// CONNECT accepted; bound to a session.
    Connected(Connected),
}

/// The broker's table of open connections, by the shell's id. Each state is boxed whole:
/// a bucket is then an id and a pointer (16 bytes), where an enum of two boxes would add
/// 8 bytes of tag, and a hash table's spare buckets (up to half of them after it doubles)
/// are paid by every idle connection.
#[derive(Debug, Default)]
pub(crate) struct Connections(IdMap<ConnId, Box<Connection>>);

impl Connections {
    pub(crate) fn get(&self, conn: &ConnId) -> Option<&Connection> {
        self.0.get(conn).map(|c| &**c)
    }

    pub(crate) fn get_mut(&mut self, conn: &ConnId) -> Option<&mut Connection> {
        self.0.get_mut(conn).map(|c| &mut **c)
    }

    /// The connection a packet other than CONNECT arrived on, looked up once for the whole
    /// packet: a connected one is marked seen at `now` (any packet resets keep alive).
    pub(crate) fn packet_from(&mut self, conn: ConnId, now: Instant) -> PacketFrom<'_> {
        match self.get_mut(&conn) {
            None => PacketFrom::Gone,
            Some(Connection::Connecting(_)) => PacketFrom::Connecting,
            Some(Connection::Connected(c)) => {
                c.last_seen = now;
                PacketFrom::Connected(c)
            }
        }
    }

    pub(crate) fn contains_key(&self, conn: &ConnId) -> bool {
        self.0.contains_key(conn)
    }

    pub(crate) fn insert(&mut self, conn: ConnId, state: Connection) {
        self.0.insert(conn, Box::new(state));
    }

    pub(crate) fn remove(&mut self, conn: &ConnId) -> Option<Connection> {
        self.0.remove(conn).map(|c| *c)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &ConnId> {
        self.0.keys()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ConnId, &Connection)> {
        self.0.iter().map(|(id, c)| (id, &**c))
    }
}

/// What [`Connections::packet_from`] found.
#[derive(Debug)]
pub(crate) enum PacketFrom<'a> {
    /// Already closed by us: the packet is ignored.
    Gone,
    /// CONNECT not received yet: the packet breaks [MQTT-3.1.0-1].
    Connecting,
    /// Connected (and now marked seen).
    Connected(&'a mut Connected),
}

/// Waiting for CONNECT.
#[derive(Debug)]
pub(crate) struct Connecting {
    /// The client's address (for the management API and logs once connected).
    pub(crate) peer: SocketAddr,
    /// When the transport was accepted, for the connect timeout.
    pub(crate) opened_at: Instant,
}

/// A connection with an accepted CONNECT. Every connected client holds one, so its size
/// is paid per idle connection (`connected_stays_small` pins it): what can be derived is
/// not stored, and what few connections use is boxed on first use.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The client's address (management API, logs).
    pub(crate) peer: SocketAddr,
    /// Fixed by CONNECT; decides the packets' dialect and which rules apply.
    pub(crate) protocol: ProtocolVersion,
    /// The session this connection is attached to.
    pub(crate) session: SessionId,
    /// The client identifier (assigned ones included).
    pub(crate) client_id: Arc<str>,
    /// The granted keep alive in seconds (0: off), as shown by the management API; the
    /// period enforced is derived from it ([`Connected::keep_alive_period`]).
    pub(crate) keep_alive_seconds: u16,
    /// When the last packet arrived (any packet resets keep alive).
    pub(crate) last_seen: Instant,
    /// The client's topic aliases towards us (5.0).
    pub(crate) aliases: InboundAliases,
    /// The will of this connection, published on abnormal loss (boxed: most connections
    /// have none, and a will is large).
    pub(crate) will: Option<Box<Will>>,
    /// The client's Maximum Packet Size (5.0): reason strings are left out of packets
    /// that would exceed it.
    pub(crate) max_packet_size: Option<u32>,
    /// 5.0 Request Problem Information (default 1): whether acks that report an error
    /// may carry a reason string [MQTT-3.1.2-29].
    pub(crate) problem_info: bool,
    /// Metered units of this connection's CONNECT and the PUBLISHes it sent us.
    pub(crate) units: u64,
    /// Whether CONNECT asked for session expiry 0: a DISCONNECT may then not set a non-zero
    /// one [MQTT-3.14.2-2].
    pub(crate) connect_expiry_zero: bool,
    /// Who authentication said this connection is; authorization looks at it per operation.
    pub(crate) principal: Arc<Principal>,
}

impl Connecting {
    /// The transition on an accepted CONNECT; consumes the waiting state.
    pub(crate) fn accept(self, accepted: Accepted, now: Instant) -> Connected {
        Connected {
            peer: self.peer,
            protocol: accepted.protocol,
            session: accepted.session,
            client_id: accepted.client_id,
            keep_alive_seconds: accepted.keep_alive_seconds,
            last_seen: now,
            aliases: InboundAliases::default(),
            will: accepted.will,
            connect_expiry_zero: accepted.connect_expiry_zero,
            problem_info: accepted.problem_info,
            max_packet_size: accepted.max_packet_size,
            units: CONNECT_UNITS,
            principal: accepted.principal,
        }
    }
}

/// What CONNECT processing decided, to build the connected state from (fields as in
/// [`Connected`]).
#[derive(Debug)]
pub(crate) struct Accepted {
    /// From CONNECT.
    pub(crate) protocol: ProtocolVersion,
    /// Created or resumed for this connection.
    pub(crate) session: SessionId,
    /// As given, or assigned.
    pub(crate) client_id: Arc<str>,
    pub(crate) keep_alive_seconds: u16,
    pub(crate) will: Option<Box<Will>>,
    pub(crate) connect_expiry_zero: bool,
    pub(crate) problem_info: bool,
    pub(crate) max_packet_size: Option<u32>,
    pub(crate) principal: Arc<Principal>,
}

impl Connected {
    /// 1.5 × the granted keep alive, `None` when keep alive is off [MQTT-3.1.2-24].
    pub(crate) fn keep_alive_period(&self) -> Option<Duration> {
        (self.keep_alive_seconds > 0)
            .then(|| Duration::from_millis(u64::from(self.keep_alive_seconds) * 1500))
    }
}

impl Connection {
    /// The connected state, if CONNECT was accepted.
    pub(crate) fn connected(&self) -> Option<&Connected> {
        match self {
            Self::Connected(c) => Some(c),
            Self::Connecting(_) => None,
        }
    }

    /// The protocol version, once known.
    pub(crate) fn protocol(&self) -> Option<ProtocolVersion> {
        self.connected().map(|c| c.protocol)
    }
}
