//! Negative end-to-end tests: malformed or illegal packets written as literal hex on a raw
//! TCP connection. Each test asserts the broker's exact answer (5.0: DISCONNECT with the
//! reason code of the spec, or the CONNACK code; 3.x: the connection closed without an
//! answer, or the CONNACK return code the spec names) and then that other clients are still
//! served. Tests are named after the spec rule they pin.

mod common;

use std::time::Duration;

use aviary_codec::ProtocolVersion;
use common::{assert_broker_still_serves, start_broker, Next, RawClient, WAIT};

/// A 5.0 client connects, sends `$hex`, and gets DISCONNECT `$reason` then EOF.
macro_rules! v5_disconnect {
    ($(#[$meta:meta])* $name:ident, $hex:expr, $reason:expr) => {
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let broker = start_broker(|_| {}).await;
            let mut c = RawClient::connect_v5(broker.addr, "offender").await;
            c.send_hex($hex).await;
            c.expect_disconnect($reason).await;
            assert_broker_still_serves(broker.addr).await;
        }
    };
}

/// A 3.1.1 client connects, sends `$hex`, and the broker closes without an answer.
macro_rules! v311_closed {
    ($(#[$meta:meta])* $name:ident, $hex:expr) => {
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let broker = start_broker(|_| {}).await;
            let mut c = RawClient::connect_v311(broker.addr, "offender").await;
            c.send_hex($hex).await;
            c.expect_closed().await;
            assert_broker_still_serves(broker.addr).await;
        }
    };
}

/// `$hex` is the first packet of a connection; the broker closes without an answer.
macro_rules! first_packet_closed {
    ($(#[$meta:meta])* $name:ident, $hex:expr) => {
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let broker = start_broker(|_| {}).await;
            let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
            c.send_hex($hex).await;
            c.expect_closed().await;
            assert_broker_still_serves(broker.addr).await;
        }
    };
}

