"""multipart/related bodies (RFC 2387) for WADO-RS: written part by part, never whole in memory."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator


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
