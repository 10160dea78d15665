//! Feeds arbitrary bytes to `decode` in every protocol version with a small maximum packet
//! size. Decoding must never panic, and every packet it returns must encode (with
//! `encoded_len` predicting the size) and decode again to the same value.

#![no_main]

use aviary_codec::{decode, encode, encoded_len, Packet, ProtocolVersion};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const MAX_PACKET_SIZE: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    for version in [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ] {
        let mut buf = BytesMut::from(data);
        // Each decoded packet consumes at least two bytes, so this ends.
        while let Ok(Some(packet)) = decode(&mut buf, version, MAX_PACKET_SIZE) {
            // CONNECT is encoded in the dialect it names.
            let dialect = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => version,
            };
            let mut out = BytesMut::new();
            encode(&packet, dialect, &mut out).expect("a decoded packet encodes");
            assert_eq!(out.len(), encoded_len(&packet, dialect));
            let again = decode(&mut out, dialect, u32::MAX)
                .expect("a re-encoded packet decodes")
                .expect("a re-encoded packet is complete");
            assert_eq!(again, packet);
            assert!(out.is_empty());
        }
    }
});
