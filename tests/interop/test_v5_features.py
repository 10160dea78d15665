"""MQTT 5 features with paho-mqtt: topic aliases both ways, message expiry, Receive Maximum,
properties passed through, subscription identifiers, No Local, assigned client identifier, the
client's Maximum Packet Size, CONNACK properties."""

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

import raw_mqtt as raw
from interop_client import (
    V5, Client, connect_props, payloads, props, publish_props, sub_options, unique_client_id,
    unique_topic,
)


# ----- topic aliases -----

def test_mqtt_3_3_2_12_client_topic_alias_then_empty_topic(clients):
    topic = unique_topic("alias")
    sub = clients.connected(V5)
    sub.subscribe(topic, 1)
    pub = clients.connected(V5)
    # First PUBLISH sets alias 1 -> topic; the next ones use only the alias (empty topic name).
    pub.publish(topic, b"a1", 1, properties=publish_props(TopicAlias=1))
    pub.publish("", b"a2", 1, properties=publish_props(TopicAlias=1))
    pub.publish("", b"a3", 0, properties=publish_props(TopicAlias=1))
    got = sub.get_n(3)
    assert [(m.topic, m.payload) for m in got] == [(topic, b"a1"), (topic, b"a2"), (topic, b"a3")]


def test_mqtt_3_3_2_12_topic_alias_remapped(clients):
    t1, t2 = unique_topic("alias"), unique_topic("alias")
    sub = clients.connected(V5)
    sub.subscribe([(t1, 1), (t2, 1)])
    pub = clients.connected(V5)
    pub.publish(t1, b"one", 1, properties=publish_props(TopicAlias=2))
    pub.publish(t2, b"two", 1, properties=publish_props(TopicAlias=2))  # alias 2 now means t2
    pub.publish("", b"two again", 1, properties=publish_props(TopicAlias=2))
    got = [(m.topic, m.payload) for m in sub.get_n(3)]
    assert got == [(t1, b"one"), (t2, b"two"), (t2, b"two again")]


def test_mqtt_3_2_2_topic_alias_maximum_in_connack(clients):
    c = clients.new(V5)
    ack = c.connect()
    # The fixture configures topic_alias_maximum = 64 (Mosquitto: max_topic_alias 64).
    assert ack.properties.TopicAliasMaximum == 64


@pytest.mark.parametrize("alias", [65, 0], ids=["above_max", "zero"])
def test_mqtt_3_3_2_9_alias_above_maximum_is_protocol_error(clients, broker, alias):
    watcher = clients.connected(V5)
    c = raw.RawClient(broker.port)
    c.send(raw.connect(unique_client_id("al"), level=5))
    c.expect(raw.CONNACK)
    c.send(raw.publish(unique_topic("alias"), b"x", level=5, properties=raw.prop_u16(0x23, alias)))
    # [MQTT-3.3.2-9]: a Topic Alias above the server's maximum, or [MQTT-3.3.2-8] 0, is invalid:
    # DISCONNECT 0x94 (Topic Alias invalid) and close.
    p = c.recv(3)
    assert p is not None and p.kind == raw.DISCONNECT
    if alias == 0:
        # The spec names no reason code for alias 0 (0x94 describes "greater than the maximum");
        # any protocol-error family code will do (Mosquitto: 0x81, Aviary: 0x82).
        assert p.body[:1] in (b"\x81", b"\x82", b"\x94")
    else:
        assert p.body[:1] == b"\x94"
    assert c.closed_within(3)
    c.close()
    # Another client is unaffected.
    t = unique_topic("alias")
    watcher.subscribe(t, 1)
    watcher.publish(t, b"ok", 1)
    assert watcher.get().payload == b"ok"


def test_mqtt_3_3_2_8_unknown_alias_with_empty_topic_is_protocol_error(clients, broker):
    c = raw.RawClient(broker.port)
    c.send(raw.connect(unique_client_id("al"), level=5))
    c.expect(raw.CONNACK)
    c.send(raw.publish("", b"x", level=5, properties=raw.prop_u16(0x23, 7)))
    # An empty topic with an alias that has no mapping: protocol error (0x82) and close.
    p = c.recv(3)
    assert p is None or (p.kind == raw.DISCONNECT and p.body[:1] in (b"\x82", b"\x94"))
    assert p is None or c.closed_within(3)
    c.close()


