//! How connections and sessions end, and what timers do: DISCONNECT from the client, the
//! will (immediate or delayed [MQTT-3.1.3-9]), session expiry, keep alive timeout
//! [MQTT-3.1.2-24], the connect timeout, and the hand-over of a leaving shared-group
//! member's messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary_codec::{Disconnect, ReasonCode};

use super::connection::Connection;
use super::message::Message;
use super::metering::{DISCONNECT_UNITS, WILL_UNITS};
use super::session::{PendingWill, SessionId};
use super::timers::Timer;
use super::{server_disconnect, Broker, ConnId, EndReason, Event};

impl Broker {
    /// DISCONNECT from the client (3.14.4).
    pub(super) fn handle_disconnect(&mut self, conn: ConnId, disconnect: Disconnect, now: Instant) {
        let Some(c) = self.connections.get(&conn).and_then(Connection::connected) else {
            return;
        };
        let v5 = c.protocol.is_v5();
        let sid = c.session;
        if v5 {
            if let Some(expiry) = disconnect.properties.session_expiry_interval {
                // A session that was to end with the connection may not be given a life
                // after it now [MQTT-3.14.2-2].
                if c.connect_expiry_zero && expiry != 0 {
                    return self.fail(
                        conn,
                        ReasonCode::PROTOCOL_ERROR,
                        "session expiry interval was 0 at CONNECT",
                        now,
                    );
                }
                let expiry = expiry.min(self.config.max_session_expiry_interval);
                if let Some(session) = self.sessions.get_mut(&sid) {
                    session.expiry_interval = expiry;
                }
            }
        }
        // Only a normal disconnection discards the will [MQTT-3.14.4-3]; 0x04 and error
        // codes from a 5.0 client publish it.
        let reason = if v5 && disconnect.reason_code != ReasonCode::NORMAL_DISCONNECTION {
            EndReason::ClientDisconnectWithWill(disconnect.reason_code)
        } else {
            EndReason::ClientDisconnect
        };
        self.fx.close(conn);
        self.end_connection(conn, reason, now);
    }

    /// Forgets a connection: detaches its session, publishes or schedules its will, hands
    /// shared-group messages to connected members, and ends the session if its expiry is
    /// 0 (else schedules the expiry). Emits no `Close`: callers do when needed.
    pub(super) fn end_connection(&mut self, conn: ConnId, reason: EndReason, now: Instant) {
        let Some(Connection::Connected(c)) = self.connections.remove(&conn) else {
            return;
        };
        self.connected -= 1;
        self.fx.stats.units += DISCONNECT_UNITS;
        if c.will.is_some() {
            // Whatever becomes of it below, it is no longer the will of an open connection.
            let client_id = c.client_id.clone();
            self.fx.store(super::StoreOp::WillCleared { client_id });
        }
        let sid = c.session;
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let sent_units = session.unlink().map_or(0, |l| l.units);
        let units = c.units + sent_units + DISCONNECT_UNITS;
        self.fx.event(|| Event::Disconnected {
            conn,
            client_id: c.client_id.clone(),
            reason,
            units,
        });
        let mut will_now = None;
        if let (true, Some(will)) = (reason.publishes_will(), c.will) {
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            let message = Arc::new(Message::from_will(*will, c.client_id, now));
            if delay == 0 || session.expiry_interval == 0 {
                will_now = Some(message);
            } else {
                // Published after the delay, or when the session ends if that is sooner.
                let at = now + Duration::from_secs(u64::from(delay));
                session.pending_will = Some(Box::new(PendingWill { at, message }));
                self.fx.timers.schedule(at, Timer::Will(sid));
            }
        }
        let expiry = session.expiry_interval;
        if expiry != 0 && expiry != u32::MAX {
            let at = now + Duration::from_secs(u64::from(expiry));
            session.link.set_expires_at(at);
            self.fx.timers.schedule(at, Timer::SessionExpiry(sid));
        }
        if let Some(message) = will_now {
            self.publish_will(message, now);
        }
        if expiry == 0 {
            self.end_session(sid, now);
        } else {
            self.persist_session(sid);
            self.redispatch_shared(sid, None, true, now);
        }
        self.compact_timers();
    }

