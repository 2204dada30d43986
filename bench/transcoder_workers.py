"""The embedded transcoder's throughput by worker processes (`pacs up --transcode-workers N`).

    .venv/bin/python bench/transcoder_workers.py [--instances 120] [--workers 1,2] [--syntax JPEGLSLossless]

Synthetic 512×512 12-bit CT instances (smooth field, discs, noise) are stored and indexed in a fresh
data directory, then a TranscodeWorker with N (warmed) processes makes one copy of each; the time until
every copy is recorded gives instances/s and MB/s of original pixels. `--in-process` adds the service
called in this process, one event after another (no pool), for comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from pacs.backends import open_backend
from pacs.config import Settings
from pacs.services import index_worker
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pacs.services.transcode_worker import TranscodeWorker
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

STUDY = "1.2.826.0.1.3680043.8.498.99"


def ct(n: int, rng: np.random.Generator) -> bytes:
    import io

    y, x = np.mgrid[0:512, 0:512]
    img = 1000 + 400 * np.sin(x / 40.0) * np.cos(y / 55.0) + rng.normal(0, 20, (512, 512))
    img[(x - 200) ** 2 + (y - 260) ** 2 < 60 ** 2] += 800
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, f"{STUDY}.1"
    ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "BENCH", n
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.clip(img, 0, 4095).astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def run(instances: int, workers: int, syntax: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data",
                            transcode_policy=f'{{"rule": [{{"copies": ["{syntax}"]}}]}}')
        backend = open_backend(settings)
        rng = np.random.default_rng(7)
        ingest = IngestService(backend.store)
        for n in range(instances):
            ingest.ingest(ct(n, rng))
        assert backend.queue is not None
        indexer = IndexerService(backend.store, backend.catalog, backend.events)
        while index_worker.drain_once(backend.queue, indexer):
            pass
        worker = TranscodeWorker(dataclasses.replace(settings), workers=workers)
        worker.warm()  # pool start-up (imports, backends) is not what is measured
        started = time.perf_counter()
        try:
            while worker.done + worker.failed < instances:
                worker.step(0.05)
        finally:
            worker.close()
        elapsed = time.perf_counter() - started
        backend.close()
        assert worker.failed == 0
        return instances / elapsed, instances * 512 * 512 * 2 / elapsed / 1e6


def in_process(instances: int, syntax: str) -> float:
    from pacs.services.transcode_policy import load_policy
    from pacs.services.transcoder import TranscoderService

    with tempfile.TemporaryDirectory() as tmp:
        backend = open_backend(Settings(data_dir=Path(tmp) / "data"))
        rng = np.random.default_rng(7)
        for n in range(instances):
            IngestService(backend.store).ingest(ct(n, rng))
        assert backend.queue is not None
        indexer = IndexerService(backend.store, backend.catalog, backend.events)
        while index_worker.drain_once(backend.queue, indexer):
            pass
        assert backend.events is not None
        events = backend.events.read(0, 10 * instances, ("InstanceStored",))  # type: ignore[attr-defined]
        svc = TranscoderService(backend.store, backend.catalog,
                                load_policy(f'{{"rule": [{{"copies": ["{syntax}"]}}]}}'))
        started = time.perf_counter()
        for e in events:
            svc.handle(e.detail_type, e.detail)
        elapsed = time.perf_counter() - started
        backend.close()
        return len(events) / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=120)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--syntax", default="JPEGLSLossless")
    p.add_argument("--in-process", action="store_true")
    args = p.parse_args()
    if args.in_process:
        rate = in_process(args.instances, args.syntax)
        print(f"{args.syntax}: in process, serial: {rate:.1f} instances/s", flush=True)
    for w in (int(v) for v in args.workers.split(",")):
        rate, mbs = run(args.instances, w, args.syntax)
        print(f"{args.syntax}: {w} worker process(es): {rate:.1f} instances/s, {mbs:.1f} MB/s of pixels "
              f"({args.instances} × 512² 16-bit)", flush=True)


if __name__ == "__main__":
    main()
