"""The file tools through the real `pacs` entry point of the venv (a subprocess each): `pacs dump`,
`info`, `convert`, `extract`, `import-image` — good input checked by content, bad input (one line per
file, exit 1, the others still processed), usage errors (exit 2), and directory trees under the
progress bar. Inputs: pydicom's test files and small synthetic data sets and images."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.data
import pytest
from pacs.codecs import can_encode
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

PACS = str(Path(sys.executable).with_name("pacs"))
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT = TEST_FILES / "CT_small.dcm"  # signed 16-bit, private GEMS tags, OtherPatientIDsSequence
RGB_RLE_2 = TEST_FILES / "SC_rgb_rle_2frame.dcm"
RGB_JPEG = TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm"
MR = TEST_FILES / "MR_small.dcm"


def run(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    # no local archive unless a test names one (`--study` would read ./pacs-data if it were there)
    nowhere = str(Path(__file__).parent / "no-such-pacs-data")
    return subprocess.run([PACS, *map(str, args)], capture_output=True, text=True, timeout=180,
                          env={**clean, "COLUMNS": "120", "PACS_DATA_DIR": nowhere, **env})


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def synthetic(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", **attrs: Any) -> Path:
    """A small Part 10 file (Explicit VR LE) holding `pixels` (frames, rows, columns[, 3])."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Synthetic^Test", "SYN1", "OT"
    frames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[1:3]
    ds.SamplesPerPixel = 3 if pixels.ndim == 4 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = \
        ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def tree(root: Path) -> Path:
    """A directory tree: two DICOM files (one in a sub-directory) and a text file."""
    (root / "sub").mkdir(parents=True)
    shutil.copy(CT, root / "a.dcm")
    shutil.copy(MR, root / "sub" / "b.dcm")
    (root / "sub" / "notes.txt").write_text("not DICOM\n")
    return root


# -- dump ----------------------------------------------------------------------------------------------------

def test_dump_shows_meta_sequences_indented_and_private_creators() -> None:
    out = ok(run("dump", CT))
    lines = out.splitlines()
    assert lines[0] == "# Dicom-Meta-Information-Header"
    assert any(line.startswith("(0002,0010) UI [1.2.840.10008.1.2.1] (Explicit VR Little Endian)")
               for line in lines)
    seq = next(i for i, line in enumerate(lines) if line.startswith("(0010,1002) SQ"))
    assert "OtherPatientIDsSequence" in lines[seq] and "2 item(s)" in lines[seq]
    assert lines[seq + 1].startswith("  (fffe,e000) na (Item #1")
    assert lines[seq + 2].startswith("    (0010,0020) LO [ABCD1234]") and "PatientID" in lines[seq + 2]
    creator = next(line for line in lines if line.startswith("(0009,0010)"))
    assert "[GEMS_IDEN_01]" in creator and "PrivateCreator" in creator
    private = next(line for line in lines if line.startswith("(0009,1001)"))
    assert "(GEMS_IDEN_01) Full fidelity" in private  # the creator, and pydicom's private dictionary name
    assert any(line.startswith("(7fe0,0010) OW ") and "# 32768, 1 PixelData" in line for line in lines)


def test_dump_cuts_long_values_unless_asked(tmp_path: Path) -> None:
    f = synthetic(tmp_path / "long.dcm", np.zeros((1, 2, 2), np.uint8), ImageComments="x" * 300)
    short = next(line for line in ok(run("dump", f)).splitlines() if line.startswith("(0020,4000)"))
    assert "[" + "x" * 63 + "..." in short and "x" * 64 not in short and "# 300, 1 ImageComments" in short
    cut = next(line for line in ok(run("dump", "-L", "10", f)).splitlines() if line.startswith("(0020,4000)"))
    assert "[xxxxxxxxx..." in cut
    whole = next(line for line in ok(run("dump", "+L", f)).splitlines() if line.startswith("(0020,4000)"))
    assert f"[{'x' * 300}]" in whole


