//! The plan's rate limits as token buckets (a small GCRA-like bucket of our own: one
//! second of burst, continuous refill). Messages (in weighted units), SUBSCRIBEs and
//! UNSUBSCRIBEs over the rate push back: the connection's reader takes the tokens, going
//! into debt, and pauses its reads until the debt is paid, so nothing is refused. CONNECTs
//! over the connect rate (or the rate of connects carrying a will) are refused with CONNACK
//! 0x9F Connection rate exceeded (3.x: its return-code mapping).
//!
//! One `std::sync::Mutex` for all buckets, held for a few arithmetic operations per batch
//! of packets, never across an `.await`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aviary_codec::{Packet, QoS};
use tokio::time::Instant;

use crate::limits::PlanLimits;

/// One token bucket.
#[derive(Debug)]
struct Bucket {
    /// Tokens per second, and the most that can be saved up (one second's worth).
    rate: f64,
    /// Tokens available now; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            tokens: f64::from(rate.max(1)),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// Whether `n` tokens are there (without taking them).
    fn has(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= n
    }

    /// Takes `n` tokens, into debt if needed; how long until the debt is paid.
    fn reserve(&mut self, n: f64, now: Instant) -> Duration {
        if n == 0.0 {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    fn set_rate(&mut self, rate: u32) {
        self.rate = f64::from(rate.max(1));
        self.tokens = self.tokens.min(self.rate);
    }
}

/// All rate limits of one broker.
#[derive(Debug)]
struct Buckets {
    /// Weighted message units received.
    messages: Bucket,
    subscribe: Bucket,
    unsubscribe: Bucket,
    connect: Bucket,
    /// CONNECTs that carry a will.
    will_connect: Bucket,
}

/// The rate limits, shared by every connection reader and the broker task.
#[derive(Debug)]
pub(crate) struct Rates {
    buckets: Mutex<Buckets>,
    /// Whether the message rate is limited at all: when it is not (the default), a batch of
    /// PUBLISHes takes no lock.
    messages_limited: AtomicBool,
    /// Times a reader paused for the rates, and for how long in total (microseconds), for
    /// the metrics.
    pub(crate) paused: AtomicU64,
    pub(crate) paused_micros: AtomicU64,
}

/// Weighted units of a PUBLISH as the reader can tell (the publisher's session kind is not
/// known there, so QoS 1 counts 2, as for a clean session).
fn publish_units(qos: QoS, retain: bool) -> f64 {
    match (retain, qos) {
        (true, _) => 10.0,
        (false, QoS::AtMostOnce) => 1.0,
        (false, QoS::AtLeastOnce) => 2.0,
        (false, QoS::ExactlyOnce) => 5.0,
    }
}

impl Rates {
    pub(crate) fn new(limits: &PlanLimits) -> Self {
        let now = Instant::now();
        Self {
            buckets: Mutex::new(Buckets {
                messages: Bucket::new(limits.max_messages_per_second, now),
                subscribe: Bucket::new(limits.subscribe_rate, now),
                unsubscribe: Bucket::new(limits.unsubscribe_rate, now),
                connect: Bucket::new(limits.connect_rate, now),
                will_connect: Bucket::new(limits.will_connect_rate, now),
            }),
            messages_limited: AtomicBool::new(limits.max_messages_per_second != u32::MAX),
            paused: AtomicU64::new(0),
            paused_micros: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        // A poisoned lock only means a panic mid-update of plain numbers.
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies changed limits at once.
    pub(crate) fn set(&self, limits: &PlanLimits) {
        let mut b = self.lock();
        b.messages.set_rate(limits.max_messages_per_second);
        b.subscribe.set_rate(limits.subscribe_rate);
        b.unsubscribe.set_rate(limits.unsubscribe_rate);
        b.connect.set_rate(limits.connect_rate);
        b.will_connect.set_rate(limits.will_connect_rate);
        self.messages_limited.store(
            limits.max_messages_per_second != u32::MAX,
            Ordering::Relaxed,
        );
    }

    /// Takes the tokens of a batch of packets read from one connection; how long the
    /// reader pauses before reading more.
    pub(crate) fn pace(&self, packets: &[Packet]) -> Duration {
        let (mut units, mut subs, mut unsubs) = (0.0, 0.0, 0.0);
        for packet in packets {
            match packet {
                Packet::Publish(p) => units += publish_units(p.qos, p.retain),
                Packet::Subscribe(_) => subs += 1.0,
                Packet::Unsubscribe(_) => unsubs += 1.0,
                _ => {}
            }
        }
        if !self.messages_limited.load(Ordering::Relaxed) {
            units = 0.0;
        }
        if units == 0.0 && subs == 0.0 && unsubs == 0.0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let pause = {
            let mut b = self.lock();
            b.messages
                .reserve(units, now)
                .max(b.subscribe.reserve(subs, now))
                .max(b.unsubscribe.reserve(unsubs, now))
        };
        if !pause.is_zero() {
            self.paused.fetch_add(1, Ordering::Relaxed);
            let micros = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
            self.paused_micros.fetch_add(micros, Ordering::Relaxed);
        }
        pause
    }

    /// Whether a CONNECT (carrying a will or not) is within the connect rates; takes its
    /// tokens if so.
    pub(crate) fn admit_connect(&self, has_will: bool) -> bool {
        let now = Instant::now();
        let mut b = self.lock();
        if !b.connect.has(1.0, now) || (has_will && !b.will_connect.has(1.0, now)) {
            return false;
        }
        b.connect.reserve(1.0, now);
        if has_will {
            b.will_connect.reserve(1.0, now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_second_of_burst_then_the_rate() {
        let now = Instant::now();
        let mut bucket = Bucket::new(10, now);
        assert_eq!(bucket.reserve(10.0, now), Duration::ZERO);
        assert_eq!(bucket.reserve(5.0, now), Duration::from_millis(500));
        assert!(!bucket.has(1.0, now + Duration::from_millis(500)));
        assert!(bucket.has(1.0, now + Duration::from_millis(600)));
    }

    #[tokio::test(start_paused = true)]
    async fn connects_over_either_rate_are_refused() {
        let limits = PlanLimits {
            connect_rate: 3,
            will_connect_rate: 1,
            ..PlanLimits::defaults(&aviary_core::BrokerConfig::default())
        };
        let rates = Rates::new(&limits);
        assert!(rates.admit_connect(true));
        assert!(!rates.admit_connect(true), "second will in the same second");
        assert!(rates.admit_connect(false));
        assert!(rates.admit_connect(false));
        assert!(
            !rates.admit_connect(false),
            "fourth connect in the same second"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rates.admit_connect(true));
    }
}
