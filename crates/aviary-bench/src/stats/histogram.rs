//! A log-linear histogram of nanosecond values (the idea of HdrHistogram, in a few lines):
//! values below 128 are exact; above, each power of two is split into 128 equal buckets, so
//! any reported quantile is within 1/128 (< 0.8 %) of a recorded value. Memory grows with the
//! largest value seen (about 27 KiB for values up to 10 s), not with the number of samples.
//!
//! A histogram serializes as its non-empty buckets, so that `compare` can read each round's
//! histogram from the child process that ran it and pool the rounds' samples: quantiles of
//! separate rounds cannot be combined, histograms can.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Sub-buckets per power of two, as a bit count (2^7 = 128).
const SUB_BITS: u32 = 7;
/// 128: values below it have a bucket each.
const SUB_COUNT: u64 = 1 << SUB_BITS;

/// Counts of values by bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[bucket_index(v)]` is the number of recorded values in `v`'s bucket; grown on
    /// demand so that a histogram that only ever saw microseconds stays small.
    counts: Vec<u64>,
    /// Number of recorded values.
    total: u64,
    /// Smallest and largest recorded values, exact (the buckets are not).
    min: u64,
    max: u64,
    /// Sum of recorded values, for the mean.
    sum: u128,
}

/// A [`Histogram`] as JSON: what it takes to rebuild it, in nanoseconds. Buckets are named
/// by their lowest value, not by their index, so the form does not depend on [`SUB_BITS`].
#[derive(Serialize, Deserialize)]
struct Serialized {
    /// `[lowest value of the bucket, count]` for each non-empty bucket, ascending.
    buckets: Vec<(u64, u64)>,
    /// The exact smallest and largest recorded values (0 when empty).
    min_ns: u64,
    max_ns: u64,
    /// Sum of recorded values, for the mean.
    sum_ns: u128,
}

/// The quantiles a report shows, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of samples behind the figures.
    pub samples: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Histogram {
    /// Records one value (nanoseconds).
    pub fn record(&mut self, value: u64) {
        let index = bucket_index(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        if self.total == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.total += 1;
        self.sum += u128::from(value);
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Adds every value of `other` (used to combine subscribers into one run figure).
    pub fn merge(&mut self, other: &Self) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        if self.total == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    /// The value at quantile `q` (0.0..=1.0): the middle of the bucket holding the
    /// `ceil(q * n)`-th smallest value, clamped to the exact min and max. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The rank of the wanted value, 1-based; q = 0 means the smallest.
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = bucket_range(index);
                let mid = low + (high - low) / 2;
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The report's figures, converted to microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        let mean = if self.total == 0 {
            0.0
        } else {
            (self.sum / u128::from(self.total)) as f64 / 1_000.0
        };
        LatencySummary {
            samples: self.total,
            min_us: us(if self.total == 0 { 0 } else { self.min }),
            mean_us: mean,
            p50_us: us(self.quantile(0.50)),
            p99_us: us(self.quantile(0.99)),
            p999_us: us(self.quantile(0.999)),
            max_us: us(self.max),
        }
    }
}

impl Serialize for Histogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(index, &count)| (bucket_range(index).0, count))
            .collect();
        Serialized {
            buckets,
            min_ns: self.min,
            max_ns: self.max,
            sum_ns: self.sum,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Histogram {
    /// Rebuilds the histogram, refusing counts that overflow and a min, max or sum that
    /// the buckets contradict (`quantile` relies on `min <= max`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = Serialized::deserialize(deserializer)?;
        let mut h = Self::default();
        for (low, count) in wire.buckets {
            // At most `bucket_index(u64::MAX) + 1` (7,424) buckets, whatever the input.
            let index = bucket_index(low);
            if index >= h.counts.len() {
                h.counts.resize(index + 1, 0);
            }
            h.counts[index] = h.counts[index]
                .checked_add(count)
                .ok_or_else(|| D::Error::custom("histogram bucket count overflows"))?;
            h.total = h
                .total
                .checked_add(count)
                .ok_or_else(|| D::Error::custom("histogram total overflows"))?;
        }
        if h.total == 0 {
            return Ok(Self::default());
        }
        let first = h.counts.iter().position(|&c| c > 0);
        let last = h.counts.iter().rposition(|&c| c > 0);
        let total = u128::from(h.total);
        if wire.min_ns > wire.max_ns
            || first != Some(bucket_index(wire.min_ns))
            || last != Some(bucket_index(wire.max_ns))
            || wire.sum_ns < u128::from(wire.min_ns) * total
            || wire.sum_ns > u128::from(wire.max_ns) * total
        {
            return Err(D::Error::custom(format!(
                "histogram min {} / max {} / sum {} ns do not fit its buckets",
                wire.min_ns, wire.max_ns, wire.sum_ns
            )));
        }
        h.min = wire.min_ns;
        h.max = wire.max_ns;
        h.sum = wire.sum_ns;
        Ok(h)
    }
}

