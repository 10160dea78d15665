"""PUBLISH / SUBSCRIBE with paho-mqtt: QoS 0/1/2 both ways, downgrade, wildcards, unsubscribe."""

import itertools

import pytest

from interop_client import ALL_VERSIONS, V5, payloads, unique_topic, version_id

QOS = [0, 1, 2]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
@pytest.mark.parametrize("pub_qos", QOS)
@pytest.mark.parametrize("sub_qos", QOS)
def test_mqtt_3_8_4_6_delivered_at_min_of_pub_and_sub_qos(clients, version, pub_qos, sub_qos):
    topic = unique_topic()
    sub = clients.connected(version)
    pub = clients.connected(version)
    assert sub.subscribe(topic, sub_qos) == [sub_qos]
    sent = payloads(f"q{pub_qos}", 5)
    for p in sent:
        pub.publish(topic, p, pub_qos)
    got = sub.get_n(len(sent))
    # Per publisher and topic, order is kept [MQTT-4.6.0-5]; QoS is min(pub, sub) [MQTT-3.8.4-6].
    assert [m.payload for m in got] == sent
    assert all(m.topic == topic for m in got)
    assert all(m.qos == min(pub_qos, sub_qos) for m in got)
    assert all(not m.retain for m in got)
    sub.expect_nothing(0.3)


@pytest.mark.parametrize("pub_version,sub_version", list(itertools.product(ALL_VERSIONS, repeat=2)),
                         ids=lambda v: version_id(v))
def test_cross_version_delivery_qos2(clients, pub_version, sub_version):
    topic = unique_topic()
    sub = clients.connected(sub_version)
    pub = clients.connected(pub_version)
    sub.subscribe(topic, 2)
    pub.publish(topic, b"across versions", 2)
    m = sub.get()
    assert (m.topic, m.payload, m.qos) == (topic, b"across versions", 2)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_mqtt_4_7_wildcards(clients, version):
    base = unique_topic()
    sub = clients.connected(version)
    pub = clients.connected(version)
    assert sub.subscribe([(f"{base}/+/temp", 1), (f"{base}/house/#", 1)]) == [1, 1]
    pub.publish(f"{base}/room1/temp", b"a", 1)
    pub.publish(f"{base}/room1/hum", b"b", 1)  # matches nothing
    pub.publish(f"{base}/house", b"c", 1)  # '#' includes the parent level [MQTT-4.7.1-2]
    pub.publish(f"{base}/house/x/y", b"d", 1)
    got = sorted((m.topic, m.payload) for m in sub.get_n(3))
    assert got == sorted([(f"{base}/room1/temp", b"a"), (f"{base}/house", b"c"),
                          (f"{base}/house/x/y", b"d")])
    sub.expect_nothing(0.3)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_mqtt_4_7_2_1_dollar_topics_not_matched_by_leading_wildcard(clients, version):
    tail = unique_topic("x")
    sub = clients.connected(version)
    pub = clients.connected(version)
    sub.subscribe("#", 0)
    sub.subscribe("+/" + tail, 0)
    sub.subscribe("$dollar/" + tail, 0)
    pub.publish("$dollar/" + tail, b"dollar", 0)
    m = sub.get()
    assert (m.topic, m.payload) == ("$dollar/" + tail, b"dollar")
    # Only the explicit `$dollar/...` filter matched; `#` and `+/...` did not [MQTT-4.7.2-1].
    others = [x for x in sub.drain(0.5) if x.topic == "$dollar/" + tail]
    assert others == []


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_mqtt_3_10_4_unsubscribe_stops_delivery(clients, version):
    topic = unique_topic()
    sub = clients.connected(version)
    pub = clients.connected(version)
    sub.subscribe(topic, 1)
    pub.publish(topic, b"before", 1)
    assert sub.get().payload == b"before"
    codes = sub.unsubscribe(topic)
    if version == V5:
        assert codes == [0x00]  # Success
    pub.publish(topic, b"after", 1)
    sub.expect_nothing(0.5)


