//! The broker task's one table of connections: for each connection it accepted, its outbox
//! (looked up for every packet sent), whose it is (listener and username, for usage and the
//! management API) and what usage attribution last saw of it (units, queued and in-flight
//! messages), with the list of connections that attribution must visit in its next round.
//!
//! One entry of 32 bytes per connection, in one map keyed by [`ConnId`]: at 19,000 idle
//! connections three maps keyed by the same id (outboxes, metadata, attributed units) cost
//! some 160 bytes each.
//!
//! A connection is *listed* for the next attribution round when something may have changed
//! its counters: a packet from it (PUBLISH, acknowledgement, CONNECT) or a packet to it
//! (the delivery that counted units, or opened its in-flight window). Both paths look the
//! entry up anyway, so listing costs a flag test. A connection that attribution found with
//! messages queued or in flight stays listed (its queue can grow without a packet to it
//! while its window is full). An idle connection is never visited.

use std::sync::Arc;

use aviary_core::{ConnId, IdMap};

use crate::outbox::OutboxSender;

/// Whose a connection is: its listener and the username of its CONNECT. Shared by every
/// connection of a listener without a username (one allocation per listener); a
/// connection with a username gets its own when its CONNECT arrives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ConnOwner {
    /// The listener that accepted it (per-listener usage, switching a listener off).
    pub(crate) listener: Arc<str>,
    /// The username of its CONNECT, if any (per-user usage, client listings).
    pub(crate) username: Option<Box<str>>,
}

/// What the broker task keeps of one connection.
#[derive(Debug)]
pub(crate) struct ConnEntry {
    /// Where its packets go; `None` once closed (the entry stays until the next tick, for
    /// the usage of its end: see [`ConnTable::sweep`]). Dropping the sender closes the
    /// outbox.
    outbox: Option<OutboxSender>,
    /// Its listener and username.
    owner: Arc<ConnOwner>,
    /// Its cumulative units already attributed to usage.
    pub(super) attributed: u64,
    /// Its outgoing QoS 1/2 messages queued, as attribution last saw them (its share of
    /// [`super::Ops::queued`]).
    pub(super) queued: u32,
    /// Its outgoing messages in flight, likewise (at most a receive maximum: a `u16`).
    pub(super) inflight: u16,
    /// Whether it is in [`ConnTable::listed`] (or in the round in progress and not yet
    /// visited).
    pub(super) listed: bool,
}

impl ConnEntry {
    /// The name of the listener that accepted it.
    pub(crate) fn listener(&self) -> &Arc<str> {
        &self.owner.listener
    }

    /// The username of its CONNECT.
    pub(crate) fn username(&self) -> Option<&str> {
        self.owner.username.as_deref()
    }

    /// Its listener and username.
    pub(super) fn owner(&self) -> &ConnOwner {
        &self.owner
    }

    /// Whether its outbox is open.
    pub(crate) fn is_open(&self) -> bool {
        self.outbox.is_some()
    }
}

/// The connections of the broker task (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct ConnTable {
    /// Every connection accepted and not yet swept.
    pub(super) map: IdMap<ConnId, ConnEntry>,
    /// Connections to visit in the next attribution round.
    pub(super) listed: Vec<ConnId>,
    /// Connections closed since the last sweep.
    closed: Vec<ConnId>,
    /// The owner shared by the connections of each listener without a username.
    anonymous: Vec<Arc<ConnOwner>>,
}

impl ConnTable {
    /// A connection accepted by `listener`, whose packets go to `outbox`.
    pub(crate) fn open(&mut self, conn: ConnId, outbox: OutboxSender, listener: Arc<str>) {
        let owner = match self
            .anonymous
            .iter()
            .find(|o| Arc::ptr_eq(&o.listener, &listener) || o.listener == listener)
        {
            Some(owner) => Arc::clone(owner),
            None => {
                let owner = Arc::new(ConnOwner {
                    listener,
                    username: None,
                });
                self.anonymous.push(Arc::clone(&owner));
                owner
            }
        };
        self.map.insert(
            conn,
            ConnEntry {
                outbox: Some(outbox),
                owner,
                attributed: 0,
                queued: 0,
                inflight: 0,
                listed: false,
            },
        );
    }