/// The bucket a value falls in.
fn bucket_index(value: u64) -> usize {
    if value < SUB_COUNT {
        return value as usize;
    }
    // The position of the highest set bit is at least SUB_BITS here; keep SUB_BITS + 1 bits.
    let shift = (63 - value.leading_zeros()) - SUB_BITS;
    let mantissa = value >> shift; // in SUB_COUNT..2 * SUB_COUNT
    ((u64::from(shift) + 1) * SUB_COUNT + (mantissa - SUB_COUNT)) as usize
}

/// The smallest and largest value of a bucket (inclusive).
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB_COUNT {
        return (index, index);
    }
    let shift = index / SUB_COUNT - 1;
    let mantissa = index % SUB_COUNT + SUB_COUNT;
    let low = mantissa << shift;
    (low, low + ((1u64 << shift) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value lies in the range of its own bucket, and buckets tile the line.
    #[test]
    fn buckets_contain_their_values_and_tile() {
        let values = [
            0,
            1,
            127,
            128,
            129,
            255,
            256,
            1_000,
            65_535,
            1 << 40,
            u64::MAX,
        ];
        for v in values {
            let (low, high) = bucket_range(bucket_index(v));
            assert!(low <= v && v <= high, "{v} not in [{low}, {high}]");
        }
        for index in 1..3_000 {
            let (_, prev_high) = bucket_range(index - 1);
            let (low, _) = bucket_range(index);
            assert_eq!(prev_high + 1, low, "gap before bucket {index}");
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(1.0), 100);
        assert_eq!(h.quantile(0.0), 1);
    }

    #[test]
    fn quantiles_within_relative_error() {
        let mut h = Histogram::default();
        // 1 µs .. 100 ms in 100,000 steps.
        for i in 1..=100_000u64 {
            h.record(i * 1_000);
        }
        for (q, exact) in [
            (0.5, 50_000_000.0),
            (0.99, 99_000_000.0),
            (0.999, 99_900_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.01, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.len(), 100_000);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        let mut both = Histogram::default();
        for v in [5u64, 900, 70_000, 3_000_000] {
            a.record(v);
            both.record(v);
        }
        for v in [1u64, 44, 1 << 35] {
            b.record(v);
            both.record(v);
        }
        a.merge(&b);
        assert_eq!(a.summary(), both.summary());
        assert_eq!(a.quantile(0.0), 1);
        assert_eq!(a.quantile(1.0), 1 << 35);
    }

    /// What `compare` reads from a round's child process is the histogram the child had.
    #[test]
    fn json_round_trip_rebuilds_the_same_histogram() {
        let mut h = Histogram::default();
        for v in [3u64, 3, 127, 128, 5_000, 70_001, 70_002, 9_999_999_999] {
            h.record(v);
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: Histogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.summary(), h.summary());
        let empty: Histogram =
            serde_json::from_str(&serde_json::to_string(&Histogram::default()).unwrap()).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn json_that_contradicts_its_buckets_is_refused() {
        let parse = |json: &str| serde_json::from_str::<Histogram>(json);
        // Consistent: two values, 10 and 20 ns.
        assert!(
            parse(r#"{"buckets":[[10,1],[20,1]],"min_ns":10,"max_ns":20,"sum_ns":30}"#).is_ok()
        );
        // min above max, both in the one bucket 1000..=1003 (`quantile` would panic in
        // `clamp`).
        assert!(
            parse(r#"{"buckets":[[1000,2]],"min_ns":1003,"max_ns":1000,"sum_ns":2003}"#).is_err()
        );
        // min or max outside the outermost buckets.
        assert!(
            parse(r#"{"buckets":[[10,1],[20,1]],"min_ns":5,"max_ns":20,"sum_ns":30}"#).is_err()
        );
        assert!(
            parse(r#"{"buckets":[[10,1],[20,1]],"min_ns":10,"max_ns":99,"sum_ns":30}"#).is_err()
        );
        // A sum no two values in 10..=20 can have.
        assert!(
            parse(r#"{"buckets":[[10,1],[20,1]],"min_ns":10,"max_ns":20,"sum_ns":41}"#).is_err()
        );
        // Counts that overflow.
        let overflow = format!(
            r#"{{"buckets":[[10,{max}],[20,1]],"min_ns":10,"max_ns":20,"sum_ns":30}}"#,
            max = u64::MAX
        );
        assert!(parse(&overflow).is_err());
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = Histogram::default();
        assert!(h.is_empty());
        assert_eq!(h.summary(), LatencySummary::default());
    }
}
