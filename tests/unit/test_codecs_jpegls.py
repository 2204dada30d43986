"""JPEG-LS through imagecodecs' CharLS (plugins.py): signed samples, Bits Stored below Bits Allocated, NEAR,
and the streams read by pyjpegls (and pyjpegls' streams read here)."""

from __future__ import annotations

import numpy as np
import pytest
from pacs.codecs import EncodeOptions, samples, transcode
from pacs.codecs.proof import part10, pixels
from pacs.codecs.registry import decoder_plugin, encoder_plugin
from pydicom import uid as u
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder, get_encoder


def _frames(ds: object) -> list[bytes]:
    return list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))  # type: ignore[attr-defined]


def _sof55(stream: bytes) -> tuple[int, int]:
    """(P, NEAR) of a JPEG-LS stream: the SOF55 precision and the SOS NEAR."""
    sof, sos = stream.index(b"\xff\xf7"), stream.index(b"\xff\xda")
    components = stream[sos + 4]
    return stream[sof + 4], stream[sos + 5 + 2 * components]


def test_imagecodecs_is_the_jpegls_plugin_and_pyjpegls_the_fallback() -> None:
    for syntax in (u.JPEGLSLossless, u.JPEGLSNearLossless):
        assert encoder_plugin(syntax) == decoder_plugin(syntax) == "imagecodecs"
        assert "pyjpegls" in get_encoder(syntax).available_plugins
        assert "pyjpegls" in get_decoder(syntax).available_plugins


@pytest.mark.parametrize("kind", ["mono8s", "mono12s", "mono16s", "mono12", "rgb8planar"])
def test_signed_and_short_samples_round_trip_bit_for_bit(kind: str) -> None:
    original = samples.dataset(kind)
    encoded = part10(transcode(samples.dataset(kind), u.JPEGLSLossless))
    for frame in _frames(encoded):
        assert frame[:4] == b"\xff\xd8\xff\xf7"  # no SPIFF header between the SOI and the SOF55
        precision, near = _sof55(frame)
        assert precision == 8 * (1 if original.BitsAllocated == 8 else 2) and near == 0  # CharLS of imagecodecs
    expected = pixels(original, raw=True)
    for plugin in ("imagecodecs", "pyjpegls"):  # the other CharLS binding reads the same samples
        decoded = get_decoder(u.JPEGLSLossless).as_array(encoded, raw=True, decoding_plugin=plugin)[0]
        np.testing.assert_array_equal(decoded, expected, err_msg=plugin)


@pytest.mark.parametrize("kind", ["mono8s", "mono12s", "mono16s"])
def test_pyjpegls_streams_decoded_here(kind: str) -> None:
    """pyjpegls codes P = Bits Stored (masked samples): imagecodecs decodes them, pydicom sign-extends."""
    ds = samples.dataset(kind)
    original = pixels(ds, raw=True)
    ds.compress(u.JPEGLSLossless, encoding_plugin="pyjpegls")
    encoded = part10(ds)
    assert _sof55(_frames(encoded)[0])[0] == int(encoded.BitsStored)
    decoded = get_decoder(u.JPEGLSLossless).as_array(encoded, raw=True, decoding_plugin="imagecodecs")[0]
    np.testing.assert_array_equal(decoded, original)


@pytest.mark.parametrize("near", [3, 20])
@pytest.mark.parametrize("bits", [12, 16])
def test_signed_near_lossless_keeps_near_across_zero(near: int, bits: int) -> None:
    ds = samples.dataset("mono12s" if bits == 12 else "mono16s")
    arr = pixels(ds, raw=True).astype(np.int32)
    arr = (arr * 400 // (1 << (bits - 1))).astype(ds.pixel_array.dtype)  # -400..400: across zero, in range
    ds.PixelData = arr.tobytes()
    encoded = part10(transcode(ds, u.JPEGLSNearLossless, EncodeOptions(near_lossless=near)))
    assert all(_sof55(f)[1] == near for f in _frames(encoded))
    decoded = pixels(encoded, raw=True).astype(np.int64)
    assert int(np.abs(decoded - arr).max()) <= near
    assert np.sign(decoded[arr > near]).min() == 1 and np.sign(decoded[arr < -near]).max() == -1


def test_near_with_the_lossless_syntax_is_refused() -> None:
    arr = samples.pixels(samples.KINDS["mono8"], frames=1)[0]
    with pytest.raises(RuntimeError, match="Near Lossless"):
        get_encoder(u.JPEGLSLossless).encode(
            arr, encoding_plugin="imagecodecs", jls_error=2, rows=arr.shape[0], columns=arr.shape[1],
            samples_per_pixel=1, number_of_frames=1, bits_allocated=8, bits_stored=8, pixel_representation=0,
            photometric_interpretation="MONOCHROME2")
