"""multipart/related bodies (RFC 2046, RFC 2387), never whole in memory.

Writing (WADO-RS): `multipart_stream` yields a body part by part. Reading (STOW-RS):
`MultipartParser` is a push parser: feed it byte chunks as they arrive (split anywhere, even inside
a boundary) and it returns events: a part's headers, chunks of its body, its end. It buffers at
most one chunk plus the length of the delimiter.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: The largest header block of one part; more is refused as malformed.
MAX_HEADER_BYTES = 16 * 1024
_LWSP = b" \t"
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def new_boundary() -> str:
    return f"pacs-{secrets.token_hex(16)}"


def multipart_stream(
    parts: Iterable[Iterable[bytes]], boundary: str, content_type: str
) -> Iterator[bytes]:
    """Yield a multipart/related body: each part is an iterable of chunks of one object."""
    head = f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
    for part in parts:
        yield head
        yield from part
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def multipart_parts(parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """Yield a multipart/related body of parts that each have their own content type."""
    for content_type, chunks in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; a=b; c="d"` → ("type/subtype", {"a": "b", "c": "d"}): lower-case media type
    and parameter names, values unquoted."""
    media, sep, rest = value.partition(";")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(sep + rest):
        raw = match.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[match.group(1).lower()] = raw
    return media.strip().lower(), params


class MultipartError(ValueError):
    """The body is not a well-formed multipart body for its boundary."""


@dataclass(frozen=True, slots=True)
class PartHeaders:
    """A part begins; header names are lower-case."""

    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    """A chunk of the body of the current part."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete (its closing delimiter was seen)."""


Event = PartHeaders | PartData | PartEnd


class MultipartParser:
    """Incremental multipart parser: `feed()` chunks, then `close()`.

    A part is complete only when the delimiter after it has been seen: a body cut short never
    produces PartEnd for its last part, and `close()` raises MultipartError.
    """

    _PREAMBLE, _DELIMITER_LINE, _HEADERS, _BODY, _EPILOGUE = range(5)

    def __init__(self, boundary: str | bytes) -> None:
        b = boundary.encode("latin-1") if isinstance(boundary, str) else boundary
        if not b or len(b) > 200:
            raise MultipartError("the boundary must have 1 to 200 characters")
        self._delimiter = b"\r\n--" + b
        # The first delimiter may open the body without a CRLF before it: pretend there was one.
        self._buf = bytearray(b"\r\n")
        self._state = self._PREAMBLE
        self._in_part = False
        self.parts = 0  # complete parts so far

    @property
    def done(self) -> bool:
        """The close delimiter has been seen."""
        return self._state == self._EPILOGUE

    def feed(self, chunk: bytes) -> list[Event]:
        if self._state == self._EPILOGUE:
            return []
        self._buf += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> list[Event]:
        """The body has ended: raise MultipartError unless the close delimiter was seen."""
        if self._state == self._EPILOGUE:
            return []
        if self._state == self._PREAMBLE:
            raise MultipartError("no delimiter for the boundary in the body")
        raise MultipartError("the body ended without the close delimiter (truncated)")

    def _step(self, events: list[Event]) -> bool:
        """Advance over the buffer once; False when more input is needed."""
        buf, delim = self._buf, self._delimiter
        if self._state in (self._PREAMBLE, self._BODY):
            at = buf.find(delim)
            if at < 0:
                keep = len(delim) - 1
                if self._state == self._BODY and len(buf) > keep:
                    events.append(PartData(bytes(buf[: len(buf) - keep])))
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            if self._state == self._BODY and at:
                events.append(PartData(bytes(buf[:at])))
            del buf[: at + len(delim)]
            self._state = self._DELIMITER_LINE
            return True
        if self._state == self._DELIMITER_LINE:
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                self._end_part(events)
                self._state = self._EPILOGUE
                buf.clear()
                return False
            end = buf.find(b"\r\n")
            if end < 0:
                if buf.strip(_LWSP + b"\r"):
                    raise MultipartError("a delimiter is followed by other characters than CRLF")
                if len(buf) > 1024:
                    raise MultipartError("a delimiter line is too long")
                return False
            if buf[:end].strip(_LWSP):
                raise MultipartError("a delimiter is followed by other characters than CRLF")
            del buf[: end + 2]
            self._end_part(events)
            self._state = self._HEADERS
            return True
        if self._state == self._HEADERS:
            if buf.startswith(b"\r\n"):  # no header fields
                del buf[:2]
                head = b""
            else:
                # looked for in the first MAX_HEADER_BYTES only, whatever the chunk boundaries
                end = buf.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
                if end < 0:
                    if len(buf) < MAX_HEADER_BYTES + 4:
                        return False  # the end of the headers may be in the next chunk
                    raise MultipartError(f"the headers of a part exceed {MAX_HEADER_BYTES} bytes")
                head = bytes(buf[:end])
                del buf[: end + 4]
            events.append(PartHeaders(_parse_headers(head)))
            self._in_part = True
            self._state = self._BODY
            return True
        buf.clear()  # epilogue
        return False

    def _end_part(self, events: list[Event]) -> None:
        if self._in_part:
            events.append(PartEnd())
            self.parts += 1
            self._in_part = False


def _parse_headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for line in head.decode("latin-1").split("\r\n") if head else ():
        if line[:1] in (" ", "\t") and last is not None:  # folded continuation
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError(f"a malformed part header line: {line[:80]!r}")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers
