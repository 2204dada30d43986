"""`pacs up` with a transcode policy: the transcoder worker starts with it, makes the copies of what a
modality stores, stops cleanly with Ctrl-C (no process left), and a restart repeats nothing."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from tests.interop.support import PacsProcess

POLICY = '{"rule": [{"name": "ct", "modalities": ["CT"], "copies": ["JPEGLSLossless"]}]}'
DEADLINE = 120.0


def send(port: int, *paths: str) -> None:
    ae = AE(ae_title="MODALITY")
    for ctx in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(ctx)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    assert assoc.is_established
    try:
        for p in paths:
            status = assoc.send_c_store(dcmread(p))
            assert status.Status == 0x0000
    finally:
        assoc.release()


def derived(data_dir: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (data_dir / "objects").rglob("*/ts/*.dcm")}


def test_pacs_up_runs_the_transcoder(tmp_path: Path) -> None:
    ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
    assert ct and mr
    pacs = PacsProcess(tmp_path / "data", tmp_path / "up.log",
                       env={"PACS_TRANSCODE_POLICY": POLICY, "PACS_TRANSCODE_WORKERS": "2"})
    pacs.start()
    try:
        assert "pacs: transcoder: 2 process(es), rules: ct: JPEG-LS Lossless" in pacs.log_text()
        send(pacs.dimse_port, str(ct), str(mr))
        deadline = time.monotonic() + DEADLINE
        while len(derived(pacs.data_dir)) < 1:
            assert time.monotonic() < deadline, pacs.log_text()[-3000:]
            time.sleep(0.2)
    finally:
        assert pacs.stop() == 0 and pacs.stragglers == [], pacs.log_text()[-3000:]
    made = derived(pacs.data_dir)
    assert [Path(k).name for k in made] == ["1.2.840.10008.1.2.4.80.dcm"]  # the CT's; no rule for the MR
    db = sqlite3.connect(pacs.data_dir / "transcoder.db")
    assert db.execute("SELECT after FROM cursor").fetchone()[0] >= 3  # past both InstanceStored
    db.close()
    pacs.start()  # a restart: nothing made again
    try:
        time.sleep(2)
    finally:
        assert pacs.stop() == 0
    assert derived(pacs.data_dir) == made


def test_pacs_up_refuses_an_unusable_policy(tmp_path: Path) -> None:
    pacs = PacsProcess(tmp_path / "data", tmp_path / "up.log",
                       env={"PACS_TRANSCODE_POLICY": '{"rule": [{"copies": ["NoSuchSyntax"]}]}'})
    with pytest.raises(AssertionError, match="did not become ready"):
        pacs.start(attempts=1)
    assert "the transcode policy cannot be used" in pacs.log_text()
    assert "unknown transfer syntax 'NoSuchSyntax'" in pacs.log_text()
