#!/usr/bin/env python3
"""QIDO-RS and metadata latency with 1,300 and with 100,000 instances in the catalog (issue 4).

Usage: .venv/bin/python bench/catalog_scale.py [--small 1300] [--large 100000] [--n 100] [--keep DIR]

Two embedded backends (SQLite catalog + filesystem store) in temporary directories, each with:
* one real study (2 series × 50 instances, 64² int16) ingested and indexed through the real ingest and
  indexer path, so its catalog rows and its precomputed series metadata objects are what `pacs up` makes;
* synthetic studies written straight into the catalog through the SQLite adapter's own upsert path
  (`Catalog.upsert_instance`, the indexer's call: the same rows, aggregates and indexes), 2 series each,
  2 studies per patient, one study date per day: 120 studies × 10 instances for the small catalog
  (1,300 instances with the real study), 999 × 100 for the large one (100,000).

The queries answer the same number of rows at both sizes: the OHIF study list (`limit=101`, its
includefields: 101 studies), `?PatientID=` (the real study's patient: 2 studies), `?StudyDate=lo-hi`
(10 days: 10 studies), the real study's metadata (100 instances) and one series' (50). Requests go through
the real FastAPI app (`create_app`, every middleware) in-process over httpx's ASGI transport (no sockets:
this measures the app and the catalog, not the network), alternating small/large request by request
after 5 warm-up requests each, with `gc.freeze()` after set-up as `pacs up` does. Prints median and p95
(ms) per row and size, and the ratio large/small of the medians (issue 4 target: ≤ 1.20).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pacs.backends import Backend, open_backend
from pacs.catalog.records import IndexedInstance, InstanceRow
from pacs.config import Settings
from pacs.dicom.levels import split_levels
from pacs.events.model import sequencer_now
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.storage.keys import instance_key
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from functions.dicomweb.app import create_app

ORG = "1.2.826.0.1.3680043.8.498.4242"
REAL_STUDY = f"{ORG}.0"  # synthetic studies are {ORG}.1, {ORG}.2…
REAL_PATIENT = "PAT00000"
DATE_BASE = np.datetime64("2001-01-01")
DATE_RANGE = (50, 59)  # day offsets of the StudyDate range query: 10 synthetic studies
OHIF_LIST = "limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060%2C00080090%2C00100030"
JSON = {"Accept": "application/dicom+json", "Accept-Encoding": "identity"}


def day(offset: int) -> str:
    return str(DATE_BASE + np.timedelta64(offset, "D")).replace("-", "")


def header(study: int, patient: int, modality: str) -> Dataset:
    """The study and patient attributes of synthetic study number `study`."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"SYNTH^P{patient:05d}"
    ds.PatientID = f"PAT{patient:05d}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = f"{ORG}.{study}"
    ds.StudyDate = day(study)
    ds.StudyTime = f"{8 + study % 10:02d}{study % 60:02d}00"
    ds.AccessionNumber = f"ACC{study:06d}"
    ds.StudyID = str(study)
    ds.StudyDescription = f"{modality} synthetic study {study}"
    ds.ReferringPhysicianName = "REF^ERRING"
    ds.Modality = modality
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.Manufacturer = "pacs-bench"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    return ds


def series_of(ds: Dataset, series: int) -> None:
    ds.SeriesInstanceUID = f"{ds.StudyInstanceUID}.{series}"
    ds.SeriesNumber = series
    ds.SeriesDescription = f"series {series}"
    ds.FrameOfReferenceUID = f"{ds.StudyInstanceUID}.9"


def instance_of(ds: Dataset, number: int) -> None:
    ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.{number}"
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, float(number)]
    ds.SliceLocation = float(number)


