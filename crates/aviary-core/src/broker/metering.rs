//! Usage metering in weighted units (DESIGN.md, "Usage metering"): every message sent or
//! received and every connect and disconnect counts; a message counts by its QoS, whether
//! its session is persistent, and its RETAIN flag. Counting is exact (every packet, at the
//! place it is received or built), per connection and in total.

use aviary_codec::QoS;

/// Units of a CONNECT accepted.
pub(crate) const CONNECT_UNITS: u64 = 1;
/// Units of a connection's end.
pub(crate) const DISCONNECT_UNITS: u64 = 1;
/// Units of a will message published.
pub(crate) const WILL_UNITS: u64 = 10;

/// Units of one PUBLISH received or sent: retained 10; else QoS 0: 1, QoS 1: 2 with a
/// clean session and 5 with a persistent one, QoS 2: 5.
pub(crate) fn message_units(qos: QoS, retain: bool, persistent: bool) -> u64 {
    if retain {
        return 10;
    }
    match qos {
        QoS::AtMostOnce => 1,
        QoS::AtLeastOnce if persistent => 5,
        QoS::AtLeastOnce => 2,
        QoS::ExactlyOnce => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipliers_follow_the_plan() {
        assert_eq!(message_units(QoS::AtMostOnce, false, false), 1);
        assert_eq!(message_units(QoS::AtMostOnce, false, true), 1);
        assert_eq!(message_units(QoS::AtLeastOnce, false, false), 2);
        assert_eq!(message_units(QoS::AtLeastOnce, false, true), 5);
        assert_eq!(message_units(QoS::ExactlyOnce, false, false), 5);
        assert_eq!(message_units(QoS::ExactlyOnce, false, true), 5);
        assert_eq!(message_units(QoS::AtMostOnce, true, false), 10);
        assert_eq!(message_units(QoS::ExactlyOnce, true, true), 10);
    }
}
