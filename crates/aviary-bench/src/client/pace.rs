//! Fixed-rate sending: when each message is due, and what time it is stamped with.
//!
//! * [`Pacer`]: a timer with sub-millisecond resolution for the publishers. tokio's timers
//!   tick in whole milliseconds, so at 10,000 msg/s a publisher woken by them sends ten
//!   messages at once, up to two milliseconds late; the pacer's own thread sleeps on the
//!   operating system's high-resolution timers (tens of microseconds of slack) and wakes the
//!   publisher whose message is due.
//! * [`Schedule`]: the due times of one publisher, which never move (a publisher that fell
//!   behind catches up), and the stamp rule: a message is stamped with the moment it is
//!   queued for the socket, except when the broker held it back (in-flight window full, or
//!   the socket not taking more): then with the time it was due, so that the broker's
//!   stall counts in its latency ("coordinated omission"). The generator's own lateness
//!   (timer slack, scheduling) is reported apart, as the send lag.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The due times of one fixed-rate publisher and the time each message is stamped with.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    /// When the next message is due.
    next: Instant,
    interval: Duration,
    /// A due message was held back by the broker since the publisher last kept up.
    held: bool,
}

/// When one message is stamped, and how late the generator was in sending it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The time written into the message.
    pub(crate) stamp: Instant,
    /// Queued minus due: the generator's lateness (and the broker's hold-back, if any).
    pub(crate) lag: Duration,
}

impl Schedule {
    pub(crate) fn new(first: Instant, interval: Duration) -> Self {
        Self {
            next: first,
            interval,
            held: false,
        }
    }

    /// When the next message is due.
    pub(crate) fn next_due(&self) -> Instant {
        self.next
    }

    /// Whether a message is due at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A due message could not be queued because of the broker (window full, socket full):
    /// the messages sent until the publisher catches up are stamped with their due times.
    pub(crate) fn held_back(&mut self) {
        self.held = true;
    }

    /// Takes the due message, queued at `now`, and moves to the next one.
    pub(crate) fn take(&mut self, now: Instant) -> Slot {
        let due = self.next;
        self.next += self.interval;
        let stamp = if self.held { due } else { now.max(due) };
        if now < self.next {
            self.held = false; // caught up
        }
        Slot {
            stamp,
            lag: now.saturating_duration_since(due),
        }
    }
}