def _alias_subscriber(clients, maximum):
    sub = clients.new(V5)
    if maximum is None:
        sub.connect()
    else:
        sub.connect(properties=connect_props(TopicAliasMaximum=maximum))
    return sub


def test_mqtt_3_3_2_11_no_alias_sent_to_client_without_topic_alias_maximum(clients):
    topic = unique_topic("alias")
    sub = _alias_subscriber(clients, None)
    sub.subscribe(topic, 1)
    pub = clients.connected(V5)
    for p in payloads("n", 5):
        pub.publish(topic, p, 1)
    got = sub.get_n(5)
    # [MQTT-3.3.2-11]: Topic Alias Maximum absent = 0: the server sends no Topic Alias.
    assert all(m.wire_alias is None and not m.wire_topic_empty for m in got)
    assert all(m.topic == topic for m in got)


def test_server_topic_aliases_resolve_transparently(clients):
    topics = [unique_topic("alias") for _ in range(4)]
    sub = _alias_subscriber(clients, 2)
    sub.subscribe([(t, 1) for t in topics])
    pub = clients.connected(V5)
    sent = [(t, f"{t}-{i}".encode()) for i in range(3) for t in topics]
    for t, p in sent:
        pub.publish(t, p, 1)
    got = sub.get_n(len(sent))
    # Whatever aliases the broker assigns (at most 2 here), every message resolves to its topic.
    assert [(m.topic, m.payload) for m in got] == sent
    assert all(m.wire_alias is None or 1 <= m.wire_alias <= 2 for m in got)  # [MQTT-3.3.2-10]


@pytest.mark.aviary_only
def test_broker_assigns_outgoing_topic_aliases(clients):
    # Issue 2: "the broker also assigns aliases on what it sends when the client allows them".
    topic = unique_topic("alias")
    sub = _alias_subscriber(clients, 10)
    sub.subscribe(topic, 1)
    pub = clients.connected(V5)
    for p in payloads("x", 5):
        pub.publish(topic, p, 1)
    got = sub.get_n(5)
    assert all(m.topic == topic for m in got)
    assert any(m.wire_topic_empty and m.wire_alias for m in got)


# ----- message expiry -----

@pytest.mark.slow
def test_mqtt_3_3_2_5_expired_retained_message_not_delivered(clients):
    topic = unique_topic("exp")
    pub = clients.connected(V5)
    pub.publish(topic, b"short-lived", 1, retain=True,
                properties=publish_props(MessageExpiryInterval=1))
    time.sleep(2.2)
    sub = clients.connected(V5)
    sub.subscribe(topic, 1)
    # [MQTT-3.3.2-5]: once the interval has passed, the server must not deliver it.
    sub.expect_nothing(0.7)


@pytest.mark.slow
def test_mqtt_3_3_2_5_expired_message_not_delivered_to_offline_session(clients):
    topic = unique_topic("exp")
    cid = unique_client_id("mx")
    c = clients.new(V5, cid, clean=False)
    c.connect(properties=connect_props(SessionExpiryInterval=300))
    c.subscribe(topic, 1)
    c.disconnect()
    pub = clients.connected(V5)
    pub.publish(topic, b"expires", 1, properties=publish_props(MessageExpiryInterval=1))
    pub.publish(topic, b"lasts", 1, properties=publish_props(MessageExpiryInterval=120))
    pub.publish(topic, b"forever", 1)
    time.sleep(2.2)
    back = clients.new(V5, cid, clean=False)
    back.connect(properties=connect_props(SessionExpiryInterval=300))
    got = back.get_n(2)
    assert [m.payload for m in got] == [b"lasts", b"forever"]
    # [MQTT-3.3.2-6]: the forwarded interval is the received one minus the time spent waiting.
    remaining = got[0].properties.MessageExpiryInterval
    assert 0 < remaining < 120
    assert not hasattr(got[1].properties, "MessageExpiryInterval")
    back.expect_nothing(0.3)


