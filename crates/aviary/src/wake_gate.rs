//! [`Gated`]: a future that is polled again only after it woke its task. A `select!` polls
//! every branch each time its task is woken, whichever branch the wake was for; a
//! connection's task is woken for nearly every packet, and polling its park timer each
//! time (a tokio `Sleep`: its entry's state, the waker's registration, the coop budget)
//! cost about a hundred instructions per poll, several polls per message. Behind a gate
//! the timer is polled only when its own waker fired, the first time, or when its task's
//! waker changed; otherwise the gate answers `Pending` for it after a comparison and an
//! atomic load.
//!
//! The contract this relies on is the [`Future`] one: a future that returned `Pending`
//! has arranged to wake the waker it was polled with once it can make progress. Changing
//! the inner future from outside (resetting a timer) breaks that, so [`Gated::inner_mut`]
//! makes the next poll go through.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// A future polled only when it asked to be (see the module doc).
pub(crate) struct Gated<F> {
    inner: F,
    gate: Arc<Gate>,
    /// The waker the inner future is polled with: it marks the gate, then wakes the task.
    waker: Waker,
    /// The task's waker as last stored in the gate, compared here without its lock.
    task: Option<Waker>,
    /// The inner future must be polled at the next poll whatever the gate says: it has
    /// not been polled since it was made or changed.
    must_poll: bool,
}

/// What the inner future's waker leaves for the next poll.
struct Gate {
    /// The inner future's waker fired since it was last polled.
    fired: AtomicBool,
    /// The task to wake, as last seen polling.
    task: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future + Unpin> Gated<F> {
    pub(crate) fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            fired: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        Self {
            inner,
            waker: Waker::from(Arc::clone(&gate)),
            gate,
            task: None,
            must_poll: true,
        }
    }

    /// The inner future, to read.
    pub(crate) fn inner(&self) -> &F {
        &self.inner
    }

    /// The inner future, to change: it is polled at the next poll.
    pub(crate) fn inner_mut(&mut self) -> &mut F {
        self.must_poll = true;
        &mut self.inner
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let same_task = this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        if !same_task {
            let task = cx.waker().clone();
            *this
                .gate
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            this.task = Some(task);
        }
        // A wake after this load wakes the task, which polls again. One before it is
        // consumed here, ahead of the poll that sees its progress; one during the poll is
        // kept for the next.
        let fired = this.gate.fired.load(Ordering::Acquire);
        if same_task && !fired && !this.must_poll {
            return Poll::Pending;
        }
        if fired {
            this.gate.fired.store(false, Ordering::Release);
        }
        this.must_poll = false;
        let outcome = Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker));
        if outcome.is_ready() {
            // A finished future may be changed and awaited again (a timer reset).
            this.must_poll = true;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Counts its polls; ready once `ready` is set, waking whoever polled it last when
    /// told to.
    #[derive(Default)]
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_its_own_wake() {
        let probe = Probe::default();
        let (polls, ready, inner_waker) = (
            Arc::clone(&probe.polls),
            Arc::clone(&probe.ready),
            Arc::clone(&probe.waker),
        );
        let mut gated = Gated::new(probe);
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);

        // The first poll goes through; polls for other wakes of the task do not.
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);

        // Its own wake reaches the task and lets the next poll through, once.
        ready.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut gated).poll(&mut cx), Poll::Ready(()));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_new_task_waker_or_a_change_lets_the_poll_through() {
        let probe = Probe::default();
        let polls = Arc::clone(&probe.polls);
        let mut gated = Gated::new(probe);
        let first = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let second = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        assert!(Pin::new(&mut gated)
            .poll(&mut Context::from_waker(&first))
            .is_pending());
        // Polled from another task: the inner future must learn the new waker.
        assert!(Pin::new(&mut gated)
            .poll(&mut Context::from_waker(&second))
            .is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // Changed from outside: polled again.
        gated.inner_mut();
        assert!(Pin::new(&mut gated)
            .poll(&mut Context::from_waker(&second))
            .is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_timer_that_is_reset_after_firing_fires_again() {
        let mut timer = Gated::new(Box::pin(tokio::time::sleep(Duration::from_secs(1))));
        (&mut timer).await;
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(5);
        timer.inner_mut().as_mut().reset(deadline);
        // Other wakes of the task meanwhile (a busy select) do not lose the timer.
        let mut ticks = 0;
        loop {
            tokio::select! {
                () = &mut timer => break,
                () = tokio::time::sleep(Duration::from_millis(700)) => ticks += 1,
            }
        }
        assert_eq!(tokio::time::Instant::now(), deadline);
        assert_eq!(ticks, 7);
    }
}