/// A timer thread with sub-millisecond resolution, shared by the publishers of a run.
/// Dropping it stops the thread.
#[derive(Debug)]
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when an entry earlier than every other is queued, and at stop.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Queue {
    /// Deadlines to fire, earliest first; an entry whose timer moved on is skipped.
    heap: BinaryHeap<Reverse<Entry>>,
    /// Ties between equal deadlines are broken by arrival.
    seq: u64,
    stop: bool,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    seq: u64,
    timer: Arc<Mutex<TimerState>>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One publisher's registration: its pending deadline and who to wake.
#[derive(Debug, Default)]
struct TimerState {
    /// The deadline queued in the pacer, if any (cleared when it fires).
    armed: Option<Instant>,
    waker: Option<Waker>,
}

impl Pacer {
    /// Starts the timer thread.
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || shared.run())?
        };
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// A timer for one publisher.
    pub fn timer(&self) -> PaceTimer {
        PaceTimer {
            shared: Arc::clone(&self.shared),
            state: Arc::default(),
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// The timer thread: sleeps until the earliest deadline and wakes its publisher.
    fn run(&self) {
        let mut queue = lock(&self.queue);
        loop {
            if queue.stop {
                return;
            }
            let now = Instant::now();
            match queue.heap.peek().map(|Reverse(e)| e.at) {
                None => {
                    queue = self
                        .changed
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Some(at) if at > now => {
                    queue = self
                        .changed
                        .wait_timeout(queue, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                Some(_) => {
                    let Some(Reverse(entry)) = queue.heap.pop() else {
                        continue;
                    };
                    let waker = {
                        let mut timer = lock(&entry.timer);
                        if timer.armed == Some(entry.at) {
                            timer.armed = None;
                            timer.waker.take()
                        } else {
                            None // re-armed for another deadline since
                        }
                    };
                    if let Some(waker) = waker {
                        drop(queue);
                        waker.wake();
                        queue = lock(&self.queue);
                    }
                }
            }
        }
    }
}

/// One publisher's handle on the [`Pacer`].
#[derive(Debug)]
pub struct PaceTimer {
    shared: Arc<Shared>,
    state: Arc<Mutex<TimerState>>,
}

impl PaceTimer {
    /// Completes at `at` or (by the operating system's timer slack) shortly after.
    pub async fn sleep_until(&self, at: Instant) {
        poll_fn(|cx| {
            if Instant::now() >= at {
                return Poll::Ready(());
            }
            let arm = {
                let mut state = lock(&self.state);
                match &state.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                let arm = state.armed != Some(at);
                state.armed = Some(at);
                arm
            };
            if arm {
                let mut queue = lock(&self.shared.queue);
                let earliest = queue.heap.peek().is_none_or(|Reverse(e)| at < e.at);
                queue.seq += 1;
                let seq = queue.seq;
                queue.heap.push(Reverse(Entry {
                    at,
                    seq,
                    timer: Arc::clone(&self.state),
                }));
                drop(queue);
                if earliest {
                    self.shared.changed.notify_one();
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Locks, ignoring poisoning (nothing here panics while holding a lock; if it did, the
/// data would still be consistent: every update is a single assignment or push/pop).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// On time: stamped when queued; the schedule does not drift with the lateness.
    #[test]
    fn on_time_messages_are_stamped_when_queued() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, MS);
        assert!(!s.is_due(t0 - MS / 2));
        let queued = t0 + Duration::from_micros(30);
        let slot = s.take(queued);
        assert_eq!(slot.stamp, queued);
        assert_eq!(slot.lag, Duration::from_micros(30));
        assert_eq!(s.next_due(), t0 + MS);
        // Late by the generator's own doing (woken late): still stamped when queued, and
        // the lag says how late.
        let late = t0 + 3 * MS;
        let slot = s.take(late);
        assert_eq!((slot.stamp, slot.lag), (late, 2 * MS));
        assert_eq!(s.next_due(), t0 + 2 * MS, "the schedule never moves");
    }

    /// Held back by the broker: every message due meanwhile is stamped with its due time
    /// until the publisher caught up, then stamps are the queueing times again.
    #[test]
    fn messages_held_back_by_the_broker_keep_their_due_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, MS);
        s.held_back();
        let release = t0 + 2 * MS + MS / 2;
        let stamps: Vec<Instant> = (0..3).map(|_| s.take(release).stamp).collect();
        assert_eq!(stamps, vec![t0, t0 + MS, t0 + 2 * MS]);
        assert!(!s.is_due(release));
        let next = t0 + 3 * MS + Duration::from_micros(10);
        assert_eq!(s.take(next).stamp, next, "caught up: queueing time again");
    }

    /// Never completes before its deadline; publishers are woken in deadline order, and
    /// a timer re-armed for a later deadline does not fire at the earlier one.
    #[test]
    fn pacer_wakes_in_deadline_order_never_early() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pacer = Pacer::start().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let base = Instant::now() + 5 * MS;
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for (name, offset) in [(2, 4 * MS), (0, MS), (1, 2 * MS)] {
                let timer = pacer.timer();
                let order = Arc::clone(&order);
                tasks.push(tokio::spawn(async move {
                    let at = base + offset;
                    // First armed for an earlier deadline that is abandoned.
                    let early = tokio::time::timeout(MS / 10, timer.sleep_until(base)).await;
                    assert!(early.is_err() || Instant::now() >= base);
                    timer.sleep_until(at).await;
                    assert!(Instant::now() >= at);
                    order.lock().unwrap().push(name);
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
