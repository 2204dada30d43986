"""Export jobs on `pacs up`: a multi-series study sent with dcmtk storescu, exported with `POST /exports`
(ZIP, Part 10 files, C-STORE to a dcmtk storescp registered as a node); every output file is read by
dcmtk dcmdump and checked by dicom3tools dciodvfy, which finds no error the input did not already have."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from .conftest import Launcher
from .dicomgen import DataSet, Study
from .support import PacsProcess, Qido, free_port, run_tool, terminate, wait_until

pytestmark = pytest.mark.interop

JOB_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def loaded(launch_module: Launcher, dataset: DataSet, dcmtk: Callable[[str], str],
           storescu_profile: Path) -> Iterator[tuple[PacsProcess, Study]]:
    pacs = launch_module(name="exports")
    study = next(s for s in dataset.studies if len(s.series) > 1)
    files = [str(i.path) for i in study.instances]
    sent = run_tool([dcmtk("storescu"), "-aec", "PACS", "-xf", str(storescu_profile), "AsStored",
                     "127.0.0.1", str(pacs.dimse_port), *files])
    assert sent.returncode == 0, sent.stderr
    qido = Qido(pacs)
    try:
        wait_until(lambda: len(qido.instances(study.uid)), lambda n: n == len(files), what="the study indexed")
    finally:
        qido.close()
    yield pacs, study


def run_job(pacs: PacsProcess, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=pacs.http_url, timeout=30.0) as client:
        r = client.post("/exports", json=body)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/exports/{r.json()['id']}"
        return wait_until(lambda: client.get(r.headers["location"]).json(),
                          lambda j: j["status"] in ("done", "failed", "cancelled"),
                          timeout=JOB_TIMEOUT, interval=0.2, what="the export job")


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def iod_errors(dciodvfy: str, path: Path) -> set[str]:
    """dciodvfy's error lines for a file, quoted values blanked (they differ after de-identification)."""
    out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    return {_QUOTED.sub("''", line.strip()) for line in (out.stdout + out.stderr).splitlines()
            if line.startswith("Error")}


def check_outputs(files: list[Path], study: Study, dcmtk: Callable[[str], str]) -> None:
    dciodvfy = "/usr/bin/dciodvfy"
    if not Path(dciodvfy).exists():
        pytest.fail("dicom3tools dciodvfy is not installed: run `make setup`")
    before: set[str] = set()
    for inst in study.instances:
        before |= iod_errors(dciodvfy, inst.path)
    originals = {i.sop_uid for i in study.instances}
    for f in files:
        dump = run_tool([dcmtk("dcmdump"), "-q", str(f)])
        assert dump.returncode == 0 and not dump.stderr.strip(), f"dcmdump {f}: {dump.stderr}"
        new = iod_errors(dciodvfy, f) - before
        assert not new, f"dciodvfy finds new errors in {f}: {sorted(new)}"
        ds = pydicom.dcmread(f)
        assert ds.SOPInstanceUID not in originals and ds.StudyInstanceUID != study.uid
        assert str(ds.PatientID) != study.patient_id and study.patient_name not in str(ds.PatientName)
        assert ds.PatientIdentityRemoved == "YES" and "113100" in [c.CodeValue for c in
                                                                  ds.DeidentificationMethodCodeSequence]


def test_zip_of_a_study(loaded: tuple[PacsProcess, Study], tmp_path: Path, dcmtk: Callable[[str], str]) -> None:
    pacs, study = loaded
    job = run_job(pacs, {"studies": [study.uid], "destination": {"type": "zip"}, "project": "interop"})
    n = len(study.instances)
    assert job["status"] == "done", job
    assert job["totals"] == {"series": len(study.series), "instances": n, "tasks": job["totals"]["tasks"]}
    assert (job["progress"]["done"], job["progress"]["failed"], job["progress"]["heldBack"]) == (n, 0, 0)
    r = httpx.get(f"{pacs.http_url}{job['output']['download']}", timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    out = tmp_path / "zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None and len(zf.namelist()) == n
        zf.extractall(out)
    check_outputs(sorted(out.rglob("*.dcm")), study, dcmtk)


def test_files_of_each_series(loaded: tuple[PacsProcess, Study], dcmtk: Callable[[str], str]) -> None:
    pacs, study = loaded
    job = run_job(pacs, {"series": [{"study": study.uid, "series": s.uid} for s in study.series],
                         "profile": "research", "destination": {"type": "files"}})
    assert job["status"] == "done" and job["progress"]["done"] == len(study.instances), job
    files = sorted(Path(job["output"]["path"]).rglob("*.dcm"))
    assert len(files) == len(study.instances)
    check_outputs(files, study, dcmtk)


def test_node_destination_receives_every_instance(loaded: tuple[PacsProcess, Study], tmp_path: Path,
                                                  dcmtk: Callable[[str], str]) -> None:
    pacs, study = loaded
    port, received = free_port(), tmp_path / "received"
    received.mkdir()
    scp = subprocess.Popen([dcmtk("storescp"), "-aet", "RESEARCH", "+xa", "-od", str(received), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        add = subprocess.run([sys.executable, "-m", "pacs.cli.main", "nodes", "add", "RESEARCH", "127.0.0.1",
                              str(port), "--data-dir", str(pacs.data_dir)], capture_output=True, text=True,
                             timeout=60)
        assert add.returncode == 0, add.stderr
        job = run_job(pacs, {"query": {"PatientID": study.patient_id, "StudyDate": study.date},
                             "destination": {"node": "RESEARCH"}})
        assert job["status"] == "done" and job["progress"]["done"] == len(study.instances), job
        files = wait_until(lambda: sorted(received.iterdir()), lambda f: len(f) == len(study.instances),
                           what="storescp to write every instance")
    finally:
        terminate(scp)
    check_outputs(files, study, dcmtk)