def test_dump_json_omits_bulk_data_unless_asked() -> None:
    out = run("dump", "--json", CT)
    doc = json.loads(ok(out))
    assert doc["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "CompressedSamples^CT1"}]}
    assert doc["00101002"]["vr"] == "SQ" and len(doc["00101002"]["Value"]) == 2
    assert doc["7FE00010"] == {"vr": "OW"}
    assert "binary value(s) over 1 KiB omitted" in out.stderr
    full = json.loads(ok(run("dump", "--json", "--inline-binary", CT)))
    assert len(base64.b64decode(full["7FE00010"]["InlineBinary"])) == 32768


def test_dump_bad_input_is_one_line_and_the_others_are_dumped(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"hello, not DICOM\n" * 20)
    out = run("dump", junk, tmp_path / "missing.dcm", CT)
    assert out.returncode == 1
    errors = out.stderr.splitlines()
    assert errors == [f"pacs dump: {junk}: not a DICOM file (no DICM prefix; --force reads it anyway)",
                      f"pacs dump: {tmp_path / 'missing.dcm'}: no such file"]
    assert f"# {CT}" in out.stdout and "OtherPatientIDsSequence" in out.stdout


def test_dump_force_reads_a_bare_data_set(tmp_path: Path) -> None:
    ds = Dataset()
    ds.PatientName, ds.PatientID = "Bare^Set", "B1"
    bare = tmp_path / "bare"
    pydicom.dcmwrite(bare, ds, implicit_vr=True, little_endian=True)  # no preamble, no file meta
    assert run("dump", bare).returncode == 1
    out = ok(run("dump", "+E", bare))
    assert "(0010,0010) PN [Bare^Set]" in out


def test_dump_walks_a_tree_under_the_progress_bar(tmp_path: Path) -> None:
    root = tree(tmp_path / "in")
    out = run("dump", root)
    assert out.returncode == 1  # notes.txt
    assert out.stdout.count("# Dicom-Data-Set") == 2 and "\x1b" not in out.stdout
    assert f"pacs dump: {root / 'sub' / 'notes.txt'}: not a DICOM file" in out.stderr
    assert "3/3" in out.stderr  # the bar's final state, written once on a pipe
    quiet = run("dump", "--no-progress", root)
    assert "3/3" not in quiet.stderr


# -- info ----------------------------------------------------------------------------------------------------

def test_info_json_fields() -> None:
    info = json.loads(ok(run("info", "--json", CT)))
    assert info["file"] == str(CT) and info["size"] == CT.stat().st_size
    assert info["patient"] == {"name": "CompressedSamples^CT1", "id": "1CT1", "birth_date": None, "sex": "O"}
    assert info["study"]["uid"] == "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    assert info["study"]["date"] == "20040119"
    assert info["series"]["modality"] == "CT" and info["series"]["number"] == 1
    assert info["sop_class"] == {"uid": "1.2.840.10008.5.1.4.1.1.2", "name": "CT Image Storage"}
    assert info["geometry"]["rows"] == 128 and info["geometry"]["columns"] == 128
    assert info["geometry"]["pixel_spacing"] == [0.661468, 0.661468]
    assert info["geometry"]["slice_thickness"] == 5.0 and len(info["geometry"]["orientation"]) == 6
    assert info["frames"] == 1 and info["bits"] == {"allocated": 16, "stored": 16, "high_bit": 15, "signed": True}
    assert info["photometric_interpretation"] == "MONOCHROME2"
    assert info["transfer_syntax"] == {"uid": "1.2.840.10008.1.2.1", "name": "Explicit VR Little Endian"}
    assert info["lossy"] is False


def test_info_text_and_several_files(tmp_path: Path) -> None:
    out = ok(run("info", CT, RGB_JPEG))
    assert "Patient:         CompressedSamples^CT1  ID 1CT1" in out
    assert "Transfer syntax: JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50)" in out
    both = json.loads(ok(run("info", "--json", CT, RGB_JPEG)))
    assert [i["lossy"] for i in both] == [False, True] and both[1]["frames"] == 1
    junk = tmp_path / "junk"
    junk.write_text("nope")
    bad = run("info", "--json", junk, CT)
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert [i["file"] for i in json.loads(bad.stdout)] == [str(CT)]


# -- convert -------------------------------------------------------------------------------------------------

LOSSLESS = [  # (name as a user types it, UID)
    ("jpeg-ls-lossless", "1.2.840.10008.1.2.4.80"),
    ("RLELossless", "1.2.840.10008.1.2.5"),
    ("j2k", "1.2.840.10008.1.2.4.90"),
    ("explicit-big", "1.2.840.10008.1.2.2"),
    ("deflated", "1.2.840.10008.1.2.1.99"),
    ("1.2.840.10008.1.2", "1.2.840.10008.1.2"),
    ("htj2k-lossless", "1.2.840.10008.1.2.4.201"),
]


@pytest.mark.parametrize(("name", "uid"), LOSSLESS)
@pytest.mark.parametrize("source", [CT, RGB_RLE_2], ids=["ct-signed16", "rgb-2frames"])
def test_convert_lossless_is_bit_exact(tmp_path: Path, name: str, uid: str, source: Path) -> None:
    if not can_encode(uid):
        pytest.skip(f"no encoder for {uid} here yet")
    out = tmp_path / "out.dcm"
    ok(run("convert", source, "-o", out, "--ts", name))
    converted, original = pydicom.dcmread(out), pydicom.dcmread(source)
    assert converted.file_meta.TransferSyntaxUID == uid
    assert converted.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(converted.pixel_array, original.pixel_array)


def test_convert_near_lossless_stays_within_its_bound(tmp_path: Path) -> None:
    out = tmp_path / "near.dcm"
    ok(run("convert", CT, "-o", out, "--ts", "JPEGLSNearLossless", "--near-lossless", "3"))
    converted, original = pydicom.dcmread(out), pydicom.dcmread(CT)
    assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.81"
    diff = np.abs(converted.pixel_array.astype(np.int32) - original.pixel_array.astype(np.int32))
    assert diff.max() <= 3


@pytest.mark.parametrize(("name", "option", "uid"), [
    ("JPEG2000", ["--ratio", "10"], "1.2.840.10008.1.2.4.91"),
    ("htj2k", ["--ratio", "10"], "1.2.840.10008.1.2.4.203"),
    ("jpeg-baseline", ["--quality", "90"], "1.2.840.10008.1.2.4.50"),
])
def test_convert_lossy_keeps_the_image(tmp_path: Path, name: str, option: list[str], uid: str) -> None:
    """Lossy targets of the registry (those with an encoder here): the syntax asked, PSNR over 30 dB."""
    if not can_encode(uid):
        pytest.skip(f"no encoder for {uid} here yet")
    source = CT if uid != "1.2.840.10008.1.2.4.50" else RGB_RLE_2  # JPEG Baseline: 8-bit samples
    out = tmp_path / "lossy.dcm"
    ok(run("convert", source, "-o", out, "--ts", name, *option))
    converted = pydicom.dcmread(out)
    assert converted.file_meta.TransferSyntaxUID == uid
    a, b = pydicom.dcmread(source).pixel_array.astype(float), converted.pixel_array.astype(float)
    mse = float(((a - b) ** 2).mean())
    assert mse == 0 or 10 * np.log10((a.max() - a.min()) ** 2 / mse) > 30


def test_convert_usage_errors_exit_2(tmp_path: Path) -> None:
    unknown = run("convert", CT, "-o", tmp_path / "x.dcm", "--ts", "no-such-syntax")
    assert unknown.returncode == 2 and "unknown transfer syntax 'no-such-syntax'" in unknown.stderr
    assert run("convert", CT, "--ts", "rle").returncode == 2  # no -o
    assert run("convert", CT, "-o", tmp_path / "x.dcm", "--ts", "rle", "--quality", "0").returncode == 2
    assert run("convert", CT, "-o", tmp_path / "x.dcm", "--ts", "rle", "--quality", "5",
               "--ratio", "10").returncode == 2  # mutually exclusive
    assert not (tmp_path / "x.dcm").exists()


def test_convert_lists_the_registry_syntaxes() -> None:
    out = ok(run("convert", "--list-syntaxes"))
    row = next(line for line in out.splitlines() if line.startswith("1.2.840.10008.1.2.4.80 "))
    assert "JPEGLSLossless" in row and " yes " in row and "jpegls" in row
    assert len(out.splitlines()) >= 17  # a header and every syntax of pacs.codecs.SYNTAXES


def test_convert_tree_mirrors_it_and_fails_alone(tmp_path: Path) -> None:
    root = tree(tmp_path / "in")
    out = run("convert", root, "-o", tmp_path / "out", "--ts", "rle")
    assert out.returncode == 1
    assert out.stderr.count("pacs convert: ") == 1 and "notes.txt: not a DICOM file" in out.stderr
    assert "3/3" in out.stderr  # the progress bar ran to the end
    a, b = pydicom.dcmread(tmp_path / "out" / "a.dcm"), pydicom.dcmread(tmp_path / "out" / "sub" / "b.dcm")
    assert a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert not (tmp_path / "out" / "sub" / "notes.txt").exists()


def test_convert_never_overwrites_its_input_unless_named(tmp_path: Path) -> None:
    f = tmp_path / "ct.dcm"
    shutil.copy(CT, f)
    before = f.read_bytes()
    out = run("convert", f, "-o", tmp_path, "--ts", "rle")
    assert out.returncode == 1 and "is the input: name it with -o to replace it" in out.stderr
    assert f.read_bytes() == before
    ok(run("convert", f, "-o", f, "--ts", "rle"))
    assert pydicom.dcmread(f).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert np.array_equal(pydicom.dcmread(f).pixel_array, pydicom.dcmread(CT).pixel_array)


def test_convert_a_file_that_cannot_be_converted_fails_alone(tmp_path: Path) -> None:
    ds = Dataset()  # no pixel data: JPEG-LS cannot be made of it
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid(), "X"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = \
        ds.SOPClassUID, ds.SOPInstanceUID
    sr = tmp_path / "sr.dcm"
    pydicom.dcmwrite(sr, ds, enforce_file_format=True)
    out = run("convert", sr, CT, "-o", tmp_path / "out", "--ts", "jpegls")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1 and "needs pixel data" in out.stderr
    assert (tmp_path / "out" / "CT_small.dcm").is_file() and not (tmp_path / "out" / "sr.dcm").exists()


# -- extract -------------------------------------------------------------------------------------------------

def _window(values: np.ndarray, c: float, w: float) -> np.ndarray:
    return np.rint(np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1) * 255).astype(np.uint8)


