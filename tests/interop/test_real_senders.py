"""dcmtk `dcmsend` → `pacs up` with what real senders send: pydicom's own test files in one run, a retired
storage SOP class, a private one, a GUID as SOP Instance UID (DESIGN ◆ ingest 4b).

Before: one C-STORE whose data set's SOP class is `31` aborted the association (49 of pydicom's files
lost in one `dcmsend --scan-directories`), and retired and private classes were refused at negotiation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from .conftest import Launcher
from .dicomgen import new_study, uid
from .support import PacsProcess, Qido, run_tool, uids, wait_until

pytestmark = pytest.mark.interop

TEST_FILES = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]
RETIRED_US = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)
RETIRED_NM = "1.2.840.10008.5.1.4.1.1.5"  # Nuclear Medicine Image Storage (Retired)
PRIVATE_CLASS = "1.3.6.1.4.1.9590.100.1.2.424242"
GUID = "6f1c2a9e-3b4d-4c5e-8f70-1a2b3c4d5e6f"


@pytest.fixture(scope="module")
def pacs(launch_module: Launcher) -> PacsProcess:
    return launch_module(workers=1, name="senders")


@pytest.fixture(scope="module")
def qido(pacs: PacsProcess) -> Iterator[Qido]:
    client = Qido(pacs)
    yield client
    client.close()


def report(path: Path) -> list[dict[str, str]]:
    """dcmsend's `--create-report-file`: one record per input file."""
    records = []
    for block in path.read_text().split("\n\n"):
        fields = dict(re.findall(r"^(\w[\w .]*?)\s*: (.*)$", block, re.M))
        if "Filename" in fields:
            records.append(fields)
    return records


def stored_sop_uids(pacs: PacsProcess) -> set[str]:
    return {p.stem for p in pacs.objects_dir.rglob("*.dcm") if "/studies/" in p.as_posix()}


def test_dcmsend_of_pydicoms_test_files_loses_nothing(
    pacs: PacsProcess, dcmtk: Callable[[str], str], tmp_path: Path,
) -> None:
    """Every file dcmsend sends goes on the one association; each answered Success is stored; each
    failure is a data set without a Study or Series Instance UID (0xC000), or one dcmsend itself warns
    about: it misreads a few of these files' UIDs (e.g. the RT Dose files' SOP Class as `31`) and sends
    those on a context of another class (0x0122)."""
    out = tmp_path / "report.txt"
    run = run_tool([dcmtk("dcmsend"), "-v", "--no-halt", "--scan-directories", "--create-report-file", str(out),
                    "127.0.0.1", str(pacs.dimse_port), "-aec", "PACS", str(TEST_FILES)], timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    sent = [r for r in report(out) if r["DIMSE Status"] != "<not sent>"]
    assert len(sent) > 50
    assert {r["Association"] for r in sent} == {"1"}, "an association ended early"
    stored = stored_sop_uids(pacs)
    not_the_context = 0
    for record in sent:
        ds = pydicom.dcmread(record["Filename"], stop_before_pixels=True, force=True)
        status = record["DIMSE Status"]
        if status.startswith("0x0000"):
            assert str(ds.SOPInstanceUID) in stored, record["Filename"]
        elif status.startswith("0x0122"):
            not_the_context += 1
        else:
            assert status.startswith("0xc000"), f"{record['Filename']}: {status}"
            assert any(not str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID")), \
                f"{record['Filename']} refused: {status}"
    warned = (run.stdout + run.stderr).count("Inappropriate presentation context")
    assert not_the_context <= warned
    assert sum(r["DIMSE Status"].startswith("0x0000") for r in sent) >= len(sent) - 10
    assert pacs.running


def _instance(tmp_path: Path, name: str, sop_class: str, **attrs: str) -> tuple[Path, Dataset]:
    study, series = new_study(name, patient_id=f"SENDER-{name}")
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study.uid, series.uid
    ds.PatientID = study.patient_id
    ds.SOPInstanceUID = uid("sender-sop", name)
    ds.Modality = "US" if sop_class == RETIRED_US else "OT"
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, ds


@pytest.mark.parametrize("case", ["retired-us", "retired-nm", "private", "guid"])
def test_dcmsend_of_retired_private_and_guid_instances(
    pacs: PacsProcess, qido: Qido, dcmtk: Callable[[str], str], tmp_path: Path, case: str,
) -> None:
    """Stored, indexed, found by QIDO-RS and by C-FIND (findscu), retrieved by WADO-RS by its UID."""
    sop_class = {"retired-us": RETIRED_US, "retired-nm": RETIRED_NM}.get(case, PRIVATE_CLASS)
    extra = {"SOPInstanceUID": GUID} if case == "guid" else {}
    path, ds = _instance(tmp_path, case, sop_class if case != "guid" else RETIRED_US, **extra)
    run = run_tool([dcmtk("dcmsend"), "-v", "--no-uid-checks", "127.0.0.1", str(pacs.dimse_port), "-aec", "PACS",
                    str(path)])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "with status SUCCESS  : 1" in run.stdout + run.stderr
    study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    found = wait_until(lambda: qido.instances(study), lambda r: len(r) == 1, what=f"{case} indexed")
    assert uids(found, "00080018") == {sop}
    assert uids(found, "00080016") == {str(ds.SOPClassUID)}
    assert uids(qido.instances(study, series, {"SOPInstanceUID": sop}), "00080018") == {sop}
    find = run_tool([dcmtk("findscu"), "-S", "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}",
                     "-k", f"SeriesInstanceUID={series}", "-k", f"SOPInstanceUID={sop}", "-v", "127.0.0.1",
                     str(pacs.dimse_port), "-aec", "PACS"])
    assert find.returncode == 0, find.stderr[-3000:]
    output = find.stdout + find.stderr
    assert "Find Response: 1 (Pending)" in output and "Find Response: 2" not in output, output[-3000:]
    assert output.count(sop) >= 2  # the request's key, and the match
    r = qido.client.get(f"/studies/{study}/series/{series}/instances/{sop}",
                        headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200, r.text[:500]
    assert sop.encode() in r.content
