"""Persistent sessions with paho-mqtt: offline queueing, session expiry, redelivery with DUP on
resumption, the in-flight window for 3.x clients."""

import time

import pytest

import raw_mqtt as raw

from interop_client import (
    ALL_VERSIONS, V311, V31, V5, Client, connect_props, payloads, unique_client_id, unique_topic,
    version_id,
)

versions = pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)


def persistent(clients, version, cid, expiry=300, **kwargs) -> tuple[Client, object]:
    """Connects a client with a persistent session (3.x clean_session=0; 5.0 clean_start=0 and a
    Session Expiry Interval)."""
    c = clients.new(version, cid, clean=False, **kwargs)
    if version == V5:
        ack = c.connect(properties=connect_props(SessionExpiryInterval=expiry))
    else:
        ack = c.connect()
    return c, ack


@versions
@pytest.mark.parametrize("qos", [1, 2])
def test_mqtt_3_1_2_5_offline_messages_queued_for_persistent_session(clients, version, qos):
    topic = unique_topic("sess")
    cid = unique_client_id("off")
    c, _ = persistent(clients, version, cid)
    c.subscribe(topic, qos)
    c.disconnect()
    pub = clients.connected(version)
    sent = payloads("off", 5)
    for p in sent:
        pub.publish(topic, p, qos)
    # [MQTT-3.1.2-5] (3.1.1: [MQTT-3.1.2-5]): QoS 1/2 messages for the session are stored
    # while it is disconnected and delivered on resumption, in order.
    back, ack = persistent(clients, version, cid)
    if version != V31:
        assert ack.session_present
    got = back.get_n(5)
    assert [m.payload for m in got] == sent
    assert all(m.qos == qos and m.topic == topic for m in got)
    back.expect_nothing(0.3)


@versions
def test_subscriptions_survive_in_persistent_session(clients, version):
    topic = unique_topic("sess")
    cid = unique_client_id("keep")
    c, _ = persistent(clients, version, cid)
    c.subscribe(topic, 1)
    c.disconnect()
    back, _ = persistent(clients, version, cid)
    pub = clients.connected(version)
    pub.publish(topic, b"live after resume", 1)
    assert back.get().payload == b"live after resume"


@versions
def test_mqtt_3_1_2_6_clean_session_discards_state(clients, version):
    topic = unique_topic("sess")
    cid = unique_client_id("cln")
    c, _ = persistent(clients, version, cid)
    c.subscribe(topic, 1)
    c.disconnect()
    clients.connected(version).publish(topic, b"queued", 1)
    fresh = clients.new(version, cid, clean=True)
    ack = fresh.connect()
    # [MQTT-3.1.2-6] (5.0: [MQTT-3.1.2-4]): a clean start discards the session and its queue.
    assert not ack.session_present
    fresh.expect_nothing(0.7)
    clients.connected(version).publish(topic, b"no subscription left", 1)
    fresh.expect_nothing(0.5)


@versions
def test_mqtt_4_4_0_1_unacked_qos1_resent_with_dup_on_resume(clients, version):
    topic = unique_topic("dup")
    cid = unique_client_id("dup")
    c, _ = persistent(clients, version, cid, manual_ack=True)
    c.subscribe(topic, 1)
    clients.connected(version).publish(topic, b"ack me later", 1)
    first = c.get()
    assert (first.payload, first.dup) == (b"ack me later", False)
    c.kill()  # never acknowledged
    back, ack = persistent(clients, version, cid)
    m = back.get()
    # [MQTT-4.4.0-1]: on resumption unacknowledged PUBLISH packets are resent with DUP=1
    # [MQTT-3.3.1-1].
    assert (m.payload, m.qos, m.dup) == (b"ack me later", 1, True)
    back.expect_nothing(0.5)