/// A bad 5.0 CONNECT: CONNACK `$code` then EOF, or EOF alone (the spec's MAY).
macro_rules! v5_connect_refused {
    ($(#[$meta:meta])* $name:ident, $hex:expr, $code:expr) => {
        $(#[$meta])*
        #[tokio::test]
        async fn $name() {
            let broker = start_broker(|_| {}).await;
            let mut c = RawClient::open(broker.addr, ProtocolVersion::V5).await;
            c.send_hex($hex).await;
            c.expect_connack_code_or_closed($code).await;
            assert_broker_still_serves(broker.addr).await;
        }
    };
}

// Packet identifier 0 [MQTT-2.2.1-3] parses but is not allowed: a Protocol Error in the
// spec's terminology (1.2), so 0x82.

// ---- 2.1.3 fixed header flags, 2.1.2 packet types, 1.5.5/2.1.4 remaining length ----

v5_disconnect!(
    mqtt_3_6_1_1_v5_pubrel_reserved_flags_0000_is_malformed,
    "60 02 00 01",
    0x81
);
v311_closed!(
    mqtt_3_6_1_1_v311_pubrel_reserved_flags_0000_closes,
    "60 02 00 01"
);
v5_disconnect!(
    mqtt_3_8_1_1_v5_subscribe_reserved_flags_0000_is_malformed,
    "80 09 00 01 00 00 03 61 2f 62 00",
    0x81
);
v311_closed!(
    mqtt_3_8_1_1_v311_subscribe_reserved_flags_0000_closes,
    "80 08 00 01 00 03 61 2f 62 00"
);
v5_disconnect!(
    mqtt_3_10_1_1_v5_unsubscribe_reserved_flags_0000_is_malformed,
    "a0 08 00 01 00 00 03 61 2f 62",
    0x81
);
v311_closed!(
    mqtt_3_10_1_1_v311_unsubscribe_reserved_flags_0000_closes,
    "a0 07 00 01 00 03 61 2f 62"
);
v5_disconnect!(
    mqtt_2_1_3_1_v5_puback_flags_0001_is_malformed,
    "41 02 00 01",
    0x81
);
v5_disconnect!(
    mqtt_2_1_3_1_v5_pubrec_flags_0001_is_malformed,
    "51 02 00 01",
    0x81
);
v5_disconnect!(
    mqtt_2_1_3_1_v5_pubcomp_flags_0001_is_malformed,
    "71 02 00 01",
    0x81
);
v5_disconnect!(
    mqtt_2_1_3_1_v5_pingreq_flags_0001_is_malformed,
    "c1 00",
    0x81
);
v311_closed!(mqtt_2_2_2_2_v311_pingreq_flags_0001_closes, "c1 00");
v5_disconnect!(
    mqtt_2_1_3_1_v5_disconnect_flags_0001_is_malformed,
    "e1 00",
    0x81
);
v5_disconnect!(mqtt_2_1_3_1_v5_auth_flags_0001_is_malformed, "f1 00", 0x81);
v5_disconnect!(mqtt_2_1_2_v5_packet_type_0_is_malformed, "00 00", 0x81);
v311_closed!(mqtt_2_2_1_v311_packet_type_0_closes, "00 00");
v311_closed!(mqtt_2_2_1_v311_packet_type_15_auth_closes, "f0 00");
v5_disconnect!(
    mqtt_4_12_0_v5_auth_without_authentication_method_is_protocol_error,
    "f0 00",
    0x82
);
v5_disconnect!(
    mqtt_1_5_5_v5_remaining_length_of_five_bytes_is_malformed,
    "30 ff ff ff ff 01",
    0x81
);
v311_closed!(
    mqtt_2_2_3_v311_remaining_length_of_five_bytes_closes,
    "30 ff ff ff ff 01"
);
v5_disconnect!(
    mqtt_3_4_2_v5_puback_shorter_than_its_packet_id_is_malformed,
    "40 01 00",
    0x81
);

// ---- 3.1 CONNECT ----

first_packet_closed!(mqtt_3_1_0_1_first_packet_pingreq_closes, "c0 00");
first_packet_closed!(
    mqtt_3_1_0_1_first_packet_publish_closes,
    "30 05 00 01 61 68 69"
);
first_packet_closed!(
    mqtt_3_1_2_3_v311_connect_reserved_flag_closes,
    "10 0c 00 04 4d 51 54 54 04 03 00 3c 00 00"
);
first_packet_closed!(
    mqtt_2_2_2_2_v311_connect_fixed_header_flags_0010_closes,
    "12 0c 00 04 4d 51 54 54 04 02 00 3c 00 00"
);
first_packet_closed!(
    mqtt_3_1_2_14_v311_will_qos_3_closes,
    "10 12 00 04 4d 51 54 54 04 1e 00 3c 00 00 00 01 74 00 01 6d"
);
first_packet_closed!(
    mqtt_3_1_2_13_v311_will_qos_without_will_flag_closes,
    "10 0c 00 04 4d 51 54 54 04 0a 00 3c 00 00"
);
first_packet_closed!(
    mqtt_3_1_2_15_v311_will_retain_without_will_flag_closes,
    "10 0c 00 04 4d 51 54 54 04 22 00 3c 00 00"
);
first_packet_closed!(
    mqtt_3_1_2_22_v311_password_without_user_name_closes,
    "10 0f 00 04 4d 51 54 54 04 42 00 3c 00 00 00 01 70"
);
first_packet_closed!(
    mqtt_1_5_3_1_v311_client_id_invalid_utf8_closes,
    "10 0d 00 04 4d 51 54 54 04 02 00 3c 00 01 ff"
);
first_packet_closed!(
    mqtt_1_5_3_1_v311_user_name_invalid_utf8_closes,
    "10 10 00 04 4d 51 54 54 04 82 00 3c 00 01 63 00 01 ff"
);
first_packet_closed!(
    mqtt_1_5_3_2_v311_client_id_with_u0000_closes,
    "10 0e 00 04 4d 51 54 54 04 02 00 3c 00 02 63 00"
);

v5_connect_refused!(
    mqtt_3_1_2_3_v5_connect_reserved_flag_is_malformed,
    "10 0d 00 04 4d 51 54 54 05 03 00 3c 00 00 00",
    0x81
);
v5_connect_refused!(
    mqtt_3_1_2_12_v5_will_qos_3_is_malformed,
    "10 14 00 04 4d 51 54 54 05 1e 00 3c 00 00 00 00 00 01 74 00 01 6d",
    0x81
);
v5_connect_refused!(
    mqtt_1_5_4_1_v5_client_id_invalid_utf8_is_malformed,
    "10 0e 00 04 4d 51 54 54 05 02 00 3c 00 00 01 ff",
    0x81
);
v5_connect_refused!(
    mqtt_3_1_2_19_v5_user_name_flag_without_user_name_is_malformed,
    "10 0e 00 04 4d 51 54 54 05 82 00 3c 00 00 01 63",
    0x81
);
v5_connect_refused!(
    mqtt_3_1_2_11_v5_receive_maximum_0_is_protocol_error,
    "10 11 00 04 4d 51 54 54 05 02 00 3c 03 21 00 00 00 01 63",
    0x82
);
v5_connect_refused!(
    mqtt_3_1_2_11_v5_duplicate_session_expiry_interval_is_protocol_error,
    "10 18 00 04 4d 51 54 54 05 02 00 3c 0a 11 00 00 00 0a 11 00 00 00 0a 00 01 63",
    0x82
);
v5_connect_refused!(
    mqtt_3_1_2_11_v5_maximum_packet_size_0_is_protocol_error,
    "10 13 00 04 4d 51 54 54 05 02 00 3c 05 27 00 00 00 00 00 01 63",
    0x82
);
v5_connect_refused!(
    mqtt_2_2_2_2_v5_connect_with_topic_alias_property_is_malformed,
    "10 11 00 04 4d 51 54 54 05 02 00 3c 03 23 00 01 00 01 63",
    0x81
);

/// 3.1.1: a protocol level the server does not support gets CONNACK 0x01, then close
/// [MQTT-3.1.2-2]. The answer is in the 3.1.1 format every client level can read.
#[tokio::test]
async fn mqtt_3_1_2_2_unsupported_protocol_level_6_gets_connack_0x01() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    c.send_hex("10 0c 00 04 4d 51 54 54 06 02 00 3c 00 00")
        .await;
    c.expect_hex("20 02 00 01").await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// A protocol name other than "MQTT": the server MAY answer CONNACK 0x01 and MUST NOT go on
/// [MQTT-3.1.2-1].
#[tokio::test]
async fn mqtt_3_1_2_1_v311_bad_protocol_name_is_refused() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    c.send_hex("10 0c 00 04 4d 51 54 58 04 02 00 3c 00 00")
        .await;
    c.expect_connack_code_or_closed(0x01).await;
    assert_broker_still_serves(broker.addr).await;
}

/// 3.1.1: an empty client id with Clean Session 0 gets CONNACK 0x02, then close
/// [MQTT-3.1.3-8].
#[tokio::test]
async fn mqtt_3_1_3_8_v311_empty_client_id_without_clean_session_gets_connack_0x02() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    c.send_hex("10 0c 00 04 4d 51 54 54 04 00 00 3c 00 00")
        .await;
    c.expect_hex("20 02 00 02").await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// 3.1.1: a client id over `max_client_id_len` gets CONNACK 0x02 [MQTT-3.1.3-9].
#[tokio::test]
async fn mqtt_3_1_3_9_v311_client_id_too_long_gets_connack_0x02() {
    let broker = start_broker(|c| c.max_client_id_len = 8).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1_1).await;
    c.send_hex("10 15 00 04 4d 51 54 54 04 02 00 3c 00 09 61 62 63 64 65 66 67 68 69")
        .await;
    c.expect_hex("20 02 00 02").await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// 5.0: a client id over `max_client_id_len` gets CONNACK 0x85 [MQTT-3.1.3-8].
#[tokio::test]
async fn mqtt_3_1_3_8_v5_client_id_too_long_gets_connack_0x85() {
    let broker = start_broker(|c| c.max_client_id_len = 8).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V5).await;
    c.send_hex("10 16 00 04 4d 51 54 54 05 02 00 3c 00 00 09 61 62 63 64 65 66 67 68 69")
        .await;
    let ack = c.expect_connack(0x85).await;
    assert_eq!(
        ack.body[0], 0x00,
        "session present must be 0 [MQTT-3.2.2-6]"
    );
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// 5.0: CONNECT with an Authentication Method we do not offer gets CONNACK 0x8C
/// [MQTT-4.12.0-1].
#[tokio::test]
async fn mqtt_4_12_0_1_v5_authentication_method_gets_connack_0x8c() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V5).await;
    c.send_hex("10 12 00 04 4d 51 54 54 05 02 00 3c 04 15 00 01 78 00 01 63")
        .await;
    c.expect_connack(0x8c).await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// A second CONNECT is a protocol error [MQTT-3.1.0-2].
