"""A thin, bounded, synchronous wrapper around paho-mqtt 2.x for the interop tests.

Every call that waits for the broker has a timeout; received messages land in a queue.
The broker's outgoing topic aliases (MQTT 5) are resolved here, as an application using paho
has to do, and every alias use is recorded so tests can see whether the broker used them.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

V31 = mqtt.MQTTv31
V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
ALL_VERSIONS = [V31, V311, V5]
VERSION_IDS = {V31: "v31", V311: "v311", V5: "v5"}

# paho's 5.0 reason code for each 3.x CONNACK return code, reversed.
V3_CONNACK_CODES = {0x00: 0, 0x84: 1, 0x85: 2, 0x88: 3, 0x86: 4, 0x87: 5}

# Default bound for any single wait on the broker; raise it on a very slow machine.
TIMEOUT = float(os.environ.get("AVIARY_INTEROP_TIMEOUT", "5"))


def version_id(version: int) -> str:
    return VERSION_IDS[version]


def unique_topic(prefix: str = "it") -> str:
    """A topic no other test uses."""
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


def unique_client_id(prefix: str = "c") -> str:
    # MQTT 3.1 limits client identifiers to 23 characters; stay within that for every version.
    return f"{prefix}{uuid.uuid4().hex}"[:23]


def props(packet_type: int, **values: Any) -> Properties:
    """MQTT 5 properties, e.g. `props(PacketTypes.PUBLISH, MessageExpiryInterval=5)`."""
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def publish_props(**values: Any) -> Properties:
    return props(PacketTypes.PUBLISH, **values)


def connect_props(**values: Any) -> Properties:
    return props(PacketTypes.CONNECT, **values)


def prop(properties: Properties | None, name: str, default: Any = None) -> Any:
    if properties is None:
        return default
    return getattr(properties, name, default)


@dataclass
class Received:
    """One PUBLISH as the application sees it (topic alias already resolved)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int
    properties: Properties | None
    # The topic alias the broker put on the wire, if any, and whether the topic was empty.
    wire_alias: int | None = None
    wire_topic_empty: bool = False

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        return list(prop(self.properties, "UserProperty", []) or [])


@dataclass
class ConnAck:
    session_present: bool
    reason_code: int
    properties: Properties | None


@dataclass
class Disconnected:
    reason_code: int
    properties: Properties | None
    # True when the broker sent DISCONNECT; False when the connection just closed.
    by_packet: bool = False


class MqttError(AssertionError):
    pass


