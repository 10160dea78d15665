//! What a run measures on the receiving side: latency distributions ([`Histogram`]) and
//! per-publisher sequence bookkeeping ([`SequenceTracker`]) that finds lost, duplicated and
//! reordered messages. Pure data structures, no I/O and no clock.

mod histogram;
mod sequence;

pub use histogram::{Histogram, LatencySummary};
pub use sequence::{DeliveryCheck, SequenceTracker};
