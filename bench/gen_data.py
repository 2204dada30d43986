"""Deterministic synthetic CT series for the C-STORE ingest benchmark.

Usage: python bench/gen_data.py [--out bench/out/data/ct300] [--instances 300] [--seed 1]

Writes one study / one series of N CT Image Storage instances, 512 x 512, 16-bit signed (BitsStored 12),
Explicit VR Little Endian, uncompressed (about 0.5 MB each, 158 MB for 300), with a realistic CT header
(patient, study, series, frame of reference, geometry, rescale, window), plus manifest.json (UIDs, sizes).
UIDs and pixels derive from --seed only, so a re-run gives byte-identical files. If OUT/manifest.json
already matches the parameters and this generator's version, nothing is rewritten (the cache).
Requires pydicom and numpy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ROWS = COLS = 512
SPACING_MM = 0.7
THICKNESS_MM = 1.0
# bump when the output changes, so cached data is regenerated
GENERATOR_VERSION = 1


def uid(seed: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=[f"pacs-bench-{seed}", *(str(p) for p in parts)])


def phantom(z: int, rng: np.random.Generator) -> np.ndarray:
    """Stored values (HU + 1024) of a cheap but non-trivial chest slice: body, two lungs, spine, noise."""
    y, x = np.ogrid[-1 : 1 : ROWS * 1j, -1 : 1 : COLS * 1j]
    hu = np.full((ROWS, COLS), -1000.0)
    hu[(x / 0.85) ** 2 + (y / 0.65) ** 2 <= 1] = 40.0
    wobble = 1.0 + 0.3 * np.sin(z / 20.0)
    for cx, cy, r, v in ((-0.35, 0.0, 0.18, -800.0), (0.35, 0.0, 0.18, -800.0), (0.0, 0.4, 0.08, 700.0)):
        hu[(x - cx) ** 2 + (y - cy) ** 2 <= (r * wobble) ** 2] = v
    hu += rng.normal(0.0, 12.0, size=(ROWS, COLS))
    return (hu + 1024.0).clip(0, 4095).astype(np.int16)


def build_instance(n: int, total: int, seed: int, rng: np.random.Generator) -> Dataset:
    study_uid = uid(seed, "study")
    series_uid = uid(seed, "series", 1)
    sop_uid = uid(seed, "instance", n)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20230110"
    ds.StudyTime = ds.SeriesTime = "081500"
    ds.AcquisitionTime = ds.ContentTime = f"0816{n * 60 // total:02d}"
    ds.AccessionNumber = "ACC000001"
    ds.Modality = "CT"
    ds.Manufacturer = "SYNTH MEDICAL"
    ds.InstitutionName = "BENCH GENERAL HOSPITAL"
    ds.ReferringPhysicianName = "REF^DOCTOR"
    ds.StationName = "SYNTHCT01"
    ds.StudyDescription = "CT CHEST W/O CONTRAST"
    ds.SeriesDescription = "AXIAL 1.0 STANDARD"
    ds.ManufacturerModelName = "SynthScanner 9000"
    ds.PatientName = "SMITH^JOHN"
    ds.PatientID = "BENCH00001"
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "M"
    ds.PatientAge = "073Y"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = f"{THICKNESS_MM:.1f}"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = f"{COLS * SPACING_MM:.1f}"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "200"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = n
    z = -n * THICKNESS_MM
    ds.ImagePositionPatient = [f"{-COLS * SPACING_MM / 2:.2f}", f"{-ROWS * SPACING_MM / 2:.2f}", f"{z:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = uid(seed, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{z:.2f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLS
    ds.PixelSpacing = [f"{SPACING_MM}", f"{SPACING_MM}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = phantom(n, rng).tobytes()
    return ds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "data" / "ct300"))
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.out)
    params = {"generator_version": GENERATOR_VERSION, "instances": a.instances, "seed": a.seed}
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except ValueError:
            old = {}
        files = sorted(out.glob("*.dcm"))
        size = sum(f.stat().st_size for f in files)
        if old.get("params") == params and len(files) == a.instances and size == old.get("bytes"):
            print(f"data: cached {out} ({a.instances} instances)", file=sys.stderr)
            return 0
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.dcm"):
        stale.unlink()
    manifest_path.unlink(missing_ok=True)
    rng = np.random.default_rng(a.seed)
    digest = hashlib.sha256()
    total_bytes = 0
    ds = None
    for n in range(1, a.instances + 1):
        ds = build_instance(n, a.instances, a.seed, rng)
        path = out / f"CT01_{n:04d}.dcm"
        tmp = path.with_suffix(".tmp")
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        data = path.read_bytes()
        digest.update(data)
        total_bytes += len(data)
    assert ds is not None
    manifest = {
        "params": params,
        "study_uid": ds.StudyInstanceUID,
        "series_uid": ds.SeriesInstanceUID,
        "patient_id": ds.PatientID,
        "instances": a.instances,
        "bytes": total_bytes,
        "sha256": digest.hexdigest(),
        "transfer_syntax": str(ExplicitVRLittleEndian),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"data: wrote {a.instances} instances, {total_bytes / 1e6:.1f} MB to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
