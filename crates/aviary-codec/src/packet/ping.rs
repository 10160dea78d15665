//! PINGREQ and PINGRESP (spec 3.12, 3.13): a fixed header with remaining length 0 and no
//! body. There is nothing to decode or encode beyond the fixed header, which
//! [`super::decode`] checks (a non-zero remaining length is left over and malformed); this
//! module holds their wire tests.

#[cfg(test)]
mod tests {
    use crate::packet::tests::{check, check_err};
    use crate::{DecodeError, Packet, ProtocolVersion::*};

    #[test]
    fn pingreq_and_pingresp_in_every_version() {
        for v in [V3_1, V3_1_1, V5] {
            check(v, "c000", Packet::PingReq);
            check(v, "d000", Packet::PingResp);
        }
    }

    #[test]
    fn ping_with_body_is_malformed() {
        check_err(V5, "c00100", DecodeError::Malformed(""));
    }

    #[test]
    fn mqtt_2_2_2_2_ping_with_flags_is_malformed() {
        check_err(V3_1_1, "c100", DecodeError::Malformed(""));
    }
}
