//! The benchmark's message payload: who sent it, its sequence number and when it was sent,
//! in the first 16 bytes; the rest is zero padding up to the requested size.
//!
//! ```text
//! bytes 0..4   publisher id, u32 little endian
//! bytes 4..8   sequence number, u32 little endian (0, 1, 2, ... per publisher)
//! bytes 8..16  send time, u64 little endian, nanoseconds since the run's epoch
//! ```
//! The epoch is an `Instant` of the generator process, so latency is only computed where
//! publisher and subscriber share a process (every latency-measuring scenario does).

/// The smallest payload that holds the header.
pub const HEADER_LEN: usize = 16;

/// What a received payload says about its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub sequence: u32,
    /// Nanoseconds since the run's epoch when the publisher queued it for sending.
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the header into the first 16 bytes of `payload`; shorter payloads are left
    /// untouched (the caller guarantees the size, see [`HEADER_LEN`]).
    pub fn write(&self, payload: &mut [u8]) {
        if let Some(header) = payload.get_mut(..HEADER_LEN) {
            header[0..4].copy_from_slice(&self.publisher.to_le_bytes());
            header[4..8].copy_from_slice(&self.sequence.to_le_bytes());
            header[8..16].copy_from_slice(&self.sent_ns.to_le_bytes());
        }
    }

    /// Reads the header; `None` when the payload is too short to be ours.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let header = payload.get(..HEADER_LEN)?;
        let u32_at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&header[8..16]);
        Some(Self {
            publisher: u32_at(0),
            sequence: u32_at(4),
            sent_ns: u64::from_le_bytes(sent),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let stamp = Stamp {
            publisher: 0xDEAD_BEEF,
            sequence: 42,
            sent_ns: 1 << 50,
        };
        let mut payload = vec![0xAAu8; 1024];
        stamp.write(&mut payload);
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert!(payload[HEADER_LEN..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn literal_layout() {
        let stamp = Stamp {
            publisher: 1,
            sequence: 2,
            sent_ns: 3,
        };
        let mut payload = [0u8; 16];
        stamp.write(&mut payload);
        assert_eq!(payload, [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn short_payload_is_not_ours() {
        assert_eq!(Stamp::read(&[0u8; 15]), None);
    }
}
