"""A minimal raw-socket MQTT client for the few checks paho cannot make.

It writes packets byte by byte and reads them back undecoded beyond the fixed header, so tests can
see exactly what the broker put on the wire (e.g. a DISCONNECT reason code, topic aliases).
Only what the interop tests need is implemented; every read has a timeout.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = (
    8, 9, 10, 11, 12, 13, 14, 15)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect(
    client_id: str,
    *,
    level: int = 4,
    clean: bool = True,
    keepalive: int = 30,
    will: tuple[str, bytes, int, bool] | None = None,
    properties: bytes = b"",
    will_properties: bytes = b"",
) -> bytes:
    """CONNECT for protocol level 3 (MQIsdp), 4 or 5. `properties` are pre-encoded (5.0)."""
    name = b"MQIsdp" if level == 3 else b"MQTT"
    flags = 0x02 if clean else 0
    payload = utf8(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if level == 5:
            payload += varint(len(will_properties)) + will_properties
        payload += utf8(topic) + utf8(message)
    body = utf8(name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        body += varint(len(properties)) + properties
    return packet(CONNECT << 4, body + payload)


def subscribe(packet_id: int, filters: list[tuple[str, int]], level: int = 4) -> bytes:
    body = struct.pack("!H", packet_id)
    if level == 5:
        body += varint(0)
    for f, opts in filters:
        body += utf8(f) + bytes([opts])
    return packet(0x82, body)


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0, retain: bool = False,
            level: int = 4, properties: bytes = b"") -> bytes:
    body = utf8(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if level == 5:
        body += varint(len(properties)) + properties
    return packet((PUBLISH << 4) | (qos << 1) | (1 if retain else 0), body + payload)


def prop_u16(ident: int, value: int) -> bytes:
    return bytes([ident]) + struct.pack("!H", value)


def prop_u32(ident: int, value: int) -> bytes:
    return bytes([ident]) + struct.pack("!I", value)


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, n: int, deadline: float) -> bool:
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete packet in time")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no complete packet in time") from None
            except ConnectionError:
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def recv(self, timeout: float | None = None) -> Packet | None:
        """The next packet, or None when the broker closed the connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self._fill(2, deadline):
            return None
        length, multiplier, pos = 0, 1, 1
        while True:
            if not self._fill(pos + 1, deadline):
                return None
            byte = self.buf[pos]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            pos += 1
            if not byte & 0x80:
                break
        if not self._fill(pos + length, deadline):
            return None
        first = self.buf[0]
        body = self.buf[pos:pos + length]
        self.buf = self.buf[pos + length:]
        return Packet(first >> 4, first & 0x0F, body)

    def expect(self, kind: int, timeout: float | None = None) -> Packet:
        p = self.recv(timeout)
        assert p is not None, f"connection closed while waiting for packet type {kind}"
        assert p.kind == kind, f"expected packet type {kind}, got {p}"
        return p

    def closed_within(self, timeout: float) -> bool:
        """True if the broker closes the connection (after any packets) within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                p = self.recv(deadline - time.monotonic())
            except TimeoutError:
                return False
            if p is None:
                return True
        return False

    def close(self, abort: bool = False) -> None:
        if abort:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()


def parse_publish(p: Packet, level: int) -> dict:
    """Topic, packet id, raw properties and payload of a PUBLISH."""
    body = p.body
    (tlen,) = struct.unpack("!H", body[:2])
    topic = body[2:2 + tlen].decode()
    pos = 2 + tlen
    qos = (p.flags >> 1) & 3
    pid = None
    if qos:
        (pid,) = struct.unpack("!H", body[pos:pos + 2])
        pos += 2
    props = {}
    if level == 5:
        plen, mult = 0, 1
        while True:
            byte = body[pos]
            pos += 1
            plen += (byte & 0x7F) * mult
            mult *= 128
            if not byte & 0x80:
                break
        end = pos + plen
        while pos < end:
            ident = body[pos]
            pos += 1
            if ident == 0x23:  # Topic Alias
                props["topic_alias"] = struct.unpack("!H", body[pos:pos + 2])[0]
                pos += 2
            elif ident == 0x02:  # Message Expiry Interval
                props["message_expiry"] = struct.unpack("!I", body[pos:pos + 4])[0]
                pos += 4
            elif ident == 0x0B:  # Subscription Identifier (varint)
                v, mult = 0, 1
                while True:
                    byte = body[pos]
                    pos += 1
                    v += (byte & 0x7F) * mult
                    mult *= 128
                    if not byte & 0x80:
                        break
                props.setdefault("subscription_ids", []).append(v)
            else:
                # Not needed by the tests: keep the rest raw and stop decoding.
                props["rest"] = body[pos - 1:end]
                pos = end
        pos = end
    return {"topic": topic, "qos": qos, "packet_id": pid, "dup": bool(p.flags & 8),
            "retain": bool(p.flags & 1), "properties": props, "payload": body[pos:]}


def ack(kind: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP with only a packet id (PUBREL has flags 0b0010)."""
    return packet((kind << 4) | (2 if kind == PUBREL else 0), struct.pack("!H", packet_id))


def packet_id_of(p: Packet) -> int:
    return struct.unpack("!H", p.body[:2])[0]


def session_connect(client_id: str, level: int, expiry: int = 300, keepalive: int = 30) -> bytes:
    """CONNECT resuming/creating a persistent session (clean=0; 5.0 with Session Expiry)."""
    return connect(client_id, level=level, clean=False, keepalive=keepalive,
                   properties=prop_u32(0x11, expiry) if level == 5 else b"")
