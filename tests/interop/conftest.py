"""Fixtures that start the broker under test for the interop suite.

Which broker runs is chosen by the environment:

* ``AVIARY_INTEROP_BROKER=aviary`` (default): the binary at ``AVIARY_BIN``, or else
  ``$CARGO_TARGET_DIR/debug/aviary``, or else ``<repo>/target/debug/aviary``, started with
  ``--config FILE``.
* ``AVIARY_INTEROP_BROKER=mosquitto``: ``mosquitto`` (``AVIARY_MOSQUITTO_BIN``, default
  ``/usr/sbin/mosquitto`` or the one on ``PATH``) with an equivalent configuration. This mode
  exists to validate the tests themselves against a well-known broker.

Each broker is a child process on a free loopback port with its own temporary data directory
and config file; it is killed when its fixture ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

BROKER_KIND = os.environ.get("AVIARY_INTEROP_BROKER", "aviary").strip().lower()

# How long a broker may take to accept connections after start (a debug build can be slow on a
# busy machine).
STARTUP_TIMEOUT = float(os.environ.get("AVIARY_INTEROP_STARTUP_TIMEOUT", "20"))


def pytest_configure(config: pytest.Config) -> None:
    # Registered here as well as in pytest.ini so the markers exist whatever the rootdir is.
    config.addinivalue_line(
        "markers",
        "aviary_only: Aviary-specific behaviour; skipped when AVIARY_INTEROP_BROKER=mosquitto",
    )
    config.addinivalue_line(
        "markers",
        "mosquitto_deviates: spec behaviour Mosquitto 2.0 does not follow; skipped on mosquitto",
    )
    config.addinivalue_line("markers", "slow: waits for a broker timer of a few seconds")


def pytest_report_header(config: pytest.Config) -> str:
    return f"interop broker under test: {BROKER_KIND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # AVIARY_INTEROP_RUN_ALL=1 runs the marked tests on mosquitto too, to see them fail for the
    # documented reason.
    if BROKER_KIND != "mosquitto" or os.environ.get("AVIARY_INTEROP_RUN_ALL") == "1":
        return
    skip_aviary = pytest.mark.skip(reason="aviary_only: not a Mosquitto feature")
    skip_dev = pytest.mark.skip(reason="mosquitto_deviates: Mosquitto deviates from the spec here")
    for item in items:
        if "aviary_only" in item.keywords:
            item.add_marker(skip_aviary)
        if "mosquitto_deviates" in item.keywords:
            item.add_marker(skip_dev)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aviary_binary() -> Path:
    explicit = os.environ.get("AVIARY_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "debug" / "aviary"
    return REPO_ROOT / "target" / "debug" / "aviary"


def mosquitto_binary() -> Path:
    explicit = os.environ.get("AVIARY_MOSQUITTO_BIN")
    if explicit:
        return Path(explicit)
    if Path("/usr/sbin/mosquitto").exists():
        return Path("/usr/sbin/mosquitto")
    found = shutil.which("mosquitto")
    return Path(found) if found else Path("/usr/sbin/mosquitto")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# The bootstrap key of the management API of every Aviary under test.
API_KEY = "interop-test-api-key-0123456789"


def api_call(api_port: int, method: str, path: str, body: object | None = None) -> object:
    """One call to an Aviary's management API with the bootstrap key; the JSON answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def aviary_config(port: int, data_dir: Path, mqtt: dict[str, object], api_port: int = 0) -> str:
    """The TOML config for Aviary: only what the test needs; everything else is a default."""
    lines = [
        f"data_dir = {toml_value(str(data_dir))}",
        "",
        "[listener]",
        f'bind = "127.0.0.1:{port}"',
        "",
        # Several brokers run at once: each has its management API on its own free port.
        "[api]",
        f'bind = "127.0.0.1:{api_port}"',
        f"api_key = {toml_value(API_KEY)}",
        "",
        "[mqtt]",
    ]
    for key, value in sorted(mqtt.items()):
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


# Aviary `[mqtt]` key -> Mosquitto option. Keys without an equivalent are ignored in mosquitto
# mode; tests that rely on them are marked `aviary_only`.
MOSQUITTO_GLOBAL_OPTIONS = {
    "max_inflight": "max_inflight_messages",
    "max_queued_messages": "max_queued_messages",
    "max_keep_alive": "max_keepalive",
    "max_packet_size": "max_packet_size",
}
MOSQUITTO_LISTENER_OPTIONS = {
    "max_connections": "max_connections",
    "topic_alias_maximum": "max_topic_alias",
}


