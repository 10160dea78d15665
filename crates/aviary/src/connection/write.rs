//! The write side of a connection: batches from the outbox, encoded into one buffer and
//! written with one `write_all` (in pieces for large batches).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use aviary_codec::ProtocolVersion;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{version_from_level, Idleness, WriteEnd};
use crate::metrics::WireBytes;
use crate::outbox::{Batch, Outbox};
use crate::outgoing::WRITE_CHUNK;

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
            // Most batches are small and the socket takes them at once: encoded and
            // written right here, with no future to box and no timeout to arm.
            let rest = match write_now(&mut *wr, batch, current, wire) {
                Now::Written => continue,
                Now::Failed => return WriteEnd::Failed,
                Now::Later(rest) => rest,
            };
            // Boxed (one allocation per batch) so the encoding and write state does not
            // sit in every idle connection's future. A forced close (end of graceful
            // shutdown) stops a write to a peer that does not read.
            let written = Box::pin(async {
                let write = async {
                    match rest {
                        Later::Batch(batch) => write_batch(&mut *wr, batch, current, wire).await,
                        Later::Encoded { out, from, sent } => {
                            finish(&mut *wr, &out[from..], &sent, wire).await
                        }
                    }
                };
                tokio::select! {
                    ok = write => ok,
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

/// What [`write_now`] did with a batch.
enum Now {
    /// Written and flushed.
    Written,
    /// Writing failed.
    Failed,
    /// The socket cannot take it all at once (or the batch is large): the rest is
    /// written by a future that waits.
    Later(Later),
}

/// What is left of a batch for the waiting write.
enum Later {
    /// Not encoded yet (larger than [`WRITE_CHUNK`]: encoded and written in pieces).
    Batch(Batch),
    /// Encoded into `out`, written up to `from`; `sent` counts the whole batch.
    Encoded {
        out: BytesMut,
        from: usize,
        sent: [u64; 4],
    },
}

/// Encodes `batch` and writes it if the socket takes all of it and the flush completes
/// without waiting (the usual case on a socket whose peer reads), polling each once.
fn write_now(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    batch: Batch,
    version: ProtocolVersion,
    wire: &WireBytes,
) -> Now {
    let estimate = batch.estimate();
    if estimate > WRITE_CHUNK {
        return Now::Later(Later::Batch(batch));
    }
    let mut out = BytesMut::with_capacity(estimate);
    let mut sent = [0; 4];
    for item in batch {
        item.encode_counted(version, &mut out, &mut sent);
    }
    // Polled without a waker: a write or flush that would wait is left to the waiting
    // future, which polls again with the task's own waker.
    let mut cx = Context::from_waker(Waker::noop());
    let mut from = 0;
    while from < out.len() {
        match Pin::new(&mut *wr).poll_write(&mut cx, &out[from..]) {
            Poll::Ready(Ok(0)) => {
                debug!("write accepted nothing");
                return Now::Failed;
            }
            Poll::Ready(Ok(n)) => from += n,
            Poll::Ready(Err(e)) => {
                debug!(error = %e, "write failed");
                return Now::Failed;
            }
            Poll::Pending => return Now::Later(Later::Encoded { out, from, sent }),
        }
    }
    match Pin::new(&mut *wr).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => {
            wire.add_sent(&sent);
            Now::Written
        }
        Poll::Ready(Err(e)) => {
            debug!(error = %e, "flush failed");
            Now::Failed
        }
        Poll::Pending => Now::Later(Later::Encoded { out, from, sent }),
    }
}

/// Writes the rest of an encoded batch and flushes, then counts the batch's bytes;
/// `false` when writing failed.
async fn finish(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    rest: &[u8],
    sent: &[u64; 4],
    wire: &WireBytes,
) -> bool {
    if !write(wr, rest).await || !flush(wr).await {
        return false;
    }
    wire.add_sent(sent);
    true
}

/// Flushes (TLS may hold the last records until then; a no-op for TCP and WebSocket);
/// `false` on error or when it makes no progress for [`WRITE_TIMEOUT`].
async fn flush(wr: &mut (impl tokio::io::AsyncWrite + Unpin)) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, wr.flush()).await,
        Ok(Ok(()))
    )
}

/// Encodes `batch` in `version` and writes it, in pieces of about [`WRITE_CHUNK`] bytes,
/// then adds the bytes written to `wire`; `false` when writing failed.
async fn write_batch(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    batch: Batch,
    version: ProtocolVersion,
    wire: &WireBytes,
) -> bool {
    // Sized for the whole batch (up to a chunk) at once, from an estimate: growing by
    // doubling would copy the buffer several times over.
    let mut out = BytesMut::with_capacity(batch.estimate().min(WRITE_CHUNK));
    let mut sent = [0; 4];
    for item in batch {
        item.encode_counted(version, &mut out, &mut sent);
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
    if !flush(wr).await {
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
