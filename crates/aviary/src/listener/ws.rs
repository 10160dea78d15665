//! MQTT over WebSocket (MQTT 5.0 section 6): the HTTP upgrade on path `/mqtt` with
//! subprotocol `mqtt` (or `mqttv3.1`, which older clients send), then binary frames carry
//! the MQTT byte stream in both directions; one MQTT packet may span frames and one frame
//! may hold several packets [MQTT-6.0.0-2, MQTT-6.0.0-3]. A text frame closes the
//! connection [MQTT-6.0.0-1].
//!
//! The WebSocket is owned by one task that moves bytes between it and the connection
//! driver ([`crate::transport::ChunkStream`]), so the driver and the codec are the same as
//! for TCP.

use std::net::SocketAddr;
use std::time::Duration;

use aviary_core::ConnId;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::connection::{self, ConnectionContext};
use crate::transport::{ChunkReader, ChunkStream};

/// The only path upgraded.
const PATH: &str = "/mqtt";

/// Subprotocols accepted, preferred first.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// A client that has not completed the upgrade after this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binary frame payloads buffered between the WebSocket task and the driver; when full,
/// the WebSocket task stops reading (backpressure reaches the socket).
const CHUNKS: usize = 8;

/// Bytes read from the driver's side of the pipe per outgoing frame at most.
const PIPE: usize = 64 * 1024;

/// Upgrades `stream` (TCP, or TLS for secure WebSocket) and runs the MQTT connection over
/// it.
pub(crate) async fn serve<S>(stream: S, conn: ConnId, peer: SocketAddr, ctx: ConnectionContext)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let max_packet = ctx
        .max_packet_size
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    // A frame or message larger than the largest packet (plus its header) cannot be valid.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_packet + 8))
        .max_frame_size(Some(max_packet + 8));
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, negotiate, Some(config));
    let ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "WebSocket upgrade refused");
            return;
        }
        Err(_) => {
            debug!(%peer, "WebSocket upgrade timed out");
            return;
        }
    };
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(CHUNKS);
    let (driver_side, mut ws_side) = tokio::io::duplex(PIPE);
    let transport = ChunkStream {
        reader: ChunkReader::new(chunks_rx),
        writer: driver_side,
    };
    let driver = connection::run(transport, conn, peer, ctx, None);
    let pump = async move {
        let (mut sink, mut frames) = ws.split();
        let mut out = BytesMut::with_capacity(PIPE);
        // A frame read but not yet taken by the driver. Frames are read only while this is
        // empty, and the pipe towards the client is drained all the while, so a driver that
        // is waiting to write can never block the task that would take its next input.
        let mut pending: Option<Bytes> = None;
        loop {
            tokio::select! {
                permit = chunks_tx.reserve(), if pending.is_some() => match permit {
                    Ok(permit) => {
                        if let Some(data) = pending.take() {
                            permit.send(data);
                        }
                    }
                    Err(_) => break, // the driver is gone
                },
                frame = frames.next(), if pending.is_none() => match frame {
                    Some(Ok(Message::Binary(data))) => pending = Some(data),
                    // Pings are answered by tungstenite on the next write or flush.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                        if sink.flush().await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        debug!(conn = conn.0, "text frame: closing [MQTT-6.0.0-1]");
                        break;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                },
                read = ws_side.read_buf(&mut out) => match read {
                    Ok(0) | Err(_) => {
                        let _ = sink.close().await;
                        break;
                    }
                    Ok(_) => {
                        let data = out.split().freeze();
                        out.reserve(PIPE);
                        if sink.send(Message::Binary(data)).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        // Dropping the chunk sender ends the driver's reads.
    };
    tokio::join!(driver, pump);
}

/// Accepts the upgrade only on [`PATH`] and with an MQTT subprotocol, which it echoes.
// The error type is tungstenite's; it is what the handshake callback must return.
#[allow(clippy::result_large_err)]
fn negotiate(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let refuse = |status: StatusCode, why: &str| {
        let mut r = ErrorResponse::new(Some(why.to_owned()));
        *r.status_mut() = status;
        r
    };
    if request.uri().path() != PATH {
        return Err(refuse(StatusCode::NOT_FOUND, "MQTT is served on /mqtt"));
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "subprotocol mqtt (or mqttv3.1) required",
        ));
    };
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
    Ok(response)
}
