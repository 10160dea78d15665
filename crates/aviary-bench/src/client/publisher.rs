//! The publishing side of a connection: sends numbered, timestamped messages as fast as the
//! in-flight window (QoS 1/2) or the socket (QoS 0) allows, or at a fixed rate, and completes
//! every QoS 1 (PUBACK) and QoS 2 (PUBREC → PUBREL → PUBCOMP) exchange it started.
//!
//! The window is ours, not the broker's: with `max_inflight` above the broker's receive
//! window, a correct broker still completes every exchange (it must keep reading and
//! acknowledge as it can); this is how the "QoS 2 beyond the window" check is done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_codec::{
    decode, encode, Ack, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, TopicName,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pace::{Pacer, Schedule};
use super::{ClientError, Connection, Progress, MAX_PACKET};
use crate::payload::{Stamp, HEADER_LEN};
use crate::stats::Histogram;

/// Stop queueing new messages once this many bytes wait to be written.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// How often a publisher blocked on end-to-end credit looks again if no wake-up came
/// (a wake-up can be missed on a multi-threaded runtime).
const CREDIT_POLL: Duration = Duration::from_millis(5);

/// An end-to-end window shared by all publishers of a run: sending pauses while more than
/// `limit` deliveries are sent but not yet received. Without it a "maximum rate" run
/// measures how a broker behaves when its queues overflow (it drops, or buffers without
/// bound) instead of the rate it sustains; with it every broker runs at the edge of what it
/// delivers.
#[derive(Debug)]
pub struct Credit {
    /// Deliveries the sent messages should cause (messages × receiving groups).
    pub owed: AtomicU64,
    /// Deliveries received so far (the subscribers' shared counter).
    pub progress: Arc<Progress>,
    /// Most deliveries outstanding at once.
    pub limit: u64,
}

impl Credit {
    fn exhausted(&self) -> bool {
        let owed = self.owed.load(Ordering::Relaxed);
        owed.saturating_sub(self.progress.received()) >= self.limit
    }

    /// Resolves when this publisher's turn comes after the subscribers made progress:
    /// publishers are woken one at a time, first come first served, each taking what its
    /// window lets it send (see [`Progress::advanced`]).
    async fn turn(&self) {
        self.progress.advanced.notified().await;
    }

    /// Wakes the publisher that has waited longest (or lets the next one that waits look
    /// at once): a woken publisher calls this when it stopped with credit left.
    fn pass_on(&self) {
        self.progress.advanced.notify_one();
    }
}

/// What one publisher does.
#[derive(Clone, Debug)]
pub struct PublishPlan {
    /// Written into every payload; dense from 0 in a run.
    pub publisher: u32,
    pub topic: TopicName,
    pub qos: QoS,
    /// At least [`HEADER_LEN`].
    pub payload_len: usize,
    /// Stop after this many messages (`None`: until `send_until`).
    pub max_messages: Option<u64>,
    /// No new message is queued after this.
    pub send_until: Instant,
    /// Unfinished exchanges after this are given up and reported.
    pub drain_until: Instant,
    /// Time between messages for a fixed offered rate; `None`: as fast as possible.
    pub interval: Option<Duration>,
    /// Wakes a fixed-rate publisher when its next message is due (tokio's timers are too
    /// coarse for it); without one, tokio's timers are used.
    pub pacer: Option<Arc<Pacer>>,
    /// Most QoS 1/2 exchanges open at once (1..=65535).
    pub max_inflight: u16,
    /// Timestamps in payloads are nanoseconds since this instant.
    pub epoch: Instant,
    /// When the first message may go (staggers fixed-rate publishers over one interval).
    pub first_send: Instant,
    /// The run's end-to-end window, and how many deliveries each message of this publisher
    /// causes; `None`: no end-to-end limit.
    pub credit: Option<(Arc<Credit>, u64)>,
}

/// What one publisher did.
#[derive(Clone, Debug, Default)]
pub struct PublisherReport {
    pub publisher: u32,
    /// Messages handed to the socket: sequences `0..sent`.
    pub sent: u64,
    /// QoS 1/2 exchanges completed (PUBACK / PUBCOMP received); equals `sent` for QoS 0
    /// once everything was written.
    pub completed: u64,
    /// Exchanges still open when the publisher stopped.
    pub unfinished: u64,
    /// When the last message was sent (for the throughput window).
    pub last_send: Option<Instant>,
    /// At a fixed rate: how late each message was queued after it was due (nanoseconds),
    /// the generator's own lateness plus any hold-back by the broker.
    pub send_lag: Histogram,
    /// The first error, if the connection failed.
    pub error: Option<String>,
}

