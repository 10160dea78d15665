//! The MQTT TCP listener: accepts connections, numbers them, and spawns a connection task
//! for each until it is told to stop.

use std::time::Duration;

use aviary_core::ConnId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection::{self, ConnectionContext};

/// Pause after a failed accept (for example, out of file descriptors) before trying again,
/// so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` until `stop` is cancelled. Connection tasks are
/// spawned on `tracker` so shutdown can wait for them.
pub(crate) async fn run(
    listener: TcpListener,
    ctx: ConnectionContext,
    tracker: TaskTracker,
    stop: CancellationToken,
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
        // MQTT packets are small and latency matters more than packing them.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, %peer, "cannot set TCP_NODELAY");
        }
        next_id += 1;
        tracker.spawn(connection::run(stream, ConnId(next_id), peer, ctx.clone()));
    }
}
