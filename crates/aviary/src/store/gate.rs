//! [`CommitGate`]: holds back what a broker pass produced (acknowledgements, deliveries,
//! closes) until the store has committed that pass's operations, keeping the order of
//! passes. This is what makes "PUBACK sent" imply "message on disk".
//!
//! A pass that wrote nothing still waits behind earlier held passes: its packets may
//! depend on theirs (a PUBREL after the PUBLISH it follows, a CONNACK before resends).

use std::collections::VecDeque;

/// Outputs of passes waiting for their commits, oldest first.
#[derive(Debug)]
pub struct CommitGate<T> {
    /// (batch number, outputs); a pass without a batch joins the newest entry.
    held: VecDeque<(u64, Vec<T>)>,
}

impl<T> Default for CommitGate<T> {
    fn default() -> Self {
        Self {
            held: VecDeque::new(),
        }
    }
}

impl<T> CommitGate<T> {
    /// A pass ended with `outputs`; `batch` is the number of the store batch it submitted,
    /// if it had operations. Returns the outputs that may go out now.
    pub fn pass(&mut self, batch: Option<u64>, mut outputs: Vec<T>) -> Vec<T> {
        match (batch, self.held.back_mut()) {
            (None, None) => outputs,
            (None, Some((_, waiting))) => {
                waiting.append(&mut outputs);
                Vec::new()
            }
            (Some(seq), Some((last, waiting))) if *last == seq => {
                waiting.append(&mut outputs);
                Vec::new()
            }
            (Some(seq), _) => {
                // Even with no outputs: later passes then wait for this commit too, so
                // nothing leaves before the state it follows is on disk.
                self.held.push_back((seq, outputs));
                Vec::new()
            }
        }
    }

    /// Moves the outputs of every pass whose batch is committed (`committed` and below)
    /// into `out`, in order. Returns whether anything was released.
    pub fn release(&mut self, committed: u64, out: &mut Vec<T>) -> bool {
        let mut released = false;
        while let Some((seq, _)) = self.held.front() {
            if *seq > committed {
                break;
            }
            if let Some((_, mut outputs)) = self.held.pop_front() {
                out.append(&mut outputs);
                released = true;
            }
        }
        released
    }

    /// Whether anything waits for a commit.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_without_writes_go_at_once_when_nothing_is_held() {
        let mut gate = CommitGate::default();
        assert_eq!(gate.pass(None, vec![1, 2]), vec![1, 2]);
        assert!(!gate.is_holding());
    }

    #[test]
    fn outputs_wait_for_their_commit_in_order() {
        let mut gate = CommitGate::default();
        assert!(gate.pass(Some(1), vec![1]).is_empty());
        // No writes, but behind pass 1: waits too.
        assert!(gate.pass(None, vec![2]).is_empty());
        assert!(gate.pass(Some(2), vec![3]).is_empty());
        let mut out = Vec::new();
        assert!(!gate.release(0, &mut out));
        assert!(gate.release(1, &mut out));
        assert_eq!(out, [1, 2]);
        assert!(gate.is_holding());
        assert!(gate.release(5, &mut out));
        assert_eq!(out, [1, 2, 3]);
        assert!(!gate.is_holding());
        assert_eq!(gate.pass(None, vec![4]), vec![4]);
    }

    #[test]
    fn a_pass_with_writes_but_no_outputs_still_orders_later_passes() {
        let mut gate: CommitGate<u8> = CommitGate::default();
        assert!(gate.pass(Some(1), vec![]).is_empty());
        assert!(gate.pass(None, vec![7]).is_empty());
        let mut out = Vec::new();
        gate.release(1, &mut out);
        assert_eq!(out, [7]);
    }
}