/// Where a QoS 1/2 exchange we started stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// PUBLISH sent; PUBACK (QoS 1) or PUBREC (QoS 2) expected.
    Published,
    /// PUBREL sent; PUBCOMP expected.
    Released,
}

/// A PUBLISH encoded once, copied per message with the packet id and payload header patched:
/// the encoding work of our codec is done once per run, not once per message.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    bytes: Vec<u8>,
    /// Offset of the packet identifier (QoS 1/2 only).
    packet_id_at: Option<usize>,
    /// Offset of the payload.
    payload_at: usize,
}

impl Template {
    pub(crate) fn new(
        topic: &TopicName,
        qos: QoS,
        payload_len: usize,
        version: ProtocolVersion,
    ) -> Result<Self, ClientError> {
        let payload_len = payload_len.max(HEADER_LEN);
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => PacketId::new(1),
        };
        let publish = Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.clone(),
            packet_id,
            properties: Default::default(),
            payload: vec![0u8; payload_len].into(),
        });
        let mut buf = BytesMut::new();
        encode(&publish, version, &mut buf)?;
        let payload_at = buf.len() - payload_len;
        // 5.0 has a one-byte empty property block between the packet id and the payload.
        let properties_len = usize::from(version.is_v5());
        let packet_id_at = packet_id.map(|_| payload_at - properties_len - 2);
        Ok(Self {
            bytes: buf.to_vec(),
            packet_id_at,
            payload_at,
        })
    }

    /// Appends the packet for one message.
    pub(crate) fn append(&self, out: &mut BytesMut, packet_id: u16, stamp: &Stamp) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let packet = &mut out[start..];
        if let Some(at) = self.packet_id_at {
            packet[at..at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        stamp.write(&mut packet[self.payload_at..]);
    }
}

/// Runs the plan on `conn` to the end and reports. Never fails: errors are in the report.
pub async fn run(conn: Connection, plan: PublishPlan) -> PublisherReport {
    let mut report = PublisherReport {
        publisher: plan.publisher,
        ..PublisherReport::default()
    };
    if let Err(e) = drive(conn, &plan, &mut report).await {
        report.error = Some(e.to_string());
    }
    report
}

