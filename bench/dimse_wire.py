"""A wire-level DIMSE client for latency benchmarks: PDUs encoded and read by hand on a blocking socket.

A pynetdicom SCU spends about as long in its own machinery (DUL and association threads, queues,
pydicom decoding of every command set) as a fast server takes to answer a small C-FIND, so it blurs
the comparison it is meant to make. Here one thread writes the A-ASSOCIATE-RQ / C-FIND-RQ /
A-RELEASE-RQ PDUs and reads the answers straight from the socket: the time measured is the server's
plus the loopback's. Matches are kept as received (bytes) and decoded by the caller once the clock
has stopped. Only what the benchmark needs: one abstract syntax, Little Endian transfer syntaxes.
"""

from __future__ import annotations

import socket
import struct
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = b"1.2.826.0.1.3680043.8.498.1.42"
EXPLICIT, IMPLICIT = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
PENDING = (0xFF00, 0xFF01)
MAX_PDU = 16384


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _element(tag: int, value: bytes | int) -> bytes:
    data = struct.pack("<H", value) if isinstance(value, int) else value + b"\0" * (len(value) & 1)
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(data)) + data


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">BBIIBB", 0x04, 0, len(data) + 6, len(data) + 2, context_id, control) + data


def _fields(command: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 8 <= len(command):
        _, elem, length = struct.unpack_from("<HHI", command, i)
        out[elem] = command[i + 8:i + 8 + length]
        i += 8 + length
    return out


class WireError(RuntimeError):
    pass


class WireAssociation:
    """One association to `host:port` for `abstract_syntax` (context ID 1)."""

    def __init__(self, host: str, port: int, called: str, calling: str, abstract_syntax: str,
                 syntaxes: tuple[str, ...] = (EXPLICIT, IMPLICIT), timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.abstract_syntax = abstract_syntax
        self.msg_id = 0
        self._buf = bytearray()
        context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, abstract_syntax.encode())
                        + b"".join(_item(0x40, ts.encode()) for ts in syntaxes))
        user = _item(0x50, _item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, IMPLEMENTATION_UID))
        body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
                + _item(0x10, APPLICATION_CONTEXT) + context + user)
        self.sock.sendall(struct.pack(">BBI", 0x01, 0, len(body)) + body)
        kind, ac = self._pdu()
        if kind != 0x02:
            self.sock.close()
            raise WireError(f"association not accepted (PDU type 0x{kind:02X})")
        self.transfer_syntax, self.max_pdu = self._accepted(ac)
        self.is_established = True

    def _accepted(self, ac: bytes) -> tuple[str, int]:
        syntax, max_pdu, i = None, 0, 68  # items after the fixed fields (PS3.8 9.3.3)
        while i + 4 <= len(ac):
            kind, _, length = struct.unpack_from(">BBH", ac, i)
            body = ac[i + 4:i + 4 + length]
            if kind == 0x21 and body[0] == 1:
                if body[2] != 0:
                    raise WireError(f"presentation context refused (result {body[2]})")
                syntax = body[8:].rstrip(b"\0 ").decode()
            elif kind == 0x50:
                j = 0
                while j + 4 <= len(body):
                    sub, _, n = struct.unpack_from(">BBH", body, j)
                    if sub == 0x51:
                        (max_pdu,) = struct.unpack_from(">I", body, j + 4)
                    j += 4 + n
            i += 4 + length
        if syntax is None:
            raise WireError("no presentation context accepted")
        return syntax, max_pdu

    def _recv(self, n: int) -> bytes:
        """`n` bytes, read from the socket in pieces of whatever it holds (one call for several PDUs)."""
        buf = self._buf
        while len(buf) < n:
            data = self.sock.recv(max(n - len(buf), 1 << 16))
            if not data:
                raise WireError("connection closed by the peer")
            buf += data
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def _pdu(self) -> tuple[int, bytes]:
        head = self._recv(6)
        return head[0], self._recv(struct.unpack(">I", head[2:6])[0])

    def _send_message(self, command: bytes, data: bytes) -> None:
        size = (self.max_pdu or (1 << 30)) - 6
        out = [_pdv(1, 0x03, command)]
        chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        out += [_pdv(1, 0x02 if n == len(chunks) - 1 else 0x00, c) for n, c in enumerate(chunks)]
        self.sock.sendall(b"".join(out))

    def encode(self, identifier: Dataset) -> bytes:
        raw = encode(identifier, self.transfer_syntax == IMPLICIT, True)
        assert raw is not None
        return raw

    def decode(self, raw: bytes) -> Dataset:
        return decode(BytesIO(raw), self.transfer_syntax == IMPLICIT, True)

    def find(self, identifier: bytes) -> tuple[int, list[bytes]]:
        """One C-FIND with an encoded identifier: the final status and the matches as received."""
        self.msg_id = self.msg_id % 65535 + 1
        command = b"".join([
            _element(0x00000002, self.abstract_syntax.encode()), _element(0x00000100, 0x0020),
            _element(0x00000110, self.msg_id), _element(0x00000700, 0), _element(0x00000800, 0x0000),
        ])
        group_length = struct.pack("<HHII", 0x0000, 0x0000, 4, len(command))  # (0000,0000) UL
        self._send_message(group_length + command, identifier)
        matches: list[bytes] = []
        command_parts: list[bytes] = []
        data_parts: list[bytes] = []
        while True:
            kind, body = self._pdu()
            if kind != 0x04:
                raise WireError(f"PDU type 0x{kind:02X} instead of a response")
            i = 0
            while i < len(body):
                (length,) = struct.unpack_from(">I", body, i)
                control, fragment = body[i + 5], body[i + 6:i + 4 + length]
                i += 4 + length
                if control & 0x01:
                    command_parts.append(fragment)
                    if not control & 0x02:
                        continue
                    fields = _fields(b"".join(command_parts))
                    command_parts = []
                    (status,) = struct.unpack("<H", fields[0x0900])
                    (responded_to,) = struct.unpack("<H", fields[0x0120])
                    if responded_to != self.msg_id:
                        raise WireError(f"response to message {responded_to}, not {self.msg_id}")
                    if status not in PENDING:
                        return status, matches
                    if struct.unpack("<H", fields[0x0800])[0] == 0x0101:
                        matches.append(b"")  # a pending response without identifier
                else:
                    data_parts.append(fragment)
                    if control & 0x02:
                        matches.append(b"".join(data_parts))
                        data_parts = []

    def release(self) -> None:
        self.is_established = False
        try:
            self.sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\0" * 4)
            self._pdu()  # A-RELEASE-RP
        except OSError:
            pass
        finally:
            self.sock.close()
