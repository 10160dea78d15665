//! One client connection: reads bytes, decodes whole packets and hands them to the broker
//! task in batches; encodes what the broker routes to it into one buffer per batch and
//! writes it with one `write_all`. Owns the socket; knows nothing of MQTT semantics beyond
//! which protocol version to decode and encode with.
//!
//! Reading and writing run concurrently in the same task (so a client that writes without
//! reading cannot deadlock us against it), and an idle connection holds no buffers: the
//! read buffer is allocated once the socket is readable and dropped when it is empty again.

mod read;
#[cfg(test)]
mod tests;
mod write;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8};
use std::sync::Arc;
use std::time::Duration;

use aviary_codec::ProtocolVersion;
use aviary_core::ConnId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::read::read_loop;
use self::write::write_loop;
use crate::auth::{AuthService, PeerCertificate};
use crate::broker_task::Event;
use crate::outbox::outbox;
use crate::transport::{Transport, TransportRead};

/// After we close our side, how long we keep reading (and discarding) so that unread bytes
/// from the client do not turn our close into a reset that could destroy the last packets
/// we sent (the DISCONNECT with the reason) before the client reads them.
const LINGER: Duration = Duration::from_secs(2);

/// What every connection task needs from the server.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionContext {
    /// The broker task's inbox.
    pub(crate) events: mpsc::Sender<Event>,
    /// Largest packet accepted from clients (`mqtt.max_packet_size`, changed at runtime
    /// by the plan limits), enforced while decoding, before a body is buffered.
    pub(crate) max_packet_size: Arc<AtomicU32>,
    /// The name of the listener that accepted the connection.
    pub(crate) listener: Arc<str>,
    /// The plan's rates: reads pause while this connection's packets are over them.
    pub(crate) rates: Arc<crate::rates::Rates>,
    /// Cancelled when the listener is switched off: a connection accepted just before
    /// that (still in its WebSocket upgrade, say) does not open.
    pub(crate) listener_off: CancellationToken,
    /// Cancelled when graceful shutdown has waited long enough: connections still open
    /// are then dropped.
    pub(crate) force_close: CancellationToken,
    /// Authenticates CONNECT before the broker sees it; `None`: the broker accepts every
    /// CONNECT's credentials (`handle_packet`).
    pub(crate) auth: Option<Arc<AuthService>>,
    /// The verified client certificate of this connection (set per connection by a TLS
    /// listener).
    pub(crate) certificate: Option<Arc<PeerCertificate>>,
    /// The broker's wire byte counters (added to once per read and per written batch).
    pub(crate) wire: Arc<crate::metrics::WireBytes>,
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
pub(crate) async fn run<T: Transport>(
    stream: T,
    conn: ConnId,
    peer: SocketAddr,
    ctx: ConnectionContext,
) {
    if ctx.listener_off.is_cancelled() {
        return; // its listener was switched off in the meantime
    }
    let (sender, outbox) = outbox();
    let open = Event::Open {
        conn,
        peer,
        outbox: sender,
        listener: Arc::clone(&ctx.listener),
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
    let (mut rd, wr) = stream.split();
    // The protocol level of the connection's first CONNECT, or `NO_CONNECT_YET`.
    let version = AtomicU8::new(NO_CONNECT_YET);

    let tell_closed = {
        let reader = read_loop(&mut rd, (conn, peer), &version, &outbox, &ctx);
        let writer = write_loop(wr, &outbox, &version, &ctx.wire);
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

/// Reads and discards until the peer closes, for at most [`LINGER`].
async fn linger(rd: &mut impl TransportRead, force_close: &CancellationToken) {
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

/// The version to decode and encode with for a level stored by the reader. Before
/// CONNECT (and for the CONNACK refusing an unsupported version) that is 3.1.1, whose
/// CONNACK every client version can read.
fn version_from_level(level: u8) -> ProtocolVersion {
    match level {
        3 => ProtocolVersion::V3_1,
        5 => ProtocolVersion::V5,
        _ => ProtocolVersion::V3_1_1,
    }
}
