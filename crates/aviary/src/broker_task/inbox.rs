//! [`FairInbox`]: the broker task's events, taken from the channel as they come and served
//! round robin by connection, so that a few connections with much to say (publishers
//! flooding) cannot starve the others (a subscriber whose acknowledgements open its
//! in-flight window again). Arrival order would make every connection's events wait
//! behind the whole flood; with the inbox, a connection waits for at most one event of
//! each other connection per round.
//!
//! Order is kept per connection, and between the events that belong to no connection
//! (management calls). The inbox holds at most as many events as the channel, so the
//! channel's bound stays the bound on memory and on what connections may send ahead.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;

use aviary_core::{ConnId, IdMap};
use tokio::sync::mpsc;

use super::Event;

/// Whose turn an event waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    /// Events of one connection.
    Conn(ConnId),
    /// Management calls, in the order they came.
    Server,
}

/// One owner's waiting events, oldest first. Mostly a single event (a connection's read),
/// held without a queue of its own: a `VecDeque` would be allocated and freed for every
/// event.
#[derive(Debug)]
enum Waiting {
    One(Event),
    Many(VecDeque<Event>),
}

/// Events waiting for their turn, per owner.
#[derive(Debug)]
pub(super) struct FairInbox {
    /// Each owner's events, oldest first (an [`IdMap`]: the keys are our own ids, and it is
    /// used for every event).
    queues: IdMap<Owner, Waiting>,
    /// Owners with events, in turn order.
    turns: VecDeque<Owner>,
    /// Events held in total.
    len: usize,
    /// Most events held; beyond it the channel keeps them (and pushes back on senders).
    capacity: usize,
    /// [`Event::Shutdown`] arrived (or every sender is gone): nothing more is taken from
    /// the channel, and the task stops once what was taken before is handled.
    shutdown: bool,
}

impl FairInbox {
    /// An inbox holding at most `capacity` events.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            queues: IdMap::default(),
            turns: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
            shutdown: false,
        }
    }

    /// Adds `event` behind its owner's earlier events.
    pub(super) fn push(&mut self, event: Event) {
        let Some(owner) = owner_of(&event) else {
            self.shutdown = true; // a shutdown is no one's event: it ends the serving
            return;
        };
        match self.queues.entry(owner) {
            Entry::Vacant(slot) => {
                slot.insert(Waiting::One(event));
                self.turns.push_back(owner);
            }
            Entry::Occupied(mut slot) => {
                let waiting = slot.get_mut();
                match waiting {
                    Waiting::Many(queue) => queue.push_back(event),
                    Waiting::One(_) => {
                        let Waiting::One(first) =
                            std::mem::replace(waiting, Waiting::Many(VecDeque::new()))
                        else {
                            unreachable!("matched just above")
                        };
                        *waiting = Waiting::Many(VecDeque::from([first, event]));
                    }
                }
            }
        }
        self.len += 1;
    }

    /// Puts `event` back ahead of its owner's other events (the rest of an event whose
    /// handling was cut short); the owner keeps its place in the turns, or, if it has no
    /// other event, takes the last.
    pub(super) fn push_front(&mut self, event: Event) {
        let Some(owner) = owner_of(&event) else {
            return self.push(event);
        };
        match self.queues.entry(owner) {
            Entry::Vacant(slot) => {
                slot.insert(Waiting::One(event));
                self.turns.push_back(owner);
            }
            Entry::Occupied(mut slot) => {
                let waiting = slot.get_mut();
                let queue = match std::mem::replace(waiting, Waiting::Many(VecDeque::new())) {
                    Waiting::One(next) => VecDeque::from([event, next]),
                    Waiting::Many(mut queue) => {
                        queue.push_front(event);
                        queue
                    }
                };
                *waiting = Waiting::Many(queue);
            }
        }
        self.len += 1;
    }

    /// Takes what is waiting in the channel, up to the capacity (none after a shutdown).
    /// Every sender gone counts as a shutdown.
    pub(super) fn fill(&mut self, channel: &mut mpsc::Receiver<Event>) {
        while !self.shutdown && self.len < self.capacity {
            match channel.try_recv() {
                Ok(event) => self.push(event),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.shutdown = true,
            }
        }
    }

    /// The next event: the oldest of the owner whose turn it is.
    pub(super) fn next(&mut self) -> Option<Event> {
        let owner = self.turns.pop_front()?;
        let Entry::Occupied(mut slot) = self.queues.entry(owner) else {
            return None;
        };
        let event = match slot.get_mut() {
            Waiting::Many(queue) if queue.len() > 1 => {
                self.turns.push_back(owner);
                queue.pop_front()
            }
            _ => match slot.remove() {
                Waiting::One(event) => Some(event),
                Waiting::Many(mut queue) => queue.pop_front(),
            },
        };
        if event.is_some() {
            self.len -= 1;
        }
        event
    }

    /// Whether events wait.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the task should stop: shutdown arrived and everything before it is handled.
    pub(super) fn stopping(&self) -> bool {
        self.shutdown && self.is_empty()
    }

    /// Whether nothing more is taken from the channel.
    pub(super) fn closed(&self) -> bool {
        self.shutdown
    }
}

