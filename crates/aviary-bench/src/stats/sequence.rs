//! Per-publisher sequence bookkeeping on the receiving side. Every message carries
//! (publisher, sequence); a [`SequenceTracker`] remembers which sequences arrived as a bitset,
//! so that at the end of a run it can say, for each publisher, how many distinct messages were
//! received, how many arrived more than once and how many arrived after a later one.
//! Memory is one bit per sequence number sent.

use serde::{Deserialize, Serialize};

/// Sequence numbers at or above this are counted as foreign: a corrupted payload must not
/// make a tracker allocate a huge bitset (2^28 bits = 32 MiB at most per publisher).
const MAX_SEQUENCE: u32 = 1 << 28;

/// What one receiver (a subscriber, or all members of a shared group merged) saw.
#[derive(Clone, Debug, Default)]
pub struct SequenceTracker {
    /// Indexed by publisher id; ids are dense (0..publishers) in every scenario.
    publishers: Vec<PublisherSeen>,
    /// Messages whose publisher id was beyond `max_publishers`: not ours, or corrupted.
    foreign: u64,
    /// Upper bound on publisher ids, so a corrupted payload cannot make us allocate.
    max_publishers: u32,
}

/// One publisher's sequences, as seen by one receiver.
#[derive(Clone, Debug, Default)]
struct PublisherSeen {
    /// Bit `s` set: sequence `s` arrived at least once.
    bits: Vec<u64>,
    /// Distinct sequences received.
    unique: u64,
    /// Arrivals of a sequence already received (QoS 1 may do this; QoS 0 and 2 must not).
    duplicates: u64,
    /// Arrivals of a sequence lower than one already received (per-publisher order is
    /// promised by the spec for the same topic and QoS [MQTT-4.6.0-5]; shared groups and
    /// resends may break it legitimately).
    reordered: u64,
    /// Highest sequence received, plus one (0: none).
    next_expected: u64,
}

/// The verdict for one receiver against what the publishers sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCheck {
    /// Messages the receiver should have got (sum over the publishers it listens to).
    pub expected: u64,
    /// Distinct messages it got.
    pub unique: u64,
    /// `expected - unique`.
    pub missing: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Payloads that did not decode as ours or named an unknown publisher.
    pub foreign: u64,
}

impl DeliveryCheck {
    /// Adds another receiver's verdict into a run total.
    pub fn add(&mut self, other: &Self) {
        self.expected += other.expected;
        self.unique += other.unique;
        self.missing += other.missing;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.foreign += other.foreign;
    }
}

impl SequenceTracker {
    /// A tracker that accepts publisher ids below `max_publishers` (anything beyond is
    /// counted as foreign).
    pub fn new(max_publishers: u32) -> Self {
        Self {
            publishers: Vec::new(),
            foreign: 0,
            max_publishers,
        }
    }

    /// Records the arrival of `(publisher, sequence)`.
    pub fn record(&mut self, publisher: u32, sequence: u32) {
        if publisher >= self.max_publishers || sequence >= MAX_SEQUENCE {
            self.foreign += 1;
            return;
        }
        let index = publisher as usize;
        if index >= self.publishers.len() {
            self.publishers
                .resize_with(index + 1, PublisherSeen::default);
        }
        let seen = &mut self.publishers[index];
        let seq = u64::from(sequence);
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= seen.bits.len() {
            seen.bits.resize(word + 1, 0);
        }
        if seen.bits[word] & (1 << bit) != 0 {
            seen.duplicates += 1;
        } else {
            seen.bits[word] |= 1 << bit;
            seen.unique += 1;
        }
        if seq + 1 < seen.next_expected {
            seen.reordered += 1;
        }
        seen.next_expected = seen.next_expected.max(seq + 1);
    }

    /// Records a message whose payload was not ours.
    pub fn record_foreign(&mut self) {
        self.foreign += 1;
    }

    /// Folds another receiver into this one, as for the members of a shared subscription
    /// group: a message delivered to two members counts as a duplicate of the group.
    /// Reordering is only meaningful per receiver, so it is summed.
    pub fn merge(&mut self, other: &Self) {
        if other.publishers.len() > self.publishers.len() {
            self.publishers
                .resize_with(other.publishers.len(), PublisherSeen::default);
        }
        for (mine, theirs) in self.publishers.iter_mut().zip(&other.publishers) {
            if theirs.bits.len() > mine.bits.len() {
                mine.bits.resize(theirs.bits.len(), 0);
            }
            let mut overlap = 0u64;
            for (a, b) in mine.bits.iter_mut().zip(&theirs.bits) {
                overlap += u64::from((*a & *b).count_ones());
                *a |= *b;
            }
            mine.unique += theirs.unique - overlap;
            mine.duplicates += theirs.duplicates + overlap;
            mine.reordered += theirs.reordered;
            mine.next_expected = mine.next_expected.max(theirs.next_expected);
        }
        self.foreign += other.foreign;
    }