#[tokio::test]
async fn mqtt_3_1_0_2_v5_second_connect_is_protocol_error() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v5(broker.addr, "twice").await;
    c.send_hex("10 10 00 04 4d 51 54 54 05 02 00 3c 00 00 03 63 6c 69")
        .await;
    c.expect_disconnect(0x82).await;
    assert_broker_still_serves(broker.addr).await;
}

v311_closed!(
    mqtt_3_1_0_2_v311_second_connect_closes,
    "10 0f 00 04 4d 51 54 54 04 02 00 3c 00 03 63 6c 69"
);

// ---- 3.3 PUBLISH ----

v5_disconnect!(
    mqtt_3_3_1_4_v5_publish_qos_3_is_malformed,
    "36 06 00 01 61 00 01 00",
    0x81
);
v311_closed!(
    mqtt_3_3_1_4_v311_publish_qos_3_closes,
    "36 05 00 01 61 00 01"
);
v5_disconnect!(
    mqtt_3_3_1_2_v5_publish_dup_with_qos_0_is_malformed,
    "38 04 00 01 61 00",
    0x81
);
v5_disconnect!(
    mqtt_2_2_1_3_v5_publish_qos_1_packet_id_0_is_protocol_error,
    "32 06 00 01 61 00 00 00",
    0x82
);
v311_closed!(
    mqtt_2_3_1_1_v311_publish_qos_1_packet_id_0_closes,
    "32 05 00 01 61 00 00"
);
v5_disconnect!(
    mqtt_3_3_2_2_v5_publish_topic_with_wildcard_is_topic_name_invalid,
    "30 06 00 03 61 2f 2b 00",
    0x90
);
v311_closed!(
    mqtt_3_3_2_2_v311_publish_topic_with_wildcard_closes,
    "30 05 00 03 61 2f 23"
);
v5_disconnect!(
    mqtt_3_3_2_3_v5_publish_empty_topic_without_alias_is_protocol_error,
    "30 03 00 00 00",
    0x82
);
v311_closed!(mqtt_4_7_3_1_v311_publish_empty_topic_closes, "30 02 00 00");
v5_disconnect!(
    mqtt_3_3_2_8_v5_publish_topic_alias_0_is_topic_alias_invalid,
    "30 07 00 01 61 03 23 00 00",
    0x94
);
v5_disconnect!(
    mqtt_3_3_2_9_v5_publish_topic_alias_above_maximum_is_topic_alias_invalid,
    "30 07 00 01 61 03 23 00 41",
    0x94
);
v5_disconnect!(
    mqtt_3_3_2_3_4_v5_publish_unknown_alias_with_empty_topic_is_protocol_error,
    "30 06 00 00 03 23 00 05",
    0x82
);
v5_disconnect!(
    mqtt_1_5_4_1_v5_publish_topic_invalid_utf8_is_malformed,
    "30 04 00 01 ff 00",
    0x81
);
v5_disconnect!(
    mqtt_1_5_4_2_v5_publish_topic_with_u0000_is_malformed,
    "30 06 00 03 61 00 62 00",
    0x81
);
v311_closed!(
    mqtt_1_5_3_2_v311_publish_topic_with_u0000_closes,
    "30 05 00 03 61 00 62"
);
v5_disconnect!(
    mqtt_1_5_4_1_v5_publish_topic_with_utf16_surrogate_is_malformed,
    "30 06 00 03 ed a0 80 00",
    0x81
);
v311_closed!(
    mqtt_1_5_3_1_v311_publish_topic_invalid_utf8_closes,
    "30 03 00 01 ff"
);
v5_disconnect!(
    mqtt_2_2_2_2_v5_publish_duplicate_message_expiry_is_protocol_error,
    "30 0e 00 01 61 0a 02 00 00 00 0a 02 00 00 00 0a",
    0x82
);
v5_disconnect!(
    mqtt_2_2_2_2_v5_publish_with_session_expiry_property_is_malformed,
    "30 09 00 01 61 05 11 00 00 00 0a",
    0x81
);
v5_disconnect!(
    mqtt_3_3_4_6_v5_publish_with_subscription_identifier_is_protocol_error,
    "30 06 00 01 61 02 0b 01",
    0x82
);
v5_disconnect!(
    mqtt_1_5_4_v5_publish_topic_length_past_packet_end_is_malformed,
    "30 04 00 09 61 62",
    0x81
);
v5_disconnect!(
    mqtt_2_2_2_v5_publish_property_length_past_packet_end_is_malformed,
    "30 05 00 01 61 09 01",
    0x81
);