@pytest.mark.parametrize("level", [3, 4, 5], ids=["v31", "v311", "v5"])
def test_mqtt_4_4_0_1_unacked_qos2_publish_resent_with_dup_on_resume(clients, broker, level):
    topic = unique_topic("dup")
    cid = unique_client_id("dup2")
    c = raw.RawClient(broker.port)
    c.send(raw.session_connect(cid, level))
    c.expect(raw.CONNACK)
    c.send(raw.subscribe(1, [(topic, 2)], level=level))
    c.expect(raw.SUBACK)
    clients.connected(V311).publish(topic, b"exactly once", 2)
    first = raw.parse_publish(c.expect(raw.PUBLISH), level)
    assert (first["payload"], first["qos"], first["dup"]) == (b"exactly once", 2, False)
    c.close(abort=True)  # PUBREC never sent
    c = raw.RawClient(broker.port)
    c.send(raw.session_connect(cid, level))
    c.expect(raw.CONNACK)
    # [MQTT-4.4.0-1]: the unacknowledged PUBLISH is resent, same packet id, DUP=1.
    again = raw.parse_publish(c.expect(raw.PUBLISH), level)
    assert (again["payload"], again["dup"], again["packet_id"]) == (
        b"exactly once", True, first["packet_id"])
    c.send(raw.ack(raw.PUBREC, again["packet_id"]))
    rel = c.expect(raw.PUBREL)
    assert rel.flags == 0b0010 and raw.packet_id_of(rel) == again["packet_id"]
    c.send(raw.ack(raw.PUBCOMP, again["packet_id"]))
    c.close()


@pytest.mark.parametrize("level", [3, 4, 5], ids=["v31", "v311", "v5"])
def test_mqtt_4_4_0_1_pubrel_resent_on_resume_not_publish(clients, broker, level):
    topic = unique_topic("dup")
    cid = unique_client_id("rel")
    c = raw.RawClient(broker.port)
    c.send(raw.session_connect(cid, level))
    c.expect(raw.CONNACK)
    c.send(raw.subscribe(1, [(topic, 2)], level=level))
    c.expect(raw.SUBACK)
    clients.connected(V311).publish(topic, b"once only", 2)
    pub = raw.parse_publish(c.expect(raw.PUBLISH), level)
    c.send(raw.ack(raw.PUBREC, pub["packet_id"]))
    c.expect(raw.PUBREL)
    c.close(abort=True)  # PUBCOMP never sent
    c = raw.RawClient(broker.port)
    c.send(raw.session_connect(cid, level))
    c.expect(raw.CONNACK)
    # [MQTT-4.4.0-1] / 4.3.3: after PUBREC the sender resends PUBREL, never the PUBLISH again.
    rel = c.expect(raw.PUBREL)
    assert raw.packet_id_of(rel) == pub["packet_id"]
    c.send(raw.ack(raw.PUBCOMP, pub["packet_id"]))
    with pytest.raises(TimeoutError):
        c.recv(0.7)
    c.close()


@pytest.mark.slow
def test_mqtt_3_1_2_11_session_expiry_interval_ends_session(clients):
    topic = unique_topic("exp")
    cid = unique_client_id("se")
    c, _ = persistent(clients, V5, cid, expiry=1)
    c.subscribe(topic, 1)
    c.disconnect()
    clients.connected(V5).publish(topic, b"for an expired session", 1)
    time.sleep(2.5)
    back, ack = persistent(clients, V5, cid, expiry=60)
    # 3.1.2.11.2: the session is deleted when the Session Expiry Interval passes.
    assert not ack.session_present
    back.expect_nothing(0.7)


def test_mqtt_3_1_2_11_session_expiry_zero_ends_at_disconnect(clients):
    topic = unique_topic("exp")
    cid = unique_client_id("se0")
    c = clients.new(V5, cid, clean=False)
    c.connect()  # no Session Expiry Interval: 0, the session ends with the connection
    c.subscribe(topic, 1)
    c.disconnect()
    back, ack = persistent(clients, V5, cid)
    assert not ack.session_present
    clients.connected(V5).publish(topic, b"x", 1)
    back.expect_nothing(0.5)


def test_mqtt_3_14_2_2_disconnect_can_set_session_expiry(clients):
    from paho.mqtt.packettypes import PacketTypes
    from interop_client import props

    topic = unique_topic("exp")
    cid = unique_client_id("sed")
    c, _ = persistent(clients, V5, cid, expiry=30)
    c.subscribe(topic, 1)
    # The DISCONNECT's Session Expiry Interval replaces the CONNECT's (non-zero -> 0 is allowed).
    c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    # The DISCONNECT and the next CONNECT travel on different TCP connections: give the
    # broker a moment to read the DISCONNECT first, or the CONNECT is a takeover instead.
    time.sleep(0.5)
    back, ack = persistent(clients, V5, cid)
    assert not ack.session_present


