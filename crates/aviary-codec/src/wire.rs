//! Primitive wire encodings (spec 1.5): two-byte integers, variable byte integers, UTF-8
//! strings, binary data and string pairs.
//!
//! Decoding reads from a [`Reader`] over one frame (a `Bytes` slice of the connection's read
//! buffer, so binary fields and payloads are zero-copy). Encoding writes to a [`Sink`]: the
//! same code runs once against a [`Counter`] (for lengths) and once against the `BytesMut`,
//! which is how `encoded_len` always agrees with `encode`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{DecodeError, EncodeError};

/// The largest value of a four-byte variable byte integer (spec 1.5.5).
pub(crate) const VBI_MAX: u32 = 268_435_455;

const ENDS_EARLY: DecodeError = DecodeError::Malformed("field runs past the end of the packet");

/// A cursor over the bytes of one packet (or one property block).
pub(crate) struct Reader {
    /// The unread bytes; advancing it is a pointer bump, slicing it is a refcount bump.
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn has_remaining(&self) -> bool {
        !self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(ENDS_EARLY);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(ENDS_EARLY);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(ENDS_EARLY);
        }
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer of at most four bytes (spec 1.5.5). Non-minimal encodings are
    /// accepted; a continuation bit on the fourth byte is malformed.
    pub(crate) fn vbi(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// The next `n` bytes, as a sub-reader.
    pub(crate) fn take(&mut self, n: usize) -> Result<Self, DecodeError> {
        Ok(Self::new(self.bytes(n)?))
    }

    /// The next `n` bytes, zero-copy.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(ENDS_EARLY);
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything that is left (a PUBLISH payload), zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two-byte length and that many bytes (spec 1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.bytes(usize::from(len))
    }

    /// A UTF-8 encoded string (spec 1.5.4), handed to `f` without copying: valid UTF-8
    /// [MQTT-1.5.4-1] (Rust `str` excludes surrogates) and no U+0000 [MQTT-1.5.4-2].
    pub(crate) fn with_str<T>(
        &mut self,
        f: impl FnOnce(&str) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let len = usize::from(self.u16()?);
        if self.buf.len() < len {
            return Err(ENDS_EARLY);
        }
        let s = std::str::from_utf8(&self.buf[..len])
            .map_err(|_| DecodeError::Malformed("string is not valid UTF-8 [MQTT-1.5.4-1]"))?;
        // A fold without early exit, which vectorises: strings here are short, where
        // `contains` (memchr) costs more in setting up than in scanning.
        if s.bytes().fold(false, |any, b| any | (b == 0)) {
            return Err(DecodeError::Malformed(
                "string contains U+0000 [MQTT-1.5.4-2]",
            ));
        }
        let out = f(s)?;
        self.buf.advance(len);
        Ok(out)
    }

    /// The bytes of the string (spec 1.5.4) at the front, unchecked and not consumed;
    /// `None` when it runs past the end.
    pub(crate) fn peek_str_bytes(&self) -> Option<&[u8]> {
        let len = usize::from(u16::from_be_bytes([*self.buf.first()?, *self.buf.get(1)?]));
        self.buf.get(2..2 + len)
    }

    /// Skips the string at the front, which [`Reader::peek_str_bytes`] found whole.
    pub(crate) fn skip_str(&mut self) {
        let len = self.peek_str_bytes().map_or(0, |bytes| 2 + bytes.len());
        self.buf.advance(len);
    }

    /// A UTF-8 encoded string, owned.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.with_str(|s| Ok(s.to_owned()))
    }

    /// A UTF-8 string pair (spec 1.5.7).
    pub(crate) fn string_pair(&mut self) -> Result<(String, String), DecodeError> {
        Ok((self.string()?, self.string()?))
    }

    /// Fails unless every byte was consumed: the remaining length must be used exactly.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed(
                "bytes left over after the last field of the packet",
            ))
        }
    }
}

/// Where encoded bytes go: a `BytesMut`, or a [`Counter`] that only adds up lengths.
pub(crate) trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, v: &[u8]);

    /// A variable byte integer (spec 1.5.5); values above [`VBI_MAX`] are refused.
    fn put_vbi(&mut self, v: usize) -> Result<(), EncodeError> {
        if v > VBI_MAX as usize {
            return Err(EncodeError::TooLarge(v));
        }
        let mut v = v;
        loop {
            // Truncation intended: the low seven bits.
            let byte = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                self.put_u8(byte);
                return Ok(());
            }
            self.put_u8(byte | 0x80);
        }
    }

    /// Binary data with its two-byte length (spec 1.5.6).
    fn put_binary(&mut self, v: &[u8], what: &'static str) -> Result<(), EncodeError> {
        let len = u16::try_from(v.len()).map_err(|_| EncodeError::FieldTooLong(what))?;
        self.put_u16(len);
        self.put_slice(v);
        Ok(())
    }

    /// A UTF-8 string with its two-byte length (spec 1.5.4).
    fn put_str(&mut self, v: &str, what: &'static str) -> Result<(), EncodeError> {
        self.put_binary(v.as_bytes(), what)
    }
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
}

/// A [`Sink`] that counts the bytes it would write.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn put_slice(&mut self, v: &[u8]) {
        self.0 += v.len();
    }
    fn put_vbi(&mut self, v: usize) -> Result<(), EncodeError> {
        if v > VBI_MAX as usize {
            return Err(EncodeError::TooLarge(v));
        }
        self.0 += vbi_len(v);
        Ok(())
    }
}

/// How many bytes the variable byte integer for `v` takes.
pub(crate) fn vbi_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_vbi(bytes: &[u8]) -> Result<u32, DecodeError> {
        Reader::new(Bytes::copy_from_slice(bytes)).vbi()
    }

    #[test]
    fn vbi_spec_boundaries() {
        for (v, hex) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            out.put_vbi(v).unwrap();
            assert_eq!(&out[..], hex);
            assert_eq!(vbi_len(v), hex.len());
            assert_eq!(read_vbi(hex).unwrap() as usize, v);
        }
        assert!(BytesMut::new().put_vbi(268_435_456).is_err());
    }

    #[test]
    fn mqtt_1_5_5_vbi_fifth_byte_is_malformed() {
        assert!(matches!(
            read_vbi(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn mqtt_1_5_4_1_invalid_utf8_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, 0xC3, 0x28]));
        assert!(matches!(r.string(), Err(DecodeError::Malformed(_))));
        // An encoded surrogate (U+D800) is invalid UTF-8.
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, 0xED, 0xA0, 0x80]));
        assert!(matches!(r.string(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn mqtt_1_5_4_2_nul_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, b'a', 0x00]));
        assert!(matches!(r.string(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn string_past_end_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert!(matches!(r.string(), Err(DecodeError::Malformed(_))));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x01, 0xF0, 0x9F, 0x90]));
        assert_eq!(r.bytes(2).unwrap().len(), 2);
        assert!(r.string().is_err());
    }

    #[test]
    fn string_pair_and_binary() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x01k\x00\x02vv\x00\x01\xFF"));
        assert_eq!(r.string_pair().unwrap(), ("k".into(), "vv".into()));
        assert_eq!(&r.binary().unwrap()[..], b"\xFF");
        r.finish().unwrap();
    }
}