// ---- 3.8 SUBSCRIBE / 3.10 UNSUBSCRIBE ----

v5_disconnect!(
    mqtt_2_2_1_3_v5_subscribe_packet_id_0_is_protocol_error,
    "82 09 00 00 00 00 03 61 2f 62 00",
    0x82
);
v311_closed!(
    mqtt_2_3_1_1_v311_subscribe_packet_id_0_closes,
    "82 08 00 00 00 03 61 2f 62 00"
);
v5_disconnect!(
    mqtt_3_8_3_2_v5_subscribe_without_filters_is_protocol_error,
    "82 03 00 01 00",
    0x82
);
v311_closed!(
    mqtt_3_8_3_3_v311_subscribe_without_filters_closes,
    "82 02 00 01"
);
v5_disconnect!(
    mqtt_3_8_3_5_v5_subscribe_options_reserved_bits_is_malformed,
    "82 09 00 01 00 00 03 61 2f 62 c0",
    0x81
);
v311_closed!(
    mqtt_3_8_3_4_v311_subscribe_requested_qos_reserved_bits_closes,
    "82 08 00 01 00 03 61 2f 62 04"
);
v311_closed!(
    mqtt_3_8_3_4_v311_subscribe_requested_qos_3_closes,
    "82 08 00 01 00 03 61 2f 62 03"
);
v5_disconnect!(
    mqtt_3_8_3_1_v5_subscribe_maximum_qos_3_is_protocol_error,
    "82 09 00 01 00 00 03 61 2f 62 03",
    0x82
);
v5_disconnect!(
    mqtt_3_8_3_1_v5_subscribe_retain_handling_3_is_protocol_error,
    "82 09 00 01 00 00 03 61 2f 62 30",
    0x82
);
v5_disconnect!(
    mqtt_3_8_3_4_v5_no_local_on_shared_subscription_is_protocol_error,
    "82 10 00 01 00 00 0a 24 73 68 61 72 65 2f 67 2f 61 04",
    0x82
);
v5_disconnect!(
    mqtt_4_7_1_1_v5_filter_hash_not_last_is_topic_filter_invalid,
    "82 0b 00 01 00 00 05 61 2f 23 2f 62 00",
    0x8f
);
v5_disconnect!(
    mqtt_4_7_1_2_v5_filter_plus_inside_level_is_topic_filter_invalid,
    "82 08 00 01 00 00 02 61 2b 00",
    0x8f
);
v311_closed!(
    mqtt_4_7_1_2_v311_filter_hash_not_last_closes,
    "82 0a 00 01 00 05 61 2f 23 2f 62 00"
);
v5_disconnect!(
    mqtt_4_8_2_1_v5_shared_filter_without_topic_filter_is_topic_filter_invalid,
    "82 0e 00 01 00 00 08 24 73 68 61 72 65 2f 67 00",
    0x8f
);
v5_disconnect!(
    mqtt_4_8_2_1_v5_shared_filter_with_empty_share_name_is_topic_filter_invalid,
    "82 0f 00 01 00 00 09 24 73 68 61 72 65 2f 2f 61 00",
    0x8f
);
v5_disconnect!(
    mqtt_4_8_2_2_v5_shared_filter_with_wildcard_in_share_name_is_topic_filter_invalid,
    "82 11 00 01 00 00 0b 24 73 68 61 72 65 2f 67 2b 2f 61 00",
    0x8f
);
v5_disconnect!(
    mqtt_3_8_2_1_2_v5_subscription_identifier_0_is_protocol_error,
    "82 0b 00 01 02 0b 00 00 03 61 2f 62 00",
    0x82
);
v5_disconnect!(
    mqtt_3_8_2_1_2_v5_duplicate_subscription_identifier_is_protocol_error,
    "82 0d 00 01 04 0b 01 0b 02 00 03 61 2f 62 00",
    0x82
);
v5_disconnect!(
    mqtt_2_2_1_3_v5_unsubscribe_packet_id_0_is_protocol_error,
    "a2 08 00 00 00 00 03 61 2f 62",
    0x82
);
v5_disconnect!(
    mqtt_3_10_3_2_v5_unsubscribe_without_filters_is_protocol_error,
    "a2 03 00 01 00",
    0x82
);
v311_closed!(
    mqtt_3_10_3_2_v311_unsubscribe_without_filters_closes,
    "a2 02 00 01"
);