async fn drive(
    conn: Connection,
    plan: &PublishPlan,
    report: &mut PublisherReport,
) -> Result<(), ClientError> {
    let Connection {
        mut stream,
        mut rbuf,
        mut wbuf,
        version,
        ..
    } = conn;
    let template = Template::new(&plan.topic, plan.qos, plan.payload_len, version)?;
    let (mut rd, mut wr) = stream.split();
    let mut inflight: HashMap<u16, Stage> = HashMap::new();
    let window = usize::from(plan.max_inflight.max(1));
    let mut next_packet_id: u16 = 1;
    // At a fixed rate, when each message is due; otherwise "now" for every message.
    let mut schedule = plan
        .interval
        .map(|interval| Schedule::new(plan.first_send, interval));
    let timer = plan.pacer.as_ref().map(|p| p.timer());
    let mut sending = true;
    let mut credit_wait;
    // Woken by the credit: what it does not take goes on to the next waiting publisher.
    let mut credit_woke = false;

    // Acknowledgements read together with CONNACK are handled before anything else.
    while let Some(packet) = decode(&mut rbuf, version, MAX_PACKET)? {
        handle_ack(packet, plan.qos, &mut inflight, &mut wbuf, version, report)?;
    }
    loop {
        credit_wait = false;
        let now = Instant::now();
        // Queue as many messages as window, buffer and rate allow.
        while sending {
            let limit_reached = plan.max_messages.is_some_and(|max| report.sent >= max);
            if limit_reached || now >= plan.send_until {
                sending = false;
                break;
            }
            let rate_wait = schedule.as_ref().is_some_and(|s| !s.is_due(now))
                || (schedule.is_none() && now < plan.first_send);
            if rate_wait {
                break;
            }
            let window_full = plan.qos != QoS::AtMostOnce && inflight.len() >= window;
            if window_full || wbuf.len() >= WRITE_HIGH_WATER {
                // A due message the broker does not let us send yet.
                if let Some(s) = &mut schedule {
                    s.held_back();
                }
                break;
            }
            if let Some((credit, _)) = &plan.credit {
                if credit.exhausted() {
                    credit_wait = true;
                    break;
                }
            }
            let packet_id = if plan.qos == QoS::AtMostOnce {
                0
            } else {
                // Bounded: fewer than 65535 ids are in use (window <= 65535).
                while inflight.contains_key(&next_packet_id) {
                    next_packet_id = next_packet_id.checked_add(1).unwrap_or(1);
                }
                let id = next_packet_id;
                next_packet_id = next_packet_id.checked_add(1).unwrap_or(1);
                inflight.insert(id, Stage::Published);
                id
            };
            // At a fixed rate: when queued, or when due if the broker held it back (see
            // `Schedule`); the schedule does not move after a stall: the messages that
            // were due go at once (bounded by the window and the write buffer).
            let queued = Instant::now();
            let stamped = match &mut schedule {
                Some(s) => {
                    let slot = s.take(queued);
                    report.send_lag.record(slot.lag.as_nanos() as u64);
                    slot.stamp
                }
                None => queued,
            };
            let stamp = Stamp {
                publisher: plan.publisher,
                sequence: report.sent as u32,
                sent_ns: stamped.saturating_duration_since(plan.epoch).as_nanos() as u64,
            };
            template.append(&mut wbuf, packet_id, &stamp);
            report.sent += 1;
            if let Some((credit, fanout)) = &plan.credit {
                credit.owed.fetch_add(*fanout, Ordering::Relaxed);
            }
            report.last_send = Some(queued);
        }
        if credit_woke && !credit_wait {
            // Its window, buffer or schedule stopped this publisher with credit left (or
            // the credit ran out exactly): the next publisher in line gets to look.
            if let Some((credit, _)) = &plan.credit {
                credit.pass_on();
            }
        }
        credit_woke = false;
        if !sending && inflight.is_empty() && wbuf.is_empty() {
            break;
        }
        if now >= plan.drain_until {
            break;
        }
        // Wake for the next rate slot or the end of sending, or at the drain deadline.
        let next_due = schedule
            .as_ref()
            .map_or(plan.first_send, Schedule::next_due);
        let wake = if sending {
            if credit_wait {
                (now + CREDIT_POLL).min(plan.send_until)
            } else if now < next_due {
                next_due.min(plan.send_until)
            } else {
                plan.send_until
            }
        } else {
            plan.drain_until
        };
        // The next message is due before anything else: the fine timer wakes for it.
        let paced = sending && !credit_wait && now < next_due && next_due < plan.send_until;
        tokio::select! {
            read = rd.read_buf(&mut rbuf) => {
                if read? == 0 {
                    return Err(ClientError::Closed);
                }
                while let Some(packet) = decode(&mut rbuf, version, MAX_PACKET)? {
                    handle_ack(packet, plan.qos, &mut inflight, &mut wbuf, version, report)?;
                }
            }
            written = wr.write(&wbuf), if !wbuf.is_empty() => {
                bytes::Buf::advance(&mut wbuf, written?);
            }
            () = tokio::time::sleep_until(wake.into()), if !(paced && timer.is_some()) => {}
            () = fine_sleep(&timer, wake), if paced && timer.is_some() => {}
            () = credit_wake(&plan.credit), if credit_wait => credit_woke = true,
        }
    }
    if plan.qos == QoS::AtMostOnce {
        report.completed = report.sent;
    }
    report.unfinished = inflight.len() as u64;
    wr.flush().await?;
    let conn = Connection {
        stream,
        rbuf,
        wbuf,
        version,
        session_present: false,
    };
    if report.unfinished > 0 {
        return Err(ClientError::Timeout(
            "acknowledgements at the end of the run",
        ));
    }
    conn.disconnect().await
}