    /// Sweeps stale timer entries once they clearly outnumber live ones: each connection
    /// and session has at most a few live entries, so the heap stays proportional to them
    /// even under connection churn. Amortised O(1) per entry.
    pub(super) fn compact_timers(&mut self) {
        let live_bound = 4 * (self.connections.len() + self.sessions.len()) + 1024;
        if self.fx.timers.len() <= 2 * live_bound {
            return;
        }
        let (connections, sessions) = (&self.connections, &self.sessions);
        let sweep_at = self.retained_sweep_at;
        self.fx.timers.retain(|at, timer| match timer {
            Timer::ConnectTimeout(conn) => {
                matches!(connections.get(&conn), Some(Connection::Connecting(_)))
            }
            Timer::KeepAlive(conn) => {
                matches!(connections.get(&conn), Some(Connection::Connected(_)))
            }
            Timer::Retry(sid) => sessions.get(&sid).is_some_and(|s| s.retry_at() == Some(at)),
            Timer::Will(sid) => sessions
                .get(&sid)
                .is_some_and(|s| s.pending_will.as_ref().is_some_and(|w| w.at == at)),
            Timer::SessionExpiry(sid) => sessions
                .get(&sid)
                .is_some_and(|s| s.link.expires_at() == Some(at)),
            Timer::RetainedSweep => sweep_at == Some(at),
        });
    }

    /// Discards a session that has no connection: its subscriptions leave the index, its
    /// shared-group messages go to other members, a pending will is published now.
    pub(super) fn end_session(&mut self, sid: SessionId, now: Instant) {
        self.redispatch_shared(sid, None, false, now);
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        if self.client_ids.get(&session.client_id) == Some(&sid) {
            self.client_ids.remove(&session.client_id);
        }
        if session.persisted {
            self.fx.store(super::StoreOp::SessionDeleted {
                client_id: session.client_id.clone(),
            });
        }
        for filter in session.subscriptions.keys() {
            self.index.remove(filter, &sid);
        }
        if let Some(pending) = session.pending_will {
            self.publish_will(pending.message, now);
        }
    }

    /// Publishes a will message like a PUBLISH from its client (retained if asked).
    pub(super) fn publish_will(&mut self, message: Arc<Message>, now: Instant) {
        self.fx.stats.wills_published += 1;
        self.fx.stats.units += WILL_UNITS;
        self.store_retained(&message, now);
        self.route(&message, now);
    }

    pub(super) fn handle_timer(&mut self, at: Instant, timer: Timer, now: Instant) {
        match timer {
            Timer::ConnectTimeout(conn) => {
                if let Some(Connection::Connecting(c)) = self.connections.get(&conn) {
                    let due = self
                        .config
                        .connect_timeout()
                        .is_some_and(|timeout| c.opened_at + timeout <= now);
                    if due {
                        self.close_silently(conn);
                    }
                }
            }
            Timer::KeepAlive(conn) => {
                let Some(c) = self.connections.get(&conn).and_then(Connection::connected) else {
                    return;
                };
                let Some(period) = c.keep_alive_period() else {
                    return;
                };
                let deadline = c.last_seen + period;
                if deadline > now {
                    self.fx.timers.schedule(deadline, Timer::KeepAlive(conn));
                } else {
                    // Silent for 1.5 × keep alive [MQTT-3.1.2-24]; 5.0 is told why.
                    if c.protocol.is_v5() {
                        self.send_explained(
                            conn,
                            server_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, "keep alive timeout"),
                        );
                    }
                    self.fx.close(conn);
                    self.end_connection(conn, EndReason::KeepAliveTimeout, now);
                }
            }
            Timer::Retry(sid) => {
                if let Some(session) = self.sessions.get_mut(&sid) {
                    session.handle_retry_timer(at, &mut self.fx, &self.config, now);
                }
            }
            Timer::Will(sid) => {
                let Some(session) = self.sessions.get_mut(&sid) else {
                    return;
                };
                if session.pending_will.as_ref().is_some_and(|w| w.at == at) {
                    if let Some(pending) = session.pending_will.take() {
                        self.publish_will(pending.message, now);
                        self.persist_session(sid);
                    }
                }
            }
            Timer::RetainedSweep => self.sweep_retained(at, now),
            Timer::SessionExpiry(sid) => {
                let expired = self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| !s.is_connected() && s.link.expires_at() == Some(at));
                if expired {
                    self.end_session(sid, now);
                }
            }
        }
    }
}
