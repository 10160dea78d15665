"""MQTT over WebSocket with paho's websockets transport (MQTT 5.0 section 6).

A WebSocket listener is created at runtime through Aviary's management API (path ``/mqtt``,
subprotocol ``mqtt``; paho offers ``mqttv3.1`` for MQTT 3.1), then paho clients over
WebSocket and over TCP exchange messages both ways.
"""

from __future__ import annotations

import json
import queue
import socket
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from conftest import API_KEY, free_port
from interop_client import ALL_VERSIONS, TIMEOUT, V5, unique_client_id, unique_topic, version_id

pytestmark = pytest.mark.aviary_only


def api(broker, method: str, path: str, body: dict | None = None) -> dict:
    """One call to the broker's management API."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{broker.api_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return json.loads(response.read() or b"null")


@pytest.fixture
def ws_port(broker) -> int:
    """A WebSocket listener on the shared broker, deleted afterwards."""
    name = f"ws{free_port()}"
    created = api(broker, "POST", "/api/v1/listeners", {"name": name, "kind": "ws", "bind": "127.0.0.1:0"})
    port = int(created["address"].rsplit(":", 1)[1])
    yield port
    api(broker, "DELETE", f"/api/v1/listeners/{name}")


class WsClient:
    """A connected paho client over WebSocket; SUBACKs and messages land in queues."""

    def __init__(self, port: int, version: int) -> None:
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.subacks: "queue.Queue[int]" = queue.Queue()
        connected: "queue.Queue[object]" = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=unique_client_id("ws"),
            protocol=version,
            transport="websockets",
        )
        self.paho.ws_set_options(path="/mqtt")
        self.paho.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.paho.on_subscribe = lambda _c, _u, mid, _rc, _p: self.subacks.put(mid)
        self.paho.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
        if version == V5:
            self.paho.connect("127.0.0.1", port, keepalive=30, clean_start=True)
        else:
            self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        rc = connected.get(timeout=TIMEOUT)
        assert not rc.is_failure, rc

    def subscribe(self, topic: str) -> None:
        result, mid = self.paho.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self.subacks.get(timeout=TIMEOUT) == mid

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=version_id)
def test_pubsub_between_websocket_and_tcp(broker, clients, ws_port, version):
    topic = unique_topic("ws")
    ws = WsClient(ws_port, version)
    try:
        ws.subscribe(topic)
        tcp = clients.connected(version)
        tcp.publish(topic, b"from tcp", qos=1)
        message = ws.messages.get(timeout=TIMEOUT)
        assert (message.topic, message.payload) == (topic, b"from tcp")
        # And the other way.
        tcp.subscribe(topic + "/back", qos=1)
        info = ws.paho.publish(topic + "/back", b"from ws", qos=1)
        info.wait_for_publish(timeout=TIMEOUT)
        received = tcp.get()
        assert (received.topic, received.payload) == (topic + "/back", b"from ws")
    finally:
        ws.close()


def test_upgrade_without_the_mqtt_path_is_refused(broker, ws_port):
    with socket.create_connection(("127.0.0.1", ws_port), timeout=TIMEOUT) as s:
        s.sendall(
            b"GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        reply = s.recv(1024)
    assert reply.startswith(b"HTTP/1.1 404"), reply