/// Resolves at `at` on the pacer's timer (never without one).
async fn fine_sleep(timer: &Option<super::pace::PaceTimer>, at: Instant) {
    match timer {
        Some(timer) => timer.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// [`Credit::turn`] (never without credit).
async fn credit_wake(credit: &Option<(Arc<Credit>, u64)>) {
    match credit {
        Some((credit, _)) => credit.turn().await,
        None => std::future::pending().await,
    }
}

/// Advances the exchange an acknowledgement belongs to.
fn handle_ack(
    packet: Packet,
    qos: QoS,
    inflight: &mut HashMap<u16, Stage>,
    wbuf: &mut BytesMut,
    version: ProtocolVersion,
    report: &mut PublisherReport,
) -> Result<(), ClientError> {
    let unexpected = |what: &str, id: u16| {
        ClientError::Protocol(format!("{what} for packet id {id} not in flight"))
    };
    match packet {
        Packet::PubAck(ack) if qos == QoS::AtLeastOnce => {
            let id = ack.packet_id.get();
            if inflight.remove(&id) != Some(Stage::Published) {
                return Err(unexpected("PUBACK", id));
            }
            report.completed += 1;
        }
        Packet::PubRec(ack) if qos == QoS::ExactlyOnce => {
            let id = ack.packet_id.get();
            match inflight.get_mut(&id) {
                // A resent PUBREC for an exchange already released gets PUBREL again.
                Some(stage) => *stage = Stage::Released,
                None => return Err(unexpected("PUBREC", id)),
            }
            if ack.reason_code.0 >= 0x80 {
                // 5.0: the broker refused the message; the exchange ends here [MQTT-4.3.3-4].
                inflight.remove(&id);
                return Err(ClientError::Protocol(format!(
                    "PUBREC reason code {:#04x}",
                    ack.reason_code.0
                )));
            }
            let release = Packet::PubRel(Ack {
                packet_id: ack.packet_id,
                reason_code: ReasonCode::SUCCESS,
                properties: Default::default(),
            });
            encode(&release, version, wbuf)?;
        }
        Packet::PubComp(ack) if qos == QoS::ExactlyOnce => {
            let id = ack.packet_id.get();
            if inflight.remove(&id) != Some(Stage::Released) {
                return Err(unexpected("PUBCOMP", id));
            }
            report.completed += 1;
        }
        Packet::PingResp => {}
        other => {
            return Err(ClientError::Protocol(format!(
                "publisher got unexpected {:?}",
                other.packet_type()
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Progress wakes one waiting publisher, the one that waited longest; the next wakes
    /// only when that one passes the credit on.
    #[tokio::test(flavor = "current_thread")]
    async fn credit_wakes_one_publisher_at_a_time_in_order() {
        let credit = Arc::new(Credit {
            owed: AtomicU64::new(3),
            progress: Arc::new(Progress::default()),
            limit: 3,
        });
        assert!(credit.exhausted());
        let woken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for publisher in 0..3 {
            let (credit, woken) = (Arc::clone(&credit), Arc::clone(&woken));
            waiters.push(tokio::spawn(async move {
                credit.turn().await;
                woken.lock().unwrap().push(publisher);
            }));
            // Each waits before the next is spawned: the order of waiting is 0, 1, 2.
            tokio::task::yield_now().await;
        }
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert!(woken.lock().unwrap().is_empty());
        credit.progress.add(2);
        assert!(!credit.exhausted());
        settle().await;
        assert_eq!(*woken.lock().unwrap(), [0]);
        credit.pass_on();
        settle().await;
        assert_eq!(*woken.lock().unwrap(), [0, 1]);
        credit.pass_on();
        settle().await;
        assert_eq!(*woken.lock().unwrap(), [0, 1, 2]);
        for waiter in waiters {
            waiter.await.unwrap();
        }
    }

    /// The patched template decodes, with our codec, to the PUBLISH it stands for.
    #[test]
    fn template_patches_packet_id_and_stamp() {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            for (qos, len) in [
                (QoS::AtMostOnce, 16),
                (QoS::AtLeastOnce, 16),
                (QoS::ExactlyOnce, 1024),
            ] {
                let topic = TopicName::new("bench/a/b").unwrap();
                let template = Template::new(&topic, qos, len, version).unwrap();
                let stamp = Stamp {
                    publisher: 7,
                    sequence: 9,
                    sent_ns: 123_456,
                };
                let mut buf = BytesMut::new();
                template.append(&mut buf, 0xBEEF, &stamp);
                let Some(Packet::Publish(p)) = decode(&mut buf, version, MAX_PACKET).unwrap()
                else {
                    panic!("not a publish");
                };
                assert_eq!(p.qos, qos);
                assert_eq!(p.topic.as_str(), "bench/a/b");
                assert_eq!(p.payload.len(), len);
                assert_eq!(Stamp::read(&p.payload), Some(stamp));
                let expected_id = (qos != QoS::AtMostOnce).then_some(0xBEEF);
                assert_eq!(
                    p.packet_id.map(PacketId::get),
                    expected_id,
                    "{version:?} {qos:?}"
                );
                assert!(buf.is_empty());
            }
        }
    }
}