def ingest_real_study(backend: Backend) -> None:
    """2 series × 50 instances through the real ingest and indexer path (rows and metadata objects)."""
    ingest = IngestService(backend.store)
    ds = header(0, 0, "CT")
    ds.StudyInstanceUID = REAL_STUDY
    ds.StudyDate = day(-1)
    pixels = (np.arange(64 * 64, dtype=np.int16) % 1000).tobytes()
    for series in (1, 2):
        series_of(ds, series)
        for number in range(1, 51):
            instance_of(ds, number)
            ds.PixelData = pixels
            ds["PixelData"].VR = "OW"
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = UID(ExplicitVRLittleEndian)
            buf = DicomBytesIO()
            ds.save_as(buf, enforce_file_format=True)
            ingest.ingest(buf.getvalue())
            del ds.PixelData
    assert backend.queue is not None
    indexer = IndexerService(backend.store, backend.catalog)
    while index_worker.drain_once(backend.queue, indexer):
        pass


def synthetic_items(studies: int, per_study: int) -> Any:
    """IndexedInstance items of synthetic studies 1..studies, 2 series each, as the indexer builds them
    (split_levels of a real header), varied per instance without re-encoding every header."""
    for study in range(1, studies + 1):
        # 2 studies per patient: the real study's patient (0) also owns synthetic study 1
        ds = header(study, study // 2, "CT" if study % 2 else "MR")
        for series in (1, 2):
            series_of(ds, series)
            instance_of(ds, 1)
            study_attrs, series_attrs, instance_attrs = split_levels(ds)
            count = per_study // 2 + (per_study % 2 if series == 1 else 0)
            for number in range(1, count + 1):
                sop = f"{ds.SeriesInstanceUID}.{number}"
                attrs = copy.deepcopy(instance_attrs)
                attrs["00080018"] = {"vr": "UI", "Value": [sop]}
                attrs["00200013"] = {"vr": "IS", "Value": [number]}
                attrs["00201041"] = {"vr": "DS", "Value": [float(number)]}
                attrs["00083002"] = {"vr": "UI", "Value": [ExplicitVRLittleEndian]}
                row = InstanceRow(
                    partition="default", study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID,
                    sop_uid=sop, sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=ExplicitVRLittleEndian,
                    key=instance_key("default", ds.StudyInstanceUID, ds.SeriesInstanceUID, sop),
                    size=8_900, etag=f"{study:08x}{series:04x}{number:08x}", sequencer=sequencer_now(),
                    attrs=attrs,
                )
                yield IndexedInstance(row, study_attrs, series_attrs, str(ds.Modality))


@dataclass
class Catalog:
    label: str
    instances: int
    backend: Backend
    client: httpx.AsyncClient


def build(label: str, directory: Path, instances: int) -> Catalog:
    synthetic = instances - 100
    per_study = 10 if synthetic < 10_000 else 100
    studies = synthetic // per_study
    backend = open_backend(Settings(data_dir=directory))
    t0 = time.perf_counter()
    ingest_real_study(backend)
    t1 = time.perf_counter()
    n = 0
    for item in synthetic_items(studies, per_study):
        backend.catalog.upsert_instance(item)
        n += 1
    t2 = time.perf_counter()
    total = n + 100
    print(f"{label}: {total} instances in {studies + 1} studies (real study indexed in {t1 - t0:.1f} s; "
          f"{n} synthetic rows upserted in {t2 - t1:.1f} s, {n / max(t2 - t1, 1e-9):.0f}/s)", flush=True)
    app = create_app(backend)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return Catalog(label, total, backend, client)


def requests_of() -> list[tuple[str, str, int]]:
    """(row, path, expected result count)."""
    lo, hi = day(DATE_RANGE[0]), day(DATE_RANGE[1])
    s = REAL_STUDY
    return [
        ("QIDO studies: OHIF list (limit=101)", f"/dicomweb/studies?{OHIF_LIST}", 101),
        ("QIDO studies: ?PatientID=", f"/dicomweb/studies?PatientID={REAL_PATIENT}", 2),
        ("QIDO studies: ?StudyDate=lo-hi", f"/dicomweb/studies?StudyDate={lo}-{hi}", 10),
        ("study metadata (100 instances)", f"/dicomweb/studies/{s}/metadata", 100),
        ("series metadata (50 instances)", f"/dicomweb/studies/{s}/series/{s}.1/metadata", 50),
    ]


async def one(c: Catalog, path: str, expected: int) -> float:
    t0 = time.perf_counter()
    r = await c.client.get(path, headers=JSON)
    body = r.content
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"{c.label} {path}: HTTP {r.status_code} {body[:200]!r}")
    got = body.count(b'"0020000D"') if "/metadata" not in path else body.count(b'"00080018"')
    if got != expected:
        raise SystemExit(f"{c.label} {path}: {got} results, expected {expected}")
    return dt


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(catalogs: list[Catalog], n: int) -> list[dict[str, Any]]:
    rows = []
    for name, path, expected in requests_of():
        samples: dict[str, list[float]] = {c.label: [] for c in catalogs}
        for c in catalogs:
            for _ in range(5):
                await one(c, path, expected)
        for i in range(n):
            for c in catalogs if i % 2 == 0 else catalogs[::-1]:
                samples[c.label].append(await one(c, path, expected))
        rows.append({"row": name, **{
            c.label: (statistics.median(samples[c.label]) * 1e3, pct(samples[c.label], 0.95) * 1e3)
            for c in catalogs}})
    return rows