// ---- 3.14 DISCONNECT ----

v5_disconnect!(
    mqtt_3_14_2_2_v5_disconnect_session_expiry_0_to_nonzero_is_protocol_error,
    "e0 07 00 05 11 00 00 00 0a",
    0x82
);

// ---- More of the same rules in the other protocol version ----

v311_closed!(
    mqtt_3_3_1_2_v311_publish_dup_with_qos_0_closes,
    "38 03 00 01 61"
);
v311_closed!(
    mqtt_4_8_2_v311_shared_filter_without_topic_filter_closes,
    "82 0d 00 01 00 08 24 73 68 61 72 65 2f 67 00"
);
v311_closed!(
    mqtt_4_7_1_2_v311_filter_plus_inside_level_closes,
    "82 07 00 01 00 02 61 2b 00"
);
v311_closed!(
    mqtt_1_5_3_1_v311_subscribe_filter_invalid_utf8_closes,
    "82 06 00 01 00 01 ff 00"
);
v5_disconnect!(
    mqtt_1_5_4_1_v5_subscribe_filter_invalid_utf8_is_malformed,
    "82 07 00 01 00 00 01 ff 00",
    0x81
);
v5_connect_refused!(
    mqtt_1_5_4_1_v5_user_name_invalid_utf8_is_malformed,
    "10 11 00 04 4d 51 54 54 05 82 00 3c 00 00 01 63 00 01 ff",
    0x81
);
v5_connect_refused!(
    mqtt_3_1_3_11_v5_will_topic_with_wildcard_is_refused,
    "10 15 00 04 4d 51 54 54 05 06 00 3c 00 00 01 63 00 00 01 23 00 01 6d",
    0x90
);
first_packet_closed!(
    mqtt_3_1_3_11_v311_will_topic_with_wildcard_closes,
    "10 13 00 04 4d 51 54 54 04 06 00 3c 00 01 63 00 01 23 00 01 6d"
);

/// 5.0 allows a password without a user name (3.1.2.9), unlike 3.1.1.
#[tokio::test]
async fn mqtt_3_1_2_9_v5_password_without_user_name_is_accepted() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V5).await;
    c.send_hex("10 11 00 04 4d 51 54 54 05 42 00 3c 00 00 01 63 00 01 70")
        .await;
    c.expect_connack(0x00).await;
    c.ping().await;
}

// ---- Packets only a server sends, sent by a client: a protocol error ----

v5_disconnect!(
    mqtt_3_2_v5_client_sending_connack_is_protocol_error,
    "20 03 00 00 00",
    0x82
);
v5_disconnect!(
    mqtt_3_9_v5_client_sending_suback_is_protocol_error,
    "90 04 00 01 00 00",
    0x82
);
v5_disconnect!(
    mqtt_3_11_v5_client_sending_unsuback_is_protocol_error,
    "b0 04 00 01 00 00",
    0x82
);
v5_disconnect!(
    mqtt_3_13_v5_client_sending_pingresp_is_protocol_error,
    "d0 00",
    0x82
);
v311_closed!(mqtt_3_2_v311_client_sending_connack_closes, "20 02 00 00");
v311_closed!(mqtt_3_13_v311_client_sending_pingresp_closes, "d0 00");

/// A CONNECT announcing more than `max_packet_size` (here 2 MiB against 1 MiB): refused from
/// the fixed header, with CONNACK 0x95 or by closing.
#[tokio::test]
async fn mqtt_3_1_v5_connect_larger_than_maximum_is_refused() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V5).await;
    c.send_hex("10 80 80 80 01 00 04 4d 51 54 54 05").await;
    c.expect_connack_code_or_closed(0x95).await;
    assert_broker_still_serves(broker.addr).await;
}

// ---- Limits and flow control ----

/// A packet over `max_packet_size` is refused from its fixed header alone: the body is never
/// sent, yet DISCONNECT 0x95 comes [MQTT-3.2.2-?; issue 2: checked before buffering].
#[tokio::test]
async fn mqtt_4_13_v5_packet_larger_than_maximum_is_refused_before_its_body() {
    let broker = start_broker(|c| c.max_packet_size = 1024).await;
    let mut c = RawClient::connect_v5(broker.addr, "big").await;
    c.send_hex("30 ff ff 03 00 01 61 00").await;
    c.expect_disconnect(0x95).await;
    assert_broker_still_serves(broker.addr).await;
}

