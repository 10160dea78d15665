//! [`ReadBatch`]: the packets decoded from one read, as the reader sends them to the broker
//! task. Most reads carry one packet (a device's PUBLISH, one acknowledgement), and that
//! one travels inline in the event; only a read of several packets allocates a `Vec`. An
//! allocation and a free per read were some 2 % of the broker's instructions per message
//! with 10,000 devices each sending one message at a time.

use aviary_codec::Packet;

/// The packets of one read, in order.
#[derive(Debug, Default)]
pub(crate) enum ReadBatch {
    #[default]
    Empty,
    One(Packet),
    Many(Vec<Packet>),
}

impl ReadBatch {
    /// Packets in the batch.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(_) => 1,
            Self::Many(packets) => packets.len(),
        }
    }

    /// Whether the batch has no packet.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `packet` after the others; `capacity`: how many the batch is sized for when it
    /// outgrows one packet (it grows beyond if needed).
    pub(crate) fn push(&mut self, packet: Packet, capacity: impl FnOnce() -> usize) {
        match self {
            Self::Empty => *self = Self::One(packet),
            Self::Many(packets) => packets.push(packet),
            Self::One(_) => {
                let Self::One(first) = std::mem::take(self) else {
                    unreachable!("matched just above")
                };
                let mut packets = Vec::with_capacity(capacity().max(2));
                packets.push(first);
                packets.push(packet);
                *self = Self::Many(packets);
            }
        }
    }
}

impl From<Vec<Packet>> for ReadBatch {
    fn from(packets: Vec<Packet>) -> Self {
        Self::Many(packets)
    }
}

/// A [`ReadBatch`]'s packets, in order.
#[derive(Debug)]
pub(crate) enum ReadBatchIter {
    One(Option<Packet>),
    Many(std::vec::IntoIter<Packet>),
}

impl Iterator for ReadBatchIter {
    type Item = Packet;

    fn next(&mut self) -> Option<Packet> {
        match self {
            Self::One(packet) => packet.take(),
            Self::Many(packets) => packets.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            Self::One(packet) => usize::from(packet.is_some()),
            Self::Many(packets) => packets.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for ReadBatchIter {}

impl IntoIterator for ReadBatch {
    type Item = Packet;
    type IntoIter = ReadBatchIter;

    fn into_iter(self) -> ReadBatchIter {
        match self {
            Self::Empty => ReadBatchIter::One(None),
            Self::One(packet) => ReadBatchIter::One(Some(packet)),
            Self::Many(packets) => ReadBatchIter::Many(packets.into_iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_codec::{Ack, PacketId, ReasonCode};

    fn puback(id: u16) -> Packet {
        Packet::PubAck(Ack {
            packet_id: PacketId::new(id).unwrap(),
            reason_code: ReasonCode::SUCCESS,
            properties: Default::default(),
        })
    }

    fn ids(batch: ReadBatch) -> Vec<u16> {
        batch
            .into_iter()
            .map(|p| match p {
                Packet::PubAck(ack) => ack.packet_id.get(),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn packets_come_out_in_the_order_they_went_in() {
        let mut batch = ReadBatch::default();
        assert!(batch.is_empty());
        batch.push(puback(1), || 8);
        assert!(matches!(batch, ReadBatch::One(_)));
        assert_eq!(batch.len(), 1);
        for id in 2..=5 {
            batch.push(puback(id), || 8);
        }
        assert_eq!(batch.len(), 5);
        assert!(matches!(&batch, ReadBatch::Many(v) if v.capacity() == 8));
        let mut iter = batch.into_iter();
        assert_eq!(iter.len(), 5);
        iter.next();
        assert_eq!(iter.len(), 4);
        assert_eq!(ids(ReadBatch::Many(iter.collect())), [2, 3, 4, 5]);
        let mut one = ReadBatch::default();
        one.push(puback(7), || 8);
        assert_eq!(ids(one), [7]);
        assert!(ids(ReadBatch::default()).is_empty());
    }
}
