//! The MQTT TCP listener: accepts connections, numbers them, and spawns a connection task
//! for each until it is told to stop.
//!
//! The broker refuses CONNECTs beyond `mqtt.max_connections` with a CONNACK, which needs
//! the connection accepted; the listener's own bound is a hard cap above that (a permit per
//! connection), so sockets that never send CONNECT cannot exhaust file descriptors.

use std::sync::Arc;
use std::time::Duration;

use aviary_core::ConnId;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection::{self, ConnectionContext};

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
/// spawned on `tracker` so shutdown can wait for them; each holds one of `sockets`' permits.
pub(crate) async fn run(
    listener: TcpListener,
    ctx: ConnectionContext,
    tracker: TaskTracker,
    stop: CancellationToken,
    sockets: Arc<Semaphore>,
) {
    // Connection ids are never reused while the process runs (the broker relies on it).
    let mut next_id: u64 = 0;
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
        let Ok(permit) = Arc::clone(&sockets).try_acquire_owned() else {
            warn!(%peer, "too many open sockets; connection dropped");
            continue;
        };
        // MQTT packets are small and latency matters more than packing them.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        next_id += 1;
        let connection = connection::run(stream, ConnId(next_id), peer, ctx.clone());
        tracker.spawn(async move {
            connection.await;
            drop(permit);
        });
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
