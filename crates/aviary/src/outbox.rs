//! A connection's outbound queue: packets the broker task has routed to one connection and
//! its writer has not yet encoded. Bounded; the broker side never waits on it.
//!
//! Two bounds, because packets differ in what losing them means:
//! * at [`SOFT_LIMIT`] queued packets, best-effort packets (QoS 0 PUBLISHes) are refused
//!   (the broker task drops and counts them);
//! * at [`SOFT_LIMIT`] queued *reliable* packets the connection's reader pauses, so a client
//!   that does not read its acknowledgements stops being read from (backpressure). Only
//!   reliable packets count here: a subscriber on a slow link that loses QoS 0 messages
//!   must still be read from, or its PINGREQs would go unread and keep alive would end it;
//! * reliable packets (everything else) are refused only at [`HARD_LIMIT`], a safety net
//!   that a working connection never reaches: QoS 1/2 PUBLISHes are bounded by the in-flight
//!   window and acknowledgements by the paused reader. Refusal closes the connection.
//!
//! A single soft bound for everything would close healthy fast clients: the broker task
//! handles a whole batch of events without yielding, so one pass can queue more than a
//! thousand PUBACKs for a fast publisher before its writer gets to run.
//!
//! Why not a `tokio::sync::mpsc` channel per connection: tokio allocates its channel
//! storage in blocks of 32 slots, and a `Packet` is over 200 bytes, so every idle
//! connection would hold ~7 KiB before sending anything. This queue is a `VecDeque` that
//! is empty (unallocated) while idle, plus two `Notify`s; the writer takes the whole queue
//! at once, which also batches everything pending into one write. The `std::sync::Mutex`
//! is held only to push one packet or to take the queue, never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aviary_codec::Packet;
use tokio::sync::Notify;

/// Queued packets at which best-effort packets are refused and reading pauses.
pub(crate) const SOFT_LIMIT: usize = 1024;

/// Queued packets at which even reliable packets are refused: the connection is stuck.
pub(crate) const HARD_LIMIT: usize = 128 * SOFT_LIMIT;

/// How much a packet may be lost when its connection's queue is long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// May be dropped at [`SOFT_LIMIT`] (a QoS 0 PUBLISH).
    BestEffort,
    /// Refused only at [`HARD_LIMIT`], which closes the connection.
    Reliable,
}

/// The state shared by the broker side ([`OutboxSender`]) and the connection ([`Outbox`]).
#[derive(Debug, Default)]
struct Shared {
    /// The queue and whether the broker side is done.
    state: Mutex<State>,
    /// Wakes the writer after a push or a close.
    filled: Notify,
    /// Wakes a paused reader after the writer took the queue (or the outbox closed).
    drained: Notify,
}

/// What is behind the mutex.
#[derive(Debug, Default)]
struct State {
    /// Packets in the order the broker produced them.
    queue: VecDeque<Packet>,
    /// How many of `queue` are [`Delivery::Reliable`] (what pauses the reader).
    reliable: usize,
    /// The broker side is gone: after the queue drains, the writer closes the connection.
    closed: bool,
}

/// The connection's end: its writer takes batches, its reader waits for room.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Shared with the one [`OutboxSender`].
    shared: Arc<Shared>,
}

/// The broker task's end. Dropping it closes the outbox: the writer then writes what is
/// queued and closes the connection.
#[derive(Debug)]
pub(crate) struct OutboxSender {
    /// Shared with the connection's [`Outbox`].
    shared: Arc<Shared>,
}

/// The queue is at the limit for the packet's [`Delivery`]; the packet was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// A new outbox and its sender.
pub(crate) fn outbox() -> (OutboxSender, Outbox) {
    let shared = Arc::new(Shared::default());
    (
        OutboxSender {
            shared: Arc::clone(&shared),
        },
        Outbox { shared },
    )
}

impl Shared {
    /// The state; a poisoned lock is still usable (the state is a queue and a flag, and
    /// every critical section leaves it consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OutboxSender {
    /// Queues `packet` unless the queue is at the limit for `delivery`.
    pub(crate) fn push(&self, packet: Packet, delivery: Delivery) -> Result<(), Full> {
        {
            let mut state = self.shared.lock();
            let limit = match delivery {
                Delivery::BestEffort => SOFT_LIMIT,
                Delivery::Reliable => HARD_LIMIT,
            };
            if state.queue.len() >= limit {
                return Err(Full);
            }
            state.queue.push_back(packet);
            if delivery == Delivery::Reliable {
                state.reliable += 1;
            }
        }
        self.shared.filled.notify_one();
        Ok(())
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.filled.notify_one();
        self.shared.drained.notify_one();
    }
}

