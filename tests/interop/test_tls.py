"""MQTT over TLS with paho's ``tls_set``: one certificate per device.

An Aviary with a ``[tls_listener]`` in per-device mode is started with certificates made here
(``cryptography``); a customer CA is registered through the management API with proof of
possession (a verification certificate whose CN is the registration code), two device
certificates are registered, and paho clients connect with them. Then: a device certificate
bound to another client id is refused with 0x87, and deactivating a connected device's
certificate through the API disconnects it (DISCONNECT 0x87) while the other stays.

On the same broker, TLS and secure WebSocket listeners are made through the API: paho over
``tls_set`` and paho's websockets transport over TLS exchange messages, switching the TLS
listener off disconnects its clients (0x98) but not the WSS one, and TLS 1.0 and 1.1
handshakes are refused with an alert while TLS 1.2 keeps working.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import queue
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import API_KEY, STARTUP_TIMEOUT, aviary_binary, aviary_config, free_port
from interop_client import TIMEOUT
from raw_mqtt import RawClient
from raw_mqtt import connect as raw_connect

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

pytestmark = pytest.mark.aviary_only


def pem(obj) -> bytes:
    if hasattr(obj, "public_bytes"):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_cert(cn: str, issuer=None, ca: bool = False, sans=(), serial=None):
    """A certificate (and its key) signed by ``issuer`` = (cert, key), or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    if sans:
        entries = []
        for san in sans:
            try:
                entries.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                entries.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


