//! A standalone MQTT-over-TLS listener (`[tls_listener]`), until the operations side's
//! listener registry takes [`TlsAcceptorHandle`] as its pluggable acceptor.
//!
//! Interim design, chosen to leave the connection driver untouched: each TLS connection is
//! terminated here and its plaintext is pumped over a loopback TCP pair into the ordinary
//! connection task (which gets the real peer address and the client certificate in its
//! context). The pump also watches the certificate: when it is deactivated or revoked the
//! broker is told at once (`Event::Revoke`: 5.0 DISCONNECT 0x87) and the connection closes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aviary_core::ConnId;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::TlsAcceptorHandle;
use crate::broker_task::Event;
use crate::connection::{self, ConnectionContext};
use crate::listener::AcceptShared;

/// A handshake that takes longer is dropped (slow-loris protection).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the broker side closed, how long the client's remaining bytes are still read.
const LINGER: Duration = Duration::from_secs(2);

/// Accepts TLS connections until `stop` is cancelled.
pub(crate) async fn run(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptorHandle>,
    ctx: ConnectionContext,
    shared: AcceptShared,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "TLS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&shared.sockets).try_acquire_owned() else {
            warn!(%peer, "too many open sockets; TLS connection dropped");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        let next_id = shared.next_id.clone();
        shared.tracker.spawn(async move {
            serve(tcp, peer, acceptor, ctx, next_id).await;
            drop(permit);
        });
    }
}

/// One TLS connection: handshake, then the connection task fed through the pump.
async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Arc<TlsAcceptorHandle>,
    mut ctx: ConnectionContext,
    next_id: Arc<AtomicU64>,
) {
    let accepted = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (inner, outer) = match loopback_pair().await {
        Ok(pair) => pair,
        Err(e) => {
            warn!(error = %e, "cannot open the loopback pair for a TLS connection");
            return;
        }
    };
    // The same counter as every other listener: ids never collide while open.
    let conn = ConnId(next_id.fetch_add(1, Ordering::Relaxed) + 1);
    ctx.certificate = accepted.certificate.clone();
    let (watch_id, revoked) = match accepted.revoked {
        Some((id, token)) => (Some(id), Some(token)),
        None => (None, None),
    };
    let events = ctx.events.clone();
    let force_close = ctx.force_close.clone();
    let connection = connection::run(inner, conn, peer, ctx);
    let pump = pump(accepted.stream, outer, revoked, events, conn, force_close);
    tokio::join!(connection, pump);
    if let Some(id) = watch_id {
        acceptor.release(id);
    }
}

/// Copies both ways between the TLS stream and the loopback socket; tells the broker when
/// the certificate is withdrawn.
async fn pump(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    plain: TcpStream,
    revoked: Option<CancellationToken>,
    events: tokio::sync::mpsc::Sender<Event>,
    conn: ConnId,
    force_close: CancellationToken,
) {
    let (mut tls_rd, mut tls_wr) = tokio::io::split(tls);
    let (mut plain_rd, mut plain_wr) = plain.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut tls_rd, &mut plain_wr).await;
        let _ = plain_wr.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut plain_rd, &mut tls_wr).await;
        let _ = tls_wr.shutdown().await;
    };
    let revoke = async move {
        match revoked {
            Some(token) => token.cancelled_owned().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(up, down, revoke);
    let mut up_done = false;
    let mut revoke_sent = false;
    loop {
        tokio::select! {
            () = &mut up, if !up_done => up_done = true,
            () = &mut down => break,
            () = &mut revoke, if !revoke_sent => {
                revoke_sent = true;
                debug!(conn = conn.0, "client certificate withdrawn; disconnecting");
                let _ = events.send(Event::Revoke { conn }).await;
            }
            () = force_close.cancelled() => return,
        }
    }
    if !up_done {
        let _ = tokio::time::timeout(LINGER, &mut up).await;
    }
}

/// A connected pair of loopback TCP sockets (the listener is dropped at once).
async fn loopback_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let outer = connected?;
    let (inner, from) = accepted?;
    // Only our own socket may be the other end.
    if from != outer.local_addr()? {
        return Err(std::io::Error::other("unexpected loopback peer"));
    }
    let _ = inner.set_nodelay(true);
    let _ = outer.set_nodelay(true);
    Ok((inner, outer))
}