    /// Records the username of `conn`'s CONNECT.
    pub(crate) fn set_username(&mut self, conn: ConnId, username: Option<&str>) {
        let Some(entry) = self.map.get_mut(&conn) else {
            return;
        };
        if entry.owner.username.as_deref() == username {
            return;
        }
        let listener = Arc::clone(&entry.owner.listener);
        entry.owner = match username {
            Some(name) => Arc::new(ConnOwner {
                listener,
                username: Some(name.into()),
            }),
            None => match self.anonymous.iter().find(|o| o.listener == listener) {
                Some(owner) => Arc::clone(owner),
                None => Arc::new(ConnOwner {
                    listener,
                    username: None,
                }),
            },
        };
    }

    /// The entry of `conn` (open, or closed since the last sweep).
    pub(crate) fn get(&self, conn: ConnId) -> Option<&ConnEntry> {
        self.map.get(&conn)
    }

    /// The outbox of `conn` if it is open.
    pub(crate) fn outbox(&self, conn: ConnId) -> Option<&OutboxSender> {
        self.map.get(&conn)?.outbox.as_ref()
    }

    /// Every entry (open, or closed since the last sweep).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &ConnEntry)> + '_ {
        self.map.iter().map(|(conn, entry)| (*conn, entry))
    }

    /// Whether `conn`'s outbox is open.
    pub(crate) fn is_open(&self, conn: ConnId) -> bool {
        self.map.get(&conn).is_some_and(ConnEntry::is_open)
    }

    /// Open connections.
    pub(crate) fn open_count(&self) -> usize {
        self.map.len() - self.closed.len()
    }

    /// The outbox of `conn` if it is open, listing the connection for the next attribution
    /// round (a packet to or from it may have changed its counters).
    #[inline]
    pub(crate) fn touch(&mut self, conn: ConnId) -> Option<&OutboxSender> {
        let entry = self.map.get_mut(&conn)?;
        if !entry.listed {
            entry.listed = true;
            self.listed.push(conn);
        }
        entry.outbox.as_ref()
    }

    /// Closes `conn`'s outbox (the writer flushes what is queued, then closes); whether it
    /// was open.
    pub(crate) fn close(&mut self, conn: ConnId) -> bool {
        let Some(entry) = self.map.get_mut(&conn) else {
            return false;
        };
        if entry.outbox.take().is_none() {
            return false;
        }
        self.closed.push(conn);
        true
    }

    /// Closes every outbox and forgets every connection (shutdown, store failure).
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.listed.clear();
        self.closed.clear();
    }

    /// Forgets the connections closed since the last sweep (the task's tick, after the
    /// core's events of their ends were drained), returning each one's share of the queue
    /// gauges, `(queued, inflight)`, to be taken off the totals.
    pub(crate) fn sweep(&mut self) -> (usize, usize) {
        let mut share = (0, 0);
        for conn in self.closed.drain(..) {
            if let Some(entry) = self.map.remove(&conn) {
                share.0 += entry.queued as usize;
                share.1 += usize::from(entry.inflight);
            }
        }
        self.anonymous.retain(|o| Arc::strong_count(o) > 1);
        if self.map.capacity() > 2 * self.map.len() + 64 {
            self.map.shrink_to_fit();
        }
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_32_bytes() {
        assert_eq!(std::mem::size_of::<ConnEntry>(), 32);
    }

    #[test]
    fn connections_without_username_share_their_listener_owner() {
        let mut table = ConnTable::default();
        let listener: Arc<str> = "default".into();
        for n in 0..3 {
            let (sender, _outbox) = crate::outbox::outbox();
            table.open(ConnId(n), sender, Arc::clone(&listener));
        }
        table.set_username(ConnId(2), Some("alice"));
        let owner = |n| Arc::as_ptr(&table.get(ConnId(n)).unwrap().owner);
        assert_eq!(owner(0), owner(1));
        assert_ne!(owner(0), owner(2));
        assert_eq!(table.get(ConnId(2)).unwrap().username(), Some("alice"));
        assert_eq!(&**table.get(ConnId(2)).unwrap().listener(), "default");
        assert_eq!(table.get(ConnId(1)).unwrap().username(), None);
        // Closing keeps the entry until the sweep; the open count drops at once.
        assert!(table.close(ConnId(0)));
        assert!(!table.close(ConnId(0)), "closed once");
        assert_eq!(table.open_count(), 2);
        assert!(table.get(ConnId(0)).is_some());
        table.sweep();
        assert!(table.get(ConnId(0)).is_none());
        assert_eq!(table.open_count(), 2);
    }
}
