//! The receiving side of a connection: acknowledges every delivery as the spec asks
//! (PUBACK; PUBREC, then PUBCOMP on PUBREL) and records each message's sequence and
//! latency. A QoS 2 delivery resent before its PUBREL is acknowledged again but recorded
//! once (the receiver's "method B" of [MQTT-4.3.3-9]), so duplicates at QoS 2 are the
//! broker's.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use aviary_codec::{decode, encode, Ack, Packet, ProtocolVersion, QoS, ReasonCode};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::{ClientError, Connection, Progress, MAX_PACKET};
use crate::payload::Stamp;
use crate::stats::{Histogram, SequenceTracker};

/// What one subscriber saw.
#[derive(Clone, Debug, Default)]
pub struct SubscriberReport {
    /// Deliveries, duplicates included.
    pub received: u64,
    pub tracker: SequenceTracker,
    /// Publish-to-receive latency in nanoseconds.
    pub latency: Histogram,
    /// When the last delivery arrived (for the throughput window).
    pub last_receive: Option<Instant>,
    /// The first error, if the connection failed.
    pub error: Option<String>,
    /// Whether DISCONNECT went out after the run (false after an error).
    pub disconnected_cleanly: bool,
}

/// Shared with the scenario runner while the subscriber runs.
#[derive(Clone, Debug)]
pub struct SubscriberControl {
    /// Set to true to end the subscriber (it then disconnects).
    pub stop: watch::Receiver<bool>,
    /// Counts every delivery, so the runner sees when all have arrived.
    pub progress: Arc<Progress>,
    /// Timestamps in payloads count from here.
    pub epoch: Instant,
    /// Publisher ids above this are foreign.
    pub publishers: u32,
}

/// Receives until told to stop (or the connection fails), then disconnects.
pub async fn run(conn: Connection, control: SubscriberControl) -> SubscriberReport {
    let mut report = SubscriberReport {
        tracker: SequenceTracker::new(control.publishers),
        ..SubscriberReport::default()
    };
    match drive(conn, control, &mut report).await {
        Ok(conn) => report.disconnected_cleanly = conn.disconnect().await.is_ok(),
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

async fn drive(
    conn: Connection,
    mut control: SubscriberControl,
    report: &mut SubscriberReport,
) -> Result<Connection, ClientError> {
    let Connection {
        mut stream,
        mut rbuf,
        mut wbuf,
        version,
        session_present,
    } = conn;
    let (mut rd, mut wr) = stream.split();
    // QoS 2 packet ids received and acknowledged with PUBREC, waiting for PUBREL.
    let mut awaiting_release: HashSet<u16> = HashSet::new();
    // Packets may already wait in `rbuf`: a resumed session's queued messages can arrive in
    // the same read as CONNACK, and nothing more comes until they are acknowledged.
    let mut fresh = !rbuf.is_empty();
    while !*control.stop.borrow() {
        if fresh {
            fresh = false;
            let now = Instant::now();
            let now_ns = now.duration_since(control.epoch).as_nanos() as u64;
            let mut count = 0;
            while let Some(packet) = decode(&mut rbuf, version, MAX_PACKET)? {
                count += handle(
                    packet,
                    version,
                    now_ns,
                    &mut awaiting_release,
                    &mut wbuf,
                    report,
                )?;
            }
            if count > 0 {
                report.last_receive = Some(now);
                control.progress.add(count);
            }
        }
        tokio::select! {
            changed = control.stop.changed() => {
                if changed.is_err() {
                    break; // the runner is gone
                }
            }
            read = rd.read_buf(&mut rbuf) => {
                if read? == 0 {
                    return Err(ClientError::Closed);
                }
                fresh = true;
            }
            written = wr.write(&wbuf), if !wbuf.is_empty() => {
                bytes::Buf::advance(&mut wbuf, written?);
            }
        }
    }
    // Acknowledgements still queued go out before DISCONNECT.
    wr.write_all(&wbuf).await?;
    wbuf.clear();
    Ok(Connection {
        stream,
        rbuf,
        wbuf,
        version,
        session_present,
    })
}

/// Handles one packet; returns 1 for a newly recorded delivery, else 0.
fn handle(
    packet: Packet,
    version: ProtocolVersion,
    now_ns: u64,
    awaiting_release: &mut HashSet<u16>,
    wbuf: &mut BytesMut,
    report: &mut SubscriberReport,
) -> Result<u64, ClientError> {
    let ack = |packet_id| Ack {
        packet_id,
        reason_code: ReasonCode::SUCCESS,
        properties: Default::default(),
    };
    match packet {
        Packet::Publish(publish) => {
            let record = match (publish.qos, publish.packet_id) {
                (QoS::AtMostOnce, _) => true,
                (QoS::AtLeastOnce, Some(id)) => {
                    encode(&Packet::PubAck(ack(id)), version, wbuf)?;
                    true
                }
                (QoS::ExactlyOnce, Some(id)) => {
                    encode(&Packet::PubRec(ack(id)), version, wbuf)?;
                    awaiting_release.insert(id.get())
                }
                // The codec guarantees a packet id at QoS > 0 [MQTT-2.2.1-2].
                (_, None) => return Err(ClientError::Protocol("QoS > 0 without packet id".into())),
            };
            if !record {
                return Ok(0);
            }
            report.received += 1;
            match Stamp::read(&publish.payload) {
                Some(stamp) => {
                    report.tracker.record(stamp.publisher, stamp.sequence);
                    report.latency.record(now_ns.saturating_sub(stamp.sent_ns));
                }
                None => report.tracker.record_foreign(),
            }
            Ok(1)
        }
        Packet::PubRel(rel) => {
            // PUBCOMP even for an unknown id: the broker may resend PUBREL after a reconnect.
            awaiting_release.remove(&rel.packet_id.get());
            encode(&Packet::PubComp(ack(rel.packet_id)), version, wbuf)?;
            Ok(0)
        }
        Packet::PingResp => Ok(0),
        other => Err(ClientError::Protocol(format!(
            "subscriber got unexpected {:?}",
            other.packet_type()
        ))),
    }
}
