"""`pacs up --study-quiet-seconds 1`: a study sent with dcmtk storescu yields exactly one StudyStable in
the event log; a late instance a second one, generation 2."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.interop.support import PacsProcess, dcmtk_tool, run_tool

DEADLINE = 60.0


def stable_events(data_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(data_dir / "events.db")
    try:
        rows = db.execute("SELECT detail FROM events WHERE detail_type = 'StudyStable' ORDER BY id").fetchall()
    finally:
        db.close()
    return [orjson.loads(r[0]) for r in rows]


def wait_for(data_dir: Path, n: int, pacs: PacsProcess) -> list[dict[str, Any]]:
    deadline = time.monotonic() + DEADLINE
    while len(found := stable_events(data_dir)) < n:
        assert time.monotonic() < deadline, pacs.log_text()[-3000:]
        time.sleep(0.2)
    return found


def test_pacs_up_announces_a_stable_study_once_per_generation(tmp_path: Path) -> None:
    storescu = dcmtk_tool("storescu")
    if storescu is None:
        pytest.skip("dcmtk storescu not installed")
    ct = get_testdata_file("CT_small.dcm")
    assert ct
    late = tmp_path / "late.dcm"
    ds = dcmread(ct)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(late)
    pacs = PacsProcess(tmp_path / "data", tmp_path / "up.log", env={"PACS_STUDY_QUIET_SECONDS": "1"})
    pacs.start()
    try:
        assert "pacs: study-stable: after 1 s" in pacs.log_text()
        sent = run_tool([storescu, "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port), str(ct)])
        assert sent.returncode == 0, sent.stderr
        [first] = wait_for(pacs.data_dir, 1, pacs)
        assert first["studyInstanceUID"] == ds.StudyInstanceUID and first["generation"] == 1
        assert first["numberOfInstances"] == 1 and first["quietSeconds"] == 1
        time.sleep(1.5)  # more than the quiet time: still one
        assert len(stable_events(pacs.data_dir)) == 1
        sent = run_tool([storescu, "-aec", "PACS", "127.0.0.1", str(pacs.dimse_port), str(late)])
        assert sent.returncode == 0, sent.stderr
        _, second = wait_for(pacs.data_dir, 2, pacs)
        assert second["generation"] == 2 and second["numberOfInstances"] == 2
    finally:
        assert pacs.stop() == 0 and pacs.stragglers == [], pacs.log_text()[-3000:]
    pacs.start()  # a restart: nothing emitted again
    try:
        time.sleep(1.5)
    finally:
        assert pacs.stop() == 0
    assert [e["generation"] for e in stable_events(pacs.data_dir)] == [1, 2]