def test_mqtt_3_11_3_unsubscribe_unknown_filter_v5_reason(clients):
    sub = clients.connected(V5)
    # 0x11 No subscription existed.
    assert sub.unsubscribe(unique_topic()) == [0x11]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_mqtt_3_8_4_3_resubscribe_replaces_subscription(clients, version):
    topic = unique_topic()
    sub = clients.connected(version)
    pub = clients.connected(version)
    assert sub.subscribe(topic, 2) == [2]
    assert sub.subscribe(topic, 0) == [0]
    pub.publish(topic, b"once", 2)
    m = sub.get()
    # Replaced, not added: one copy, at the new maximum QoS.
    assert (m.payload, m.qos) == (b"once", 0)
    sub.expect_nothing(0.3)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_large_payload_roundtrip(clients, version):
    topic = unique_topic()
    sub = clients.connected(version)
    pub = clients.connected(version)
    sub.subscribe(topic, 1)
    body = bytes(range(256)) * 1024  # 256 KiB, every byte value
    pub.publish(topic, body, 1)
    assert sub.get().payload == body


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_many_messages_qos1_in_order(clients, version):
    topic = unique_topic()
    sub = clients.connected(version)
    pub = clients.connected(version)
    sub.subscribe(topic, 1)
    sent = payloads("m", 200)
    for p in sent:
        pub.publish(topic, p, 1, wait=False)
    got = sub.get_n(len(sent), timeout=15)
    assert [m.payload for m in got] == sent


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_mqtt_3_3_5_1_overlapping_subscriptions_max_qos(clients, version):
    base = unique_topic()
    sub = clients.connected(version)
    sub.subscribe(f"{base}/#", 0)
    sub.subscribe(f"{base}/x", 2)
    pub = clients.connected(version)
    pub.publish(f"{base}/x", b"overlap", 2)
    copies = [sub.get()] + sub.drain(0.5)
    # [MQTT-3.3.5-1] (5.0: [MQTT-3.3.4-2]): delivered respecting the maximum QoS of all matching
    # subscriptions; one copy per subscription is allowed too.
    assert 1 <= len(copies) <= 2
    assert all(m.payload == b"overlap" for m in copies)
    assert max(m.qos for m in copies) == 2


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_publisher_receives_own_message_without_no_local(clients, version):
    topic = unique_topic()
    c = clients.connected(version)
    c.subscribe(topic, 1)
    c.publish(topic, b"echo", 1)
    assert c.get().payload == b"echo"


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_utf8_topic_and_binary_payload(clients, version):
    topic = unique_topic() + "/ünïcødé/日本"
    sub = clients.connected(version)
    sub.subscribe(topic, 1)
    pub = clients.connected(version)
    body = b"\x00\xff\x00binary\x80"
    pub.publish(topic, body, 1)
    m = sub.get()
    assert (m.topic, m.payload) == (topic, body)


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_empty_payload_non_retained(clients, version):
    topic = unique_topic()
    sub = clients.connected(version)
    sub.subscribe(topic, 2)
    pub = clients.connected(version)
    pub.publish(topic, b"", 2)
    m = sub.get()
    assert (m.payload, m.retain) == (b"", False)


def test_mqtt_3_11_3_unsubscribe_several_filters_v5_reasons(clients):
    t1, t2 = unique_topic(), unique_topic()
    sub = clients.connected(V5)
    sub.subscribe(t1, 1)
    # One UNSUBACK reason code per filter, in order [MQTT-3.11.3-1]: 0x00 Success, 0x11 none.
    assert sub.unsubscribe([t1, t2]) == [0x00, 0x11]


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_fan_out_to_many_subscribers(clients, version):
    topic = unique_topic()
    subs = [clients.connected(version) for _ in range(20)]
    for s in subs:
        s.subscribe(topic, 1)
    pub = clients.connected(version)
    pub.publish(topic, b"to everyone", 1)
    for s in subs:
        assert s.get().payload == b"to everyone"
    for s in subs:
        s.expect_nothing(0.05)
