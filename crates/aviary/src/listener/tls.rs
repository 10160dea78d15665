//! The TLS kinds of listener: MQTT over TLS (the connection driver runs over
//! [`TlsTransport`]) and MQTT over secure WebSocket (the WebSocket upgrade runs inside the
//! TLS stream). Both do the handshake with the listener's [`TlsAcceptorHandle`] and, when
//! the client certificate is deactivated, revoked or withdrawn by its CA or a CRL while the
//! connection is open, tell the broker (`Event::Revoke`: 5.0 DISCONNECT 0x87), which
//! closes it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aviary_core::ConnId;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::broker_task::Event;
use crate::connection::{self, ConnectionContext};
use crate::tls::stream::TlsTransport;
use crate::tls::{Accepted, TlsAcceptorHandle};

/// A handshake that takes longer is dropped (slow-loris protection).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// MQTT over TLS on `tcp`.
pub(super) async fn serve(
    tcp: TcpStream,
    conn: ConnId,
    peer: SocketAddr,
    mut ctx: ConnectionContext,
    acceptor: Arc<TlsAcceptorHandle>,
) {
    let Some(accepted) = handshake(tcp, peer, &acceptor, &ctx).await else {
        return;
    };
    ctx.certificate = accepted.certificate;
    let (tcp, tls) = accepted.stream.into_inner();
    let events = ctx.events.clone();
    let driver = connection::run(TlsTransport::new(tcp, tls), conn, peer, ctx, None);
    watched(driver, accepted.revoked, &acceptor, events, conn).await;
}

/// MQTT over WebSocket over TLS on `tcp`.
pub(super) async fn serve_ws(
    tcp: TcpStream,
    conn: ConnId,
    peer: SocketAddr,
    mut ctx: ConnectionContext,
    acceptor: Arc<TlsAcceptorHandle>,
) {
    let Some(accepted) = handshake(tcp, peer, &acceptor, &ctx).await else {
        return;
    };
    ctx.certificate = accepted.certificate;
    let events = ctx.events.clone();
    let driver = super::ws::serve(accepted.stream, conn, peer, ctx);
    watched(driver, accepted.revoked, &acceptor, events, conn).await;
}

/// The TLS handshake, bounded in time; `None` (logged) when it fails.
async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptorHandle,
    ctx: &ConnectionContext,
) -> Option<Accepted> {
    let accept = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    tokio::select! {
        result = accept => match result {
            Ok(Ok(accepted)) => Some(accepted),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake refused");
                None
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                None
            }
        },
        () = ctx.listener_off.cancelled() => None,
        () = ctx.force_close.cancelled() => None,
    }
}

/// Runs `driver`; if the client certificate is withdrawn meanwhile, tells the broker to
/// close the connection. The certificate's watch is released at the end.
async fn watched(
    driver: impl Future<Output = ()>,
    revoked: Option<(u64, CancellationToken)>,
    acceptor: &TlsAcceptorHandle,
    events: tokio::sync::mpsc::Sender<Event>,
    conn: ConnId,
) {
    let Some((watch_id, token)) = revoked else {
        driver.await;
        return;
    };
    let revoke = async {
        token.cancelled().await;
        debug!(conn = conn.0, "client certificate withdrawn; disconnecting");
        let _ = events.send(Event::Revoke { conn }).await;
        // The driver ends once the broker has closed the connection.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = driver => {}
        () = revoke => {}
    }
    acceptor.release(watch_id);
}
