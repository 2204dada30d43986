"""Fixtures of the viewer tests: the tools they need, the installed OHIF, synthetic studies (a CT
series, an image with only the required attributes).

The tests fail (with the reason) when Chromium or Node.js/npm is missing; `make test` installs them.
OHIF itself and playwright-core are installed here when missing (idempotent, a few seconds): a failure
to install them fails the test.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHROMIUM = "/usr/bin/chromium"
PATIENT_NAME = "Viewer^Test"
PATIENT_SHOWN = "Viewer, Test"  # how OHIF's study list renders the PN
PATIENT_ID = "VIEWER001"
SLICES = 18
SIZE = 128


@dataclass(frozen=True)
class Series:
    directory: Path
    study_uid: str
    series_uid: str
    count: int


@dataclass(frozen=True)
class Tools:
    node: str
    chromium: str


def _installer() -> ModuleType:
    """`tools/install_viewer.py` as a module (registered first: its dataclasses need it)."""
    if "install_viewer" in sys.modules:
        return sys.modules["install_viewer"]
    spec = importlib.util.spec_from_file_location("install_viewer", REPO / "tools" / "install_viewer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["install_viewer"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def browser_tools() -> Tools:
    """node, npm and Chromium (fail without them); playwright-core installed in tests/viewer."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js/npm is not installed: run `make setup` (Debian nodejs, npm)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `make setup` (Debian chromium)")
    if not (HERE / "node_modules" / "playwright-core" / "package.json").is_file():
        out = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, f"npm ci in {HERE} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return Tools(node=node, chromium=CHROMIUM)


@pytest.fixture(scope="session")
def viewer_dist(browser_tools: Tools) -> Path:
    """The installed OHIF build (`tools/install_viewer.py`; installs it when missing)."""
    installer = _installer()
    dest = Path(installer.DEFAULT_DEST)
    try:
        installer.install(dest)
    except installer.InstallError as exc:
        pytest.fail(f"cannot install OHIF: {exc}")
    assert (dest / "index.html").is_file()
    return dest


def _ct_slice(z: int, n: int) -> np.ndarray:
    """Stored values (HU + 1024) of slice `z`: air, a body disc, a bright sphere, a grid, a z ramp."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) - (SIZE - 1) / 2
    hu = np.full((SIZE, SIZE), -1000.0)
    hu[x**2 + y**2 < 56**2] = 40.0 + 0.6 * x[x**2 + y**2 < 56**2]  # body with a gentle gradient
    radius = 28 * np.sqrt(max(0.0, 1 - ((z - n / 2) / (n / 2 + 1)) ** 2))
    hu[(x + 14) ** 2 + (y + 10) ** 2 < radius**2] = 700.0  # a "bone" sphere
    hu[(np.abs(x - 24) < 6) & (np.abs(y - 20) < 18)] = -400.0  # a "lung" block
    hu[((x.astype(int) % 16) == 0) & (x**2 + y**2 < 56**2)] = 250.0  # grid lines
    hu[:6, :] = -1000 + 2000 * z / max(1, n - 1)  # a strip whose brightness follows z
    return (hu + 1024).astype(np.int16)


def write_ct_series(directory: Path, slices: int = SLICES) -> Series:
    """A CT series of `slices` 128×128 int16 images with full geometry, Explicit VR Little Endian."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    spacing, thickness = 1.5, 2.0
    for i in range(slices):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240315"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = "VACC001"
        ds.Modality = "CT"
        ds.Manufacturer = "pacs tests"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Viewer end-to-end"
        ds.SeriesDescription = "Synthetic axial"
        ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = f"{thickness}"
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, i + 1
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [-(SIZE - 1) * spacing / 2, -(SIZE - 1) * spacing / 2, -i * thickness]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -i * thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = SIZE
        ds.PixelSpacing = [spacing, spacing]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = _ct_slice(i, slices).astype("<i2").tobytes()
        ds.save_as(directory / f"ct{i:03d}.dcm", enforce_file_format=True)
    return Series(directory, study_uid, series_uid, slices)


def write_bare_study(directory: Path, **extra: object) -> Series:
    """One Secondary Capture image with the UIDs and the Image Pixel module only: no Modality (so
    QIDO answers ModalitiesInStudy `{"vr":"CS"}` with no Value), no patient, date, description,
    accession, series or instance number; plus the attributes `extra` names."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, sop_uid = generate_uid(), generate_uid(), generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = SIZE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    ds.PixelData = ((x * 2 + y) % 256).astype(np.uint8).tobytes()  # a diagonal ramp
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.save_as(directory / "bare.dcm", enforce_file_format=True)
    return Series(directory, study_uid, series_uid, 1)
