"""CONNECT / CONNACK with paho-mqtt for MQTT 3.1, 3.1.1 and 5.0."""

import pytest

import raw_mqtt as raw

from interop_client import ALL_VERSIONS, V5, V311, V31, connect_props, prop, unique_client_id, version_id

versions = pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)


@versions
def test_mqtt_3_2_2_connack_accepted(clients, version):
    c = clients.new(version)
    ack = c.connect()
    assert ack.reason_code == 0
    # [MQTT-3.2.2-1] / [MQTT-3.2.2-2]: a clean session never has a session present.
    assert ack.session_present is False


@versions
def test_mqtt_3_2_2_2_session_present_on_persistent_reconnect(clients, version):
    cid = unique_client_id("sp")
    kwargs = {}
    if version == V5:
        kwargs = {"properties": connect_props(SessionExpiryInterval=60)}
    first = clients.new(version, cid, clean=False)
    ack = first.connect(**kwargs)
    # A brand-new client id has no stored session.
    assert ack.session_present is False
    first.subscribe("sp/" + cid, 1)
    first.disconnect()

    second = clients.new(version, cid, clean=False)
    ack = second.connect(**kwargs)
    # [MQTT-3.2.2-3]: resumed session -> Session Present 1 (3.1 has no flag: always 0 on the wire).
    if version == V31:
        assert ack.session_present is False
    else:
        assert ack.session_present is True
    second.disconnect()

    # A clean session discards it; the next non-clean connect finds nothing.
    third = clients.new(version, cid, clean=True)
    ack = third.connect()
    assert ack.session_present is False
    third.disconnect()
    fourth = clients.new(version, cid, clean=False)
    ack = fourth.connect(**kwargs)
    assert ack.session_present is False
    fourth.disconnect()


@versions
def test_mqtt_3_1_4_3_takeover_of_connected_client_id(clients, version):
    cid = unique_client_id("tk")
    old = clients.connected(version, cid)
    new = clients.connected(version, cid)
    # [MQTT-3.1.4-3] (5.0) / [MQTT-3.1.4-2] (3.1.1): the server closes the existing connection.
    old.wait_disconnected()
    # The new connection keeps working.
    topic = "tk/" + cid
    new.subscribe(topic, 1)
    new.publish(topic, b"still here", 1)
    assert new.get().payload == b"still here"


@pytest.mark.mosquitto_deviates
@pytest.mark.parametrize("version", [V5], ids=version_id)
def test_mqtt_3_1_4_3_takeover_sends_disconnect_0x8e(broker, version):
    # MQTT 5.0 [MQTT-3.1.4-3]: "the Server sends a DISCONNECT packet to the existing Client with
    # Reason Code of 0x8E (Session taken over)". Mosquitto 2.0.11 just closes the socket.
    # Checked with the raw client: paho 2.1 ignores a DISCONNECT whose body is only a reason code.
    cid = unique_client_id("tk")
    old = raw.RawClient(broker.port)
    old.send(raw.connect(cid, level=5))
    old.expect(raw.CONNACK)
    new = raw.RawClient(broker.port)
    new.send(raw.connect(cid, level=5))
    assert new.expect(raw.CONNACK).body[1] == 0
    p = old.expect(raw.DISCONNECT)
    assert p.body[:1] == b"\x8e"
    assert old.closed_within(3)
    old.close()
    new.close()