def test_extract_png_applies_modality_lut_and_window(tmp_path: Path) -> None:
    ok(run("extract", CT, "-o", tmp_path / "ct.png", "--window", "40,400"))
    image = Image.open(tmp_path / "ct.png")
    assert image.mode == "L" and image.size == (128, 128)
    ds = pydicom.dcmread(CT)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(np.asarray(image), _window(hu, 40, 400))
    ok(run("extract", CT, "-o", tmp_path / "ww.png", "+Ww", "40", "400"))  # dcmj2pnm's spelling
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ww.png")), np.asarray(image))
    ok(run("extract", CT, "-o", tmp_path / "pngs", "--window", "40,400"))  # no suffix: a directory
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pngs" / "CT_small.png")), np.asarray(image))


def test_extract_uses_the_file_window_and_inverts_monochrome1(tmp_path: Path) -> None:
    pixels = np.arange(16, dtype=np.uint16).reshape(1, 4, 4) * 100
    f = synthetic(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", WindowCenter=750, WindowWidth=1001)
    ok(run("extract", f, "-o", tmp_path / "m1.png"))
    got = np.asarray(Image.open(tmp_path / "m1.png"))
    assert np.array_equal(got, 255 - _window(pixels[0].astype(float), 750, 1001))


def test_extract_applies_a_voi_lut_sequence(tmp_path: Path) -> None:
    pixels = np.arange(16, dtype=np.uint16).reshape(1, 4, 4)
    lut = [255 - 17 * i for i in range(16)]
    item = Dataset()
    item.add_new(0x00283002, "US", [16, 0, 8])  # LUT Descriptor: 16 entries from 0, 8 bits
    item.add_new(0x00283006, "US", lut)  # LUT Data
    f = synthetic(tmp_path / "voi.dcm", pixels)
    ds = pydicom.dcmread(f)
    ds.VOILUTSequence = [item]
    ds.save_as(f, enforce_file_format=True)
    ok(run("extract", f, "-o", tmp_path / "voi.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "voi.png")), np.array(lut, np.uint8).reshape(4, 4))


def test_extract_palette_colour_through_its_luts(tmp_path: Path) -> None:
    from pydicom.pixels import apply_color_lut

    source = TEST_FILES / "examples_palette.dcm"
    ok(run("extract", source, "-o", tmp_path / "palette.png"))
    image = Image.open(tmp_path / "palette.png")
    ds = pydicom.dcmread(source)
    expected = np.rint(apply_color_lut(ds.pixel_array, ds) / 65535 * 255).astype(np.uint8)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)


def test_extract_raw_values_as_16_bit_png(tmp_path: Path) -> None:
    ok(run("extract", CT, "-o", tmp_path / "raw.png", "--raw"))
    image = Image.open(tmp_path / "raw.png")
    assert image.mode == "I;16"
    assert np.array_equal(np.asarray(image).astype(np.int32), pydicom.dcmread(CT).pixel_array.astype(np.int32) + 32768)
    ok(run("extract", CT, "-o", tmp_path / "ct.raw"))
    assert (tmp_path / "ct.raw").read_bytes() == pydicom.dcmread(CT).pixel_array.astype("<i2").tobytes()


def test_extract_colour_frames_to_numbered_names_and_a_directory(tmp_path: Path) -> None:
    original = pydicom.dcmread(RGB_RLE_2).pixel_array
    ok(run("extract", RGB_RLE_2, "-o", tmp_path / "rgb.png", "--frame", "all"))
    for n in (1, 2):
        image = Image.open(tmp_path / f"rgb-000{n}.png")
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), original[n - 1])
    ok(run("extract", RGB_RLE_2, "-o", tmp_path / "frames", "+Fa", "--format", "tiff"))
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == \
        ["SC_rgb_rle_2frame-0001.tif", "SC_rgb_rle_2frame-0002.tif"]
    ok(run("extract", RGB_RLE_2, "-o", tmp_path / "two.jpg", "--frame", "2"))
    assert Image.open(tmp_path / "two.jpg").size == (100, 100)
    bad = run("extract", RGB_RLE_2, "-o", tmp_path / "x.png", "--frame", "3")
    assert bad.returncode == 1 and "frame 3 asked, it has 2" in bad.stderr


