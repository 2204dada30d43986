"""Our codecs against independent ones: dcmtk (`dcmdjpeg`, `dcmdjpls`, `dcmdrle`, `dcmcjpeg`, `dcmcjpls`,
`dcmcrle`) and gdcm (`gdcmconv`), both ways, on the synthetic samples of pacs.codecs.samples.

- ours → theirs: what we encode, their decoder gives back bit for bit (lossless), or exactly as our decoder
  does (lossy: the same stream; DCT JPEG colour within 1 of ours, two YCbCr→RGB roundings);
- theirs → ours: what they encode, we decode as the original (lossless) or as their decoder does (lossy).

HTJ2K has no decoder in dcmtk 3.6.7 or gdcm 3.0: our OpenJPH streams are checked with OpenJPEG
(pylibjpeg-openjpeg), a different library.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import openjpeg
import pydicom
import pytest
from pacs.codecs import EncodeOptions, samples, transcode
from pacs.codecs.proof import part10, pixels
from pacs.codecs.streams import jpeg_header
from pydicom import uid as u
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames

from .support import dcmtk_tool

pytestmark = pytest.mark.interop

EXPLICIT = u.ExplicitVRLittleEndian
LOSSLESS, LOSSY = "lossless", "lossy"


def _tool(name: str) -> str:
    path = shutil.which(name) if name == "gdcmconv" else dcmtk_tool(name)
    if path is None:
        pytest.fail(f"{name} is not installed (make setup installs dcmtk and libgdcm-tools)")
    return path


def _run(*cmd: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(cmd)}: {result.stdout[-500:]} {result.stderr[-500:]}"


def _write(ds: Dataset, path: Path) -> Path:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _their_decode(tool: str, src: Path, dst: Path) -> Dataset:
    if tool == "gdcmconv":
        _run(_tool(tool), "--raw", str(src), str(dst))
    elif tool == "dcmdjpeg":
        _run(_tool(tool), "+cn", str(src), str(dst))  # keep YCbCr as coded: compared raw
    else:
        _run(_tool(tool), str(src), str(dst))
    assert dst.exists(), f"{tool} wrote nothing"  # gdcmconv exits 0 on some failures
    out = pydicom.dcmread(dst)
    assert not out.file_meta.TransferSyntaxUID.is_compressed
    return out


def _our_decode(ds: Dataset) -> Dataset:
    return part10(transcode(part10(ds), EXPLICIT))


def _same(theirs: Dataset, ours: Dataset, *, tolerance: int = 0, bits: int | None = None) -> None:
    """The same pixels, compared raw when both keep the same Photometric Interpretation, else as RGB
    (`bits`: their values clipped to that many unsigned bits, as ours are)."""
    raw = theirs.PhotometricInterpretation == ours.PhotometricInterpretation
    a = pixels(theirs, raw=raw).astype(np.int64)
    b = pixels(ours, raw=raw).astype(np.int64)
    if bits is not None:
        a = np.clip(a, 0, (1 << bits) - 1)
    assert a.shape == b.shape
    assert int(np.abs(a - b).max()) <= tolerance


# -- ours → theirs -------------------------------------------------------------------------------------------

OURS = [
    (u.RLELossless, "mono12s", None, ("dcmdrle", "gdcmconv")),
    (u.RLELossless, "rgb8planar", None, ("dcmdrle", "gdcmconv")),
    (u.RLELossless, "ybr8", None, ("dcmdrle", "gdcmconv")),
    (u.RLELossless, "palette8", None, ("dcmdrle", "gdcmconv")),
    (u.JPEGLosslessSV1, "mono12", None, ("dcmdjpeg", "gdcmconv")),
    (u.JPEGLosslessSV1, "mono16s", None, ("dcmdjpeg", "gdcmconv")),
    (u.JPEGLosslessSV1, "mono8s", None, ("dcmdjpeg", "gdcmconv")),
    (u.JPEGLosslessSV1, "rgb8", None, ("dcmdjpeg", "gdcmconv")),
    (u.JPEGLosslessSV1, "ybr8", None, ("dcmdjpeg",)),
    (u.JPEGLossless, "mono16", None, ("dcmdjpeg", "gdcmconv")),
    (u.JPEGLSLossless, "mono12s", None, ("dcmdjpls", "gdcmconv")),
    (u.JPEGLSLossless, "mono16s", None, ("dcmdjpls", "gdcmconv")),  # imagecodecs' CharLS: P = 16, signed bits
    (u.JPEGLSLossless, "mono8s", None, ("dcmdjpls", "gdcmconv")),
    (u.JPEGLSLossless, "rgb8planar", None, ("dcmdjpls", "gdcmconv")),
    (u.JPEGLSLossless, "ybr8", None, ("dcmdjpls", "gdcmconv")),
    (u.JPEGLSLossless, "palette8", None, ("dcmdjpls", "gdcmconv")),
    (u.JPEGLSNearLossless, "mono12", EncodeOptions(near_lossless=3), ("dcmdjpls", "gdcmconv")),
    (u.JPEG2000Lossless, "mono16s", None, ("gdcmconv",)),
    (u.JPEG2000Lossless, "rgb8", None, ("gdcmconv",)),  # YBR_RCT
    (u.JPEG2000Lossless, "palette8", None, ("gdcmconv",)),
    (u.JPEG2000, "mono12", EncodeOptions(ratio=10), ("gdcmconv",)),
    (u.JPEG2000, "rgb8", EncodeOptions(ratio=10), ("gdcmconv",)),  # YBR_ICT
    (u.JPEGBaseline8Bit, "mono8", EncodeOptions(quality=85), ("dcmdjpeg", "gdcmconv")),
    (u.JPEGBaseline8Bit, "rgb8", EncodeOptions(quality=85), ("dcmdjpeg", "gdcmconv")),  # YBR_FULL_422
    (u.JPEGExtended12Bit, "mono12", EncodeOptions(quality=85), ("dcmdjpeg", "gdcmconv")),
]


@pytest.mark.parametrize("syntax, kind, options, tools", OURS,
                         ids=[f"{s.name.split()[0]}-{s[-3:]}-{k}" for s, k, _, _ in OURS])
def test_our_encoding_read_by_their_decoders(
    tmp_path: Path, syntax: str, kind: str, options: EncodeOptions | None, tools: tuple[str, ...]
) -> None:
    original = samples.dataset(kind)
    encoded = part10(transcode(samples.dataset(kind), syntax, options))
    src = _write(encoded, tmp_path / "ours.dcm")
    ours = _our_decode(encoded)
    for tool in tools:
        theirs = _their_decode(tool, src, tmp_path / f"{tool}.dcm")
        if options is None:
            _same(theirs, original)  # lossless: the original, bit for bit
        else:
            dct_colour = syntax == u.JPEGBaseline8Bit and original.SamplesPerPixel == 3
            _same(theirs, ours, tolerance=1 if dct_colour else 0)


def test_our_htj2k_read_by_openjpeg() -> None:
    for syntax in (u.HTJ2KLossless, u.HTJ2KLosslessRPCL):
        for kind in ("mono12", "mono16s", "rgb8", "palette8"):
            original = samples.dataset(kind)
            encoded = part10(transcode(samples.dataset(kind), syntax))
            frames = list(generate_frames(encoded.PixelData, number_of_frames=2))
            decoded = np.stack([openjpeg.decode(f) for f in frames])  # OpenJPEG, not OpenJPH
            expected = pixels(original, raw=True)
            np.testing.assert_array_equal(decoded.astype(expected.dtype), expected, err_msg=f"{kind} {syntax}")
    # lossy: two implementations of the 9-7 dequantization may round apart, by one at most
    lossy = part10(transcode(samples.dataset("mono12"), u.HTJ2K, EncodeOptions(ratio=10)))
    frames = list(generate_frames(lossy.PixelData, number_of_frames=2))
    theirs = np.stack([openjpeg.decode(f) for f in frames]).astype(np.int64)
    assert np.abs(theirs - pixels(_our_decode(lossy), raw=True)).max() <= 1


# -- theirs → ours -------------------------------------------------------------------------------------------

THEIRS = [
    ("dcmcrle", (), ("mono12s", "rgb8", "ybr8"), u.RLELossless, LOSSLESS),
    ("dcmcjpeg", ("+e1",), ("mono12", "mono16s", "rgb8"), u.JPEGLosslessSV1, LOSSLESS),
    ("dcmcjpeg", ("+el", "+sv", "6"), ("mono12", "mono8"), u.JPEGLossless, LOSSLESS),  # predictor 6
    ("dcmcjpeg", ("+eb", "+q", "80"), ("mono8", "rgb8"), u.JPEGBaseline8Bit, LOSSY),
    ("dcmcjpeg", ("+ee", "+q", "80"), ("mono12",), u.JPEGExtended12Bit, LOSSY),
    ("dcmcjpls", (), ("mono12s", "mono16", "rgb8", "palette8"), u.JPEGLSLossless, LOSSLESS),
    ("dcmcjpls", ("+en",), ("mono12", "rgb8"), u.JPEGLSNearLossless, LOSSY),
    ("gdcmconv", ("--j2k",), ("mono12s", "mono16", "rgb8"), u.JPEG2000Lossless, LOSSLESS),
    ("gdcmconv", ("--lossy", "--j2k", "-r", "10"), ("mono12", "rgb8"), u.JPEG2000, LOSSY),
    ("gdcmconv", ("--jpegls",), ("mono12", "rgb8"), u.JPEGLSLossless, LOSSLESS),
    ("gdcmconv", ("--rle",), ("mono16s", "rgb8"), u.RLELossless, LOSSLESS),
    ("gdcmconv", ("--jpeg",), ("mono12", "mono16s", "rgb8"), None, LOSSLESS),
]


def _their_encode(tool: str, flags: tuple[str, ...], src: Path, dst: Path) -> Dataset:
    _run(_tool(tool), *flags, str(src), str(dst))
    assert dst.exists(), f"{tool} wrote nothing"
    return pydicom.dcmread(dst)


_DECODER = {u.RLELossless: "dcmdrle", u.JPEGLSLossless: "dcmdjpls", u.JPEGLSNearLossless: "dcmdjpls",
            u.JPEG2000: "gdcmconv", u.JPEG2000Lossless: "gdcmconv"}


@pytest.mark.parametrize("tool, flags, kinds, syntax, kind_of", THEIRS,
                         ids=[f"{t}{''.join(f)}" for t, f, *_ in THEIRS])
def test_their_encoding_read_by_our_decoders(
    tmp_path: Path, tool: str, flags: tuple[str, ...], kinds: tuple[str, ...], syntax: str | None, kind_of: str
) -> None:
    for kind in kinds:
        original = samples.dataset(kind)
        src = _write(original, tmp_path / f"{kind}.dcm")
        theirs = _their_encode(tool, flags, src, tmp_path / f"{kind}-{tool}.dcm")
        stored = theirs.file_meta.TransferSyntaxUID
        assert stored.is_compressed and (syntax is None or stored == syntax), stored.name
        if flags[:2] == ("+el", "+sv"):
            frame = next(generate_frames(theirs.PixelData, number_of_frames=2))
            assert jpeg_header(frame).ss == 6  # a predictor other than SV1's, decoded all the same
        ours = _our_decode(theirs)
        if kind_of == LOSSLESS:
            _same(ours, original)
        else:
            decoder = _DECODER.get(stored, "dcmdjpeg")
            reference = _their_decode(decoder, tmp_path / f"{kind}-{tool}.dcm", tmp_path / f"{kind}-ref.dcm")
            # gdcm writes 12-bit samples as 16-bit precision: its lossy reconstruction may pass 4095, which
            # gdcm --raw keeps (with Bits Stored 16) and we clip to Bits Stored 12.
            _same(reference, ours, tolerance=1 if stored == u.JPEGBaseline8Bit and kind == "rgb8" else 0,
                  bits=original.BitsStored if tool == "gdcmconv" and original.PixelRepresentation == 0 else None)
            assert ours.LossyImageCompression == "01"
