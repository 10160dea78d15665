//! Coalescing one transaction's operations before they are written: a message copy that
//! its session both got and finished (acknowledged, dropped, moved to another member)
//! within the operations of one commit is never written at all.
//!
//! With `durability = "immediate"` a publisher's PUBACK waits for the commit of its
//! message, but the copies for online subscribers leave at once (`CommitGate`), so a
//! subscriber's PUBACK often comes back while the copy still waits for the writer, busy
//! with the commit before. Both then land in one transaction: written, then deleted again
//! — every B-tree page they touch rebuilt twice for nothing. Dropping the pair leaves the
//! store exactly as applying both in one transaction would (nobody sees the state between
//! two operations of one transaction, and a crash before the commit loses both alike),
//! so what is acknowledged stays exactly as durable.
//!
//! Likewise a record written twice in one commit is written once: a retained message
//! replaced or cleared again, a will or a session put again or deleted (the last write
//! wins in a transaction anyway).

use std::collections::{HashMap, HashSet};

use super::StoreOp;

/// A delivery created in the operations: where its `Deliver` is, and where its
/// `DeleteDelivery` is once one follows.
#[derive(Clone, Copy)]
struct Span {
    created: usize,
    finished: Option<usize>,
    /// Created twice (never done by the broker, whose delivery ids are unique): left
    /// alone, as applying the operations in order would give a different result.
    ambiguous: bool,
}

/// Removes from `ops` what applying them in one transaction would undo or overwrite
/// ([`mark_finished_deliveries`], [`mark_superseded_puts`]); everything else keeps its
/// order. Returns how many operations were removed.
pub(super) fn coalesce(ops: &mut Vec<StoreOp>) -> usize {
    let mut doomed = vec![false; ops.len()];
    let marked =
        mark_finished_deliveries(ops, &mut doomed) + mark_superseded_puts(ops, &mut doomed);
    if marked == 0 {
        return 0;
    }
    let mut index = 0;
    ops.retain(|_| {
        let keep = !doomed[index];
        index += 1;
        keep
    });
    marked
}

/// Marks every delivery that is created and finished in `ops`: its `Deliver`, its
/// `SetDeliveryState`s in between and its `DeleteDelivery`. Returns how many it marked.
///
/// The message body needs nothing: it is written by the first `Deliver` of the message
/// that is applied (the store counts the copies it holds), and deleted with the last
/// copy, so another copy of the same message, in these operations or stored before,
/// keeps it exactly as before.
fn mark_finished_deliveries(ops: &[StoreOp], doomed: &mut [bool]) -> usize {
    let mut spans: HashMap<(&str, u64), Span> = HashMap::new();
    for (index, op) in ops.iter().enumerate() {
        match op {
            StoreOp::Deliver {
                client_id,
                delivery_id,
                ..
            } => {
                spans
                    .entry((client_id.as_str(), *delivery_id))
                    .and_modify(|span| span.ambiguous = true)
                    .or_insert(Span {
                        created: index,
                        finished: None,
                        ambiguous: false,
                    });
            }
            StoreOp::DeleteDelivery {
                client_id,
                delivery_id,
            } => {
                if let Some(span) = spans.get_mut(&(client_id.as_str(), *delivery_id)) {
                    span.finished.get_or_insert(index);
                }
            }
            _ => {}
        }
    }
    spans.retain(|_, span| span.finished.is_some() && !span.ambiguous);
    if spans.is_empty() {
        return 0;
    }
    let mut marked = 0;
    for (index, op) in ops.iter().enumerate() {
        let key = match op {
            StoreOp::Deliver {
                client_id,
                delivery_id,
                ..
            }
            | StoreOp::SetDeliveryState {
                client_id,
                delivery_id,
                ..
            }
            | StoreOp::DeleteDelivery {
                client_id,
                delivery_id,
            } => (client_id.as_str(), *delivery_id),
            _ => continue,
        };
        if let Some(Span {
            created,
            finished: Some(finished),
            ..
        }) = spans.get(&key)
        {
            if (*created..=*finished).contains(&index) {
                doomed[index] = true;
                marked += 1;
            }
        }
    }
    marked
}

