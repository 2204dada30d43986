"""The multipart push parser: RFC 2046 framing, any chunking, truncation and malformed bodies."""

from __future__ import annotations

import itertools
import random

import pytest
from pacs.dicom.multipart import (
    MAX_HEADER_BYTES,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartHeaders,
    multipart_stream,
    parse_content_type,
)

B = "b0undary-42"


def parse(body: bytes, boundary: str = B, cuts: list[int] | None = None) -> list[tuple[dict[str, str], bytes]]:
    """Feed `body` split at `cuts`; return the complete parts."""
    parser = MultipartParser(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    current: tuple[dict[str, str], bytearray] | None = None
    edges = [0, *sorted(cuts or []), len(body)]
    for start, end in itertools.pairwise(edges):
        for event in parser.feed(body[start:end]):
            if isinstance(event, PartHeaders):
                current = (event.headers, bytearray())
            elif isinstance(event, PartData):
                assert current is not None
                current[1].extend(event.data)
            else:
                assert isinstance(event, PartEnd) and current is not None
                parts.append((current[0], bytes(current[1])))
                current = None
    parser.close()
    return parts


def tricky_payloads(rng: random.Random) -> list[bytes]:
    """Payloads full of near-boundaries: CRLFs, dashes, the boundary without its CRLF."""
    return [
        b"",
        b"\r\n",
        b"\r\n--",
        f"--{B}".encode(),
        f"\r\n--{B[:-1]}".encode(),
        f"x\r\n-{B}\r\n".encode(),
        b"\r\n\r\n\r" * 7,
        rng.randbytes(5000),
        bytes(rng.choice(b"\r\n-b0") for _ in range(3000)),
    ]


def test_writer_output_round_trips() -> None:
    payloads = [b"one", b"", b"three\r\n"]
    body = b"".join(multipart_stream(([p] for p in payloads), B, "application/dicom"))
    parts = parse(body)
    assert [p for _, p in parts] == payloads
    assert all(h == {"content-type": "application/dicom"} for h, _ in parts)


def test_preamble_epilogue_padding_and_folded_headers() -> None:
    body = (
        f"This is the preamble.\r\n--{B}  \t\r\n"
        "Content-Type: application/dicom\r\nX-Long: a\r\n  b\r\n\r\n"
        f"first\r\n--{B}\r\n\r\nno headers\r\n--{B}--   and an epilogue\r\n--{B}\r\nignored"
    ).encode()
    parts = parse(body)
    assert parts == [({"content-type": "application/dicom", "x-long": "a b"}, b"first"), ({}, b"no headers")]


def test_dicomweb_client_framing() -> None:
    """dicomweb-client writes CRLF before the first delimiter and no CRLF after the last."""
    body = f"\r\n--{B}\r\nContent-Type: application/dicom\r\n\r\nA\r\n--{B}\r\nContent-Type: application/dicom\r\n\r\nB\r\n--{B}--".encode()
    assert [p for _, p in parse(body)] == [b"A", b"B"]


@pytest.mark.parametrize("seed", range(40))
def test_random_chunkings_give_identical_parts(seed: int) -> None:
    rng = random.Random(seed)
    payloads = tricky_payloads(rng)
    rng.shuffle(payloads)
    body = b"preamble\r\n" + b"".join(multipart_stream(([p] for p in payloads), B, "application/dicom")) + b"epi"
    expected = parse(body)
    assert [p for _, p in expected] == payloads
    for _ in range(10):
        n = rng.choice([1, 2, 5, 50, len(body) // 3])
        cuts = rng.sample(range(1, len(body)), min(n, len(body) - 1))
        assert parse(body, cuts=cuts) == expected
    assert parse(body, cuts=list(range(1, len(body)))) == expected  # one byte at a time


def test_truncated_body_has_no_end_for_its_last_part() -> None:
    body = f"--{B}\r\n\r\nwhole\r\n--{B}\r\n\r\ncut sho".encode()
    parser = MultipartParser(B)
    events = parser.feed(body)
    assert sum(isinstance(e, PartEnd) for e in events) == 1 and parser.parts == 1
    with pytest.raises(MultipartError, match="close delimiter"):
        parser.close()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"no boundary at all", "no delimiter"),
        (f"--{B}x\r\n\r\nbody\r\n--{B}--".encode(), "other characters"),
        (f"--{B}\r\nnot a header\r\n\r\nbody\r\n--{B}--".encode(), "malformed part header"),
        (f"--{B}\r\nX: " .encode() + b"y" * 20000, "exceed"),
        (f"--{B}\r\n\r\nbody".encode(), "close delimiter"),
    ],
)
def test_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(MultipartError, match=reason):
        parse(body)


def test_wrong_boundary_is_no_delimiter() -> None:
    body = b"".join(multipart_stream([[b"x"]], "other", "application/dicom"))
    with pytest.raises(MultipartError, match="no delimiter"):
        parse(body)


def test_buffer_stays_small() -> None:
    parser = MultipartParser(B)
    parser.feed(f"--{B}\r\n\r\n".encode())
    for _ in range(100):
        out = parser.feed(b"\0" * 65536)
        assert sum(len(e.data) for e in out if isinstance(e, PartData)) >= 65536 - len(B) - 4
        assert len(parser._buf) < len(B) + 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('multipart/related; type="application/dicom"; boundary="a b:c"',
         ("multipart/related", {"type": "application/dicom", "boundary": "a b:c"})),
        ("Multipart/Related;TYPE=application/dicom;boundary=xyz",
         ("multipart/related", {"type": "application/dicom", "boundary": "xyz"})),
        ('multipart/related; boundary="q\\"x"; type=application/dicom',
         ("multipart/related", {"type": "application/dicom", "boundary": 'q"x'})),
        ("", ("", {})),
    ],
)
def test_parse_content_type(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_content_type(value) == expected


def _with_header(value_length: int) -> bytes:
    """A one-part body whose header block (`X: yyy…`, without its blank line) is 3 + value_length bytes."""
    return f"--{B}\r\nX: ".encode() + b"y" * value_length + f"\r\n\r\nbody\r\n--{B}--\r\n".encode()


@pytest.mark.parametrize("chunk", [1, 7, 1000, MAX_HEADER_BYTES - 1, MAX_HEADER_BYTES + 50, 1 << 20])
def test_the_part_header_limit_holds_whatever_the_read_boundaries(chunk: int) -> None:
    """One byte over the limit is refused and the limit itself accepted, whether the header block
    arrives whole in one read (the end of the headers in the same chunk) or in pieces."""
    over, at = _with_header(MAX_HEADER_BYTES - 2), _with_header(MAX_HEADER_BYTES - 3)
    with pytest.raises(MultipartError, match="exceed"):
        parse(over, cuts=list(range(chunk, len(over), chunk)))
    assert parse(at, cuts=list(range(chunk, len(at), chunk))) == [({"x": "y" * (MAX_HEADER_BYTES - 3)}, b"body")]
