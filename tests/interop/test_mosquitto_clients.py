"""Interop with the Mosquitto command-line clients `mosquitto_pub` and `mosquitto_sub` for
MQTT 3.1, 3.1.1 and 5.0 (driven through subprocess, every wait bounded)."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest

from interop_client import V31, V311, V5, unique_client_id, unique_topic, version_id

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto_pub") and shutil.which("mosquitto_sub")),
    reason="mosquitto-clients not installed",
)

CLI_VERSIONS = {V31: "mqttv31", V311: "mqttv311", V5: "mqttv5"}
versions = pytest.mark.parametrize("version", [V31, V311, V5], ids=version_id)
MSG = "MSG|"
FORMAT = MSG + "%t|%q|%r|%p"


def line_buffered(cmd: list[str]) -> list[str]:
    # mosquitto_sub writes through stdio; force line buffering so debug lines arrive in time.
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL", *cmd] if stdbuf else cmd


def cli_id(prefix: str) -> str:
    return unique_client_id(prefix)


class Sub:
    """A running `mosquitto_sub` whose output lines are collected by a reader thread."""

    def __init__(self, port: int, version: int, topic: str | list[str], *args: str,
                 fmt: str = FORMAT) -> None:
        topics = [topic] if isinstance(topic, str) else topic
        cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", CLI_VERSIONS[version],
               "-d", "-F", fmt]
        if "-i" not in args:
            cmd += ["-i", cli_id("ms")]
        for t in topics:
            cmd += ["-t", t]
        cmd += list(args)
        self.proc = subprocess.Popen(line_buffered(cmd), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     errors="replace")
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.all_lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.nsubacks = len(topics)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next(self, deadline: float) -> str | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("mosquitto_sub: timed out; output so far:\n" + "\n".join(self.all_lines))
        try:
            line = self.lines.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError(
                "mosquitto_sub: timed out; output so far:\n" + "\n".join(self.all_lines)) from None
        if line is not None:
            self.all_lines.append(line)
        return line

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        seen = 0
        while seen < 1:
            line = self._next(deadline)
            if line is None:
                raise AssertionError("mosquitto_sub exited before SUBACK:\n" + "\n".join(self.all_lines))
            if "received SUBACK" in line:
                seen += 1

    def messages(self, n: int, timeout: float = 5.0) -> list[list[str]]:
        """The next `n` messages as [topic, qos, retain, payload...] fields."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            line = self._next(deadline)
            if line is None:
                raise AssertionError(f"mosquitto_sub exited after {len(out)} of {n} messages:\n"
                                     + "\n".join(self.all_lines))
            if line.startswith(MSG):
                out.append(line[len(MSG):].split("|"))
        return out

    def rest(self, timeout: float = 5.0) -> list[list[str]]:
        """Every remaining message until the process ends (it must end within `timeout`)."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            line = self._next(deadline)
            if line is None:
                return out
            if line.startswith(MSG):
                out.append(line[len(MSG):].split("|"))

    def wait(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def subs():
    started: list[Sub] = []

    def make(*args, **kwargs) -> Sub:
        s = Sub(*args, **kwargs)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def mosquitto_pub(port: int, version: int, topic: str, *args: str, message: str | None = None,
                  stdin: str | None = None, timeout: float = 10.0) -> subprocess.CompletedProcess:
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", CLI_VERSIONS[version],
           "-i", cli_id("mp"), "-t", topic]
    if message is not None:
        cmd += ["-m", message]
    cmd += list(args)
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed: {result.stdout}{result.stderr}"
    return result


# ----- pub/sub at every QoS -----

@versions
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_pub_to_paho(clients, broker, version, qos):
    topic = unique_topic("cli")
    sub = clients.connected(version)
    sub.subscribe(topic, 2)
    mosquitto_pub(broker.port, version, topic, "-q", str(qos), message=f"hello q{qos}")
    m = sub.get()
    assert (m.topic, m.payload, m.qos) == (topic, f"hello q{qos}".encode(), qos)


@versions
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_to_mosquitto_sub(clients, broker, subs, version, qos):
    topic = unique_topic("cli")
    s = subs(broker.port, version, topic, "-q", str(qos), "-C", "3", "-W", "10")
    s.wait_subscribed()
    pub = clients.connected(version)
    for i in range(3):
        pub.publish(topic, f"m{i}", qos)
    got = s.rest(timeout=10)
    assert got == [[topic, str(qos), "0", f"m{i}"] for i in range(3)]
    assert s.wait() == 0


@versions
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_pub_to_mosquitto_sub(broker, subs, version, qos):
    topic = unique_topic("cli")
    s = subs(broker.port, version, topic, "-q", str(qos), "-C", "5", "-W", "10")
    s.wait_subscribed()
    lines = [f"line {i}" for i in range(5)]
    # -l: one message per input line, over one connection.
    mosquitto_pub(broker.port, version, topic, "-q", str(qos), "-l", stdin="\n".join(lines) + "\n")
    got = s.rest(timeout=10)
    assert got == [[topic, str(qos), "0", line] for line in lines]
    assert s.wait() == 0


@versions
def test_mosquitto_sub_wildcard_and_qos_downgrade(broker, subs, version):
    base = unique_topic("cli")
    s = subs(broker.port, version, f"{base}/+/v", "-q", "1", "-C", "2", "-W", "10")
    s.wait_subscribed()
    mosquitto_pub(broker.port, version, f"{base}/a/v", "-q", "2", message="a")
    mosquitto_pub(broker.port, version, f"{base}/a/w", "-q", "2", message="nope")
    mosquitto_pub(broker.port, version, f"{base}/b/v", "-q", "0", message="b")
    got = s.rest(timeout=10)
    # QoS 2 downgraded to the subscription's 1; QoS 0 stays 0.
    assert got == [[f"{base}/a/v", "1", "0", "a"], [f"{base}/b/v", "0", "0", "b"]]


# ----- retained -----

@versions
def test_mosquitto_retained_set_replace_delete(broker, subs, version):
    topic = unique_topic("cli")
    mosquitto_pub(broker.port, version, topic, "-r", "-q", "1", message="first")
    mosquitto_pub(broker.port, version, topic, "-r", "-q", "1", message="second")
    s = subs(broker.port, version, topic, "-q", "1", "-C", "1", "-W", "5")
    assert s.rest(timeout=8) == [[topic, "1", "1", "second"]]
    # -r -n: a zero-length retained message deletes it.
    mosquitto_pub(broker.port, version, topic, "-r", "-n", "-q", "1")
    s2 = subs(broker.port, version, topic, "-q", "1", "-W", "1")
    s2.wait_subscribed()
    assert s2.rest(timeout=8) == []


@versions
def test_mosquitto_sub_retained_only(broker, subs, version):
    topic = unique_topic("cli")
    mosquitto_pub(broker.port, version, f"{topic}/x", "-r", message="r1")
    s = subs(broker.port, version, f"{topic}/#", "--retained-only", "-W", "5")
    got = s.messages(1, timeout=8)
    assert got == [[f"{topic}/x", "0", "1", "r1"]]
    s.stop()
    mosquitto_pub(broker.port, version, f"{topic}/x", "-r", "-n")


# ----- will -----

@versions
@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_mosquitto_sub_will_on_sigkill(clients, broker, subs, version, will_qos):
    will_topic = unique_topic("cliwill")
    watcher = clients.connected(version)
    watcher.subscribe(will_topic, 2)
    s = subs(broker.port, version, unique_topic("cli"), "--will-topic", will_topic,
             "--will-payload", "cli died", "--will-qos", str(will_qos))
    s.wait_subscribed()
    s.kill()  # SIGKILL: no DISCONNECT
    m = watcher.get()
    assert (m.topic, m.payload, m.qos) == (will_topic, b"cli died", will_qos)


@versions
def test_mosquitto_sub_no_will_on_clean_exit(clients, broker, subs, version):
    will_topic = unique_topic("cliwill")
    watcher = clients.connected(version)
    watcher.subscribe(will_topic, 1)
    s = subs(broker.port, version, unique_topic("cli"), "--will-topic", will_topic,
             "--will-payload", "should not", "-E")
    assert s.wait(timeout=5) == 0  # -E: exits (with DISCONNECT) once subscribed
    watcher.expect_nothing(1.0)


# ----- persistent sessions -----

@versions
def test_mosquitto_sub_persistent_session_offline_queue(broker, subs, version):
    topic = unique_topic("cli")
    cid = cli_id("ps")
    if version == V5:
        # First connection: clean start with a Session Expiry Interval, so the session outlives
        # it. (mosquitto_sub -c in 5.0 adds its own session-expiry-interval, and a second one
        # from -D would be a duplicate property, so -c is used only to resume.)
        first_args = ["-i", cid, "-q", "1", "-D", "connect", "session-expiry-interval", "60"]
    else:
        first_args = ["-c", "-i", cid, "-q", "1"]
    first = subs(broker.port, version, topic, *first_args, "-E")
    assert first.wait(timeout=5) == 0
    mosquitto_pub(broker.port, version, topic, "-q", "1", message="while away")
    back = subs(broker.port, version, topic, "-c", "-i", cid, "-q", "1", "-C", "1", "-W", "5")
    assert back.rest(timeout=8) == [[topic, "1", "0", "while away"]]


@pytest.mark.slow
def test_mosquitto_sub_session_expiry_interval_expires(broker, subs):
    topic = unique_topic("cli")
    cid = cli_id("se")
    first = subs(broker.port, V5, topic, "-i", cid, "-q", "1",
                 "-D", "connect", "session-expiry-interval", "1", "-E")
    assert first.wait(timeout=5) == 0
    mosquitto_pub(broker.port, V5, topic, "-q", "1", message="lost with the session")
    time.sleep(2.5)
    back = subs(broker.port, V5, topic, "-c", "-i", cid, "-q", "1", "-W", "1")
    back.wait_subscribed()
    assert back.rest(timeout=8) == []


# ----- MQTT 5 properties -----

def test_mosquitto_pub_v5_user_properties_to_paho(clients, broker):
    topic = unique_topic("cli")
    sub = clients.connected(V5)
    sub.subscribe(topic, 1)
    mosquitto_pub(broker.port, V5, topic, "-q", "1",
                  "-D", "publish", "user-property", "k", "v",
                  "-D", "publish", "user-property", "k2", "v2",
                  "-D", "publish", "content-type", "text/plain",
                  "-D", "publish", "response-topic", "resp/x",
                  "-D", "publish", "correlation-data", "abc",
                  message="props")
    m = sub.get()
    assert m.payload == b"props"
    assert m.user_properties == [("k", "v"), ("k2", "v2")]
    assert m.properties.ContentType == "text/plain"
    assert m.properties.ResponseTopic == "resp/x"
    assert m.properties.CorrelationData == b"abc"


def test_paho_v5_user_properties_to_mosquitto_sub(clients, broker, subs):
    from interop_client import publish_props

    topic = unique_topic("cli")
    s = subs(broker.port, V5, topic, "-q", "1", "-C", "1", "-W", "5",
             fmt=MSG + "%t|%P|%C|%R|%p")
    s.wait_subscribed()
    pub = clients.connected(V5)
    pub.publish(topic, b"to cli", 1, properties=publish_props(
        UserProperty=[("site", "north")], ContentType="text/plain", ResponseTopic="r/1"))
    got = s.rest(timeout=8)
    assert got == [[topic, "site:north", "text/plain", "r/1", "to cli"]]


def test_mosquitto_pub_v5_topic_alias(clients, broker):
    topic = unique_topic("cli")
    sub = clients.connected(V5)
    sub.subscribe(topic, 1)
    # mosquitto_pub sends the topic with alias 1 once, then the alias with an empty topic.
    mosquitto_pub(broker.port, V5, topic, "-q", "1", "-l", "-D", "publish", "topic-alias", "1",
                  stdin="a1\na2\na3\n")
    got = sub.get_n(3)
    assert [(m.topic, m.payload) for m in got] == [(topic, b"a1"), (topic, b"a2"), (topic, b"a3")]


@pytest.mark.slow
def test_mosquitto_pub_v5_message_expiry_on_retained(broker, subs):
    topic = unique_topic("cli")
    mosquitto_pub(broker.port, V5, topic, "-r", "-q", "1",
                  "-D", "publish", "message-expiry-interval", "1", message="brief")
    time.sleep(2.2)
    s = subs(broker.port, V5, topic, "-q", "1", "-W", "1")
    assert s.rest(timeout=8) == []


def test_mosquitto_sub_v5_subscription_identifier(clients, broker, subs):
    topic = unique_topic("cli")
    s = subs(broker.port, V5, topic, "-q", "1", "-C", "1", "-W", "5",
             "-D", "subscribe", "subscription-identifier", "42", fmt=MSG + "%t|%S|%p")
    s.wait_subscribed()
    clients.connected(V5).publish(topic, b"sid", 1)
    assert s.rest(timeout=8) == [[topic, "42", "sid"]]


@versions
def test_mosquitto_sub_shared_subscription(clients, broker, subs, version):
    topic = unique_topic("cli")
    share = f"$share/g{uuid.uuid4().hex[:6]}/{topic}"
    a = subs(broker.port, version, share, "-q", "1", "-W", "4")
    b = subs(broker.port, version, share, "-q", "1", "-W", "4")
    a.wait_subscribed()
    b.wait_subscribed()
    pub = clients.connected(version)
    for i in range(10):
        pub.publish(topic, f"s{i}", 1)
    got_a = a.rest(timeout=10)
    got_b = b.rest(timeout=10)
    payloads = sorted(m[3] for m in got_a + got_b)
    assert payloads == sorted(f"s{i}" for i in range(10))
    assert got_a and got_b


@versions
@pytest.mark.parametrize("qos", [1, 2])
def test_mosquitto_pub_file_payload(clients, broker, tmp_path, version, qos):
    topic = unique_topic("cli")
    body = bytes(range(256)) * 400  # ~100 KiB, every byte value
    path = tmp_path / "payload.bin"
    path.write_bytes(body)
    sub = clients.connected(version)
    sub.subscribe(topic, qos)
    mosquitto_pub(broker.port, version, topic, "-q", str(qos), "-f", str(path))
    m = sub.get()
    assert (m.payload, m.qos) == (body, qos)


@pytest.mark.skipif(not shutil.which("mosquitto_rr"), reason="mosquitto_rr not installed")
def test_mosquitto_rr_request_response(clients, broker):
    req_topic = unique_topic("rr")
    responder = clients.connected(V5)
    responder.subscribe(req_topic, 1)
    resp_topic = unique_topic("rr-resp")
    proc = subprocess.Popen(
        ["mosquitto_rr", "-h", "127.0.0.1", "-p", str(broker.port), "-i", cli_id("rr"),
         "-t", req_topic, "-e", resp_topic, "-m", "ping", "-q", "1", "-W", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        req = responder.get(timeout=8)
        assert req.payload == b"ping"
        # mosquitto_rr sets the Response Topic (and may set Correlation Data); both must arrive
        # unchanged so the reply finds its way back.
        assert req.properties.ResponseTopic == resp_topic
        from interop_client import publish_props

        reply_props = {}
        corr = getattr(req.properties, "CorrelationData", None)
        if corr is not None:
            reply_props["CorrelationData"] = corr
        responder.publish(resp_topic, b"pong", 1, properties=publish_props(**reply_props))
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, out
    assert out.strip().splitlines()[-1] == "pong"


def test_mosquitto_sub_v5_receive_maximum(clients, broker, subs):
    topic = unique_topic("cli")
    s = subs(broker.port, V5, topic, "-q", "2", "-C", "40", "-W", "20",
             "-D", "connect", "receive-maximum", "1")
    s.wait_subscribed()
    pub = clients.connected(V5)
    for i in range(40):
        pub.publish(topic, f"rm{i}", 2, wait=False)
    got = s.rest(timeout=25)
    # Flow control with a Receive Maximum of 1: everything still arrives, in order.
    assert [m[3] for m in got] == [f"rm{i}" for i in range(40)]


def test_mosquitto_sub_v5_maximum_packet_size(clients, broker, subs):
    topic = unique_topic("cli")
    s = subs(broker.port, V5, topic, "-q", "1", "-C", "2", "-W", "8",
             "-D", "connect", "maximum-packet-size", "200")
    s.wait_subscribed()
    pub = clients.connected(V5)
    pub.publish(topic, b"small", 1)
    pub.publish(topic, b"x" * 500, 1)  # too big for this client: not sent [MQTT-3.1.2-25]
    pub.publish(topic, b"small again", 1)
    got = s.rest(timeout=10)
    assert [m[3] for m in got] == ["small", "small again"]



# Not tested: `mosquitto_sub -D connect topic-alias-maximum N`. libmosquitto 2.0.11 reports "A
# network protocol error" on the first PUBLISH that carries only a broker-assigned alias (empty
# topic), which MQTT 5.0 allows once the client has announced a Topic Alias Maximum
# [MQTT-3.3.2-10]. Broker-assigned aliases are checked with paho in test_v5_features.py.
