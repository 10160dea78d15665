"""The plan's limits set through the management API (`PUT /api/v1/limits`, as an operator would),
seen by paho clients: the reason code each limit gives, and that other clients go on as before.
Each test has its own broker, as the rates are broker-wide."""

from __future__ import annotations

import time

import pytest

from conftest import api_call
from interop_client import (
    ALL_VERSIONS,
    V5,
    Client,
    payloads,
    unique_topic,
    version_id,
)

pytestmark = pytest.mark.aviary_only

versions = pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)

# CONNACK for a connect over a rate: 0x9F Connection rate exceeded (5.0); 3.x has no such code,
# so 0x03 Server unavailable.
RATE_REFUSED = {V5: 0x9F}


def set_limits(broker, **changes: int) -> dict:
    """Changes some plan limits through the API; returns the plan in force."""
    limits = api_call(broker.api_port, "GET", "/api/v1/limits")
    limits.update(changes)
    return api_call(broker.api_port, "PUT", "/api/v1/limits", limits)


def still_serves(port: int, version: int, client: Client) -> None:
    """`client` (connected) still gets what another client publishes."""
    topic = unique_topic("alive")
    assert client.subscribe(topic, 1) == [1]
    other = Client(port, version)
    try:
        other.connect()
        other.publish(topic, b"still here", 1)
        assert client.get().payload == b"still here"
    finally:
        other.close()


@versions
def test_connects_over_the_connect_rate_are_refused(broker_factory, version):
    b = broker_factory()
    assert set_limits(b, connect_rate=1)["connect_rate"] == 1
    first, second = Client(b.port, version), Client(b.port, version)
    try:
        assert first.connect().reason_code == 0
        ack = second.try_connect()
        assert ack is not None, "refused with a CONNACK, not just closed"
        assert ack.reason_code == RATE_REFUSED.get(version, 0x03)
        second.close()
        # The client admitted is unaffected (the next second's token serves its helper).
        time.sleep(1.1)
        still_serves(b.port, version, first)
    finally:
        first.close()
        second.close()


@versions
def test_connects_with_a_will_over_their_rate_are_refused(broker_factory, version):
    b = broker_factory()
    set_limits(b, will_connect_rate=1)
    topic = unique_topic("will")
    first, second = Client(b.port, version), Client(b.port, version)
    plain = Client(b.port, version)
    try:
        first.will_set(topic, b"gone")
        assert first.connect().reason_code == 0
        second.will_set(topic, b"gone too")
        ack = second.try_connect()
        assert ack is not None and ack.reason_code == RATE_REFUSED.get(version, 0x03)
        second.close()
        # Without a will only the connect rate (default 100/s) applies.
        assert plain.connect().reason_code == 0
        still_serves(b.port, version, plain)
        still_serves(b.port, version, first)
    finally:
        for c in (first, second, plain):
            c.close()


@versions
def test_retained_messages_over_the_count(broker_factory, version):
    b = broker_factory()
    set_limits(b, max_retained=1)
    base = unique_topic("ret")
    publisher = Client(b.port, version)
    try:
        publisher.connect()
        first = publisher.publish(f"{base}/a", b"kept", 1, retain=True)
        second = publisher.publish(f"{base}/b", b"over", 1, retain=True)
        if version == V5:
            # 0x10 No matching subscribers (stored all the same), then 0x97 Quota exceeded.
            assert (first, second) == (0x10, 0x97)
        # Whatever the version, only the first is stored: a new subscriber gets just it.
        late = Client(b.port, version)
        try:
            late.connect()
            late.subscribe(f"{base}/#", 1)
            got = late.get()
            assert (got.topic, got.payload, got.retain) == (f"{base}/a", b"kept", True)
            late.expect_nothing(0.5)
            # Messages without the retain flag are not affected by the count.
            publisher.publish(f"{base}/c", b"live", 1)
            assert late.get().payload == b"live"
        finally:
            late.close()
        listed = api_call(b.api_port, "GET", "/api/v1/retained")
        assert [m["topic"] for m in listed] == [f"{base}/a"]
    finally:
        publisher.close()


@versions
def test_messages_over_the_size_limit_close_only_their_sender(broker_factory, version):
    b = broker_factory()
    set_limits(b, max_message_size=1024)
    topic = unique_topic("size")
    bystander, big = Client(b.port, version), Client(b.port, version)
    try:
        bystander.connect()
        bystander.subscribe(topic, 1)
        big.connect()
        big.publish(topic, b"x" * 2000, 1, wait=False)
        gone = big.wait_disconnected()
        if version == V5:
            # DISCONNECT 0x95 Packet too large [MQTT-3.2.2-15]; 3.x just closes.
            assert (gone.by_packet, gone.reason_code) == (True, 0x95)
        bystander.expect_nothing(0.3)
        bystander.publish(topic, b"small", 1)
        assert bystander.get().payload == b"small"
    finally:
        bystander.close()
        big.close()


@versions
def test_messages_over_the_rate_are_paced_not_refused(broker_factory, version):
    b = broker_factory()
    # 100 units/s; each message below counts 2 received (QoS 1, clean session) + 1 delivered
    # (QoS 0 subscription): 150 messages are 450 units, some 3.5 s after a second of burst.
    set_limits(b, max_messages_per_second=100)
    topic = unique_topic("rate")
    sub, publisher = Client(b.port, version), Client(b.port, version)
    watcher = Client(b.port, version)
    try:
        sub.connect()
        sub.subscribe(topic, 0)
        publisher.connect()
        time.sleep(1.1)  # a full bucket to start with
        sent = payloads("m", 150)
        start = time.monotonic()
        # One after the other, each waiting for its PUBACK: the reason codes paho sees.
        codes = [publisher.publish(topic, p, 1) for p in sent[:60]]
        # In debt by now: a client that does not publish connects and subscribes as usual.
        assert watcher.connect().reason_code == 0
        assert watcher.subscribe(unique_topic("other"), 1) == [1]
        codes += [publisher.publish(topic, p, 1) for p in sent[60:]]
        got = sub.get_n(150, timeout=30)
        elapsed = time.monotonic() - start
        # Nothing lost, in order; every PUBACK a success (paced, never refused).
        assert [m.payload for m in got] == sent
        assert set(codes) == {0}
        # Paced: measured loosely (theory 3.5 s; without the limit well under a second).
        assert elapsed >= 2.0, f"150 messages in {elapsed:.2f}s"
    finally:
        for c in (sub, publisher, watcher):
            c.close()