/// Whose turn `event` waits in (`None`: a shutdown, which is no one's).
fn owner_of(event: &Event) -> Option<Owner> {
    match event {
        Event::Open { conn, .. }
        | Event::Packets { conn, .. }
        | Event::Connect { conn, .. }
        | Event::ConnectOverRate { conn, .. }
        | Event::Revoke { conn }
        | Event::DecodeError { conn, .. }
        | Event::Closed { conn } => Some(Owner::Conn(*conn)),
        Event::HandOver(handover) => Some(Owner::Conn(handover.state.conn)),
        Event::Manage(_) => Some(Owner::Server),
        Event::Shutdown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(conn: u64) -> Event {
        Event::Closed { conn: ConnId(conn) }
    }

    fn conn_of(event: &Event) -> u64 {
        match event {
            Event::Closed { conn } | Event::Revoke { conn } => conn.0,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn connections_take_turns_and_keep_their_own_order() {
        let mut inbox = FairInbox::new(100);
        // Connection 1 floods; 2 and 3 have one event each, behind the flood.
        for _ in 0..4 {
            inbox.push(closed(1));
        }
        inbox.push(Event::Revoke { conn: ConnId(1) });
        inbox.push(closed(2));
        inbox.push(closed(3));
        let mut order = Vec::new();
        while let Some(event) = inbox.next() {
            order.push((conn_of(&event), matches!(event, Event::Revoke { .. })));
        }
        assert_eq!(
            order,
            [
                (1, false),
                (2, false),
                (3, false),
                (1, false),
                (1, false),
                (1, false),
                (1, true)
            ]
        );
        assert!(inbox.is_empty());
    }

    #[test]
    fn an_event_put_back_comes_before_its_owners_later_events() {
        let mut inbox = FairInbox::new(100);
        inbox.push(closed(1));
        inbox.push(closed(2));
        inbox.push(Event::Revoke { conn: ConnId(2) });
        // Connection 2's first event was cut short: it goes back ahead of its Revoke.
        let Some(event) = inbox.next().filter(|e| conn_of(e) == 1) else {
            panic!("connection 1 first");
        };
        drop(event);
        let cut = inbox.next().unwrap();
        assert_eq!(conn_of(&cut), 2);
        inbox.push_front(cut);
        // Connection 3 has nothing waiting: put back, it takes the last turn.
        inbox.push_front(closed(3));
        let mut order = Vec::new();
        while let Some(event) = inbox.next() {
            order.push((conn_of(&event), matches!(event, Event::Revoke { .. })));
        }
        assert_eq!(order, [(2, false), (3, false), (2, true)]);
        assert!(inbox.is_empty());
    }

    #[tokio::test]
    async fn fill_stops_at_capacity_and_at_shutdown() {
        let (tx, mut rx) = mpsc::channel(16);
        for conn in 0..5 {
            tx.send(closed(conn)).await.unwrap();
        }
        let mut inbox = FairInbox::new(3);
        inbox.fill(&mut rx);
        assert_eq!(inbox.len, 3, "the rest stays in the channel");
        let mut got = Vec::new();
        while let Some(event) = inbox.next() {
            got.push(conn_of(&event));
        }
        assert_eq!(got, [0, 1, 2]);
        tx.send(Event::Shutdown).await.unwrap();
        tx.send(closed(9)).await.unwrap();
        inbox.fill(&mut rx);
        assert!(inbox.closed() && !inbox.stopping());
        got.clear();
        while let Some(event) = inbox.next() {
            got.push(conn_of(&event));
        }
        assert_eq!(got, [3, 4], "what came before the shutdown is handled");
        assert!(inbox.stopping());
        inbox.fill(&mut rx);
        assert!(inbox.is_empty(), "nothing is taken after the shutdown");
        assert_eq!(conn_of(&rx.recv().await.unwrap()), 9);
        drop(tx);
        let mut orphan = FairInbox::new(3);
        orphan.fill(&mut rx);
        assert!(orphan.stopping(), "every sender gone");
    }
}