@pytest.mark.parametrize("version", [V31, V311], ids=version_id)
def test_inflight_window_for_3x_is_max_inflight(clients, version):
    # Issue 2: "an in-flight window of outgoing QoS 1/2 messages — 16 for 3.x (mqtt.max_inflight)";
    # Mosquitto's max_inflight_messages is set to the same 16 by the fixture.
    topic = unique_topic("win")
    sub = clients.connected(version, manual_ack=True)
    sub.subscribe(topic, 1)
    pub = clients.connected(version)
    sent = payloads("w", 30)
    for p in sent:
        pub.publish(topic, p, 1)
    window = sub.get_n(16)
    assert [m.payload for m in window] == sent[:16]
    sub.expect_nothing(0.5)  # the 17th waits for an acknowledgement
    for m in window:
        sub.ack(m.mid, 1)
    rest = sub.get_n(14)
    assert [m.payload for m in rest] == sent[16:]
    for m in rest:
        sub.ack(m.mid, 1)


@pytest.mark.slow
@pytest.mark.aviary_only
@pytest.mark.parametrize("version", [V31, V311], ids=version_id)
def test_retry_interval_resends_unacked_with_dup(broker_factory, version):
    # Issue 2: an unacknowledged QoS 1/2 message is resent with DUP=1 after mqtt.retry_interval
    # (3.x; MQTT 3.1.1 4.4 allows resending). Mosquitto 2.0 only resends on reconnection.
    b = broker_factory(retry_interval=2)
    topic = unique_topic("retry")
    sub = Client(b.port, version, manual_ack=True)
    pub = Client(b.port, version)
    try:
        sub.connect()
        pub.connect()
        sub.subscribe(topic, 1)
        pub.publish(topic, b"again", 1)
        first = sub.get()
        assert (first.payload, first.dup) == (b"again", False)
        again = sub.get(timeout=8)
        assert (again.payload, again.dup, again.mid) == (b"again", True, first.mid)
        sub.ack(again.mid, 1)
    finally:
        sub.close()
        pub.close()


@pytest.mark.slow
def test_mqtt_4_4_0_1_v5_no_resend_within_a_connection(broker_factory):
    # MQTT 5.0 [MQTT-4.4.0-1]: resending on session resumption "is the only circumstance where a
    # Client or Server is REQUIRED to resend messages. Clients and Servers MUST NOT resend
    # messages at any other time". So the retry timer must not fire for 5.0 clients.
    b = broker_factory(retry_interval=1)
    topic = unique_topic("retry")
    sub = Client(b.port, V5, manual_ack=True)
    pub = Client(b.port, V5)
    try:
        sub.connect()
        pub.connect()
        sub.subscribe(topic, 1)
        pub.publish(topic, b"once", 1)
        first = sub.get()
        assert (first.payload, first.dup) == (b"once", False)
        sub.expect_nothing(3.5)
        sub.ack(first.mid, 1)
    finally:
        sub.close()
        pub.close()


def test_queue_bound_drop_new_keeps_oldest(broker_factory):
    # Issue 2 / config: max_queued_messages with queue_overflow = "drop_new": an offline session
    # keeps the oldest messages up to the bound; the rest are dropped (and counted). Mosquitto's
    # max_queued_messages behaves the same way.
    b = broker_factory(max_queued_messages=5, queue_overflow="drop_new")
    topic = unique_topic("q")
    cid = unique_client_id("q")
    c = Client(b.port, V311, cid, clean=False)
    pub = Client(b.port, V311)
    try:
        c.connect()
        c.subscribe(topic, 1)
        c.disconnect()
        pub.connect()
        sent = payloads("q", 20)
        for p in sent:
            pub.publish(topic, p, 1)
        c2 = Client(b.port, V311, cid, clean=False)
        c2.connect()
        got = [m.payload for m in c2.get_n(5) + c2.drain(1.0)]
        c2.close()
        assert 5 <= len(got) < 20
        assert got == sent[:len(got)]
    finally:
        c.close()
        pub.close()