@pytest.fixture
def tls_broker(tmp_path: Path):
    """An Aviary with a per-device TLS listener; yields (tls_port, api_port, files)."""
    server_ca = make_cert("interop server CA", ca=True)
    server = make_cert("localhost", issuer=server_ca, sans=("localhost", "127.0.0.1"))
    files = {}
    for name, data in {
        "server_ca.pem": pem(server_ca[0]),
        "server.pem": pem(server[0]),
        "server.key": pem(server[1]),
    }.items():
        (tmp_path / name).write_bytes(data)
        files[name] = tmp_path / name
    port, api_port, tls_port = free_port(), free_port(), free_port()
    config = aviary_config(port, tmp_path / "data", {}, api_port) + (
        "\n[tls_listener]\n"
        f'bind = "127.0.0.1:{tls_port}"\n'
        f'cert = "{files["server.pem"]}"\n'
        f'key = "{files["server.key"]}"\n'
        'mode = "per-device"\n'
    )
    (tmp_path / "aviary.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVIARY_")}
    log = open(tmp_path / "broker.log", "wb")
    proc = subprocess.Popen(
        [str(aviary_binary()), "--config", str(tmp_path / "aviary.toml")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        assert proc.poll() is None, (tmp_path / "broker.log").read_text(errors="replace")
        try:
            with socket.create_connection(("127.0.0.1", tls_port), timeout=0.5):
                with socket.create_connection(("127.0.0.1", api_port), timeout=0.5):
                    break
        except OSError:
            assert time.monotonic() < deadline, "broker did not start"
            time.sleep(0.05)
    try:
        yield tls_port, api_port, files, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def api(api_port: int, method: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        return json.loads(response.read() or b"null")


class Device:
    """A paho 5.0 client over TLS with a device certificate; events land in queues."""

    def __init__(self, port: int, files: dict, cert: str, key: str, client_id: str) -> None:
        self.connacks: "queue.Queue[int]" = queue.Queue()
        self.disconnects: "queue.Queue[int]" = queue.Queue()
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.paho.tls_set(ca_certs=str(files["server_ca.pem"]), certfile=cert, keyfile=key)
        self.paho.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.put(rc.value)
        self.paho.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.put(rc.value)
        self.paho.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.paho.connect("localhost", port, keepalive=30)
        self.paho.loop_start()

    def stop(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def test_per_device_certificates_with_paho_tls_set(tls_broker) -> None:
    tls_port, api_port, files, tmp = tls_broker
    fleet = make_cert("Fleet CA", ca=True)
    code = api(api_port, "GET", "/api/v1/ca-certificates/registration-code")["registration_code"]
    verification = make_cert(code, issuer=fleet)
    ca = api(api_port, "POST", "/api/v1/ca-certificates", {
        "certificate_pem": pem(fleet[0]).decode(),
        "verification_certificate_pem": pem(verification[0]).decode(),
    })
    assert ca["status"] == "ACTIVE"
    paths = {}
    for device in ("dev-1", "dev-2"):
        cert, key = make_cert(device, issuer=fleet)
        (tmp / f"{device}.pem").write_bytes(pem(cert))
        (tmp / f"{device}.key").write_bytes(pem(key))
        paths[device] = (str(tmp / f"{device}.pem"), str(tmp / f"{device}.key"))
        registered = api(api_port, "POST", "/api/v1/device-certificates", {"certificate_pem": pem(cert).decode()})
        assert registered["client_id"] == device
        paths[device + "-serial"] = registered["serial"]

    one = Device(tls_port, files, *paths["dev-1"], "dev-1")
    two = Device(tls_port, files, *paths["dev-2"], "dev-2")
    assert one.connacks.get(timeout=TIMEOUT) == 0
    assert two.connacks.get(timeout=TIMEOUT) == 0
    one.paho.subscribe("fleet/#", qos=1)
    time.sleep(0.3)
    two.paho.publish("fleet/2", b"hello", qos=1)
    assert one.messages.get(timeout=TIMEOUT).payload == b"hello"

    # dev-2's certificate cannot be used as dev-1: CONNACK 0x87 Not authorized.
    impostor = Device(tls_port, files, *paths["dev-2"], "dev-1")
    assert impostor.connacks.get(timeout=TIMEOUT) == 0x87
    impostor.paho.loop_stop()

    # Deactivated through the API: the connected device gets DISCONNECT 0x87 at once.
    api(api_port, "PATCH", f"/api/v1/device-certificates/{paths['dev-1-serial']}", {"status": "INACTIVE"})
    assert one.disconnects.get(timeout=TIMEOUT) == 0x87
    status = api(api_port, "GET", f"/api/v1/device-certificates/{paths['dev-1-serial']}/status")
    assert status["status"] == "INACTIVE"
    one.paho.loop_stop()
    # The other device is unaffected.
    two.paho.publish("fleet/2", b"still here", qos=1).wait_for_publish(timeout=TIMEOUT)
    assert two.disconnects.empty()
    two.stop()


def create_listener(api_port: int, body: dict) -> int:
    """A listener made through the API; its port."""
    created = api(api_port, "POST", "/api/v1/listeners", body)
    return int(created["address"].rsplit(":", 1)[1])


class OneWay:
    """A paho client over TLS (one-way: the server certificate only), or over secure
    WebSocket; events land in queues."""

    def __init__(self, port: int, files: dict, client_id: str, protocol: int, websockets: bool = False) -> None:
        self.connacks: "queue.Queue[int]" = queue.Queue()
        self.disconnects: "queue.Queue[int]" = queue.Queue()
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.subacks: "queue.Queue[int]" = queue.Queue()
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
            transport="websockets" if websockets else "tcp",
        )
        if websockets:
            self.paho.ws_set_options(path="/mqtt")
        self.paho.tls_set(ca_certs=str(files["server_ca.pem"]))
        self.paho.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.put(rc.value)
        self.paho.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.put(rc.value)
        self.paho.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.paho.on_subscribe = lambda _c, _u, mid, _rc, _p: self.subacks.put(mid)
        self.paho.connect("localhost", port, keepalive=30)
        self.paho.loop_start()
        assert self.connacks.get(timeout=TIMEOUT) == 0

    def subscribe(self, topic: str) -> None:
        result, mid = self.paho.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self.subacks.get(timeout=TIMEOUT) == mid


def test_tls_and_wss_listeners_made_through_the_api(tls_broker) -> None:
    _tls_port, api_port, files, _tmp = tls_broker
    identity = {"cert": str(files["server.pem"]), "key": str(files["server.key"])}
    tls_port = create_listener(api_port, {"name": "secure", "kind": "tls", "bind": "127.0.0.1:0", **identity})
    wss_port = create_listener(api_port, {"name": "web", "kind": "wss", "bind": "127.0.0.1:0", **identity})

    over_tls = OneWay(tls_port, files, "over-tls", mqtt.MQTTv5)
    over_wss = OneWay(wss_port, files, "over-wss", mqtt.MQTTv311, websockets=True)
    over_tls.subscribe("both/#")
    over_wss.subscribe("both/#")
    over_wss.paho.publish("both/from-wss", b"via wss", qos=1).wait_for_publish(timeout=TIMEOUT)
    over_tls.paho.publish("both/from-tls", b"via tls", qos=1).wait_for_publish(timeout=TIMEOUT)
    got_tls = {over_tls.messages.get(timeout=TIMEOUT).payload for _ in range(2)}
    got_wss = {over_wss.messages.get(timeout=TIMEOUT).payload for _ in range(2)}
    assert got_tls == got_wss == {b"via wss", b"via tls"}

    # A byte-level 5.0 client over TLS too: paho 2.1 drops the reason code of a DISCONNECT
    # without properties (it reads it only when the remaining length exceeds 2).
    import ssl

    context = ssl.create_default_context(cafile=str(files["server_ca.pem"]))
    raw = RawClient(tls_port, host="localhost")
    raw.sock = context.wrap_socket(raw.sock, server_hostname="localhost")
    raw.send(raw_connect("raw-tls", level=5))
    assert raw.expect(2).body[1] == 0  # CONNACK, success

    # Switching the TLS listener off disconnects its 5.0 clients with 0x98 Administrative
    # action; the WSS client stays.
    over_tls.paho.reconnect_delay_set(min_delay=60, max_delay=60)
    api(api_port, "PATCH", "/api/v1/listeners/secure", {"enabled": False})
    assert raw.expect(14).body[0] == 0x98  # DISCONNECT
    assert raw.closed_within(TIMEOUT)
    raw.close()
    over_tls.disconnects.get(timeout=TIMEOUT)
    over_tls.paho.loop_stop()
    over_wss.paho.publish("both/after", b"still here", qos=1).wait_for_publish(timeout=TIMEOUT)
    assert over_wss.messages.get(timeout=TIMEOUT).payload == b"still here"
    assert over_wss.disconnects.empty()
    over_wss.paho.disconnect()
    over_wss.paho.loop_stop()


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_are_refused(tls_broker, version: str) -> None:
    import ssl

    _tls_port, api_port, files, _tmp = tls_broker
    port = create_listener(api_port, {
        "name": f"old-{version.lower()}", "kind": "tls", "bind": "127.0.0.1:0",
        "cert": str(files["server.pem"]), "key": str(files["server.key"]),
    })

    def handshake(tls_version):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(str(files["server_ca.pem"]))
        try:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.minimum_version = tls_version
            context.maximum_version = tls_version
        except (ssl.SSLError, ValueError) as e:
            pytest.skip(f"this Python/OpenSSL cannot offer {tls_version}: {e}")
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()

    # Control: the same client code gets TLS 1.2.
    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    try:
        got = handshake(getattr(ssl.TLSVersion, version))
    except ssl.SSLError as e:
        if "NO_PROTOCOLS_AVAILABLE" in str(e) or "NO_SUPPORTED_VERSIONS" in str(e):
            pytest.skip(f"this OpenSSL refuses to offer {version} itself: {e}")
        # The broker refused with an alert (rustls speaks neither version nor their suites).
        message = str(e).upper()
        assert "ALERT_HANDSHAKE_FAILURE" in message or "ALERT_PROTOCOL_VERSION" in message, e
    else:
        pytest.fail(f"{version} handshake succeeded: {got}")
    # The listener still serves TLS 1.2 clients afterwards.
    assert handshake(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
