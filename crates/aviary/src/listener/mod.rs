//! The MQTT listeners: each accepts connections, checks its IP allow-list, numbers them,
//! and spawns a connection task for each until it is told to stop. The [`registry`] holds
//! them by name and creates, switches and deletes them at runtime.
//!
//! The broker refuses CONNECTs beyond `mqtt.max_connections` with a CONNACK, which needs
//! the connection accepted; the listener's own bound is a hard cap above that (a permit per
//! connection), so sockets that never send CONNECT cannot exhaust file descriptors.

pub(crate) mod cidr;
pub(crate) mod registry;
mod tls;
mod tls_settings;
mod ws;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aviary_core::ConnId;
use futures_util::FutureExt as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use self::cidr::Cidr;
use crate::connection::{self, ConnectionContext};
use crate::tls::TlsAcceptorHandle;

/// The transport a listener speaks.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ListenerKind {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`).
    Ws,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket over TLS (path `/mqtt`, subprotocol `mqtt`).
    Wss,
}

impl ListenerKind {
    /// Whether connections start with a TLS handshake.
    pub(crate) fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }
}

/// What an accept loop runs on each accepted socket.
#[derive(Clone, Debug)]
pub(crate) enum Protocol {
    /// MQTT over the socket.
    Tcp,
    /// The WebSocket upgrade, then MQTT in binary frames.
    Ws,
    /// The TLS handshake with this acceptor, then MQTT.
    Tls(Arc<TlsAcceptorHandle>),
    /// The TLS handshake, then the WebSocket upgrade.
    Wss(Arc<TlsAcceptorHandle>),
}

/// What every accept loop of one server shares.
#[derive(Clone, Debug)]
pub(crate) struct AcceptShared {
    /// Connection tasks, so shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// One permit per open socket, across all listeners.
    pub(crate) sockets: Arc<Semaphore>,
    /// Connection ids are never reused while the process runs (the broker relies on it),
    /// across all listeners.
    pub(crate) next_id: Arc<AtomicU64>,
}

/// Pause after a failed accept (for example, out of file descriptors) before trying again,
/// so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open sockets allowed beyond `mqtt.max_connections`, so that clients over the limit still
/// get their refusing CONNACK.
const CONNECTION_SLACK: usize = 1024;

/// The hard cap on open sockets for a broker allowing `max_connections` MQTT connections.
pub(crate) fn socket_limit(max_connections: usize) -> usize {
    max_connections
        .saturating_add(CONNECTION_SLACK.max(max_connections / 10))
        .min(Semaphore::MAX_PERMITS)
}

/// Accepts connections on `listener` until `stop` is cancelled. Connection tasks are
/// spawned on the shared tracker so shutdown can wait for them; each holds a socket permit.
/// A peer outside a non-empty `allow` list is closed at once.
pub(crate) async fn run(
    listener: TcpListener,
    protocol: Protocol,
    ctx: ConnectionContext,
    shared: AcceptShared,
    allow: Arc<RwLock<Vec<Cidr>>>,
    stop: CancellationToken,
) {
    // Shared by every plain TCP connection of this listener (one pointer in each
    // connection's task instead of a copy of the context).
    let ctx = Arc::new(ctx);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // A poisoned lock only means a writer panicked; the rules it holds are whole.
        let allowed = {
            let rules = allow
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rules.is_empty() || rules.iter().any(|rule| rule.contains(peer.ip()))
        };
        if !allowed {
            debug!(%peer, listener = %ctx.listener, "peer not in the allow-list; closed");
            continue;
        }
        let Ok(permit) = Arc::clone(&shared.sockets).try_acquire_owned() else {
            warn!(%peer, "too many open sockets; connection dropped");
            continue;
        };
        // MQTT packets are small and latency matters more than packing them.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        let conn = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        if let Protocol::Tcp = protocol {
            // The driver holds the socket permit (a parked connection keeps it too).
            let driver = connection::run(stream, conn, peer, Arc::clone(&ctx), Some(permit));
            shared.tracker.spawn(driver);
            continue;
        }
        // `map` rather than an `async` block around the driver: the block would keep a
        // second copy of the driver's future (its captured value beside the one it awaits)
        // in every connection's task for the connection's whole life.
        let ctx = ConnectionContext::clone(&ctx);
        match protocol.clone() {
            Protocol::Tcp => {}
            Protocol::Ws => {
                shared
                    .tracker
                    .spawn(ws::serve(stream, conn, peer, ctx).map(move |()| drop(permit)));
            }
            Protocol::Tls(acceptor) => {
                shared.tracker.spawn(
                    tls::serve(stream, conn, peer, ctx, acceptor).map(move |()| drop(permit)),
                );
            }
            Protocol::Wss(acceptor) => {
                shared.tracker.spawn(
                    tls::serve_ws(stream, conn, peer, ctx, acceptor).map(move |()| drop(permit)),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_limit_leaves_room_for_refusals() {
        assert_eq!(socket_limit(100), 1124);
        assert_eq!(socket_limit(100_000), 110_000);
        assert_eq!(socket_limit(usize::MAX), Semaphore::MAX_PERMITS);
    }
}