@versions
def test_takeover_with_persistent_session_keeps_subscriptions(clients, version):
    topic = unique_topic("sess")
    cid = unique_client_id("tko")
    old, _ = persistent(clients, version, cid)
    old.subscribe(topic, 1)
    new, ack = persistent(clients, version, cid)
    old.wait_disconnected()
    # The session moves to the new connection: Session Present 1 (not in 3.1) and the
    # subscription is still there.
    if version != V31:
        assert ack.session_present
    clients.connected(version).publish(topic, b"to the new connection", 1)
    assert new.get().payload == b"to the new connection"


@pytest.mark.parametrize("level", [3, 4, 5], ids=["v31", "v311", "v5"])
def test_mqtt_4_3_3_qos2_duplicate_publish_delivered_once(clients, broker, level):
    topic = unique_topic("eo")
    sub = clients.connected(V311)
    sub.subscribe(topic, 2)
    c = raw.RawClient(broker.port)
    c.send(raw.connect(unique_client_id("eo"), level=level))
    c.expect(raw.CONNACK)
    c.send(raw.publish(topic, b"once", qos=2, packet_id=7, level=level))
    assert raw.packet_id_of(c.expect(raw.PUBREC)) == 7
    # The sender did not see the PUBREC in time and resends the PUBLISH with DUP=1: the receiver
    # must not deliver it again [MQTT-4.3.3-10] (3.1.1: 4.3.3 method B).
    dup = bytearray(raw.publish(topic, b"once", qos=2, packet_id=7, level=level))
    dup[0] |= 0x08
    c.send(bytes(dup))
    assert raw.packet_id_of(c.expect(raw.PUBREC)) == 7
    c.send(raw.ack(raw.PUBREL, 7))
    assert raw.packet_id_of(c.expect(raw.PUBCOMP)) == 7
    assert sub.get().payload == b"once"
    sub.expect_nothing(0.5)
    c.close()


@pytest.mark.parametrize("level", [3, 4, 5], ids=["v31", "v311", "v5"])
def test_mqtt_4_4_0_1_qos2_pubrel_after_reconnect_delivers_once(clients, broker, level):
    topic = unique_topic("eo")
    cid = unique_client_id("eor")
    sub = clients.connected(V311)
    sub.subscribe(topic, 2)
    c = raw.RawClient(broker.port)
    c.send(raw.session_connect(cid, level))
    c.expect(raw.CONNACK)
    c.send(raw.publish(topic, b"across reconnect", qos=2, packet_id=9, level=level))
    c.expect(raw.PUBREC)
    c.close(abort=True)
    # The QoS 2 receive state (packet id awaiting PUBREL) belongs to the session: after resuming,
    # the publisher sends PUBREL and the message is delivered exactly once.
    c = raw.RawClient(broker.port)
    c.send(raw.session_connect(cid, level))
    c.expect(raw.CONNACK)
    c.send(raw.ack(raw.PUBREL, 9))
    assert raw.packet_id_of(c.expect(raw.PUBCOMP)) == 9
    got = [sub.get()] + sub.drain(0.5)
    assert [m.payload for m in got] == [b"across reconnect"]
    c.close()


@pytest.mark.slow
@pytest.mark.aviary_only
def test_session_expiry_capped_by_max_session_expiry_interval(broker_factory):
    # mqtt.max_session_expiry_interval caps what a 5.0 client asks for; the server tells the
    # client the value it uses in CONNACK (3.2.2.3.2) and expires the session accordingly.
    b = broker_factory(max_session_expiry_interval=1)
    topic = unique_topic("cap")
    cid = unique_client_id("cap")
    c = Client(b.port, V5, cid, clean=False)
    pub = Client(b.port, V5)
    try:
        ack = c.connect(properties=connect_props(SessionExpiryInterval=300))
        assert ack.properties.SessionExpiryInterval == 1
        c.subscribe(topic, 1)
        c.disconnect()
        pub.connect()
        pub.publish(topic, b"too late", 1)
        time.sleep(2.5)
        back = Client(b.port, V5, cid, clean=False)
        try:
            ack = back.connect(properties=connect_props(SessionExpiryInterval=300))
            assert not ack.session_present
            back.expect_nothing(0.5)
        finally:
            back.close()
    finally:
        c.close()
        pub.close()
