"""Real objects: every pydicom test file (and character set file) de-identified (the broken-on-purpose and non-composite ones
give DeidError, nothing else), every output read back by pydicom and by dcmtk's dcmdump, and for a
handful of SOP classes dicom3tools' dciodvfy finds no error in the output that the input did not
have (error lines compared without the values they quote)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pydicom
import pytest
from pacs.deid import Deidentifier, DeidError, DeidSettings, Profile
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files

from .support import dcmtk_tool

pytestmark = pytest.mark.interop

PROFILES = ["basic", "research+retain-safe-private+retain-uids+retain-device-identity"]
#: Files that are not composite instances or are broken on purpose: DeidError is the right answer.
EXPECTED_ERRORS = {
    "rtplan.dump", "rtstruct.dump", "zipMR.gz", "crayons.icc", "README.txt", "README", "test_PN.json",
    "test1.json", "UN_sequence.dcm", "no_meta_group_length.dcm", "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm", "no_meta.dcm", "priv_SQ.dcm", "empty_charset_LEI.dcm", "DICOMDIR",
    "DICOMDIR-nopatient", "DICOMDIR-implicit", "DICOMDIR-empty.dcm", "DICOMDIR-nooffset",
    "DICOMDIR-reordered", "DICOMDIR-bigEnd", "chrSQEncoding.dcm", "chrSQEncoding1.dcm", "README.md",
    "FileInfo.txt",
}
#: Input (pydicom test file) for each SOP class checked with dciodvfy.
VERIFIED = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm", "test-SR.dcm",
            "reportsi.dcm", "examples_overlay.dcm", "liver_1frame.dcm", "SC_rgb_rle_2frame.dcm",
            "waveform_ecg.dcm", "examples_ybr_color.dcm", "examples_rgb_color.dcm", "examples_palette.dcm",
            "examples_jpeg2k.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm", "image_dfl.dcm"]
#: A new dciodvfy error the profile itself causes: the Type 3 Referenced/Source Image Sequences are
#: removed (X/Z/U* → X, PS3.15 E.1-1a), after which dciodvfy reads the Common Instance Reference
#: module's condition ("the instance references instances") as no longer met.
PROFILE_CAUSED = ("ReferencedSeriesSequence present but Instance does not reference Instances",)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_pydicom_test_file(profile: str, tmp_path: Path) -> None:
    deid = Deidentifier(DeidSettings(Profile.parse(profile), key=b"q" * 32))
    written, errors = [], set()
    for path in map(Path, [*get_testdata_files(), *get_charset_files()]):
        if not path.is_file():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = deid.part10(path.read_bytes())
            except DeidError:
                errors.add(path.name)
                continue
            back = pydicom.dcmread(io.BytesIO(result.data))
        assert back.PatientIdentityRemoved == "YES" and back.SOPInstanceUID == result.sop_uid
        out = tmp_path / f"{len(written)}-{path.name}"
        out.write_bytes(result.data)
        written.append(out)
    assert errors <= EXPECTED_ERRORS, errors - EXPECTED_ERRORS
    assert len(written) >= 150
    dcmdump = dcmtk_tool("dcmdump")
    if dcmdump is None:
        pytest.skip("dcmtk's dcmdump is not installed (make setup)")
    run = subprocess.run([dcmdump, "-q", *map(str, written)], capture_output=True, text=True,
                         errors="replace", timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "E: " not in run.stderr, run.stderr[-2000:]


def _errors(path: Path) -> set[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return {re.sub(r"<[^>]*>|\[[^\]]*\]|= .*|[0-9][0-9.]*", "#", line).strip()
            for line in lines if line.startswith("Error")}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", VERIFIED)
def test_dciodvfy_finds_no_new_error(name: str, profile: str, tmp_path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (make setup)")
    source = Path(get_testdata_file(name))  # type: ignore[arg-type]
    deid = Deidentifier(DeidSettings(Profile.parse(profile), key=b"q" * 32))
    out = tmp_path / name
    out.write_bytes(deid.part10(source.read_bytes()).data)
    new = {e for e in _errors(out) - _errors(source) if not any(p in e for p in PROFILE_CAUSED)}
    assert new == set()
