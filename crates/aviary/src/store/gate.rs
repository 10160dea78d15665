//! [`CommitGate`]: holds back what a broker pass produced (acknowledgements, deliveries,
//! closes) until the store has committed that pass's operations. This is what makes
//! "PUBACK sent" imply "message on disk".
//!
//! Order is kept per connection: an output waits for its own pass's commit when it needs
//! that commit, and in any case behind every output of its connection still held (a
//! PUBREL after the PUBLISH it follows, resends after their CONNACK). Outputs that need no
//! commit — QoS 0/1 deliveries, which the receiver may get twice after a crash anyway —
//! leave at once when nothing of their connection waits, so a subscriber's in-flight
//! window is not paced by the disk.

use std::collections::{HashMap, VecDeque};

/// Outputs of passes waiting for their commits, oldest first.
#[derive(Debug)]
pub struct CommitGate<T> {
    /// (batch number, outputs held until it is committed), in batch order.
    held: VecDeque<(u64, Vec<T>)>,
    /// Held outputs per connection.
    per_conn: HashMap<u64, usize>,
}

impl<T> Default for CommitGate<T> {
    fn default() -> Self {
        Self {
            held: VecDeque::new(),
            per_conn: HashMap::new(),
        }
    }
}

impl<T> CommitGate<T> {
    /// A pass ended with `outputs`; `batch` is the number of the store batch it submitted,
    /// if it had operations. `class` gives each output's connection and whether it may
    /// leave before its pass's commit. Returns the outputs that may go out now, in order.
    pub fn pass(
        &mut self,
        batch: Option<u64>,
        outputs: Vec<T>,
        class: impl Fn(&T) -> (u64, bool),
    ) -> Vec<T> {
        if batch.is_none() && self.held.is_empty() {
            // Nothing to wait for and nothing held (so no connection has anything held):
            // everything goes, in order. The common case without persistent sessions.
            return outputs;
        }
        let mut ready = Vec::new();
        for output in outputs {
            let (conn, may_precede) = class(&output);
            let waiting = self.per_conn.get(&conn).copied().unwrap_or(0) > 0;
            let seq = match (batch, waiting, may_precede) {
                (Some(seq), _, false) => seq,
                // Behind what its connection has held: the newest held batch is at least
                // as late as any of them.
                (_, true, _) => match (batch, self.held.back()) {
                    (Some(seq), _) => seq,
                    (None, Some((seq, _))) => *seq,
                    (None, None) => {
                        ready.push(output);
                        continue;
                    }
                },
                _ => {
                    ready.push(output);
                    continue;
                }
            };
            *self.per_conn.entry(conn).or_insert(0) += 1;
            match self.held.back_mut() {
                Some((last, outputs)) if *last == seq => outputs.push(output),
                _ => self.held.push_back((seq, vec![output])),
            }
        }
        ready
    }

    /// Moves the outputs of every pass whose batch is committed (`committed` and below)
    /// into `out`, in order.
    pub fn release(&mut self, committed: u64, out: &mut Vec<T>, conn_of: impl Fn(&T) -> u64) {
        while self.held.front().is_some_and(|(seq, _)| *seq <= committed) {
            let Some((_, outputs)) = self.held.pop_front() else {
                break;
            };
            for output in outputs {
                let conn = conn_of(&output);
                if let Some(count) = self.per_conn.get_mut(&conn) {
                    *count -= 1;
                    if *count == 0 {
                        self.per_conn.remove(&conn);
                    }
                }
                out.push(output);
            }
        }
    }

    /// Whether anything waits for a commit.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs are (connection, needs its commit).
    type Out = (u64, bool);

    fn class(o: &Out) -> (u64, bool) {
        (o.0, !o.1)
    }

    fn release(gate: &mut CommitGate<Out>, committed: u64) -> Vec<Out> {
        let mut out = Vec::new();
        gate.release(committed, &mut out, |o| o.0);
        out
    }

    #[test]
    fn passes_without_writes_go_at_once_when_nothing_is_held() {
        let mut gate = CommitGate::default();
        assert_eq!(
            gate.pass(None, vec![(1, true), (2, true)], class),
            [(1, true), (2, true)]
        );
        assert!(!gate.is_holding());
    }

    #[test]
    fn acknowledgements_wait_for_their_commit_and_keep_their_connection_order() {
        let mut gate = CommitGate::default();
        // Pass 1 wrote: its ack to 1 waits; a delivery to 2 needs no commit.
        assert_eq!(
            gate.pass(Some(1), vec![(1, true), (2, false)], class),
            [(2, false)]
        );
        // Pass 2 wrote nothing: connection 1 waits behind its held ack, 3 goes.
        assert_eq!(
            gate.pass(None, vec![(1, false), (3, true)], class),
            [(3, true)]
        );
        assert!(gate.pass(Some(2), vec![(2, true)], class).is_empty());
        assert!(release(&mut gate, 0).is_empty());
        assert_eq!(release(&mut gate, 1), [(1, true), (1, false)]);
        assert!(gate.is_holding());
        assert_eq!(release(&mut gate, 5), [(2, true)]);
        assert!(!gate.is_holding());
        assert_eq!(gate.pass(None, vec![(1, true)], class), [(1, true)]);
    }

    #[test]
    fn a_delivery_behind_a_held_packet_of_its_connection_waits() {
        let mut gate = CommitGate::default();
        assert!(gate
            .pass(Some(1), vec![(1, true), (1, false)], class)
            .is_empty());
        assert!(gate.pass(Some(2), vec![(1, false)], class).is_empty());
        assert_eq!(release(&mut gate, 1), [(1, true), (1, false)]);
        assert_eq!(release(&mut gate, 2), [(1, false)]);
    }
}
