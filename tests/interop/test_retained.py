"""Retained messages with paho-mqtt: set, replace, delete, delivery on subscribe, and the
MQTT 5 subscription options Retain Handling and Retain As Published."""

import pytest

from interop_client import ALL_VERSIONS, V5, sub_options, unique_topic, version_id

versions = pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)


@versions
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_3_3_1_6_retained_delivered_on_subscribe_with_retain_flag(clients, version, qos):
    topic = unique_topic("ret")
    pub = clients.connected(version)
    pub.publish(topic, b"kept", qos, retain=True)
    sub = clients.connected(version)
    sub.subscribe(topic, 2)
    m = sub.get()
    # [MQTT-3.3.1-6] new subscription gets the retained message; [MQTT-3.3.1-8] with RETAIN=1.
    assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"kept", True, qos)
    sub.expect_nothing(0.3)


@versions
def test_mqtt_3_3_1_7_retained_replaced_by_newer(clients, version):
    topic = unique_topic("ret")
    pub = clients.connected(version)
    pub.publish(topic, b"first", 1, retain=True)
    pub.publish(topic, b"second", 1, retain=True)
    sub = clients.connected(version)
    sub.subscribe(topic, 1)
    m = sub.get()
    assert (m.payload, m.retain) == (b"second", True)
    sub.expect_nothing(0.3)


@versions
def test_mqtt_3_3_1_10_empty_retained_payload_deletes(clients, version):
    topic = unique_topic("ret")
    pub = clients.connected(version)
    pub.publish(topic, b"doomed", 1, retain=True)
    live = clients.connected(version)
    live.subscribe(topic, 1)
    assert live.get().payload == b"doomed"
    pub.publish(topic, b"", 1, retain=True)
    # [MQTT-3.3.1-10]/[MQTT-3.3.1-11]: the empty retained message is forwarded to current
    # subscribers but is not stored, and the old retained message is removed.
    m = live.get()
    assert m.payload == b""
    later = clients.connected(version)
    later.subscribe(topic, 1)
    later.expect_nothing(0.7)


@versions
def test_mqtt_3_3_1_9_live_message_to_existing_subscriber_has_retain_0(clients, version):
    topic = unique_topic("ret")
    sub = clients.connected(version)
    sub.subscribe(topic, 1)
    pub = clients.connected(version)
    pub.publish(topic, b"live", 1, retain=True)
    m = sub.get()
    # 3.1.1 [MQTT-3.3.1-9]; 5.0 [MQTT-3.3.1-13] with Retain As Published = 0.
    assert (m.payload, m.retain) == (b"live", False)


@versions
def test_retained_on_wildcard_subscribe_and_downgraded(clients, version):
    base = unique_topic("ret")
    pub = clients.connected(version)
    pub.publish(f"{base}/a", b"A", 2, retain=True)
    pub.publish(f"{base}/b/c", b"BC", 1, retain=True)
    pub.publish(f"{base}/d", b"not retained", 1)
    sub = clients.connected(version)
    sub.subscribe(f"{base}/#", 0)
    got = sorted((m.topic, m.payload, m.qos, m.retain) for m in sub.get_n(2))
    assert got == [(f"{base}/a", b"A", 0, True), (f"{base}/b/c", b"BC", 0, True)]
    sub.expect_nothing(0.3)


def test_mqtt_3_3_1_9_retain_handling_0_sends_on_every_subscribe(clients):
    topic = unique_topic("rh")
    pub = clients.connected(V5)
    pub.publish(topic, b"r", 1, retain=True)
    sub = clients.connected(V5)
    sub.subscribe(topic, options=sub_options(1, retainHandling=0))
    assert sub.get().payload == b"r"
    # [MQTT-3.3.1-9]: Retain Handling 0 sends retained messages on every subscribe.
    sub.subscribe(topic, options=sub_options(1, retainHandling=0))
    assert sub.get().payload == b"r"


def test_mqtt_3_3_1_10_retain_handling_1_only_for_new_subscription(clients):
    topic = unique_topic("rh")
    pub = clients.connected(V5)
    pub.publish(topic, b"r", 1, retain=True)
    sub = clients.connected(V5)
    sub.subscribe(topic, options=sub_options(1, retainHandling=1))
    assert sub.get().payload == b"r"
    # [MQTT-3.3.1-10]: not sent again when the subscription already existed.
    sub.subscribe(topic, options=sub_options(1, retainHandling=1))
    sub.expect_nothing(0.7)


def test_mqtt_3_3_1_11_retain_handling_2_never_sends_retained(clients):
    topic = unique_topic("rh")
    pub = clients.connected(V5)
    pub.publish(topic, b"r", 1, retain=True)
    sub = clients.connected(V5)
    sub.subscribe(topic, options=sub_options(1, retainHandling=2))
    sub.expect_nothing(0.7)
    # Live messages still flow.
    pub.publish(topic, b"live", 1)
    assert sub.get().payload == b"live"


def test_mqtt_3_3_1_12_retain_as_published(clients):
    topic = unique_topic("rap")
    rap = clients.connected(V5)
    rap.subscribe(topic, options=sub_options(1, retainAsPublished=True))
    plain = clients.connected(V5)
    plain.subscribe(topic, options=sub_options(1, retainAsPublished=False))
    pub = clients.connected(V5)
    pub.publish(topic, b"with retain", 1, retain=True)
    pub.publish(topic, b"without", 1, retain=False)
    # [MQTT-3.3.1-12]: RAP=1 keeps the publisher's RETAIN flag; [MQTT-3.3.1-13]: RAP=0 clears it.
    assert [(m.payload, m.retain) for m in rap.get_n(2)] == [(b"with retain", True), (b"without", False)]
    assert [(m.payload, m.retain) for m in plain.get_n(2)] == [(b"with retain", False), (b"without", False)]
    pub.publish(topic, b"", 1, retain=True)  # clean up the retained message


@versions
def test_retained_message_survives_publisher_disconnect(clients, version):
    topic = unique_topic("ret")
    pub = clients.connected(version)
    pub.publish(topic, b"stays", 2, retain=True)
    pub.disconnect()
    sub = clients.connected(version)
    sub.subscribe(topic, 2)
    m = sub.get()
    assert (m.payload, m.retain, m.qos) == (b"stays", True, 2)
