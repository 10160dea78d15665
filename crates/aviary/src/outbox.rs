//! A connection's outbound queue: packets the broker task has routed to one connection and
//! its writer has not yet encoded. Bounded; the broker side never waits on it.
//!
//! Why not a `tokio::sync::mpsc` channel per connection: tokio allocates its channel
//! storage in blocks of 32 slots, and a `Packet` is over 200 bytes, so every idle
//! connection would hold ~7 KiB before sending anything. This queue is a `VecDeque` that
//! is empty (unallocated) while idle, plus a `Notify`; the writer takes the whole queue at
//! once, which also batches everything pending into one write. The `std::sync::Mutex` is
//! held only to push one packet or to swap the queue out, never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aviary_codec::Packet;
use tokio::sync::Notify;

/// Packets that may wait for one connection's writer before the connection counts as a
/// slow consumer (see [`Full`]).
pub(crate) const CAPACITY: usize = 1024;

/// The state shared by the broker side ([`OutboxSender`]) and the writer ([`Outbox`]).
#[derive(Debug, Default)]
struct Shared {
    /// The queue and whether the broker side is done.
    state: Mutex<State>,
    /// Wakes the writer after a push or a close.
    notify: Notify,
}

/// What is behind the mutex.
#[derive(Debug, Default)]
struct State {
    /// Packets in the order the broker produced them.
    queue: VecDeque<Packet>,
    /// The broker side is gone: after the queue drains, the writer closes the connection.
    closed: bool,
}

/// The writer's end.
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

/// The queue already holds [`CAPACITY`] packets: the connection is not reading fast enough.
/// The refused packet is dropped.
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
    /// Queues `packet` for the connection unless [`CAPACITY`] packets are waiting.
    pub(crate) fn push(&self, packet: Packet) -> Result<(), Full> {
        {
            let mut state = self.shared.lock();
            if state.queue.len() >= CAPACITY {
                return Err(Full);
            }
            state.queue.push_back(packet);
        }
        self.shared.notify.notify_one();
        Ok(())
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_one();
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
                    return Some(std::mem::take(&mut state.queue));
                }
                if state.closed {
                    return None;
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await is not lost.
            self.shared.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_everything_pending_then_reports_close() {
        let (tx, rx) = outbox();
        tx.push(Packet::PingResp).unwrap();
        tx.push(Packet::PingResp).unwrap();
        assert_eq!(rx.next_batch().await.map(|b| b.len()), Some(2));
        tx.push(Packet::PingResp).unwrap();
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
    async fn refuses_beyond_capacity() {
        let (tx, _rx) = outbox();
        for _ in 0..CAPACITY {
            tx.push(Packet::PingResp).unwrap();
        }
        assert_eq!(tx.push(Packet::PingResp), Err(Full));
    }

    #[tokio::test]
    async fn wakes_a_waiting_writer() {
        let (tx, rx) = outbox();
        let writer = tokio::spawn(async move { rx.next_batch().await.map(|b| b.len()) });
        tokio::task::yield_now().await;
        tx.push(Packet::PingResp).unwrap();
        assert_eq!(writer.await.unwrap(), Some(1));
    }
}