impl Outbox {
    /// Waits until packets are queued and takes all of them, in order; `None` once the
    /// sender is gone and nothing is left.
    pub(crate) async fn next_batch(&self) -> Option<VecDeque<Packet>> {
        loop {
            {
                let mut state = self.shared.lock();
                if !state.queue.is_empty() {
                    // Take rather than drain: the idle connection then holds no queue memory.
                    let batch = std::mem::take(&mut state.queue);
                    state.reliable = 0;
                    drop(state);
                    self.shared.drained.notify_one();
                    return Some(batch);
                }
                if state.closed {
                    return None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not lost.
            self.shared.filled.notified().await;
        }
    }

    /// Waits while [`SOFT_LIMIT`] or more reliable packets are queued (the client is not
    /// reading what we send), so that the reader stops producing more answers. Returns at
    /// once when the sender is gone.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            {
                let state = self.shared.lock();
                if state.reliable < SOFT_LIMIT || state.closed {
                    return;
                }
            }
            self.shared.drained.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_everything_pending_then_reports_close() {
        let (tx, rx) = outbox();
        tx.push(Packet::PingResp, Delivery::Reliable).unwrap();
        tx.push(Packet::PingResp, Delivery::Reliable).unwrap();
        assert_eq!(rx.next_batch().await.map(|b| b.len()), Some(2));
        tx.push(Packet::PingResp, Delivery::Reliable).unwrap();
        drop(tx);
        let batch = rx.next_batch().await;
        assert_eq!(
            batch.map(|b| b.len()),
            Some(1),
            "queued packets outlive the sender"
        );
        assert!(rx.next_batch().await.is_none());
    }

    #[tokio::test]
    async fn best_effort_is_refused_at_the_soft_limit_reliable_at_the_hard_limit() {
        let (tx, _rx) = outbox();
        for _ in 0..SOFT_LIMIT {
            tx.push(Packet::PingResp, Delivery::BestEffort).unwrap();
        }
        assert_eq!(tx.push(Packet::PingResp, Delivery::BestEffort), Err(Full));
        for _ in SOFT_LIMIT..HARD_LIMIT {
            tx.push(Packet::PingResp, Delivery::Reliable).unwrap();
        }
        assert_eq!(tx.push(Packet::PingResp, Delivery::Reliable), Err(Full));
    }

    #[tokio::test]
    async fn wakes_a_waiting_writer() {
        let (tx, rx) = outbox();
        let writer = tokio::spawn(async move { rx.next_batch().await.map(|b| b.len()) });
        tokio::task::yield_now().await;
        tx.push(Packet::PingResp, Delivery::Reliable).unwrap();
        assert_eq!(writer.await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn reader_waits_for_room_until_the_writer_takes_the_queue() {
        let (tx, rx) = outbox();
        let rx = Arc::new(rx);
        for _ in 0..SOFT_LIMIT {
            tx.push(Packet::PingResp, Delivery::Reliable).unwrap();
        }
        let reader = tokio::spawn({
            let rx = Arc::clone(&rx);
            async move { rx.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished(), "paused while the queue is full");
        assert_eq!(rx.next_batch().await.map(|b| b.len()), Some(SOFT_LIMIT));
        reader.await.unwrap();
        // Room is there at once otherwise.
        rx.wait_for_room().await;
    }

    #[tokio::test]
    async fn best_effort_packets_do_not_pause_the_reader() {
        let (tx, rx) = outbox();
        for _ in 0..SOFT_LIMIT {
            tx.push(Packet::PingResp, Delivery::BestEffort).unwrap();
        }
        for _ in 1..SOFT_LIMIT {
            tx.push(Packet::PingResp, Delivery::Reliable).unwrap();
        }
        // 2047 queued, 1023 of them reliable: a QoS 0 flood alone never stops reading.
        rx.wait_for_room().await;
    }
}
