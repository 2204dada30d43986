"""Received DIMSE messages read by hand: the PDV items of a P-DATA-TF PDU (PS3.8 9.3.5) and the
elements of a command set (PS3.7 E.1, Implicit VR Little Endian), for the paths that answer in the DUL
thread without pynetdicom's decoders (`gateway.find_fast`, `gateway.store_fast`)."""

from __future__ import annotations

import struct
from typing import Any

_ITEM = struct.Struct(">IBB")  # PDV item: length, presentation context ID, message control header

#: Command set elements read by the fast paths.
SOP_CLASS, COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO, DATA_SET_TYPE, SOP_INSTANCE = (
    0x0002, 0x0100, 0x0110, 0x0120, 0x0800, 0x1000)
#: Command Data Set Type: no data set follows.
NO_DATA_SET = 0x0101


def pdv_items(pdu: bytes) -> list[tuple[int, int, int, int]] | None:
    """(context ID, control header, start, end) of each PDV item of a P-DATA-TF PDU (its fragment is
    `pdu[start:end]`), or None when the items do not add up."""
    out = []
    i, end = 6, len(pdu)
    while i < end:
        if i + 6 > end:
            return None
        length, cx, control = _ITEM.unpack_from(pdu, i)
        if length < 2 or i + 4 + length > end:
            return None
        out.append((cx, control, i + 6, i + 4 + length))
        i += 4 + length
    return out or None


def command_fields(command: bytes | memoryview) -> dict[int, bytes] | None:
    """The elements of a command set by element number (group 0000), or None if malformed."""
    out: dict[int, bytes] = {}
    i, end = 0, len(command)
    while i < end:
        if i + 8 > end:
            return None
        group, elem, length = struct.unpack_from("<HHI", command, i)
        if group != 0 or i + 8 + length > end:
            return None
        out[elem] = bytes(command[i + 8:i + 8 + length])
        i += 8 + length
    return out


def us(fields: dict[int, bytes], elem: int) -> int | None:
    """An US element's value, or None when absent or malformed."""
    value = fields.get(elem)
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def uid(fields: dict[int, bytes], elem: int) -> str:
    """A UI element's value ('' when absent)."""
    return fields.get(elem, b"").rstrip(b"\0 ").decode("ascii", "replace")


def idle(assoc: Any) -> bool:
    """Nothing else in progress on an association (`pacs.dimse.reactor.EventAssociation`): no
    message being assembled by pynetdicom, waiting for or served by its reactor, nothing queued for
    its DUL to send — so that answers written straight to the socket cannot interleave with others."""
    return assoc.dimse.message is None and not getattr(assoc, "serving", True) \
        and assoc.dimse.msg_queue.empty() and assoc.dul.to_provider_queue.empty()
