"""The round trips that prove what the registry claims, and the README matrix made from their results.

For each transfer syntax: every kind of synthetic image the syntax may carry (samples.py) is transcoded to it,
written as Part 10, read back and transcoded to Explicit VR Little Endian: lossless rows must give the same
pixels bit for bit, lossy rows a PSNR above a stated bound (JPEG-LS near-lossless: no sample off by more than
NEAR). tests/unit/test_codecs_matrix.py runs them and fails when the README table differs from what they give;
tools/codec_matrix.py rewrites the table.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom import uid as u
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

from pacs.codecs import registry, samples
from pacs.codecs.syntaxes import SYNTAXES
from pacs.codecs.transcode import EncodeOptions, transcode

ALL = tuple(samples.KINDS)
NO_PALETTE = tuple(k for k in ALL if k != "palette8")
#: The kinds each syntax must carry losslessly (PS3.5 8.2: palette colour in lossless-only syntaxes only).
LOSSLESS_KINDS: dict[str, tuple[str, ...]] = {
    u.ImplicitVRLittleEndian: ALL, u.ExplicitVRLittleEndian: ALL, u.DeflatedExplicitVRLittleEndian: ALL,
    u.ExplicitVRBigEndian: ALL, u.RLELossless: ALL, u.JPEGLossless: ALL, u.JPEGLosslessSV1: ALL,
    u.JPEGLSLossless: ALL, u.JPEGLSNearLossless: NO_PALETTE, u.JPEG2000Lossless: ALL, u.JPEG2000: NO_PALETTE,
    u.HTJ2KLossless: ALL, u.HTJ2KLosslessRPCL: ALL, u.HTJ2K: NO_PALETTE,
}


@dataclass(frozen=True, slots=True)
class LossyCheck:
    options: EncodeOptions
    kinds: tuple[str, ...]
    #: Minimum PSNR in dB over the stored range, or (JPEG-LS) the maximum absolute error allowed.
    psnr: float | None = None
    max_error: int | None = None

    def bound(self) -> str:
        return f"max error ≤ {self.max_error}" if self.max_error is not None else f"PSNR ≥ {self.psnr:g} dB"


LOSSY: dict[str, LossyCheck] = {
    u.JPEGBaseline8Bit: LossyCheck(EncodeOptions(quality=90), ("mono8", "rgb8", "rgb8planar", "ybr8"),
                                   psnr=30),
    u.JPEGExtended12Bit: LossyCheck(EncodeOptions(quality=90), ("mono8", "mono12"), psnr=30),
    u.JPEGLSNearLossless: LossyCheck(EncodeOptions(near_lossless=3), ("mono8", "mono12", "mono16", "rgb8"),
                                     max_error=3),
    u.JPEG2000: LossyCheck(EncodeOptions(ratio=10), ("mono8", "mono12", "mono16s", "rgb8"), psnr=30),
    u.HTJ2K: LossyCheck(EncodeOptions(ratio=10), ("mono8", "mono12", "mono16s", "rgb8"), psnr=30),
}


@dataclass(slots=True)
class Proof:
    uid: str
    name: str
    decoder: str | None
    encoder: str | None
    lossless: tuple[str, ...] = ()
    lossy: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def decodes(self) -> bool:
        return bool(self.lossless or self.lossy)


def part10(ds: Dataset) -> Dataset:
    """`ds` written as a Part 10 file and read back (what a peer or the store gets)."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def pixels(ds: Dataset, *, raw: bool) -> np.ndarray:
    """The pixels of `ds`: as stored (`raw`), or with YBR converted to RGB."""
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    return decoder.as_array(ds, raw=raw)[0]


def roundtrip(
    kind: str, syntax: str, options: EncodeOptions | None = None
) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The sample of `kind` encoded in `syntax` (as read back), its original pixels, and its decoded pixels:
    as stored for a lossless round trip, RGB for a lossy one (JPEG Baseline stores YBR_FULL_422)."""
    lossless = options is None
    original = samples.dataset(kind)
    reference = pixels(original, raw=lossless)
    encoded = part10(transcode(original, syntax, options))
    decoded = part10(transcode(part10(encoded), u.ExplicitVRLittleEndian))
    return encoded, reference, pixels(decoded, raw=lossless)


def psnr(reference: np.ndarray, decoded: np.ndarray, bits: int) -> float:
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(((1 << bits) - 1) ** 2 / mse)


def check(syntax: str) -> Proof:
    """Run every round trip of one syntax."""
    info = next(c for c in registry.describe() if c.uid == syntax)
    proof = Proof(syntax, info.name, info.decoder, info.encoder)
    passed = []
    for kind in LOSSLESS_KINDS.get(syntax, ()):
        try:
            _, reference, decoded = roundtrip(kind, syntax)
        except Exception as exc:
            proof.failures.append(f"{kind}: {exc}")
            continue
        if np.array_equal(reference, decoded):
            passed.append(kind)
        else:
            proof.failures.append(f"{kind}: not bit-exact")
    proof.lossless = tuple(passed)
    lossy = LOSSY.get(syntax)
    if lossy is not None:
        ok = True
        for kind in lossy.kinds:
            try:
                encoded, reference, decoded = roundtrip(kind, syntax, lossy.options)
            except Exception as exc:
                proof.failures.append(f"{kind} lossy: {exc}")
                ok = False
                continue
            bits = samples.KINDS[kind].bits_stored
            error = int(np.abs(reference.astype(np.int64) - decoded.astype(np.int64)).max())
            good = error <= lossy.max_error if lossy.max_error is not None else psnr(
                reference, decoded, bits) >= (lossy.psnr or 0)
            if not good or encoded.get("LossyImageCompression") != "01" or not error:
                db = psnr(reference, decoded, bits)
                proof.failures.append(f"{kind} lossy: error {error}, PSNR {db:.1f}")
                ok = False
        proof.lossy = lossy.bound() if ok else None
    return proof


def matrix() -> list[Proof]:
    return [check(s) for s in SYNTAXES]


def markdown(proofs: list[Proof]) -> str:
    """The README table."""
    lines = [
        "| Transfer syntax | UID | Decode | Encode | Lossless: bit-exact round trips | Lossy: bound met |",
        "|---|---|---|---|---|---|",
    ]
    for p in proofs:
        dec = p.decoder if p.decodes and p.decoder else "—"
        enc = p.encoder if p.encoder and (p.lossless or p.lossy) else "—"
        ll = f"yes ({len(p.lossless)} kinds)" if p.lossless else "—"
        lossy = f"yes ({p.lossy})" if p.lossy else "—"
        lines.append(f"| {p.name} | `{p.uid}` | {dec} | {enc} | {ll} | {lossy} |")
    kinds = ", ".join(ALL)
    lines.append("")
    lines.append(f"Kinds (64×64, 2 frames): {kinds}. Generated by `tools/codec_matrix.py` from "
                 "`pacs.codecs.proof`.")
    return "\n".join(lines)
