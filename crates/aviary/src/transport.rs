//! The byte streams a connection can run over: plain TCP, and WebSocket adapted to a byte
//! stream (binary frames in, binary frames out), so one connection driver and one codec
//! serve every listener kind. TLS (`crate::tls::stream::TlsTransport`) is one more
//! implementation; secure WebSocket is WebSocket over a TLS stream.
//!
//! The read side is readiness-based (`readable` then `try_read_buf`) so that an idle
//! connection holds no read buffer; the write side is any `AsyncWrite`, flushed by the
//! driver after each batch (TLS holds records until then).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A transport a connection runs over.
pub(crate) trait Transport: Send + 'static {
    /// The read half.
    type Reader: TransportRead;
    /// The write half.
    type Writer: AsyncWrite + Unpin + Send;
    /// Whether an idle connection over this transport may be parked
    /// (`crate::parking`): only plain TCP, whose socket alone is the whole transport.
    const PARKABLE: bool = false;
    /// Splits the transport into halves used concurrently.
    fn split(self) -> (Self::Reader, Self::Writer);
    /// The halves put back together as a standard socket, deregistered from tokio, to be
    /// parked; only for [`Transport::PARKABLE`] transports.
    fn into_std(reader: Self::Reader, writer: Self::Writer) -> io::Result<std::net::TcpStream> {
        drop((reader, writer));
        Err(io::ErrorKind::Unsupported.into())
    }
    /// The socket, for writes the broker task makes itself while the writer half waits
    /// (`crate::outbox`); `None` for transports whose writes need more than a socket
    /// (TLS records, WebSocket frames).
    fn direct(writer: &Self::Writer) -> Option<Arc<TcpStream>> {
        let _ = writer;
        None
    }
}

