"""Will messages with paho-mqtt and a raw client: published on abnormal loss of the connection,
not after a normal DISCONNECT; MQTT 5 Will Delay Interval and DISCONNECT 0x04."""

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

import raw_mqtt as raw
from interop_client import ALL_VERSIONS, V5, connect_props, props, unique_client_id, unique_topic, version_id

versions = pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)


@versions
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_3_1_2_8_will_published_on_abnormal_disconnect(clients, version, qos):
    topic = unique_topic("will")
    watcher = clients.connected(version)
    watcher.subscribe(topic, 2)
    dying = clients.new(version)
    dying.will_set(topic, b"gone", qos=qos)
    dying.connect()
    dying.kill()
    m = watcher.get()
    assert (m.topic, m.payload, m.qos, m.retain) == (topic, b"gone", qos, False)


@versions
def test_mqtt_3_1_2_10_will_not_published_after_normal_disconnect(clients, version):
    topic = unique_topic("will")
    watcher = clients.connected(version)
    watcher.subscribe(topic, 1)
    polite = clients.new(version)
    polite.will_set(topic, b"should not appear", qos=1)
    polite.connect()
    polite.disconnect()
    # [MQTT-3.1.2-10] (3.1.1: [MQTT-3.1.2-8]): DISCONNECT deletes the will.
    watcher.expect_nothing(1.0)


@versions
def test_mqtt_3_1_2_17_will_retain_stores_retained_will(clients, version):
    topic = unique_topic("will")
    dying = clients.new(version)
    dying.will_set(topic, b"last words", qos=1, retain=True)
    dying.connect()
    dying.kill()
    # The will is published as a retained message [MQTT-3.1.2-17]; a later subscriber gets it.
    late = clients.connected(version)
    m = None
    for _ in range(20):  # bounded: the will may be published a moment after the socket closes
        late.subscribe(topic, 1)
        got = late.drain(0.25)
        if got:
            m = got[0]
            break
    assert m is not None, "retained will never appeared"
    assert (m.payload, m.retain) == (b"last words", True)
    clients.connected(version).publish(topic, b"", 1, retain=True)


@pytest.mark.parametrize("level", [3, 4, 5], ids=["v31", "v311", "v5"])
def test_will_from_raw_client_on_socket_reset(clients, broker, level):
    topic = unique_topic("will")
    watcher = clients.connected(V5)
    watcher.subscribe(topic, 1)
    c = raw.RawClient(broker.port)
    c.send(raw.connect(unique_client_id("rw"), level=level, will=(topic, b"raw will", 1, False)))
    ack = c.expect(raw.CONNACK)
    assert ack.body[1] == 0
    c.close(abort=True)  # TCP RST, no DISCONNECT
    m = watcher.get()
    assert (m.payload, m.qos) == (b"raw will", 1)


@pytest.mark.slow
@pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])
def test_mqtt_3_1_2_22_keep_alive_expiry_publishes_will(clients, broker, level):
    topic = unique_topic("will")
    watcher = clients.connected(V5)
    watcher.subscribe(topic, 1)
    c = raw.RawClient(broker.port)
    c.send(raw.connect(unique_client_id("ka"), level=level, keepalive=1,
                       will=(topic, b"timed out", 1, False)))
    assert c.expect(raw.CONNACK).body[1] == 0
    # Silent client: after 1.5 x keep alive the server closes the connection [MQTT-3.1.2-22]
    # (3.1.1: [MQTT-3.1.2-24]) and that counts as an abnormal disconnect, so the will goes out.
    assert c.closed_within(10.0)
    assert watcher.get().payload == b"timed out"
    c.close()


def test_mqtt_3_14_4_3_disconnect_0x04_publishes_will(clients):
    topic = unique_topic("will")
    watcher = clients.connected(V5)
    watcher.subscribe(topic, 1)
    c = clients.new(V5)
    c.will_set(topic, b"asked for", qos=1)
    c.connect()
    # DISCONNECT with Reason Code 0x04 (Disconnect with Will Message): the will is published
    # [MQTT-3.14.4-3] does not delete it; 3.14.2.1 "the Server is to publish the Will Message".
    c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    assert watcher.get().payload == b"asked for"


def test_will_properties_passed_through(clients):
    topic = unique_topic("will")
    watcher = clients.connected(V5)
    watcher.subscribe(topic, 1)
    c = clients.new(V5)
    will_props = props(PacketTypes.WILLMESSAGE, ContentType="text/plain",
                       ResponseTopic="reply/" + topic, CorrelationData=b"\x00\x01corr",
                       UserProperty=[("k1", "v1"), ("k1", "v2")])
    c.will_set(topic, b"with props", qos=1, properties=will_props)
    c.connect()
    c.kill()
    m = watcher.get()
    assert m.payload == b"with props"
    assert m.properties.ContentType == "text/plain"
    assert m.properties.ResponseTopic == "reply/" + topic
    assert m.properties.CorrelationData == b"\x00\x01corr"
    assert m.user_properties == [("k1", "v1"), ("k1", "v2")]


@pytest.mark.slow
def test_mqtt_3_1_3_9_will_delay_interval(clients):
    topic = unique_topic("will")
    watcher = clients.connected(V5)
    watcher.subscribe(topic, 1)
    c = clients.new(V5)
    c.will_set(topic, b"delayed", qos=1, properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=2))
    c.connect(properties=connect_props(SessionExpiryInterval=60))
    c.kill()
    # [MQTT-3.1.3-9]: the will waits for the Will Delay Interval (2 s) ...
    watcher.expect_nothing(1.0)
    # ... and then is published.
    assert watcher.get(timeout=6).payload == b"delayed"


@pytest.mark.slow
def test_mqtt_3_1_3_9_reconnect_within_will_delay_cancels_will(clients):
    topic = unique_topic("will")
    cid = unique_client_id("wd")
    watcher = clients.connected(V5)
    watcher.subscribe(topic, 1)
    c = clients.new(V5, cid)
    c.will_set(topic, b"never", qos=1, properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=3))
    c.connect(properties=connect_props(SessionExpiryInterval=60))
    c.kill()
    # [MQTT-3.1.3-9]: a new connection to the session before the delay passes: no will.
    back = clients.new(V5, cid, clean=False)
    ack = back.connect(properties=connect_props(SessionExpiryInterval=60))
    assert ack.session_present
    watcher.expect_nothing(4.5)
    back.disconnect(properties=None)


@pytest.mark.slow
def test_mqtt_3_1_2_will_delay_longer_than_session_expiry(clients):
    topic = unique_topic("will")
    watcher = clients.connected(V5)
    watcher.subscribe(topic, 1)
    c = clients.new(V5)
    c.will_set(topic, b"session ended", qos=1,
               properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=60))
    c.connect(properties=connect_props(SessionExpiryInterval=1))
    c.kill()
    # 3.1.3.2.2: the will is published when the Will Delay Interval passes OR the session ends,
    # whichever comes first: here the session ends after 1 s.
    assert watcher.get(timeout=6).payload == b"session ended"