/// Marks every put of a retained message, a will or a session that a later operation on
/// the same record overwrites or deletes. Returns how many it marked.
///
/// A session's delete also deletes its deliveries; only the earlier put of the session
/// record goes, the delete stays.
fn mark_superseded_puts(ops: &[StoreOp], doomed: &mut [bool]) -> usize {
    let mut retained: HashSet<&str> = HashSet::new();
    let mut wills: HashSet<&str> = HashSet::new();
    let mut sessions: HashSet<&str> = HashSet::new();
    let mut marked = 0;
    // From the last operation back: a put is superseded if its record is written later.
    for (index, op) in ops.iter().enumerate().rev() {
        let superseded = match op {
            StoreOp::PutRetained { message } => !retained.insert(message.topic.as_str()),
            StoreOp::DeleteRetained { topic } => {
                retained.insert(topic.as_str());
                false
            }
            StoreOp::PutWill { client_id, .. } => !wills.insert(client_id.as_str()),
            StoreOp::DeleteWill { client_id } => {
                wills.insert(client_id.as_str());
                false
            }
            StoreOp::PutSession { client_id, .. } => !sessions.insert(client_id.as_str()),
            StoreOp::DeleteSession { client_id } => {
                sessions.insert(client_id.as_str());
                false
            }
            _ => false,
        };
        if superseded && !doomed[index] {
            doomed[index] = true;
            marked += 1;
        }
    }
    marked
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{
        DeliveryRecord, DeliveryState, LiveWillRecord, MessageRecord, SessionRecord,
    };

    fn message() -> Arc<MessageRecord> {
        Arc::new(MessageRecord {
            topic: "t".into(),
            payload: b"p".to_vec(),
            qos: 1,
            ..MessageRecord::default()
        })
    }

    fn deliver(client_id: &str, delivery_id: u64) -> StoreOp {
        StoreOp::Deliver {
            client_id: client_id.into(),
            delivery_id,
            delivery: DeliveryRecord {
                message_id: 1,
                qos: 1,
                retain: false,
                subscription_ids: Vec::new(),
                shared: None,
            },
            state: DeliveryState::Queued,
            message: message(),
        }
    }

    fn sent(client_id: &str, delivery_id: u64) -> StoreOp {
        StoreOp::SetDeliveryState {
            client_id: client_id.into(),
            delivery_id,
            state: DeliveryState::Sent { packet_id: 1 },
        }
    }

    fn done(client_id: &str, delivery_id: u64) -> StoreOp {
        StoreOp::DeleteDelivery {
            client_id: client_id.into(),
            delivery_id,
        }
    }

    fn retained(topic: &str) -> StoreOp {
        StoreOp::DeleteRetained {
            topic: topic.into(),
        }
    }

    #[test]
    fn a_copy_acknowledged_in_the_same_commit_is_not_written() {
        let mut ops = vec![
            deliver("a", 1),
            retained("x"),
            sent("a", 1),
            deliver("a", 2),
            done("a", 1),
            retained("y"),
        ];
        assert_eq!(coalesce(&mut ops), 3);
        assert_eq!(ops, vec![retained("x"), deliver("a", 2), retained("y")]);
    }

    #[test]
    fn copies_stored_before_or_finished_later_are_kept() {
        // Finished here but stored by an earlier commit; created here, finished later;
        // the same delivery id of another session.
        let mut ops = vec![done("a", 1), deliver("a", 2), sent("a", 2), done("b", 2)];
        let unchanged = ops.clone();
        assert_eq!(coalesce(&mut ops), 0);
        assert_eq!(ops, unchanged);
    }

    #[test]
    fn operations_on_the_copy_after_its_end_are_kept() {
        // Not something the broker does; kept so that the result is what applying all
        // of them in order gives (a state record left behind).
        let mut ops = vec![deliver("a", 1), done("a", 1), sent("a", 1)];
        assert_eq!(coalesce(&mut ops), 2);
        assert_eq!(ops, vec![sent("a", 1)]);
    }

    #[test]
    fn a_delivery_created_twice_is_left_alone() {
        let mut ops = vec![deliver("a", 1), deliver("a", 1), done("a", 1)];
        let unchanged = ops.clone();
        assert_eq!(coalesce(&mut ops), 0);
        assert_eq!(ops, unchanged);
    }

    fn put_retained(topic: &str, payload: &[u8]) -> StoreOp {
        let mut message = (*message()).clone();
        message.topic = topic.into();
        message.payload = payload.to_vec();
        StoreOp::PutRetained {
            message: Arc::new(message),
        }
    }

    fn put_will(client_id: &str, delay: u32) -> StoreOp {
        StoreOp::PutWill {
            client_id: client_id.into(),
            will: LiveWillRecord {
                delay,
                ended_at: None,
                message: (*message()).clone(),
            },
        }
    }

    fn put_session(client_id: &str, expiry_interval: u32) -> StoreOp {
        StoreOp::PutSession {
            client_id: client_id.into(),
            session: SessionRecord {
                expiry_interval,
                expires_at: None,
                subscriptions: Vec::new(),
                will: None,
            },
        }
    }

    #[test]
    fn a_record_written_again_in_the_same_commit_is_written_once() {
        let delete_will = StoreOp::DeleteWill {
            client_id: "c".into(),
        };
        let delete_session = StoreOp::DeleteSession {
            client_id: "c".into(),
        };
        let mut ops = vec![
            put_retained("x", b"1"),
            put_will("c", 1),
            put_session("c", 10),
            put_retained("y", b"1"),
            put_retained("x", b"2"),
            delete_will.clone(),
            put_session("c", 20),
            retained("y"),
            delete_session.clone(),
            put_session("c", 30),
            put_will("c", 2),
        ];
        assert_eq!(coalesce(&mut ops), 5);
        assert_eq!(
            ops,
            vec![
                put_retained("x", b"2"),
                delete_will,
                retained("y"),
                delete_session,
                put_session("c", 30),
                put_will("c", 2),
            ]
        );
    }

    #[test]
    fn puts_of_different_records_are_all_kept() {
        let mut ops = vec![
            put_retained("x", b"1"),
            put_retained("y", b"1"),
            put_will("c", 1),
            put_will("d", 1),
            put_session("c", 10),
            put_session("d", 10),
        ];
        let unchanged = ops.clone();
        assert_eq!(coalesce(&mut ops), 0);
        assert_eq!(ops, unchanged);
    }

    #[test]
    fn nothing_to_coalesce_costs_no_change() {
        let mut ops = vec![retained("x"), deliver("a", 1)];
        assert_eq!(coalesce(&mut ops), 0);
        assert_eq!(ops.len(), 2);
        let mut none = Vec::new();
        assert_eq!(coalesce(&mut none), 0);
    }
}