/// The read half of a transport: wait until readable, then read what is there without
/// waiting (`WouldBlock` when nothing is).
pub(crate) trait TransportRead: Send {
    /// Completes when a read may make progress (data or end of stream).
    fn readable(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Appends what is available to `buf`; `Ok(0)` at the end of the stream.
    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Reads what is available into `buf`; `Ok(0)` at the end of the stream.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Transport for TcpStream {
    type Reader = TcpReader;
    type Writer = TcpWriter;

    const PARKABLE: bool = true;

    fn split(self) -> (TcpReader, TcpWriter) {
        tcp_halves(Arc::new(self))
    }

    fn into_std(reader: TcpReader, writer: TcpWriter) -> io::Result<std::net::TcpStream> {
        drop(writer);
        Arc::try_unwrap(reader.0)
            .map_err(|_| io::Error::other("the socket is still shared"))?
            .into_std()
    }

    fn direct(writer: &TcpWriter) -> Option<Arc<TcpStream>> {
        Some(Arc::clone(&writer.0))
    }
}

/// The halves of a plain TCP connection whose socket is shared already (with its outbox,
/// `crate::outbox`, and while the broker task reads it, `crate::direct_reads`).
pub(crate) fn tcp_halves(stream: Arc<TcpStream>) -> (TcpReader, TcpWriter) {
    (TcpReader(Arc::clone(&stream)), TcpWriter(stream))
}

/// Appends what `stream` holds to `buf` without waiting; `Ok(0)` at the end of the stream.
///
/// A read that fills less than the room offered has drained the socket: its readiness is
/// cleared now (as tokio's own `poll_read` does), so the next wait parks at once instead of
/// costing another read that only says `WouldBlock`. That read would be one more syscall
/// per message wherever clients send one message at a time (fan-in, IoT). A new arrival
/// sets readiness again, and tokio does not clear readiness that changed during the read.
pub(crate) fn read_available(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let mut read = None;
    let outcome = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        read = Some(n);
        if n > 0 && n < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match read {
        Some(n) => Ok(n),
        None => outcome,
    }
}

/// The read half of a plain TCP connection.
#[derive(Debug)]
pub(crate) struct TcpReader(Arc<TcpStream>);

/// The write half of a plain TCP connection. The socket is shared (`Arc`) rather than
/// split by tokio so that the broker task can also write to it directly
/// ([`Transport::direct`], `crate::outbox`), never at the same time as this half.
#[derive(Debug)]
pub(crate) struct TcpWriter(Arc<TcpStream>);

impl AsyncWrite for TcpWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            // `try_write` clears the readiness when the socket is full, so the next poll
            // waits for room.
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

impl TransportRead for TcpReader {
    async fn readable(&mut self) -> io::Result<()> {
        // `poll_read_ready` keeps the waker in the socket's registration; tokio's
        // `readable()` future carries a ~180-byte waiter instead, which would sit in every
        // idle connection's task.
        let stream: &TcpStream = &self.0;
        std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        read_available(&self.0, buf)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// A stream of byte chunks (the payloads of WebSocket binary frames) read as one byte
/// stream. The chunks come from the task that owns the WebSocket through a small bounded
/// channel, so a slow connection pauses that task's reads too.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    /// Chunks in order; closed at the end of the stream (an error ends it too).
    chunks: mpsc::Receiver<Bytes>,
    /// The rest of a chunk not yet read.
    pending: Bytes,
    /// The sender is gone: after `pending`, the stream has ended.
    ended: bool,
}

impl ChunkReader {
    pub(crate) fn new(chunks: mpsc::Receiver<Bytes>) -> Self {
        Self {
            chunks,
            pending: Bytes::new(),
            ended: false,
        }
    }

    /// Makes `pending` non-empty if a chunk is available now; false if none is.
    fn fill(&mut self) -> bool {
        while self.pending.is_empty() && !self.ended {
            match self.chunks.try_recv() {
                Ok(chunk) => self.pending = chunk,
                Err(mpsc::error::TryRecvError::Empty) => return false,
                Err(mpsc::error::TryRecvError::Disconnected) => self.ended = true,
            }
        }
        true
    }
}

impl TransportRead for ChunkReader {
    async fn readable(&mut self) -> io::Result<()> {
        while self.pending.is_empty() && !self.ended {
            match self.chunks.recv().await {
                Some(chunk) => self.pending = chunk,
                None => self.ended = true,
            }
        }
        Ok(())
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if !self.fill() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.pending.len();
        buf.extend_from_slice(&self.pending);
        self.pending.clear();
        Ok(n)
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.fill() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.advance(n);
        Ok(n)
    }
}

/// A WebSocket connection adapted to a byte stream: the chunks of its binary frames, and
/// the write half of a pipe whose other end the WebSocket task sends as binary frames.
#[derive(Debug)]
pub(crate) struct ChunkStream {
    /// Binary frame payloads from the client.
    pub(crate) reader: ChunkReader,
    /// Bytes for the client, framed by the WebSocket task.
    pub(crate) writer: tokio::io::DuplexStream,
}

impl Transport for ChunkStream {
    type Reader = ChunkReader;
    type Writer = tokio::io::DuplexStream;

    fn split(self) -> (ChunkReader, tokio::io::DuplexStream) {
        (self.reader, self.writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_read_as_one_stream_then_end() {
        let (tx, rx) = mpsc::channel(4);
        let mut reader = ChunkReader::new(rx);
        let mut buf = BytesMut::new();
        assert_eq!(
            reader.try_read_buf(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        tx.send(Bytes::from_static(b"ab")).await.unwrap();
        tx.send(Bytes::from_static(b"cde")).await.unwrap();
        reader.readable().await.unwrap();
        let mut small = [0u8; 1];
        assert_eq!(reader.try_read(&mut small).unwrap(), 1);
        assert_eq!(reader.try_read_buf(&mut buf).unwrap(), 1);
        assert_eq!(reader.try_read_buf(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..], b"bcde");
        drop(tx);
        reader.readable().await.unwrap();
        assert_eq!(reader.try_read_buf(&mut buf).unwrap(), 0);
    }
}
