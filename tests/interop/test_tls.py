"""MQTT over TLS with paho's ``tls_set``: one certificate per device.

An Aviary with a ``[tls_listener]`` in per-device mode is started with certificates made here
(``cryptography``); a customer CA is registered through the management API with proof of
possession (a verification certificate whose CN is the registration code), two device
certificates are registered, and paho clients connect with them. Then: a device certificate
bound to another client id is refused with 0x87, and deactivating a connected device's
certificate through the API disconnects it (DISCONNECT 0x87) while the other stays.
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
