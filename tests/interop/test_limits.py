"""Configured limits seen through real clients: subscriptions per session, connections, packet
size, client id length, the server's Receive Maximum. Most are Aviary's product limits."""

import time

import pytest

import raw_mqtt as raw
from interop_client import ALL_VERSIONS, V5, Client, unique_client_id, unique_topic, version_id

versions = pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)


def refused_code(version: int) -> int:
    # Issue 2: 0x80 (Failure) in 3.x, 0x97 (Quota exceeded) in 5.0.
    return 0x97 if version == V5 else 0x80


@pytest.mark.aviary_only
@versions
def test_subscription_limit_in_one_subscribe(clients, version):
    base = unique_topic("lim")
    c = clients.connected(version)
    filters = [(f"{base}/{i}", 1) for i in range(31)]
    codes = c.subscribe(filters)
    # mqtt.max_subscriptions_per_session = 30: the filters within the limit succeed, the one
    # beyond it is refused in the SUBACK.
    assert codes[:30] == [1] * 30
    assert codes[30] == refused_code(version)
    pub = clients.connected(version)
    pub.publish(f"{base}/29", b"in", 1)
    pub.publish(f"{base}/30", b"out", 1)
    assert c.get().payload == b"in"
    c.expect_nothing(0.5)


@pytest.mark.aviary_only
@versions
def test_subscription_limit_across_subscribes(clients, version):
    base = unique_topic("lim")
    c = clients.connected(version)
    for i in range(30):
        assert c.subscribe(f"{base}/{i}", 0) == [0]
    assert c.subscribe(f"{base}/extra", 0) == [refused_code(version)]
    # Replacing an existing subscription does not add one.
    assert c.subscribe(f"{base}/0", 1) == [1]
    # After an unsubscribe there is room again.
    c.unsubscribe(f"{base}/1")
    assert c.subscribe(f"{base}/extra", 1) == [1]
    assert c.subscribe(f"{base}/extra2", 1) == [refused_code(version)]


@pytest.mark.aviary_only
def test_subscription_limit_with_factory_override(broker_factory):
    b = broker_factory(max_subscriptions_per_session=3)
    base = unique_topic("lim")
    c = Client(b.port, V5)
    try:
        c.connect()
        codes = c.subscribe([(f"{base}/{i}", 0) for i in range(5)])
        assert codes == [0, 0, 0, 0x97, 0x97]
    finally:
        c.close()


@pytest.mark.aviary_only
@versions
def test_max_connections_refused_with_connack(broker_factory, version):
    b = broker_factory(max_connections=2)
    first, second = Client(b.port, version), Client(b.port, version)
    third = Client(b.port, version)
    try:
        first.connect()
        second.connect()
        ack = third.try_connect()
        # Issue 2: CONNACK 0x03 (Server unavailable) in 3.x, 0x97 (Quota exceeded) in 5.0.
        assert ack is not None
        assert ack.reason_code == (0x97 if version == V5 else 0x03)
        third.close()
        first.disconnect()
        # Room again once a connection has gone (bounded retries: the close is asynchronous).
        for _ in range(20):
            again = Client(b.port, version)
            ack = again.try_connect()
            if ack is not None and ack.reason_code == 0:
                again.close()
                break
            again.close()
            time.sleep(0.1)
        else:
            pytest.fail("no connection accepted after one left")
    finally:
        for c in (first, second, third):
            c.close()


def test_mqtt_3_2_2_maximum_packet_size_in_connack(broker_factory):
    b = broker_factory(max_packet_size=1024)
    c = Client(b.port, V5)
    try:
        ack = c.connect()
        # The server announces its limit in CONNACK (3.2.2.3.6).
        assert ack.properties.MaximumPacketSize == 1024
    finally:
        c.close()


@versions
def test_packet_larger_than_max_packet_size_closes_connection(broker_factory, version):
    b = broker_factory(max_packet_size=1024)
    topic = unique_topic("big")
    bystander = Client(b.port, version)
    big = Client(b.port, version)
    try:
        bystander.connect()
        bystander.subscribe(topic, 1)
        big.connect()
        big.publish(topic, b"x" * 2000, 1, wait=False)
        # [MQTT-3.2.2-15] (5.0 closes with 0x95 Packet too large); 3.x just closes.
        closed = big.wait_disconnected()
        if version == V5:
            assert closed.by_packet and closed.reason_code == 0x95, closed
        bystander.expect_nothing(0.3)
        bystander.publish(topic, b"small", 1)
        assert bystander.get().payload == b"small"
    finally:
        bystander.close()
        big.close()


def test_packet_too_large_v5_disconnect_0x95(broker_factory):
    b = broker_factory(max_packet_size=1024)
    c = raw.RawClient(b.port)
    try:
        c.send(raw.connect(unique_client_id("big"), level=5))
        c.expect(raw.CONNACK)
        c.send(raw.publish(unique_topic("big"), b"x" * 2000, level=5))
        p = c.recv(3)
        assert p is not None and p.kind == raw.DISCONNECT and p.body[:1] == b"\x95"
        assert c.closed_within(3)
    finally:
        c.close()


@pytest.mark.aviary_only
@versions
def test_client_id_longer_than_max_refused(broker_factory, version):
    # Aviary accepts max_client_id_len >= 23 (the 3.1 limit every broker must allow).
    b = broker_factory(max_client_id_len=23)
    ok = Client(b.port, version, "a" * 23)
    long = Client(b.port, version, "b" * 24)
    try:
        assert ok.connect().reason_code == 0
        ack = long.try_connect()
        # 0x02 Identifier rejected (3.x) / 0x85 Client Identifier not valid (5.0).
        assert ack is not None and ack.reason_code == (0x85 if version == V5 else 0x02)
    finally:
        ok.close()
        long.close()


@pytest.mark.aviary_only
def test_client_exceeding_server_receive_maximum_disconnected_0x93(broker_factory):
    b = broker_factory(receive_maximum=2)
    c = raw.RawClient(b.port)
    try:
        c.send(raw.connect(unique_client_id("rm"), level=5))
        ack = c.expect(raw.CONNACK)
        assert b"\x21\x00\x02" in ack.body  # Receive Maximum = 2 announced
        topic = unique_topic("rm")
        # Three QoS 2 PUBLISHes never released: the third exceeds the Receive Maximum.
        for pid in (1, 2, 3):
            c.send(raw.publish(topic, b"q2", qos=2, packet_id=pid, level=5))
        seen = []
        for _ in range(5):
            p = c.recv(3)
            if p is None:
                break
            seen.append(p)
            if p.kind == raw.DISCONNECT:
                break
        assert seen and seen[-1].kind == raw.DISCONNECT and seen[-1].body[:1] == b"\x93", seen
        assert c.closed_within(3)
    finally:
        c.close()
