"""What a compressed frame's own header says: the JPEG process and predictor, the JPEG-LS NEAR value, the
JPEG 2000 / HTJ2K wavelet, progression order and multi-component transform. Read to tell whether a stream
is lossy (its syntax may carry both) and, in the tests, to check what the encoders wrote."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Start of frame markers: SOF0-3, 5-7, 9-11, 13-15 and JPEG-LS SOF55.
_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7})
_MARKERS = {0xFF51: "SIZ", 0xFF52: "COD", 0xFF50: "CAP", 0xFF55: "TLM", 0xFF5C: "QCD", 0xFF58: "PLT"}
#: JPEG 2000 COD progression orders (ISO 15444-1 Table A.16).
PROGRESSIONS = ("LRCP", "RLCP", "RPCL", "PCRL", "CPRL")


@dataclass(slots=True)
class JpegHeader:
    #: The SOFn marker's n (0 baseline, 1 extended, 3 lossless, 0xF7 JPEG-LS SOF55).
    process: int
    precision: int
    components: int
    component_ids: tuple[int, ...]
    #: Lossless JPEG: the predictor (Ss of the first SOS); JPEG-LS: NEAR (same byte).
    ss: int


@dataclass(slots=True)
class J2kHeader:
    precision: int
    signed: bool
    components: int
    progression: str
    mct: bool
    reversible: bool
    markers: set[str] = field(default_factory=set)


def jpeg_header(frame: bytes) -> JpegHeader:
    """The SOF and first SOS of a JPEG or JPEG-LS stream. ValueError when it is not one."""
    if frame[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG stream (no SOI)")
    i, sof = 2, None
    while i + 4 <= len(frame):
        if frame[i] != 0xFF:
            raise ValueError(f"not a JPEG marker at offset {i}")
        marker = frame[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        length = int.from_bytes(frame[i + 2:i + 4], "big")
        body = frame[i + 4:i + 2 + length]
        if marker in _SOF:
            ncomp = body[5]
            sof = (marker - 0xC0 if marker != 0xF7 else 0xF7, body[0], ncomp,
                   tuple(body[6 + 3 * k] for k in range(ncomp)))
        elif marker == 0xDA:
            if sof is None:
                raise ValueError("JPEG SOS before any SOF")
            ns = body[0]
            return JpegHeader(*sof, ss=body[1 + 2 * ns])
        i += 2 + length
    raise ValueError("JPEG stream without SOF/SOS")


def j2k_header(frame: bytes) -> J2kHeader:
    """The main header of a JPEG 2000 / HTJ2K codestream (SIZ, COD and the markers present)."""
    if frame[:4] != b"\xff\x4f\xff\x51":
        raise ValueError("not a JPEG 2000 codestream (no SOC, SIZ)")
    i, markers = 2, set()
    siz = cod = None
    while i + 4 <= len(frame):
        marker = int.from_bytes(frame[i:i + 2], "big")
        if marker == 0xFF90:  # SOT: the main header is over
            break
        length = int.from_bytes(frame[i + 2:i + 4], "big")
        body = frame[i + 4:i + 2 + length]
        name = _MARKERS.get(marker, hex(marker))
        markers.add(name)
        if name == "SIZ":
            ssiz = body[36]
            siz = ((ssiz & 0x7F) + 1, bool(ssiz & 0x80), int.from_bytes(body[34:36], "big"))
        elif name == "COD":
            # Scod, SGcod = progression (1), layers (2), MCT (1); SPcod = levels, xcb, ycb, style, transform
            cod = (PROGRESSIONS[body[1]] if body[1] < len(PROGRESSIONS) else str(body[1]), bool(body[4]),
                   body[9] == 1)
        i += 2 + length
    if siz is None or cod is None:
        raise ValueError("JPEG 2000 main header without SIZ or COD")
    return J2kHeader(precision=siz[0], signed=siz[1], components=siz[2], progression=cod[0], mct=cod[1],
                     reversible=cod[2], markers=markers)


def is_lossy_stream(tsyntax: str, frame: bytes) -> bool:
    """True when the frame itself shows lossy coding: DCT JPEG always, JPEG-LS with NEAR > 0, JPEG 2000 /
    HTJ2K with the irreversible 9-7 wavelet. (A reversible stream cut short is lossy too and cannot be told
    from its header; the Lossy Image Compression attribute says so, and is kept.)"""
    from pydicom import uid as u

    if tsyntax in (u.JPEGBaseline8Bit, u.JPEGExtended12Bit):
        return True
    try:
        if tsyntax == u.JPEGLSNearLossless:
            return jpeg_header(frame).ss > 0
        if tsyntax in (u.JPEG2000, u.HTJ2K):
            return not j2k_header(frame).reversible
    except (ValueError, IndexError):
        return False
    return False