def mosquitto_config(port: int, data_dir: Path, mqtt: dict[str, object]) -> str:
    settings = {
        "max_inflight": 16,
        "max_queued_messages": 1000,
        "max_keep_alive": 65535,
        "topic_alias_maximum": 64,
    }
    settings.update(mqtt)
    lines = [
        # Running as root, mosquitto would otherwise switch to user `mosquitto`.
        f"user {os.environ.get('USER') or 'root'}" if os.geteuid() == 0 else "",
        "per_listener_settings false",
        "allow_anonymous true",
        "persistence false",
        f"persistence_location {data_dir}/",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
    ]
    for key, option in MOSQUITTO_GLOBAL_OPTIONS.items():
        if key in settings:
            lines.append(f"{option} {settings[key]}")
    lines.append(f"listener {port} 127.0.0.1")
    for key, option in MOSQUITTO_LISTENER_OPTIONS.items():
        if key in settings:
            lines.append(f"{option} {settings[key]}")
    return "\n".join(line for line in lines if line) + "\n"


@dataclass
class Broker:
    """A running broker child process."""

    kind: str
    host: str
    port: int
    workdir: Path
    mqtt: dict[str, object]
    process: subprocess.Popen | None = None
    log_path: Path = field(default_factory=Path)
    # Aviary's management API port (0 for Mosquitto, which has none).
    api_port: int = 0

    @property
    def is_mosquitto(self) -> bool:
        return self.kind == "mosquitto"

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    def start(self) -> None:
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "broker.log"
        env = dict(os.environ)
        # Our own selector variables are not broker config; keep them away from Aviary's
        # `AVIARY_*` environment overrides.
        for key in list(env):
            if key.startswith("AVIARY_INTEROP_") or key in ("AVIARY_BIN", "AVIARY_MOSQUITTO_BIN"):
                del env[key]
        if self.kind == "mosquitto":
            binary = mosquitto_binary()
            config_path = self.workdir / "mosquitto.conf"
            config_path.write_text(mosquitto_config(self.port, data_dir, self.mqtt))
        elif self.kind == "aviary":
            binary = aviary_binary()
            config_path = self.workdir / "aviary.toml"
            self.api_port = free_port()
            config_path.write_text(aviary_config(self.port, data_dir, self.mqtt, self.api_port))
            env.setdefault("RUST_BACKTRACE", "1")
        else:
            raise pytest.UsageError(
                f"AVIARY_INTEROP_BROKER must be 'aviary' or 'mosquitto', not {self.kind!r}"
            )
        if not binary.exists():
            raise RuntimeError(
                f"broker binary {binary} not found (build it with `cargo build -p aviary`, or set "
                "AVIARY_BIN / AVIARY_INTEROP_BROKER)"
            )
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(
                [str(binary), "-c" if self.kind == "mosquitto" else "--config", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.process.returncode} at start:\n{self.log_tail()}"
                )
            # Aviary binds its management API after the MQTT listener: wait for both.
            ports = [self.port] + ([self.api_port] if self.api_port else [])
            try:
                for port in ports:
                    with socket.create_connection((self.host, port), timeout=0.5):
                        pass
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not accept on port {self.port}:\n{self.log_tail()}")

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def check_alive(self) -> None:
        """Fails the test if the broker died while it ran."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(
                f"broker exited with {self.process.returncode} during the test:\n{self.log_tail()}"
            )


def start_broker(workdir: Path, mqtt: dict[str, object]) -> Broker:
    broker = Broker(kind=BROKER_KIND, host="127.0.0.1", port=free_port(), workdir=workdir, mqtt=mqtt)
    broker.start()
    return broker


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The shared broker under test with default limits."""
    workdir = Path(tempfile.mkdtemp(prefix="aviary-interop-"))
    b = start_broker(workdir, {})
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Starts extra brokers with `[mqtt]` overrides, e.g. `broker_factory(max_connections=2)`.

    Every broker started here is stopped when the test ends.
    """
    started: list[Broker] = []

    def make(**mqtt_overrides: object) -> Broker:
        workdir = tmp_path / f"broker{len(started)}"
        workdir.mkdir()
        b = start_broker(workdir, dict(mqtt_overrides))
        started.append(b)
        return b

    try:
        yield make
    finally:
        for b in started:
            b.stop()


@pytest.fixture(autouse=True)
def _broker_still_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used the shared broker, check that it is still running."""
    yield
    if "broker" in request.fixturenames:
        request.getfixturevalue("broker").check_alive()


@pytest.fixture
def clients(broker: Broker) -> Iterator[object]:
    """Paho clients for one test, on the shared broker by default; all closed at the end."""
    from interop_client import ClientPool

    pool = ClientPool(broker.port)
    try:
        yield pool
    finally:
        pool.close_all()
