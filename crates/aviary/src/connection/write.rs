//! The write side of a connection: batches from the outbox, encoded into one buffer and
//! written with one `write_all` (in pieces for large batches).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use aviary_codec::{Packet, ProtocolVersion};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{version_from_level, Idleness, WriteEnd};
use crate::metrics::WireBytes;
use crate::outbox::Outbox;

/// Encoded bytes collected before they are written, so a batch of large packets is written
/// in pieces instead of being encoded into one huge buffer.
const WRITE_CHUNK: usize = 64 * 1024;

/// Bytes of a packet beyond its payload and topic, for sizing the write buffer: fixed
/// header, packet id, topic length, a few properties.
const TYPICAL_OVERHEAD: usize = 16;

/// A write that makes no progress for this long means the peer is gone or stuck; the
/// connection is then dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes everything the broker routes to this connection; when the broker closes the
/// outbox, shuts the write side down (TCP FIN after the last packet).
///
/// An `async move` block rather than an `async fn`, which would keep two copies of the
/// arguments in every idle connection's future.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would keep a second copy of its arguments (see above)"
)]
pub(super) fn write_loop<'a>(
    wr: &'a mut (impl tokio::io::AsyncWrite + Unpin + Send),
    outbox: &'a Outbox,
    version: &'a AtomicU8,
    force_close: &'a CancellationToken,
    wire: &'a WireBytes,
    idle: &'a Idleness,
) -> impl Future<Output = WriteEnd> + Send + 'a {
    async move {
        loop {
            idle.waiting(Idleness::WRITER);
            let Some(batch) = outbox.next_batch().await else {
                break;
            };
            idle.woke(Idleness::WRITER);
            let current = version_from_level(version.load(Ordering::Acquire));
            // Boxed (one allocation per batch) so the encoding and write state does not
            // sit in every idle connection's future. A forced close (end of graceful
            // shutdown) stops a write to a peer that does not read.
            let written = Box::pin(async {
                tokio::select! {
                    ok = write_batch(&mut *wr, batch, current, wire) => ok,
                    () = force_close.cancelled() => false,
                }
            });
            if !written.await {
                return WriteEnd::Failed;
            }
        }
        let _ = Box::pin(tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown())).await;
        WriteEnd::Done
    }
}

/// Encodes `batch` in `version` and writes it, in pieces of about [`WRITE_CHUNK`] bytes,
/// then adds the bytes written to `wire`; `false` when writing failed.
async fn write_batch(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    batch: VecDeque<Packet>,
    version: ProtocolVersion,
    wire: &WireBytes,
) -> bool {
    // Sized for the whole batch (up to a chunk) at once, from an estimate (payloads plus a
    // typical header): growing by doubling would copy the buffer several times over.
    let estimate: usize = batch
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.payload.len() + p.topic.as_str().len() + TYPICAL_OVERHEAD,
            _ => TYPICAL_OVERHEAD,
        })
        .sum();
    let mut out = BytesMut::with_capacity(estimate.min(WRITE_CHUNK));
    let mut sent = [0; 4];
    for packet in batch {
        let before = out.len();
        let encoded = aviary_codec::encode(&packet, version, &mut out);
        sent[WireBytes::class(&packet)] += (out.len() - before) as u64;
        if let Err(error) = encoded {
            // The broker produced a packet this version cannot carry: a bug there, but not
            // a reason to drop the connection.
            warn!(%error, ?packet, "cannot encode packet; skipped");
            continue;
        }
        if out.len() >= WRITE_CHUNK {
            if !write(wr, &out).await {
                return false;
            }
            out.clear();
        }
    }
    if !out.is_empty() && !write(wr, &out).await {
        return false;
    }
    // TLS may hold the last records until flushed (a no-op for TCP and WebSocket).
    if !matches!(
        tokio::time::timeout(WRITE_TIMEOUT, wr.flush()).await,
        Ok(Ok(()))
    ) {
        return false;
    }
    wire.add_sent(&sent);
    true
}

/// Writes all of `bytes`; `false` on error or when the peer accepts nothing for
/// [`WRITE_TIMEOUT`]. The timeout is on progress, not on the whole buffer, so a client on a
/// slow link that keeps reading is never cut off in the middle of a large message.
async fn write(wr: &mut (impl tokio::io::AsyncWrite + Unpin), mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match tokio::time::timeout(WRITE_TIMEOUT, wr.write(bytes)).await {
            Ok(Ok(0)) => {
                debug!("write accepted nothing");
                return false;
            }
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) => {
                debug!(error = %e, "write failed");
                return false;
            }
            Err(_) => {
                debug!("write made no progress; peer not reading");
                return false;
            }
        }
    }
    true
}
