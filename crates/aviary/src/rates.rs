//! The plan's rate limits as token buckets (a small GCRA-like bucket of our own: one
//! second of burst, continuous refill). Messages, SUBSCRIBEs and UNSUBSCRIBEs over the rate
//! push back: tokens are taken into debt, and the readers pause until the debt is paid, so
//! nothing is refused. CONNECTs over the connect rate (or the rate of connects carrying a
//! will) are refused with CONNACK 0x9F Connection rate exceeded (3.x: its return-code
//! mapping).
//!
//! The message rate is in the metering's weighted units (DESIGN.md, "Usage metering"), and
//! counts exactly what the core meters: messages received *and* delivered, connects,
//! disconnects and wills. The core computes the units (one multiplier table, in
//! `aviary_core`); the broker task hands each increase of the core's unit counter to
//! [`Rates::charge`], right after handling a connection's packets (so a publisher's batch is
//! charged with its fan-out) and on every tick (timer work: wills, resends). Readers cannot
//! know the units before the core has routed a message, so a reader takes one provisional
//! token per PUBLISH (the smallest multiplier; it bounds how far a fast publisher runs
//! ahead of the broker task) and the broker task's charge is net of it.
//!
//! Push-back: a reader takes the tokens of each packet as it decodes it, and when that puts
//! a budget in debt it forwards what it decoded before, then waits until the debt is paid
//! before forwarding the packet (a burst read at once is paced packet by packet, not let
//! through whole). The message budget is broker-wide, so while it is in debt every reader
//! that decodes a PUBLISH waits; the broker task's charge lags by at most the batches
//! queued to it. deliveries over the rate thus
//! pause the publishers that generate them, never the subscribers (their reads of acks go
//! on, which keeps QoS 1/2 flows and keep-alives moving). Publishers share the pause
//! equally: a publisher with a large fan-out spends more of the budget per message.
//!
//! One `std::sync::Mutex` for all buckets, held for a few arithmetic operations per batch
//! of packets, never across an `.await`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aviary_codec::Packet;
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
    /// Weighted message units metered (received, delivered, connects, wills).
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

/// Provisional message tokens a reader takes per PUBLISH: the smallest multiplier; the
/// broker task charges the rest once the core has metered it (see the module doc).
pub(crate) const PROVISIONAL_UNITS: u64 = 1;

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

    /// Whether the message rate is limited (when not, nothing needs charging).
    pub(crate) fn messages_limited(&self) -> bool {
        self.messages_limited.load(Ordering::Relaxed)
    }

    /// Charges metered units to the message budget (`units` may be negative: a refund of
    /// provisional tokens the core did not meter, for PUBLISHes ignored after a close). A
    /// debt pauses the next reads of every publisher.
    pub(crate) fn charge(&self, units: f64) {
        if units == 0.0 || !self.messages_limited() {
            return;
        }
        let now = Instant::now();
        let mut b = self.lock();
        if units > 0.0 {
            b.messages.reserve(units, now);
        } else {
            b.messages.refill(now);
            b.messages.tokens = (b.messages.tokens - units).min(b.messages.rate);
        }
    }

    /// Takes the tokens of one packet a reader decoded (one provisional message token per
    /// PUBLISH, one per SUBSCRIBE and UNSUBSCRIBE); how long the reader waits before
    /// forwarding it: until the budget it used is out of debt. Other packets (acks, pings)
    /// never wait, and take no lock; nor do PUBLISHes while the message rate is unlimited.
    pub(crate) fn pace(&self, packet: &Packet) -> Duration {
        let pause = match packet {
            Packet::Publish(_) if self.messages_limited() => {
                let now = Instant::now();
                self.lock().messages.reserve(PROVISIONAL_UNITS as f64, now)
            }
            Packet::Subscribe(_) => self.lock().subscribe.reserve(1.0, Instant::now()),
            Packet::Unsubscribe(_) => self.lock().unsubscribe.reserve(1.0, Instant::now()),
            _ => return Duration::ZERO,
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
    async fn charged_deliveries_pause_publishers_only() {
        let limits = PlanLimits {
            max_messages_per_second: 10,
            ..PlanLimits::defaults(&aviary_core::BrokerConfig::default())
        };
        let rates = Rates::new(&limits);
        // PUBLISH QoS 0 "x" on "t", as a reader decodes it.
        let mut wire = bytes::BytesMut::from(&[0x30, 0x04, 0x00, 0x01, b't', b'x'][..]);
        let publish = aviary_codec::decode(&mut wire, aviary_codec::ProtocolVersion::V3_1_1, 64)
            .ok()
            .flatten()
            .unwrap_or(Packet::PingReq);
        assert!(matches!(publish, Packet::Publish(_)));
        assert_eq!(rates.pace(&publish), Duration::ZERO);
        // The broker metered 1 in + 14 delivered for it: 14 more than the provisional token.
        rates.charge(14.0);
        assert_eq!(rates.pace(&publish), Duration::from_millis(600));
        // Other packets (acks, pings) are never held back by the publishers' debt.
        assert_eq!(rates.pace(&Packet::PingReq), Duration::ZERO);
        // A refund (PUBLISHes ignored after a close) pays the debt back.
        rates.charge(-7.0);
        assert_eq!(rates.pace(&publish), Duration::ZERO);
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
