"""DICOM JSON encoding speed: pacs.dicom.json_model vs pydicom's to_json_dict on fresh CT headers.

Usage: .venv/bin/python bench/bench_json_model.py   (a benchmark, not a test: figures vary with load)
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacs.dicom.json_model import to_dicom_json
from pydicom import dcmread
from pydicom.data import get_testdata_file


def best(data: bytes, encode: Callable[[Any], object], rounds: int = 7, n: int = 200) -> float:
    times = []
    for _ in range(rounds):
        datasets = [dcmread(io.BytesIO(data)) for _ in range(n)]
        start = time.perf_counter()
        for ds in datasets:
            encode(ds)
        times.append((time.perf_counter() - start) / n)
    return min(times)


def main() -> None:
    print("| file | pydicom to_json_dict | pacs to_dicom_json | speed-up |\n|---|---|---|---|")
    for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"):
        data = Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]
        theirs = best(data, lambda ds: ds.to_json_dict(1024, lambda elem: "uri"))
        ours = best(data, lambda ds: to_dicom_json(ds, bulk_data_uri=lambda path: path))
        print(f"| {name} | {theirs * 1e3:.2f} ms | {ours * 1e3:.2f} ms | ×{theirs / ours:.1f} |")


if __name__ == "__main__":
    main()
