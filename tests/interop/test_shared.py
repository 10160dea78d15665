"""Shared subscriptions `$share/{group}/{filter}` with paho-mqtt for every protocol version."""

import uuid

import pytest

from interop_client import ALL_VERSIONS, V311, V5, collect, payloads, unique_topic, version_id

versions = pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)


def group() -> str:
    return "g" + uuid.uuid4().hex[:8]


@versions
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_4_8_2_each_message_to_one_member_round_robin(clients, version, qos):
    topic = unique_topic("sh")
    share = f"$share/{group()}/{topic}"
    a = clients.connected(version)
    b = clients.connected(version)
    assert a.subscribe(share, qos) == [qos]
    assert b.subscribe(share, qos) == [qos]
    pub = clients.connected(version)
    sent = payloads("s", 10)
    for p in sent:
        pub.publish(topic, p, qos)
    got_a, got_b = collect([a, b], len(sent))
    # [MQTT-4.8.2]: each message goes to exactly one member of the group: no loss, no copies.
    all_payloads = sorted(m.payload for m in got_a + got_b)
    assert all_payloads == sorted(sent)
    # Round robin (the default) gives every member some of them.
    assert got_a and got_b, (len(got_a), len(got_b))
    # The topic is the real topic, not the share filter.
    assert all(m.topic == topic for m in got_a + got_b)


@versions
def test_shared_and_plain_subscriptions_both_receive(clients, version):
    topic = unique_topic("sh")
    g = group()
    member = clients.connected(version)
    member.subscribe(f"$share/{g}/{topic}", 1)
    plain = clients.connected(version)
    plain.subscribe(topic, 1)
    pub = clients.connected(version)
    sent = payloads("p", 5)
    for p in sent:
        pub.publish(topic, p, 1)
    assert [m.payload for m in plain.get_n(5)] == sent
    assert sorted(m.payload for m in member.get_n(5)) == sorted(sent)


@versions
def test_two_groups_each_get_every_message(clients, version):
    topic = unique_topic("sh")
    g1, g2 = group(), group()
    members = {g1: [clients.connected(version) for _ in range(2)],
               g2: [clients.connected(version) for _ in range(2)]}
    for g, cs in members.items():
        for c in cs:
            c.subscribe(f"$share/{g}/{topic}", 1)
    pub = clients.connected(version)
    sent = payloads("t", 8)
    for p in sent:
        pub.publish(topic, p, 1)
    for g, cs in members.items():
        got = [m.payload for per in collect(cs, len(sent)) for m in per]
        assert sorted(got) == sorted(sent), g


@versions
def test_shared_subscription_with_wildcard_filter(clients, version):
    base = unique_topic("sh")
    g = group()
    a = clients.connected(version)
    b = clients.connected(version)
    a.subscribe(f"$share/{g}/{base}/+/x", 1)
    b.subscribe(f"$share/{g}/{base}/+/x", 1)
    pub = clients.connected(version)
    for i in range(6):
        pub.publish(f"{base}/{i}/x", b"w%d" % i, 1)
    pub.publish(f"{base}/9/y", b"no", 1)
    got_a, got_b = collect([a, b], 6)
    got = got_a + got_b
    assert sorted(m.payload for m in got) == sorted(b"w%d" % i for i in range(6))


@versions
def test_unsubscribe_shared_leaves_group(clients, version):
    topic = unique_topic("sh")
    share = f"$share/{group()}/{topic}"
    a = clients.connected(version)
    b = clients.connected(version)
    a.subscribe(share, 1)
    b.subscribe(share, 1)
    a.unsubscribe(share)
    pub = clients.connected(version)
    sent = payloads("u", 6)
    for p in sent:
        pub.publish(topic, p, 1)
    assert [m.payload for m in b.get_n(6)] == sent
    a.expect_nothing(0.3)


@pytest.mark.mosquitto_deviates
def test_mqtt_3_3_1_3_shared_subscription_not_sent_retained(clients):
    topic = unique_topic("sh")
    pub = clients.connected(V5)
    pub.publish(topic, b"retained", 1, retain=True)
    member = clients.connected(V5)
    member.subscribe(f"$share/{group()}/{topic}", 1)
    # MQTT 5.0 section 3.3.1.3: "When a new Non-shared Subscription is made, the last retained
    # message ... is sent"; a Shared Subscription gets no retained messages. Mosquitto 2.0.11
    # sends them anyway.
    member.expect_nothing(0.7)
    pub.publish(topic, b"", 1, retain=True)


@pytest.mark.aviary_only
@pytest.mark.parametrize("version", [V311, V5], ids=version_id)
def test_unacked_messages_of_leaving_member_go_to_another(clients, version):
    # Issue 2: "a member's unacknowledged messages go to another member when it leaves".
    # Mosquitto drops them with the member's clean session.
    topic = unique_topic("sh")
    share = f"$share/{group()}/{topic}"
    lazy = clients.connected(version, manual_ack=True)
    lazy.subscribe(share, 1)
    good = clients.connected(version)
    good.subscribe(share, 1)
    pub = clients.connected(version)
    sent = payloads("x", 10)
    for p in sent:
        pub.publish(topic, p, 1)
    held, first = collect([lazy, good], len(sent))
    assert held, "round robin gave the lazy member nothing"
    lazy.kill()  # never acknowledged; the clean session ends
    moved = good.get_n(len(held), timeout=10)
    assert sorted(m.payload for m in moved) == sorted(m.payload for m in held)
    assert sorted(m.payload for m in first + moved) == sorted(sent)