def test_mqtt_3_3_2_6_live_message_carries_expiry_interval(clients):
    topic = unique_topic("exp")
    sub = clients.connected(V5)
    sub.subscribe(topic, 1)
    pub = clients.connected(V5)
    pub.publish(topic, b"fresh", 1, properties=publish_props(MessageExpiryInterval=100))
    m = sub.get()
    assert 0 < m.properties.MessageExpiryInterval <= 100


@pytest.mark.slow
def test_mqtt_3_3_2_6_retained_message_expiry_counts_down(clients):
    topic = unique_topic("exp")
    pub = clients.connected(V5)
    pub.publish(topic, b"ticking", 1, retain=True, properties=publish_props(MessageExpiryInterval=60))
    time.sleep(1.5)
    sub = clients.connected(V5)
    sub.subscribe(topic, 1)
    m = sub.get()
    assert m.payload == b"ticking"
    assert 0 < m.properties.MessageExpiryInterval < 60
    pub.publish(topic, b"", 1, retain=True)


# ----- flow control -----

@pytest.mark.parametrize("qos", [1, 2])
def test_mqtt_3_3_4_9_receive_maximum_all_messages_arrive(clients, qos):
    topic = unique_topic("flow")
    sub = clients.new(V5)
    sub.connect(properties=connect_props(ReceiveMaximum=2))
    sub.subscribe(topic, qos)
    pub = clients.connected(V5)
    sent = payloads("f", 60)
    for p in sent:
        pub.publish(topic, p, qos, wait=False)
    got = sub.get_n(len(sent), timeout=20)
    assert [m.payload for m in got] == sent


def _receive_max_subscriber(clients, topic, maximum):
    sub = clients.new(V5, manual_ack=True)
    sub.connect(properties=connect_props(ReceiveMaximum=maximum))
    sub.subscribe(topic, 1)
    return sub


def test_mqtt_3_3_4_9_receive_maximum_first_window(clients):
    topic = unique_topic("flow")
    sub = _receive_max_subscriber(clients, topic, 3)
    pub = clients.connected(V5)
    sent = payloads("r", 10)
    for p in sent:
        pub.publish(topic, p, 1)
    # [MQTT-3.3.4-9]: never more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum.
    window = sub.get_n(3)
    assert [m.payload for m in window] == sent[:3]
    sub.expect_nothing(0.5)
    for m in window:
        sub.ack(m.mid, 1)
    rest = []
    for _ in range(7):  # the rest, each acknowledged as it comes
        m = sub.get()
        rest.append(m)
        sub.ack(m.mid, 1)
    assert [m.payload for m in rest] == sent[3:]


@pytest.mark.mosquitto_deviates
def test_mqtt_3_3_4_9_receive_maximum_bounds_unacknowledged_after_each_ack(clients):
    # [MQTT-3.3.4-9]: "The Server MUST NOT send more than Receive Maximum QoS 1 and QoS 2 PUBLISH
    # packets for which it has not received PUBACK, PUBCOMP, or PUBREC with a Reason Code of 128
    # or greater". Mosquitto 2.0.11 sends 3 more after one PUBACK (5 unacknowledged with a
    # Receive Maximum of 3).
    topic = unique_topic("flow")
    sub = _receive_max_subscriber(clients, topic, 3)
    pub = clients.connected(V5)
    sent = payloads("r", 10)
    for p in sent:
        pub.publish(topic, p, 1)
    window = sub.get_n(3)
    assert [m.payload for m in window] == sent[:3]
    sub.expect_nothing(0.5)
    received = list(window)
    for _ in range(10):  # bounded: acknowledge one at a time; each ack admits exactly one more
        if len(received) == len(sent):
            break
        sub.ack(window.pop(0).mid, 1)
        nxt = sub.get()
        received.append(nxt)
        window.append(nxt)
        sub.expect_nothing(0.3)
    assert [m.payload for m in received] == sent
    for m in window:
        sub.ack(m.mid, 1)


def test_receive_maximum_in_connack_paces_paho_publisher(clients):
    topic = unique_topic("flow")
    sub = clients.connected(V5)
    sub.subscribe(topic, 2)
    pub = clients.new(V5, max_inflight=1000)
    ack = pub.connect()
    rm = ack.properties.ReceiveMaximum if hasattr(ack.properties, "ReceiveMaximum") else 65535
    assert rm >= 1
    sent = payloads("p", 100)
    for p in sent:
        pub.publish(topic, p, 2, wait=False)
    assert [m.payload for m in sub.get_n(100, timeout=20)] == sent