def test_extract_usage_and_bad_input(tmp_path: Path) -> None:
    assert run("extract", CT, "-o", tmp_path / "x.png", "--window", "40").returncode == 2
    assert run("extract", CT, "-o", tmp_path / "x.jpg", "--raw").returncode == 2
    assert run("extract", CT, "-o", tmp_path / "x.png", "--frame", "0").returncode == 2
    junk = tmp_path / "junk.dcm"
    junk.write_text("nope")
    out = run("extract", junk, CT, "-o", tmp_path / "out")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1
    assert (tmp_path / "out" / "CT_small.png").is_file()


# -- import-image --------------------------------------------------------------------------------------------

TYPE_1_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
            "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality",
            "SeriesInstanceUID", "SeriesNumber", "InstanceNumber", "PatientOrientation", "SamplesPerPixel",
            "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
            "PixelRepresentation", "PixelData", "SOPClassUID", "SOPInstanceUID")


def _images(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(12)
    colour = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    paths = {"colour.png": colour, "grey.png": grey, "grey2.png": grey[::-1].copy()}
    for name, arr in paths.items():
        Image.fromarray(arr).save(tmp_path / name)
    Image.fromarray(colour).save(tmp_path / "photo.jpg", quality=90)
    return {name: tmp_path / name for name in (*paths, "photo.jpg")}


def _dcmdump_clean(path: Path) -> None:
    """dcmtk's dcmdump reads the file without an error or warning; dicom3tools' dciodvfy (where installed:
    Debian `dicom3tools`) finds no error against the IOD's modules (its warnings are advice)."""
    if shutil.which("dcmdump") is not None:
        out = subprocess.run(["dcmdump", "-dc", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "E:" not in out.stdout + out.stderr and "W:" not in out.stderr, \
            out.stderr
    if shutil.which("dciodvfy") is not None:
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, "\n".join(errors)


def test_import_colour_png_as_secondary_capture(tmp_path: Path) -> None:
    img = _images(tmp_path)
    out = tmp_path / "sc.dcm"
    ok(run("import-image", img["colour.png"], "--patient-id", "P1", "--patient-name", "Doe^Jane",
           "--series-description", "photos", "-o", out))
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.Modality == "OT" and ds.ConversionType == "WSD"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert all(k in ds for k in TYPE_1_2) and ds.PatientID == "P1" and ds.SeriesDescription == "photos"
    assert ds.PhotometricInterpretation == "RGB" and ds.LossyImageCompression == "00"
    assert np.array_equal(ds.pixel_array, np.asarray(Image.open(img["colour.png"])))
    _dcmdump_clean(out)


def test_import_jpeg_photo_kept_as_jpeg_baseline_vl_photographic(tmp_path: Path) -> None:
    img = _images(tmp_path)
    out = tmp_path / "photo.dcm"
    ok(run("import-image", img["photo.jpg"], "--patient-id", "P1", "-o", out))
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.4" and ds.Modality == "XC"
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.LossyImageCompression == "01"
    assert "AcquisitionContextSequence" in ds and all(k in ds for k in TYPE_1_2)
    fragment = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    assert fragment.rstrip(b"\0") == img["photo.jpg"].read_bytes().rstrip(b"\0")  # not re-encoded
    assert ds.pixel_array.shape == (48, 64, 3)
    _dcmdump_clean(out)
    sc = tmp_path / "sc.dcm"
    ok(run("import-image", img["photo.jpg"], "--patient-id", "P1", "-sc", "-o", sc))
    assert pydicom.dcmread(sc).SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"


def test_import_several_images_as_multi_frame(tmp_path: Path) -> None:
    img = _images(tmp_path)
    study = generate_uid()
    grey = tmp_path / "grey.dcm"
    ok(run("import-image", img["grey.png"], img["grey2.png"], "--patient-id", "P2", "--study", study,
           "-o", grey))
    ds = pydicom.dcmread(grey)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.2" and ds.NumberOfFrames == 2
    assert ds.StudyInstanceUID == study and ds.FrameIncrementPointer == 0x00182001
    assert np.array_equal(ds.pixel_array[1], np.asarray(Image.open(img["grey2.png"])))
    _dcmdump_clean(grey)
    colour = tmp_path / "colour.dcm"
    ok(run("import-image", img["colour.png"], img["grey.png"], "--patient-id", "P2", "-o", colour))
    ds = pydicom.dcmread(colour)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.4" and ds.pixel_array.shape == (2, 48, 64, 3)
    _dcmdump_clean(colour)
    each = tmp_path / "each"
    ok(run("import-image", img["colour.png"], img["grey.png"], "--patient-id", "P2", "--each", "-o", each))
    made = [pydicom.dcmread(each / n) for n in ("colour.dcm", "grey.dcm")]
    assert len({d.SeriesInstanceUID for d in made}) == 1 and [d.InstanceNumber for d in made] == [1, 2]


def test_import_grey_jpeg_and_16_bit_png(tmp_path: Path) -> None:
    grey = np.random.default_rng(3).integers(0, 256, (32, 40), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.jpg", quality=95)
    ok(run("import-image", tmp_path / "grey.jpg", "--patient-id", "P5", "-o", tmp_path / "gj.dcm"))
    ds = pydicom.dcmread(tmp_path / "gj.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.pixel_array.shape == (32, 40)
    _dcmdump_clean(tmp_path / "gj.dcm")
    deep = (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 50).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    ok(run("import-image", tmp_path / "deep.png", "--patient-id", "P5", "-o", tmp_path / "deep.dcm"))
    ds = pydicom.dcmread(tmp_path / "deep.dcm")
    assert ds.BitsAllocated == 16 and np.array_equal(ds.pixel_array, deep)
    _dcmdump_clean(tmp_path / "deep.dcm")


def test_import_multi_page_tiff_as_multi_frame(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    pages = [Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)) for _ in range(3)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    ok(run("import-image", tmp_path / "pages.tif", "--patient-id", "P6", "-o", tmp_path / "pages.dcm"))
    ds = pydicom.dcmread(tmp_path / "pages.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.2" and ds.NumberOfFrames == 3
    assert np.array_equal(ds.pixel_array, np.stack([np.asarray(p) for p in pages]))
    _dcmdump_clean(tmp_path / "pages.dcm")
    ok(run("import-image", tmp_path / "pages.tif", "--patient-id", "P6", "--each", "-o", tmp_path / "each"))
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["pages-2.dcm", "pages-3.dcm", "pages.dcm"]


def test_import_into_a_study_of_the_local_archive(tmp_path: Path) -> None:
    from pacs.backends import open_backend
    from pacs.config import Settings
    from pacs.services.ingest import IngestService

    data = tmp_path / "data"
    backend = open_backend(Settings(data_dir=data))
    try:
        IngestService(backend.store).ingest(CT.read_bytes())
    finally:
        backend.close()
    ok(run("reconcile", "--data-dir", data))
    study = str(pydicom.dcmread(CT).StudyInstanceUID)
    img = _images(tmp_path)
    out = tmp_path / "added.dcm"
    ok(run("import-image", img["grey.png"], "--patient-id", "1CT1", "--study", study, "--data-dir", data,
           "-o", out))
    ds = pydicom.dcmread(out)
    assert ds.StudyInstanceUID == study and ds.PatientName == "CompressedSamples^CT1" and ds.PatientSex == "O"
    assert ds.StudyDate == "20040119" and ds.StudyDescription == "e+1"
    other = run("import-image", img["grey.png"], "--patient-id", "SOMEONE", "--study", study,
                "--data-dir", data, "-o", tmp_path / "wrong.dcm")
    assert other.returncode == 2 and "belongs to patient ID '1CT1'" in other.stderr
    assert not (tmp_path / "wrong.dcm").exists()


def test_import_bad_input_and_usage(tmp_path: Path) -> None:
    img = _images(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    out = run("import-image", text, img["grey.png"], "--patient-id", "P3", "-o", tmp_path / "x.dcm")
    assert out.returncode == 1 and out.stderr.startswith(f"pacs import-image: {text}: not an image")
    assert pydicom.dcmread(tmp_path / "x.dcm").SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert run("import-image", img["grey.png"], "--patient-id", "P3").returncode == 2  # no -o nor --send
    assert run("import-image", img["grey.png"], "-o", tmp_path / "y.dcm").returncode == 2  # no patient
    assert run("import-image", img["grey.png"], "--patient-id", "P3", "--study", "not-a-uid",
               "-o", tmp_path / "y.dcm").returncode == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk's storescp is not installed")
def test_import_sends_to_a_node(tmp_path: Path) -> None:
    img = _images(tmp_path)
    received = tmp_path / "received"
    received.mkdir()
    port = _free_port()
    scp = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "-od", str(received), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.1)
        out = ok(run("import-image", img["photo.jpg"], "--patient-id", "P4",
                     "--send", f"STORESCP@127.0.0.1:{port}"))
        assert "0x0000 Success" in out
        files = list(received.iterdir())
        assert len(files) == 1
        ds = pydicom.dcmread(files[0])
        assert ds.PatientID == "P4" and ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    finally:
        scp.terminate()
        scp.wait(timeout=30)


@pytest.mark.parametrize("tool", [["dump"], ["dump", "--json"], ["info"], ["info", "--json"],
                                  ["convert", "--ts", "rle", "-o"], ["convert", "--ts", "j2k", "-o"],
                                  ["extract", "--frame", "all", "-o"]], ids=lambda t: "-".join(t))
def test_pydicom_test_tree_gives_one_line_per_failure(tmp_path: Path, tool: list[str]) -> None:
    """pydicom's 176 test files, broken ones and non-DICOM ones among them: no traceback, no codec log
    record, one `pacs TOOL: PATH: reason` line per failure, the bar's final line, the rest processed."""
    args = [*tool, tmp_path / "out"] if tool[-1] == "-o" else tool
    out = run(*args, TEST_FILES)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert "176/176" in lines[-1]
    strays = [line for line in lines[:-1] if not line.startswith(f"pacs {tool[0]}: {TEST_FILES}/")
              and "pacs.dicom.json_model" not in line]  # DICOM JSON notes a value it drops
    assert not strays, strays
    assert 0 < len(lines) - 1 < 176


def test_every_file_tool_has_help() -> None:
    for tool in ("dump", "info", "convert", "extract", "import-image"):
        out = ok(run(tool, "--help"))
        assert f"usage: pacs {tool}" in out