/// 3.1.1: the same oversized announcement closes the connection.
#[tokio::test]
async fn mqtt_4_13_v311_packet_larger_than_maximum_closes_before_its_body() {
    let broker = start_broker(|c| c.max_packet_size = 1024).await;
    let mut c = RawClient::connect_v311(broker.addr, "big").await;
    c.send_hex("30 ff ff 03 00 01 61").await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// 5.0: more unacknowledged QoS 2 PUBLISHes than our Receive Maximum → DISCONNECT 0x93
/// [MQTT-3.3.4-9].
#[tokio::test]
async fn mqtt_3_3_4_9_v5_receive_maximum_exceeded_disconnects_0x93() {
    let broker = start_broker(|c| c.receive_maximum = 2).await;
    let (mut c, ack) = RawClient::connect_v5_with(broker.addr, "flood", 0x02, 60, "").await;
    // CONNACK announces Receive Maximum 2 (property 0x21 00 02).
    assert!(
        common::to_hex(&ack.body).contains("21 00 02"),
        "CONNACK lacks Receive Maximum 2: {}",
        common::to_hex(&ack.raw())
    );
    c.send_hex("34 06 00 01 61 00 01 00").await;
    c.send_hex("34 06 00 01 61 00 02 00").await;
    c.expect_ack(0x50, 1).await;
    c.expect_ack(0x50, 2).await;
    c.send_hex("34 06 00 01 61 00 03 00").await;
    c.expect_disconnect(0x93).await;
    assert_broker_still_serves(broker.addr).await;
}

/// 5.0: PUBREL for an unknown packet id gets PUBCOMP 0x92 and the connection stays up
/// [MQTT-4.3.3-?] (3.7.2.1).
#[tokio::test]
async fn mqtt_3_7_2_1_v5_pubrel_unknown_id_gets_pubcomp_0x92() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v5(broker.addr, "pubrel").await;
    c.send_hex("62 02 00 07").await;
    let frame = c.read_frame().await;
    assert_eq!(
        frame.first,
        0x70,
        "expected PUBCOMP, got {}",
        common::to_hex(&frame.raw())
    );
    assert_eq!(frame.packet_id(), 7);
    assert_eq!(
        frame.body.get(2).copied(),
        Some(0x92),
        "{}",
        common::to_hex(&frame.raw())
    );
    c.ping().await;
    assert_broker_still_serves(broker.addr).await;
}

/// 3.1.1: PUBREL for an unknown packet id gets a plain PUBCOMP [MQTT-4.3.3-2 flow].
#[tokio::test]
async fn mqtt_3_6_4_1_v311_pubrel_unknown_id_gets_pubcomp() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v311(broker.addr, "pubrel").await;
    c.send_hex("62 02 00 07").await;
    c.expect_hex("70 02 00 07").await;
    c.ping().await;
    assert_broker_still_serves(broker.addr).await;
}

/// A client silent for 1.5 × its keep alive is disconnected [MQTT-3.1.2-24]; in 5.0 the
/// broker may say DISCONNECT 0x8D first.
#[tokio::test]
async fn mqtt_3_1_2_24_v5_keep_alive_timeout_closes() {
    let broker = start_broker(|_| {}).await;
    let (mut c, _) = RawClient::connect_v5_with(broker.addr, "sleepy", 0x02, 1, "").await;
    match c.next(WAIT).await {
        Next::Closed(rest) => assert!(rest.is_empty()),
        Next::Frame(frame) => {
            assert_eq!(frame.first, 0xe0, "{}", common::to_hex(&frame.raw()));
            assert_eq!(frame.body.first().copied(), Some(0x8d));
            c.expect_closed().await;
        }
        Next::Silent => panic!("still connected after {WAIT:?} with keep alive 1 s"),
    }
    assert_broker_still_serves(broker.addr).await;
}

/// 3.1.1: same, closed without an answer [MQTT-3.1.2-24].
#[tokio::test]
async fn mqtt_3_1_2_24_v311_keep_alive_timeout_closes() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v311_with(broker.addr, "sleepy", 0x02, 1).await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// 3.1: a malformed packet after a good MQIsdp CONNECT closes too.
#[tokio::test]
async fn mqtt_3_1_v31_publish_qos_3_closes() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::open(broker.addr, ProtocolVersion::V3_1).await;
    c.send_hex(&common::connect_v31_hex("old", 60)).await;
    c.expect_hex("20 02 00 00").await;
    c.send_hex("36 05 00 01 61 00 01").await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// The connection ends mid-packet (remaining length says 10, 3 bytes come, then EOF): the
/// broker drops the connection and nothing else is disturbed.
#[tokio::test]
async fn mqtt_4_13_truncated_packet_then_eof_is_dropped() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v311(broker.addr, "trunc").await;
    c.send_hex("30 0a 00 01 61").await;
    c.shutdown_write().await;
    c.expect_closed().await;
    assert_broker_still_serves(broker.addr).await;
}

/// A truncated remaining length (continuation bit set, then EOF).
#[tokio::test]
async fn mqtt_1_5_5_truncated_remaining_length_then_eof_is_dropped() {
    let broker = start_broker(|_| {}).await;
    let mut c = RawClient::connect_v5(broker.addr, "trunc").await;
    c.send_hex("30 ff").await;
    c.shutdown_write().await;
    match c.next(WAIT).await {
        Next::Closed(rest) => assert!(rest.is_empty()),
        // The broker may still report the malformed packet.
        Next::Frame(frame) => {
            assert_eq!(frame.first, 0xe0, "{}", common::to_hex(&frame.raw()));
            assert_eq!(frame.body.first().copied(), Some(0x81));
            c.expect_closed().await;
        }
        Next::Silent => panic!("still connected"),
    }
    assert_broker_still_serves(broker.addr).await;
}