class Client:
    """A paho client driven by its own network thread, with bounded waits."""

    def __init__(
        self,
        port: int,
        version: int = V311,
        client_id: str | None = None,
        *,
        clean: bool = True,
        host: str = "127.0.0.1",
        manual_ack: bool = False,
        max_inflight: int = 20,
    ) -> None:
        self.port = port
        self.host = host
        self.version = version
        self.client_id = unique_client_id() if client_id is None else client_id
        self.clean = clean
        kwargs: dict[str, Any] = dict(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=version,
            reconnect_on_failure=False,
        )
        if version != V5:
            kwargs["clean_session"] = clean
        self.paho = mqtt.Client(**kwargs)
        self._max_inflight = max_inflight
        self.paho.max_inflight_messages_set(max_inflight)
        if manual_ack:
            self.paho.manual_ack_set(True)
        self.messages: queue.Queue[Received] = queue.Queue()
        self._connack: queue.Queue[ConnAck] = queue.Queue()
        self._subacks: dict[int, tuple[list[int], Properties | None]] = {}
        self._unsubacks: dict[int, list[int]] = {}
        self._acked: dict[int, int] = {}
        self._cond = threading.Condition()
        self.disconnected = threading.Event()
        self.disconnect_info: Disconnected | None = None
        self._aliases: dict[int, str] = {}
        self.paho.on_connect = self._on_connect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_unsubscribe = self._on_unsubscribe
        self.paho.on_publish = self._on_publish
        self.paho.on_disconnect = self._on_disconnect
        self._loop_started = False

    # ----- callbacks (paho network thread) -----

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        props_ = properties if self.version == V5 else None
        # A compliant client keeps at most the server's Receive Maximum of QoS 1/2 PUBLISHes
        # unacknowledged [MQTT-3.3.4-7]; paho 2.1 does not apply it by itself.
        server_max = prop(props_, "ReceiveMaximum")
        if server_max is not None and reason_code.value == 0:
            # The public setter refuses while connected; nothing is in flight yet at CONNACK.
            self.paho._max_inflight_messages = min(self._max_inflight, int(server_max))
        code = int(reason_code.value)
        if self.version != V5:
            # paho maps 3.x CONNACK return codes onto 5.0 reason codes; undo that so tests see
            # the byte on the wire (3.1.1 section 3.2.2.3).
            code = V3_CONNACK_CODES.get(code, code)
        self._connack.put(ConnAck(bool(flags.session_present), code, props_))

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        properties = message.properties if self.version == V5 else None
        raw_topic = message._topic  # bytes as on the wire
        alias = prop(properties, "TopicAlias")
        topic = raw_topic.decode("utf-8")
        if alias is not None:
            if topic:
                self._aliases[alias] = topic
            else:
                topic = self._aliases.get(alias, f"<unknown topic alias {alias}>")
        self.messages.put(
            Received(
                topic=topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                dup=bool(message.dup),
                mid=message.mid,
                properties=properties,
                wire_alias=alias,
                wire_topic_empty=not raw_topic,
            )
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self._subacks[mid] = ([int(rc.value) for rc in reason_codes], properties)
            self._cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            codes = reason_codes if isinstance(reason_codes, list) else [reason_codes]
            self._unsubacks[mid] = [int(rc.value) for rc in codes]
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            self._acked[mid] = int(reason_code.value)
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # paho reports a lost connection as "Unspecified error" (0x80) without a packet.
        self.disconnect_info = Disconnected(
            int(reason_code.value),
            properties if self.version == V5 else None,
            by_packet=bool(flags.is_disconnect_packet_from_server),
        )
        self.disconnected.set()

    # ----- operations -----

    def will_set(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.paho.will_set(topic, payload, qos=qos, retain=retain, properties=properties)

    def connect(
        self,
        *,
        keepalive: int = 30,
        properties: Properties | None = None,
        clean_start: bool | None = None,
        expect_success: bool = True,
        timeout: float = TIMEOUT,
    ) -> ConnAck:
        """Connects and waits for CONNACK. MQTT 5 uses `clean_start` (default: `self.clean`)."""
        self.disconnected.clear()
        self.disconnect_info = None
        if self.version == V5:
            start = self.clean if clean_start is None else clean_start
            self.paho.connect(
                self.host, self.port, keepalive=keepalive, clean_start=start, properties=properties
            )
        else:
            self.paho.connect(self.host, self.port, keepalive=keepalive)
        if not self._loop_started:
            self.paho.loop_start()
            self._loop_started = True
        try:
            ack = self._connack.get(timeout=timeout)
        except queue.Empty:
            raise MqttError(f"no CONNACK within {timeout}s") from None
        if expect_success and ack.reason_code != 0:
            self.close()
            raise MqttError(f"CONNACK refused: 0x{ack.reason_code:02x}")
        return ack

    def try_connect(self, **kwargs: Any) -> ConnAck | None:
        """Connects; returns the CONNACK, or None when the broker closed without one."""
        timeout = kwargs.pop("timeout", TIMEOUT)
        try:
            ack = self.connect(expect_success=False, timeout=timeout, **kwargs)
        except MqttError:
            if self.disconnected.is_set():
                return None
            raise
        except OSError:
            return None
        return ack

    def subscribe(
        self,
        topic: str | Sequence[tuple[str, Any]],
        qos: int = 0,
        *,
        options: SubscribeOptions | None = None,
        properties: Properties | None = None,
        timeout: float = TIMEOUT,
    ) -> list[int]:
        """Subscribes and waits for SUBACK; returns its granted QoS / reason codes."""
        if isinstance(topic, str):
            if self.version == V5:
                opts = options if options is not None else SubscribeOptions(qos=qos)
                result, mid = self.paho.subscribe(topic, options=opts, properties=properties)
            else:
                result, mid = self.paho.subscribe(topic, qos)
        else:
            result, mid = self.paho.subscribe(list(topic), properties=properties)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"subscribe failed locally: {result}")
        return self._wait_map(self._subacks, mid, timeout, "SUBACK")[0]

    def unsubscribe(self, topic: str | list[str], timeout: float = TIMEOUT) -> list[int]:
        result, mid = self.paho.unsubscribe(topic)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"unsubscribe failed locally: {result}")
        return self._wait_map(self._unsubacks, mid, timeout, "UNSUBACK")

    def publish(
        self,
        topic: str,
        payload: bytes | str | None = b"",
        qos: int = 0,
        retain: bool = False,
        *,
        properties: Properties | None = None,
        wait: bool = True,
        timeout: float = TIMEOUT,
    ) -> int:
        """Publishes; with `wait`, waits for the QoS flow to finish (PUBACK / PUBCOMP) or, for
        QoS 0, for the packet to be written. Returns the PUBACK/PUBREC reason code (5.0) or 0."""
        was_up = not self.disconnected.is_set()
        info = self.paho.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            # paho 2.1 races with a broker that closes at once on this very packet (one it
            # refuses): its network thread writes the PUBLISH, sees the close and ends
            # before publish() has returned, which then reports "no connection" (4). A
            # caller that does not wait expects that close and checks it itself.
            closed_meanwhile = was_up and self.disconnected.is_set()
            if not wait and info.rc == mqtt.MQTT_ERR_NO_CONN and closed_meanwhile:
                return 0
            raise MqttError(f"publish failed locally: {info.rc}")
        if not wait:
            return 0
        return self._wait_map(self._acked, info.mid, timeout, "publish completion")

    def ack(self, mid: int, qos: int) -> None:
        self.paho.ack(mid, qos)

    def _wait_map(self, table: dict, mid: int, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in table:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.disconnected.is_set():
                    raise MqttError(
                        f"no {what} for mid {mid} within {timeout}s"
                        f" (disconnected: {self.disconnect_info})"
                    )
                self._cond.wait(min(remaining, 0.1))
            return table.pop(mid)

    def get(self, timeout: float = TIMEOUT) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise MqttError(f"{self.client_id}: no message within {timeout}s") from None

    def get_n(self, n: int, timeout: float = TIMEOUT) -> list[Received]:
        """Exactly the next `n` messages, all within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        out: list[Received] = []
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MqttError(
                    f"got {len(out)} of {n} messages within {timeout}s: "
                    f"{[m.payload[:20] for m in out]}"
                )
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                continue
        return out

    def expect_nothing(self, duration: float = 1.0) -> None:
        """Asserts that no message arrives for `duration` seconds."""
        try:
            msg = self.messages.get(timeout=duration)
        except queue.Empty:
            return
        raise MqttError(f"{self.client_id}: unexpected message {msg}")

    def drain(self, duration: float = 0.3) -> list[Received]:
        out = []
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                return out

    def wait_disconnected(self, timeout: float = TIMEOUT) -> Disconnected:
        if not self.disconnected.wait(timeout):
            raise MqttError(f"{self.client_id}: still connected after {timeout}s")
        assert self.disconnect_info is not None
        return self.disconnect_info

    def disconnect(self, properties: Properties | None = None, reasoncode: Any = None) -> None:
        """A normal DISCONNECT, then waits for the network thread to end."""
        if self.version == V5:
            self.paho.disconnect(reasoncode=reasoncode, properties=properties)
        else:
            self.paho.disconnect()
        self.disconnected.wait(TIMEOUT)
        self._stop_loop()

    def kill(self) -> None:
        """Drops the network connection without DISCONNECT (an abnormal loss for the broker)."""
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.disconnected.wait(TIMEOUT)
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop_started:
            self.paho.loop_stop()
            self._loop_started = False

    def close(self) -> None:
        """Ends the client whatever its state (for fixture cleanup)."""
        try:
            if self.paho.is_connected():
                self.disconnect()
        except Exception:
            pass
        try:
            self._stop_loop()
        except Exception:
            pass
        try:
            self.paho.socket() and self.paho.socket().close()
        except Exception:
            pass


class ClientPool:
    """Creates clients for one test and closes them all at the end."""

    def __init__(self, default_port: int) -> None:
        self.default_port = default_port
        self.clients: list[Client] = []

    def new(self, version: int = V311, client_id: str | None = None, *, port: int | None = None,
            **kwargs: Any) -> Client:
        c = Client(self.default_port if port is None else port, version, client_id, **kwargs)
        self.clients.append(c)
        return c

    def connected(self, version: int = V311, client_id: str | None = None, *,
                  port: int | None = None, connect_kwargs: dict | None = None,
                  **kwargs: Any) -> Client:
        c = self.new(version, client_id, port=port, **kwargs)
        c.connect(**(connect_kwargs or {}))
        return c

    def close_all(self) -> None:
        for c in self.clients:
            c.close()
        self.clients.clear()


def payloads(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


def sub_options(qos: int = 0, **kwargs: Any) -> SubscribeOptions:
    return SubscribeOptions(qos=qos, **kwargs)


def topics_of(msgs: Iterable[Received]) -> list[str]:
    return [m.topic for m in msgs]


def collect(subscribers: Sequence[Client], total: int, timeout: float = 10.0,
            settle: float = 0.3) -> list[list[Received]]:
    """Messages from several clients until `total` have arrived in all (bounded by `timeout`),
    then `settle` seconds more to catch any surplus (e.g. duplicates). Per-client lists."""
    out: list[list[Received]] = [[] for _ in subscribers]
    deadline = time.monotonic() + timeout
    while sum(map(len, out)) < total and time.monotonic() < deadline:
        progressed = False
        for i, c in enumerate(subscribers):
            try:
                out[i].append(c.messages.get(timeout=0.02))
                progressed = True
            except queue.Empty:
                pass
        if not progressed:
            time.sleep(0.01)
    for i, c in enumerate(subscribers):
        out[i].extend(c.drain(settle if i == 0 else 0.05))
    return out