    /// Compares against what was sent: `sent[p]` is the number of messages publisher `p`
    /// sent (sequences `0..sent[p]`), for the publishers this receiver listens to;
    /// publishers not listed are not expected here.
    pub fn check(&self, sent: &[(u32, u64)]) -> DeliveryCheck {
        let mut check = DeliveryCheck {
            foreign: self.foreign,
            ..DeliveryCheck::default()
        };
        for &(publisher, count) in sent {
            check.expected += count;
            if let Some(seen) = self.publishers.get(publisher as usize) {
                // Only sequences below `count` count as received: anything above was not sent.
                let unique = seen.unique.min(count);
                check.unique += unique;
                check.missing += count - unique;
            } else {
                check.missing += count;
            }
        }
        for seen in &self.publishers {
            check.duplicates += seen.duplicates;
            check.reordered += seen.reordered;
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(arrivals: &[(u32, u32)], sent: &[(u32, u64)]) -> DeliveryCheck {
        let mut t = SequenceTracker::new(16);
        for &(p, s) in arrivals {
            t.record(p, s);
        }
        t.check(sent)
    }

    #[test]
    fn all_received_in_order() {
        let arrivals: Vec<_> = (0..200).map(|s| (0, s)).collect();
        let c = check(&arrivals, &[(0, 200)]);
        assert_eq!(
            (c.expected, c.unique, c.missing, c.duplicates, c.reordered),
            (200, 200, 0, 0, 0)
        );
    }

    #[test]
    fn gap_is_missing() {
        let c = check(&[(0, 0), (0, 1), (0, 3)], &[(0, 4)]);
        assert_eq!((c.unique, c.missing), (3, 1));
    }

    #[test]
    fn repeat_is_duplicate_not_extra() {
        let c = check(&[(0, 0), (0, 1), (0, 1), (0, 2)], &[(0, 3)]);
        assert_eq!((c.unique, c.missing, c.duplicates), (3, 0, 1));
    }

    #[test]
    fn late_arrival_is_reordered() {
        let c = check(&[(0, 0), (0, 2), (0, 1)], &[(0, 3)]);
        assert_eq!((c.unique, c.reordered), (3, 1));
    }

    #[test]
    fn publishers_are_independent() {
        let c = check(&[(0, 0), (1, 0), (1, 1), (2, 5)], &[(0, 1), (1, 2), (2, 6)]);
        assert_eq!((c.expected, c.unique, c.missing), (9, 4, 5));
        assert_eq!(c.reordered, 0);
    }

    #[test]
    fn silent_publisher_is_all_missing() {
        let c = check(&[(0, 0)], &[(0, 1), (3, 10)]);
        assert_eq!((c.expected, c.missing), (11, 10));
    }

    #[test]
    fn unknown_publisher_is_foreign() {
        let c = check(&[(99, 0), (0, 0)], &[(0, 1)]);
        assert_eq!((c.unique, c.foreign), (1, 1));
    }

    #[test]
    fn absurd_sequence_is_foreign_not_allocated() {
        let c = check(&[(0, u32::MAX), (0, 0)], &[(0, 1)]);
        assert_eq!((c.unique, c.foreign), (1, 1));
    }

    #[test]
    fn shared_group_merge_counts_cross_member_duplicates() {
        let mut a = SequenceTracker::new(4);
        let mut b = SequenceTracker::new(4);
        for s in 0..50 {
            a.record(0, s);
        }
        for s in 40..100 {
            b.record(0, s); // 40..50 delivered to both members
        }
        a.merge(&b);
        let c = a.check(&[(0, 100)]);
        assert_eq!((c.unique, c.missing, c.duplicates), (100, 0, 10));
    }

    #[test]
    fn merge_into_empty_tracker() {
        let mut group = SequenceTracker::new(4);
        let mut member = SequenceTracker::new(4);
        member.record(2, 7);
        group.merge(&member);
        let c = group.check(&[(2, 8)]);
        assert_eq!((c.unique, c.missing), (1, 7));
    }
}