/// A topic deeper than `max_topic_levels` is refused like an invalid topic name.
#[tokio::test]
async fn mqtt_4_7_v5_topic_deeper_than_max_topic_levels_is_topic_name_invalid() {
    let broker = start_broker(|c| c.max_topic_levels = 3).await;
    let mut c = RawClient::connect_v5(broker.addr, "deep").await;
    c.send_hex("30 0a 00 07 61 2f 62 2f 63 2f 64 00").await;
    c.expect_disconnect(0x90).await;
    assert_broker_still_serves(broker.addr).await;
}

/// Many connections send pseudo-random garbage after a valid CONNECT (or instead of one);
/// none may panic the broker or disturb a subscriber connected before them.
#[tokio::test]
async fn garbage_from_many_connections_does_not_disturb_others() {
    let broker = start_broker(|_| {}).await;
    let mut watcher = RawClient::connect_v311(broker.addr, "watcher").await;
    watcher.subscribe(1, "calm", 1).await;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let garbage = rng.bytes(256);
        let addr = broker.addr;
        tasks.push(tokio::spawn(async move {
            let version = if i % 2 == 0 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V3_1_1
            };
            let mut c = RawClient::open(addr, version).await;
            match i % 4 {
                0 => c.send_hex(&common::connect_v5_hex("", 0x02, 60, "")).await,
                1 => c.send_hex(&common::connect_v311_hex("", 0x02, 60)).await,
                // 2, 3: garbage instead of CONNECT.
                _ => {}
            }
            c.send_lossy(&garbage).await;
            // Whatever the broker answers, it must end the connection within WAIT.
            for _ in 0..64 {
                match c.next(WAIT).await {
                    Next::Frame(_) => continue,
                    Next::Closed(_) => return,
                    Next::Silent => break,
                }
            }
            // Garbage that happens to be a valid packet prefix may leave the broker waiting
            // for more bytes; closing our side must then end it.
            c.shutdown_write().await;
        }));
    }
    for task in tasks {
        tokio::time::timeout(WAIT * 3, task)
            .await
            .expect("garbage connection task timed out")
            .expect("garbage connection task panicked");
    }

    assert_watcher_still_served(broker.addr, &mut watcher).await;
}

/// A message published on `calm` reaches `watcher` (subscribed to it before the
/// offenders came), and new clients are served.
async fn assert_watcher_still_served(addr: std::net::SocketAddr, watcher: &mut RawClient) {
    let mut publisher = RawClient::connect_v311(addr, "pub").await;
    publisher.publish("calm", 1, 7, b"still").await;
    publisher.expect_hex("40 02 00 07").await;
    let aviary_codec::Packet::Publish(p) = watcher.read_packet().await else {
        panic!("expected PUBLISH")
    };
    assert_eq!(&p.payload[..], b"still");
    assert_broker_still_serves(addr).await;
}

/// Deterministic pseudo-random numbers for the garbage and mutation tests (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 33) as usize % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// A packet: first byte, remaining length, body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A two-byte length and the bytes.
fn prefixed(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// 5.0 properties: a length and up to four of them, each an identifier (valid or not)
/// followed by a few bytes that may or may not fit it.
fn properties(rng: &mut Rng) -> Vec<u8> {
    const IDS: [u8; 20] = [
        0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x11, 0x12, 0x15, 0x16, 0x17, 0x19, 0x1f, 0x21, 0x22,
        0x23, 0x26, 0x27, 0x00, 0xff,
    ];
    let mut props = Vec::new();
    for _ in 0..rng.below(5) {
        props.push(IDS[rng.below(IDS.len())]);
        let n = rng.below(7);
        props.extend(rng.bytes(n));
    }
    let mut out = packet(0, &props);
    out.remove(0); // the length alone, as a variable byte integer
    out
}

/// A valid-looking session for `version` (3, 4 or 5): CONNECT, then a few packets of any
/// kind with edge-case topics.
fn session(rng: &mut Rng, version: u8) -> Vec<u8> {
    let v5 = version == 5;
    let props = |rng: &mut Rng| if v5 { properties(rng) } else { Vec::new() };
    let name: &[u8] = if version == 3 { b"MQIsdp" } else { b"MQTT" };
    let mut body = prefixed(name);
    body.extend([version, 0x02, 0, 30]);
    body.extend(props(rng));
    body.extend(prefixed(format!("mut-{}", rng.below(50)).as_bytes()));
    let mut out = packet(0x10, &body);
    const TOPICS: [&[u8]; 9] = [
        b"m/t",
        b"+/x",
        b"#",
        b"$SYS/x",
        b"a//b",
        b"",
        b"\xff\xfe",
        b"a\x00b",
        b"$share/g/m/t",
    ];
    for _ in 0..rng.below(6) {
        let topic = TOPICS[rng.below(TOPICS.len())];
        let qos = rng.below(4) as u8;
        let packet_id = [0, rng.below(3) as u8];
        let next = match rng.below(7) {
            0 | 1 => {
                let mut body = prefixed(topic);
                if qos > 0 {
                    body.extend(packet_id);
                }
                body.extend(props(rng));
                let payload_len = rng.below(40);
                body.extend(rng.bytes(payload_len));
                packet(0x30 | qos << 1 | rng.below(2) as u8, &body)
            }
            2 => {
                let mut body = packet_id.to_vec();
                body.extend(props(rng));
                body.extend(prefixed(topic));
                body.push((rng.next() >> 56) as u8);
                packet(0x82, &body)
            }
            3 => {
                let mut body = packet_id.to_vec();
                body.extend(props(rng));
                body.extend(prefixed(topic));
                packet(0xa2, &body)
            }
            4 => {
                // An acknowledgement, PINGREQ, DISCONNECT or AUTH with a short body.
                const FIRST: [u8; 8] = [0x40, 0x50, 0x62, 0x70, 0xc0, 0xe0, 0xf0, 0x20];
                let n = rng.below(6);
                packet(FIRST[rng.below(FIRST.len())], &rng.bytes(n))
            }
            5 => packet(0x10, &body),
            _ => {
                let n = 1 + rng.below(30);
                rng.bytes(n)
            }
        };
        out.extend(next);
    }
    out
}

/// One to four mutations: a byte replaced, a bit flipped, a byte inserted or deleted,
/// the tail cut off or random bytes appended.
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len());
        match rng.below(6) {
            0 if !bytes.is_empty() => bytes[at] = (rng.next() >> 56) as u8,
            1 if !bytes.is_empty() => bytes[at] ^= 1 << rng.below(8),
            2 => bytes.insert(at, (rng.next() >> 56) as u8),
            3 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            4 if bytes.len() > 2 => bytes.truncate(at.max(1)),
            _ => {
                let n = 1 + rng.below(20);
                bytes.extend(rng.bytes(n));
            }
        }
    }
    bytes
}

