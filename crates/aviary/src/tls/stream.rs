//! A TLS connection after its handshake, as a [`Transport`]: the connection driver reads
//! and writes plaintext while this module moves TLS records between rustls and the socket.
//!
//! The read side stays readiness-based: [`TlsReader::readable`] waits on the socket (or
//! returns at once when rustls holds plaintext already) and [`TlsReader::try_read_buf`]
//! pulls what the socket has into rustls, decrypts and appends the plaintext to the
//! driver's buffer, so the driver's buffer is dropped while idle as for TCP. What an idle
//! TLS connection still holds is rustls's own: the connection state (keys, about 1-2 KiB)
//! and its incoming-record buffer, which rustls keeps at 4 KiB once the connection has read
//! anything (it shrinks back to that after large records, but not below).
//!
//! Both halves share the rustls connection behind a mutex. They run in the same task (the
//! connection driver polls them concurrently with `select!`), so the lock is never
//! contended; it is held only for one decrypt or encrypt, never across an `.await`.
//! Records rustls queues while reading (a TLS 1.3 key update answer, an alert) go out with
//! the next write, flush or shutdown of the write half.

use std::io::{self, Read as _, Write as _};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::io::AsyncWrite;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::transport::{Transport, TransportRead};

/// Socket reads done by one `try_read_*` call at most when they yield records but no
/// plaintext (handshake messages, empty records); then it reports `WouldBlock`, with the
/// socket still readable, so the driver comes straight back.
const MAX_RECORD_READS: usize = 16;

/// A TLS connection whose handshake is done.
#[derive(Debug)]
pub(crate) struct TlsTransport {
    tcp: TcpStream,
    tls: ServerConnection,
}

impl TlsTransport {
    /// The socket and rustls connection of a finished handshake (what
    /// `tokio_rustls::server::TlsStream::into_inner` returns; plaintext rustls read
    /// along with the handshake is kept and read first).
    pub(crate) fn new(tcp: TcpStream, tls: ServerConnection) -> Self {
        Self { tcp, tls }
    }
}

impl Transport for TlsTransport {
    type Reader = TlsReader;
    type Writer = TlsWriter;

    fn split(self) -> (TlsReader, TlsWriter) {
        let (rd, wr) = self.tcp.into_split();
        let tls = Arc::new(Mutex::new(self.tls));
        (
            TlsReader {
                rd,
                tls: Arc::clone(&tls),
            },
            TlsWriter {
                wr,
                tls,
                closing: false,
            },
        )
    }
}

/// Locks the shared connection. A poisoned lock means the other half panicked while
/// holding it; the connection task is unwinding then, and rustls reports any broken state
/// as an error on the next call.
fn lock(tls: &Mutex<ServerConnection>) -> MutexGuard<'_, ServerConnection> {
    tls.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The read half.
#[derive(Debug)]
pub(crate) struct TlsReader {
    rd: OwnedReadHalf,
    tls: Arc<Mutex<ServerConnection>>,
}

impl TlsReader {
    /// Makes plaintext available in rustls: `Ok(n)` with `n > 0` bytes ready, `Ok(0)` at
    /// the end of the stream (close_notify or the socket closed), `WouldBlock` when the
    /// socket has nothing more now.
    fn fill(&self, tls: &mut ServerConnection) -> io::Result<usize> {
        for _ in 0..MAX_RECORD_READS {
            let state = tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                return Ok(available);
            }
            if state.peer_has_closed() {
                return Ok(0);
            }
            if tls.read_tls(&mut SocketReader(&self.rd))? == 0 {
                return Ok(0);
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl TransportRead for TlsReader {
    async fn readable(&mut self) -> io::Result<()> {
        let buffered = {
            let mut tls = lock(&self.tls);
            match tls.process_new_packets() {
                Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
                Err(_) => true, // the next read reports the error
            }
        };
        if buffered {
            return Ok(());
        }
        self.rd.readable().await
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut tls = lock(&self.tls);
        let available = self.fill(&mut tls)?;
        if available == 0 {
            return Ok(0);
        }
        let start = buf.len();
        buf.resize(start + available, 0);
        let n = tls.reader().read(&mut buf[start..]);
        let n = n.inspect_err(|_| buf.truncate(start))?;
        buf.truncate(start + n);
        Ok(n)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut tls = lock(&self.tls);
        if self.fill(&mut tls)? == 0 {
            return Ok(0);
        }
        tls.reader().read(buf)
    }
}

/// The socket as a non-blocking `io::Read` for rustls: `WouldBlock` clears the socket's
/// readiness, so the next `readable()` waits for new data.
struct SocketReader<'a>(&'a OwnedReadHalf);

impl io::Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// The write half.
#[derive(Debug)]
pub(crate) struct TlsWriter {
    wr: OwnedWriteHalf,
    tls: Arc<Mutex<ServerConnection>>,
    /// close_notify has been queued (shutdown may be polled more than once).
    closing: bool,
}

/// Writes the records rustls has queued to the socket; ready when none are left.
fn poll_send(
    wr: &mut OwnedWriteHalf,
    tls: &mut ServerConnection,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while tls.wants_write() {
        match tls.write_tls(&mut SocketWriter { wr, cx }) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

impl AsyncWrite for TlsWriter {
    /// Encrypts `data` once every earlier record has reached the socket (so rustls buffers
    /// at most one write's worth), then sends what the socket takes now; the rest goes with
    /// the next write or flush.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut tls = lock(&this.tls);
        ready!(poll_send(&mut this.wr, &mut tls, cx))?;
        let n = tls.writer().write(data)?;
        if let Poll::Ready(Err(e)) = poll_send(&mut this.wr, &mut tls, cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut tls = lock(&this.tls);
        ready!(poll_send(&mut this.wr, &mut tls, cx))?;
        Pin::new(&mut this.wr).poll_flush(cx)
    }

    /// close_notify, then the TCP FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut tls = lock(&this.tls);
        if !this.closing {
            this.closing = true;
            tls.send_close_notify();
        }
        ready!(poll_send(&mut this.wr, &mut tls, cx))?;
        Pin::new(&mut this.wr).poll_shutdown(cx)
    }
}

/// The socket as a non-blocking `io::Write` for rustls: `Pending` becomes `WouldBlock`
/// with the task's waker registered for writability.
struct SocketWriter<'a, 'b> {
    wr: &'a mut OwnedWriteHalf,
    cx: &'a mut Context<'b>,
}

impl io::Write for SocketWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.wr).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match Pin::new(&mut *self.wr).poll_write_vectored(self.cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
