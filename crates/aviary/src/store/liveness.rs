//! [`Liveness`]: whether anything in the store depends on the broker's last sign of life,
//! so that the writer records one while idle only when it does.
//!
//! After a crash, the store's `alive_at` (written by every commit) is when the
//! connections open at the crash are taken to have ended: it starts the expiry of their
//! sessions and is the end time of their wills (`RedbStore::load`). Nothing else reads it.
//! So an idle writer needs a heartbeat commit (a transaction and an fsync) only while some
//! connection is open that has
//! * a stored session that would start to expire at its end (expiry neither 0, which is
//!   not stored, nor "never"), or
//! * a stored will (5.0 clients and 3.1.1 clients alike: a crash ends the connection
//!   abnormally, so its will is published after the restart).
//!
//! A broker whose clients keep no state beyond their connection (clean sessions, no wills)
//! then writes nothing at all while idle, like Mosquitto; before, it committed and synced
//! every second (six page writes and an fsync, ~0.4 ms of CPU on the broker's core).
//!
//! The writer tracks this from the operations it applies, by client id, exactly as the
//! tables hold them: a connection's session record and its will are each one key.

use std::collections::HashSet;

use super::StoreOp;

/// The client ids of the stored records that depend on the last sign of life.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    /// Connected sessions that expire once disconnected.
    sessions: HashSet<String>,
    /// Wills of open connections.
    wills: HashSet<String>,
}

impl Liveness {
    /// Takes note of committed operations.
    pub(super) fn apply(&mut self, ops: &[StoreOp]) {
        for op in ops {
            match op {
                StoreOp::PutSession { client_id, session } => {
                    let connected = session.expires_at.is_none();
                    let expires = session.expiry_interval != u32::MAX;
                    if connected && expires {
                        note(&mut self.sessions, client_id);
                    } else {
                        self.sessions.remove(client_id.as_str());
                    }
                }
                StoreOp::DeleteSession { client_id } => {
                    self.sessions.remove(client_id.as_str());
                }
                StoreOp::PutWill { client_id, will } => {
                    if will.ended_at.is_none() {
                        note(&mut self.wills, client_id);
                    } else {
                        self.wills.remove(client_id.as_str());
                    }
                }
                StoreOp::DeleteWill { client_id } => {
                    self.wills.remove(client_id.as_str());
                }
                _ => {}
            }
        }
    }

    /// Whether a stored record would read the last sign of life after a crash now.
    pub(super) fn needed(&self) -> bool {
        !self.sessions.is_empty() || !self.wills.is_empty()
    }
}

/// Inserts `client_id` without allocating when it is there already (a connected session
/// is saved again at each change of its subscriptions).
fn note(set: &mut HashSet<String>, client_id: &str) {
    if !set.contains(client_id) {
        set.insert(client_id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LiveWillRecord, MessageRecord, SessionRecord};

    fn session(expiry_interval: u32, expires_at: Option<u64>) -> StoreOp {
        StoreOp::PutSession {
            client_id: "car".into(),
            session: SessionRecord {
                expiry_interval,
                expires_at,
                subscriptions: Vec::new(),
                will: None,
            },
        }
    }

    fn will(ended_at: Option<u64>) -> StoreOp {
        StoreOp::PutWill {
            client_id: "car".into(),
            will: LiveWillRecord {
                delay: 0,
                ended_at,
                message: MessageRecord {
                    topic: "cars/car/gone".into(),
                    ..MessageRecord::default()
                },
            },
        }
    }

    #[test]
    fn a_connected_session_that_expires_needs_it_until_it_disconnects_or_goes() {
        let mut liveness = Liveness::default();
        assert!(!liveness.needed(), "an empty store needs no heartbeat");
        liveness.apply(&[session(60, None)]);
        assert!(liveness.needed());
        // Saved again (a new subscription): still one client.
        liveness.apply(&[session(60, None)]);
        assert_eq!(liveness.sessions.len(), 1);
        // Disconnected: its expiry is stored, no longer counted from a crash.
        liveness.apply(&[session(60, Some(1_000))]);
        assert!(!liveness.needed());
        liveness.apply(&[session(60, None)]);
        liveness.apply(&[StoreOp::DeleteSession {
            client_id: "car".into(),
        }]);
        assert!(!liveness.needed());
    }

    #[test]
    fn a_session_that_never_expires_does_not_need_it() {
        let mut liveness = Liveness::default();
        liveness.apply(&[session(u32::MAX, None)]);
        assert!(!liveness.needed());
    }

    #[test]
    fn the_will_of_an_open_connection_needs_it_until_it_is_cleared() {
        let mut liveness = Liveness::default();
        liveness.apply(&[will(None)]);
        assert!(liveness.needed());
        // Other operations change nothing.
        liveness.apply(&[StoreOp::DeleteRetained { topic: "t".into() }]);
        assert!(liveness.needed());
        liveness.apply(&[StoreOp::DeleteWill {
            client_id: "car".into(),
        }]);
        assert!(!liveness.needed());
        // A will whose end is already decided (written back by a start after a crash).
        liveness.apply(&[will(Some(5))]);
        assert!(!liveness.needed());
    }
}