def busy_pct(seconds: float = 1.0) -> float:
    """CPU busy % of the whole machine over `seconds` (all cores = 100 × cores)."""
    def snap() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        return sum(f) - f[3] - f[4], sum(f)

    b0, t0 = snap()
    time.sleep(seconds)
    b1, t1 = snap()
    return 100.0 * (os.cpu_count() or 1) * (b1 - b0) / max(t1 - t0, 1)


async def main_async(a: argparse.Namespace) -> int:
    base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="catalog-scale-"))
    catalogs: list[Catalog] = []
    try:
        for label, count in (("small", a.small), ("large", a.large)):
            d = base / label
            shutil.rmtree(d, ignore_errors=True)
            catalogs.append(build(label, d, count))
        gc.collect()
        gc.freeze()
        print(f"machine busy before measuring: {busy_pct():.0f} % of one core "
              f"({os.cpu_count()} cores); load average {os.getloadavg()[0]:.2f}", flush=True)
        rows = await measure(catalogs, a.n)
        small, large = catalogs
        print(f"\nin-process (httpx ASGI transport), {a.n} requests per row and size, interleaved\n")
        print(f"| request | {small.instances:,} instances: median / p95 ms | "
              f"{large.instances:,} instances: median / p95 ms | ratio (medians) | ≤ 1.20 |")
        print("|---|---|---|---|---|")
        worst = 0.0
        for r in rows:
            (sm, sp), (lm, lp) = r["small"], r["large"]
            ratio = lm / sm
            worst = max(worst, ratio)
            print(f"| {r['row']} | {sm:.2f} / {sp:.2f} | {lm:.2f} / {lp:.2f} | {ratio:.2f} | "
                  f"{'yes' if ratio <= 1.2 else 'no'} |")
        print(f"\nmachine busy after measuring: {busy_pct():.0f} % of one core", flush=True)
        return 0 if worst <= 1.2 else 1
    finally:
        for c in catalogs:
            await c.client.aclose()
            c.backend.close()
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=1_300, help="instances in the small catalog")
    p.add_argument("--large", type=int, default=100_000, help="instances in the large catalog")
    p.add_argument("--n", type=int, default=100, help="requests per row and catalog (>= 50)")
    p.add_argument("--keep", help="build the catalogs in this directory and keep them")
    a = p.parse_args()
    if a.n < 50:
        p.error("--n must be at least 50")
    return asyncio.run(main_async(a))


if __name__ == "__main__":
    sys.exit(main())