@pytest.mark.aviary_only
def test_connack_properties_match_config(clients):
    c = clients.new(V5)
    ack = c.connect()
    # mqtt.receive_maximum = 1024 and topic_alias_maximum = 64 by default.
    assert ack.properties.ReceiveMaximum == 1024
    assert ack.properties.TopicAliasMaximum == 64


# ----- properties passed through -----

@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_3_3_2_17_properties_forwarded_unchanged(clients, qos):
    topic = unique_topic("props")
    sub = clients.connected(V5)
    sub.subscribe(topic, qos)
    pub = clients.connected(V5)
    user = [("a", "1"), ("b", "2"), ("a", "3"), ("ünï", "cödé")]
    pub.publish(topic, b"{}", qos, properties=publish_props(
        UserProperty=user, ResponseTopic="resp/" + topic, CorrelationData=b"\x00\xffid",
        ContentType="application/json", PayloadFormatIndicator=1))
    m = sub.get()
    # [MQTT-3.3.2-17]/[MQTT-3.3.2-18]: user properties in order; [MQTT-3.3.2-15]/[MQTT-3.3.2-16]
    # response topic and correlation data unchanged; [MQTT-3.3.2-20] content type; [MQTT-3.3.2-4]
    # payload format indicator.
    assert m.user_properties == user
    assert m.properties.ResponseTopic == "resp/" + topic
    assert m.properties.CorrelationData == b"\x00\xffid"
    assert m.properties.ContentType == "application/json"
    assert m.properties.PayloadFormatIndicator == 1


def test_request_response_roundtrip(clients):
    req_topic = unique_topic("req")
    responder = clients.connected(V5)
    responder.subscribe(req_topic, 1)
    requester = clients.connected(V5)
    reply_to = unique_topic("reply")
    requester.subscribe(reply_to, 1)
    requester.publish(req_topic, b"ping", 1, properties=publish_props(
        ResponseTopic=reply_to, CorrelationData=b"corr-42"))
    req = responder.get()
    responder.publish(req.properties.ResponseTopic, b"pong", 1,
                      properties=publish_props(CorrelationData=req.properties.CorrelationData))
    resp = requester.get()
    assert (resp.topic, resp.payload, resp.properties.CorrelationData) == (reply_to, b"pong", b"corr-42")


# ----- subscription identifiers -----

def test_mqtt_3_3_4_3_subscription_identifiers(clients):
    base = unique_topic("sid")
    sub = clients.connected(V5)
    sub.subscribe(f"{base}/+", options=sub_options(1),
                  properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    sub.subscribe(f"{base}/#", options=sub_options(1),
                  properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=300))
    sub.subscribe(f"{base}/only", options=sub_options(1))  # no identifier
    pub = clients.connected(V5)
    pub.publish(f"{base}/deep/x", b"deep", 1)
    m = sub.get()
    assert m.payload == b"deep"
    assert m.properties.SubscriptionIdentifier == [300]
    sub.expect_nothing(0.3)
    pub.publish(f"{base}/x", b"both", 1)
    # [MQTT-3.3.4-3]..[MQTT-3.3.4-5]: overlapping subscriptions: either one message with all
    # matching identifiers or one message per subscription, each with its own.
    copies = [sub.get()] + sub.drain(0.5)
    ids = sorted(i for c in copies for i in getattr(c.properties, "SubscriptionIdentifier", []))
    assert ids == [7, 300]
    pub.publish(f"{base}/only", b"three", 1)
    copies = [sub.get()] + sub.drain(0.5)
    ids = sorted(i for c in copies for i in getattr(c.properties, "SubscriptionIdentifier", []))
    # '/only' matches '+' (7), '#' (300) and the identifier-less filter.
    assert ids == [7, 300]
    assert all(c.payload == b"three" for c in copies)


# ----- no local -----