/// Many connections send well-formed sessions (3.1, 3.1.1 and 5.0: CONNECT with
/// properties, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, acknowledgements) with a few bytes
/// mutated, so that decoding fails deep inside packets and properties rather than at the
/// first byte; none may panic the broker, keep a connection open once its peer has shut
/// down, or disturb a subscriber connected before them.
#[tokio::test]
async fn mutated_sessions_from_many_connections_do_not_disturb_others() {
    let broker = start_broker(|_| {}).await;
    let mut watcher = RawClient::connect_v311(broker.addr, "watcher").await;
    watcher.subscribe(1, "calm", 1).await;
    let mut rng = Rng(0x005e_ed0f_a71a_5e55);
    // How the sessions ended: accepted (a CONNACK 0), closed by the broker before our
    // side shut down, left waiting for more bytes.
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let waiting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    const CONNECTIONS: usize = 240;
    const AT_ONCE: usize = 24;
    for wave in 0..CONNECTIONS / AT_ONCE {
        let mut tasks = Vec::new();
        for _ in 0..AT_ONCE {
            let version = [3, 4, 5][rng.below(3)];
            let mut bytes = session(&mut rng, version);
            // One session in five goes unmutated: the broker must serve it as well.
            if rng.below(5) > 0 {
                bytes = mutate(&mut rng, bytes);
            }
            let addr = broker.addr;
            let (accepted, closed, waiting) = (accepted.clone(), closed.clone(), waiting.clone());
            let count = |n: &std::sync::atomic::AtomicUsize| {
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            };
            tasks.push(tokio::spawn(async move {
                let parse_as = if version == 5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V3_1_1
                };
                let mut c = RawClient::open(addr, parse_as).await;
                c.send_lossy(&bytes).await;
                // Answers until the broker closes or goes quiet (it may be waiting for
                // the rest of a packet whose length was mutated upwards).
                for _ in 0..64 {
                    // Long enough for a loaded machine to answer; what stays silent for it
                    // waits for bytes.
                    match c.next(Duration::from_secs(1)).await {
                        Next::Frame(f) => {
                            if f.first == 0x20 && f.body.get(1) == Some(&0) {
                                count(&accepted);
                            }
                        }
                        Next::Closed(_) => {
                            count(&closed);
                            return;
                        }
                        Next::Silent => break,
                    }
                }
                count(&waiting);
                c.shutdown_write().await;
                for _ in 0..64 {
                    match c.next(WAIT).await {
                        Next::Frame(f) => {
                            if f.first == 0x20 && f.body.get(1) == Some(&0) {
                                count(&accepted);
                            }
                        }
                        Next::Closed(_) => return,
                        Next::Silent => panic!("the broker kept a half-closed connection open"),
                    }
                }
            }));
        }
        for task in tasks {
            tokio::time::timeout(WAIT * 3, task)
                .await
                .unwrap_or_else(|_| panic!("a connection of wave {wave} timed out"))
                .unwrap_or_else(|e| panic!("a connection of wave {wave} failed: {e}"));
        }
    }
    // The inputs reach past CONNECT and end connections both ways (they would not if the
    // generator only made garbage, or only valid sessions).
    let load = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::Relaxed);
    let (accepted, closed, waiting) = (load(&accepted), load(&closed), load(&waiting));
    eprintln!("accepted {accepted}, closed by the broker {closed}, left waiting {waiting}");
    assert!(accepted >= CONNECTIONS / 4, "{accepted} accepted");
    assert!(closed >= CONNECTIONS / 8, "{closed} closed by the broker");

    assert_watcher_still_served(broker.addr, &mut watcher).await;
}
