//! The broker task's reads of the connections it holds itself (`crate::direct_reads`):
//! a woken connection's socket is read, its packets decoded and handled as its task's
//! events would be, and whatever needs waiting hands it back to a task.

use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use aviary_codec::Packet;
use tracing::debug;

use super::{now, BrokerTask, Event, MAX_EVENTS_PER_PASS};
use crate::connection::read::{decode_some, ReadSizing, Stop};
use crate::connection::{Carry, ReadEnd};
use crate::direct_reads::{DirectReads, Held};
use crate::transport::read_available;

/// Reads of one connection in one turn; a connection with more to read then waits for
/// its next turn, behind the others woken.
const READS_PER_TURN: usize = 4;

/// What becomes of a connection after its turn.
enum Next {
    /// It waits for its socket (or outbox) to wake it.
    Wait,
    /// It has more to read: another turn.
    Again,
    /// It needs a task: hand it back, its reader starting from this.
    HandBack(Option<Carry>),
}

impl BrokerTask {
    /// Whether connections held by the broker task have woken (without waiting).
    pub(super) fn direct_woken(&mut self) -> bool {
        self.direct.as_mut().is_some_and(|d| d.any_woken())
    }

    /// [`BrokerTask::serve_direct`] if a connection has woken (the task was woken for
    /// events).
    pub(super) fn serve_direct_if_woken(&mut self) {
        if self.direct_woken() {
            self.serve_direct();
        }
    }

    /// Serves the woken connections in turn, up to a pass's bound of them.
    pub(super) fn serve_direct(&mut self) {
        for _ in 0..MAX_EVENTS_PER_PASS {
            if self.pass_is_full() {
                break; // the rest waits for the next pass, as events do
            }
            let Some((index, mut held)) = self.direct.as_mut().and_then(|d| d.next_woken()) else {
                break;
            };
            let next = self.read_held(&mut held);
            let Some(direct) = self.direct.as_mut() else {
                break;
            };
            match next {
                Next::Wait => direct.put_back(index, held, false),
                Next::Again => direct.put_back(index, held, true),
                Next::HandBack(carry) => {
                    debug!(conn = held.state.conn.0, "connection handed back to a task");
                    direct.hand_back(index, *held, carry);
                }
            }
        }
    }

    /// One turn of a connection: reads until the socket has nothing more (or the turn's
    /// reads are done), handling the packets of each read as an [`Event::Packets`].
    fn read_held(&mut self, held: &mut Held) -> Next {
        let conn = held.state.conn;
        if held.state.outbox.needs_task() {
            return Next::HandBack(None);
        }
        let ctx = Arc::clone(&held.state.ctx);
        let version = AtomicU8::new(held.state.level);
        let mut buf = match held.partial.take() {
            Some(partial) => partial,
            None => self
                .direct
                .as_mut()
                .map(DirectReads::lend_buffer)
                .unwrap_or_default(),
        };
        let mut topics = std::mem::take(&mut held.topics);
        let mut wire = [0; 4];
        // Reads sized as a connection's task sizes them, starting from the size of the
        // connection's last turn.
        let mut sizing = ReadSizing::expecting(held.last_turn_bytes as usize);
        let mut turn_bytes = 0usize;
        let mut next = Next::Again;
        for _ in 0..READS_PER_TURN {
            let room = sizing.make_room(&mut buf);
            held.read = true;
            match read_available(&held.stream, &mut buf) {
                // The end of the stream: the task meets it again and tells the broker.
                Ok(0) => {
                    next = Next::HandBack(None);
                    break;
                }
                Ok(n) => {
                    sizing.took(n, room);
                    turn_bytes += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    next = if held.arm().is_ready() {
                        Next::Again
                    } else {
                        Next::Wait
                    };
                    break;
                }
                Err(e) => {
                    debug!(conn = conn.0, error = %e, "read failed; handed back");
                    next = Next::HandBack(None);
                    break;
                }
            }
            let stop = loop {
                let (packets, stop) = decode_some(
                    (&mut buf, &mut topics),
                    (&version, &held.state.outbox),
                    &ctx,
                    &mut wire,
                    None,
                );
                if !packets.is_empty() {
                    let read_at = now();
                    self.handle(Event::Packets {
                        conn,
                        packets,
                        read_at,
                    });
                }
                // A full batch is followed by more only while the pass has room: a cut
                // pass put the rest of the batch in the inbox, ahead of what follows.
                if !matches!(stop, Stop::Full) || self.pass_is_full() {
                    break stop;
                }
            };
            match stop {
                Stop::Drained | Stop::Full => {}
                Stop::Goodbye => {
                    next = Next::HandBack(Some(Carry::Ended(ReadEnd::Goodbye)));
                    break;
                }
                Stop::Pause(_, packet) => {
                    // The task waits the pause out, then takes the packet.
                    let buf = std::mem::take(&mut buf);
                    next = Next::HandBack(Some(Carry::Input {
                        buf,
                        paused: Some(packet),
                    }));
                    break;
                }
                Stop::Undecodable(error) => {
                    debug!(conn = conn.0, %error, "undecodable input");
                    self.handle(Event::DecodeError { conn, error });
                    next = Next::HandBack(Some(Carry::Ended(ReadEnd::DecodeError)));
                    break;
                }
                Stop::Authenticate(_, connect) => {
                    // Not a first CONNECT (the connection was handed over after its own):
                    // the broker answers a second one as the protocol error it is.
                    self.handle(Event::Packets {
                        conn,
                        packets: vec![Packet::Connect(connect)].into(),
                        read_at: now(),
                    });
                }
            }
            if self.pass_is_full() || held.state.outbox.needs_task() {
                // Cut short: a read of many messages filled the pass (what it did not
                // handle waits in the inbox, and the connection's next packets must go
                // behind it), or the client does not read what it is sent.
                next = Next::HandBack(None);
                break;
            }
        }
        ctx.wire.add_received(&wire);
        held.topics = topics;
        if turn_bytes > 0 {
            // A wake that found nothing (a readiness left over) says nothing of the next.
            held.last_turn_bytes = u32::try_from(turn_bytes).unwrap_or(u32::MAX);
        }
        if buf.is_empty() {
            if let Some(direct) = self.direct.as_mut() {
                direct.return_buffer(buf);
            }
        } else {
            match &mut next {
                Next::HandBack(carry @ None) => {
                    *carry = Some(Carry::Input { buf, paused: None });
                }
                Next::HandBack(_) => {}
                Next::Wait | Next::Again => held.partial = Some(buf),
            }
        }
        next
    }
}