@pytest.mark.parametrize("no_local", [True, False])
def test_mqtt_3_8_3_3_no_local(clients, no_local):
    topic = unique_topic("nl")
    me = clients.connected(V5)
    me.subscribe(topic, options=sub_options(1, noLocal=no_local))
    other = clients.connected(V5)
    me.publish(topic, b"mine", 1)
    other.publish(topic, b"theirs", 1)
    expected = [b"theirs"] if no_local else [b"mine", b"theirs"]
    got = [m.payload for m in me.get_n(len(expected))]
    # [MQTT-3.8.3-3]: with No Local the server must not forward a client its own messages.
    assert got == expected
    me.expect_nothing(0.3)


# ----- connect -----

def test_mqtt_3_2_2_16_assigned_client_identifier(clients):
    c = clients.new(V5, client_id="")
    ack = c.connect()
    assigned = ack.properties.AssignedClientIdentifier
    # [MQTT-3.2.2-16]: a zero-length client id gets an Assigned Client Identifier.
    assert isinstance(assigned, str) and assigned
    topic = unique_topic("aid")
    c.subscribe(topic, 1)
    c.publish(topic, b"works", 1)
    assert c.get().payload == b"works"


def test_mqtt_3_1_2_25_client_maximum_packet_size_respected(clients):
    topic = unique_topic("mps")
    sub = clients.new(V5)
    sub.connect(properties=connect_props(MaximumPacketSize=256))
    sub.subscribe(topic, 1)
    pub = clients.connected(V5)
    pub.publish(topic, b"small", 1)
    pub.publish(topic, b"x" * 1000, 1)
    pub.publish(topic, b"small again", 1)
    # [MQTT-3.1.2-25]: a packet bigger than the client's Maximum Packet Size is not sent (it is
    # discarded as if delivered); the connection goes on.
    got = [m.payload for m in sub.get_n(2)]
    assert got == [b"small", b"small again"]
    sub.expect_nothing(0.3)
    assert not sub.disconnected.is_set()


@pytest.mark.slow
def test_mqtt_3_2_2_21_server_keep_alive(broker_factory):
    b = broker_factory(max_keep_alive=10)
    c = Client(b.port, V5)
    try:
        ack = c.connect(keepalive=60)
        # Issue 2: a 5.0 client asking for more than mqtt.max_keep_alive gets Server Keep Alive
        # with the maximum, and must use it [MQTT-3.2.2-21].
        assert ack.properties.ServerKeepAlive == 10
    finally:
        c.close()


def test_mqtt_3_1_2_auth_method_not_supported_0x8c(broker):
    c = raw.RawClient(broker.port)
    method = raw.utf8("SCRAM-SHA-1")
    c.send(raw.connect(unique_client_id("au"), level=5, properties=bytes([0x15]) + method))
    ack = c.recv(3)
    # Issue 2: enhanced authentication is not offered: CONNACK 0x8C (Bad authentication method).
    assert ack is not None and ack.kind == raw.CONNACK and ack.body[1] == 0x8C
    assert c.closed_within(3)
    c.close()


def test_request_problem_and_response_information_accepted(clients):
    # Only that such a CONNECT is accepted: a reason string is optional, and the server may
    # answer Request Response Information with or without Response Information.
    c = clients.new(V5)
    ack = c.connect(properties=connect_props(RequestProblemInformation=1, RequestResponseInformation=0))
    assert ack.reason_code == 0


@pytest.mark.mosquitto_deviates  # Mosquitto 2.0.11 grants the subscription
def test_mqtt_3_8_3_4_no_local_on_shared_subscription_is_protocol_error(clients, broker):
    c = raw.RawClient(broker.port)
    c.send(raw.connect(unique_client_id("nls"), level=5))
    c.expect(raw.CONNACK)
    share = f"$share/g{unique_client_id()[:6]}/{unique_topic('nl')}"
    c.send(raw.subscribe(1, [(share, 0x04 | 1)], level=5))  # No Local + QoS 1
    # [MQTT-3.8.3-4]: No Local on a Shared Subscription is a Protocol Error: DISCONNECT 0x82.
    p = c.recv(3)
    assert p is not None and p.kind == raw.DISCONNECT and p.body[:1] == b"\x82", p
    assert c.closed_within(3)
    c.close()
