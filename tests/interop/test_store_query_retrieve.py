"""dcmtk → `pacs up` → QIDO-RS / WADO-RS: what a modality sends is what a viewer finds and gets back.

One `pacs up` (two gateway workers) for the module: the generated set (2 patients, 4 studies, 6 series,
18 instances; Explicit and Implicit VR, JPEG-LS and RLE) is sent once with dcmtk's storescu, then
queried and retrieved.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, JPEGLSLossless, RLELossless

from .conftest import Launcher
from .dicomgen import DataSet, Instance
from .support import (
    ACCESSION,
    MODALITIES_IN_STUDY,
    MODALITY,
    N_SERIES_INSTANCES,
    N_STUDY_INSTANCES,
    N_STUDY_SERIES,
    PATIENT_ID,
    PATIENT_NAME,
    SERIES_UID,
    SOP_UID,
    STUDY_DATE,
    STUDY_UID,
    TRANSFER_SYNTAX_UID,
    PacsProcess,
    Qido,
    dataset_bytes,
    instance_path,
    parse_multipart,
    run_tool,
    snapshot,
    uids,
    value,
    values,
    wait_indexed,
)

pytestmark = pytest.mark.interop

#: storescu flags that propose a compressed syntax (in a context of its own) besides the uncompressed.
COMPRESSED_FLAGS = {JPEGLSLossless: "-xt", RLELossless: "-xr"}


@dataclass
class Loaded:
    pacs: PacsProcess
    qido: Qido
    dataset: DataSet
    readme_run: subprocess.CompletedProcess[str]
    compressed_runs: dict[str, subprocess.CompletedProcess[str]]


def _output(run: subprocess.CompletedProcess[str]) -> str:
    return f"rc={run.returncode}\n{run.stdout}\n{run.stderr}"


@pytest.fixture(scope="module")
def loaded(launch_module: Launcher, dataset: DataSet, dcmtk: Callable[[str], str]) -> Iterator[Loaded]:
    pacs = launch_module(workers=2)
    storescu, port = dcmtk("storescu"), str(pacs.dimse_port)
    # The README's command, exactly, on the uncompressed files (Explicit and Implicit VR LE).
    readme = run_tool([storescu, "-aec", "PACS", "+sd", "+r", "127.0.0.1", port, str(dataset.native_dir)])
    assert readme.returncode == 0, _output(readme)
    runs: dict[str, subprocess.CompletedProcess[str]] = {}
    for ts, flag in COMPRESSED_FLAGS.items():
        files = [str(i.path) for i in dataset.by_syntax(ts)]
        runs[ts] = run_tool([storescu, "-aec", "PACS", flag, "127.0.0.1", port, *files])
        assert runs[ts].returncode == 0, _output(runs[ts])
    qido = Qido(pacs)
    wait_indexed(qido, dataset.studies)
    yield Loaded(pacs, qido, dataset, readme, runs)
    qido.close()


# -- DIMSE -----------------------------------------------------------------------------------------

def test_echoscu(loaded: Loaded, dcmtk: Callable[[str], str]) -> None:
    run = run_tool([dcmtk("echoscu"), "-aec", "PACS", "127.0.0.1", str(loaded.pacs.dimse_port)])
    assert run.returncode == 0, _output(run)


def test_readme_storescu_command_stores_every_uncompressed_file(loaded: Loaded) -> None:
    assert "Store Failed" not in loaded.readme_run.stderr + loaded.readme_run.stdout
    for inst in loaded.dataset.instances:
        if inst.path.is_relative_to(loaded.dataset.native_dir):
            assert instance_path(loaded.pacs.objects_dir, inst).is_file(), inst


@pytest.mark.parametrize("ts", sorted(COMPRESSED_FLAGS))
def test_compressed_files_are_stored_in_their_syntax(loaded: Loaded, ts: str) -> None:
    run = loaded.compressed_runs[ts]
    assert "Store Failed" not in run.stderr + run.stdout, _output(run)
    (inst,) = loaded.dataset.by_syntax(ts)
    stored = pydicom.dcmread(instance_path(loaded.pacs.objects_dir, inst), stop_before_pixels=True)
    assert stored.file_meta.TransferSyntaxUID == ts


def test_stored_objects_follow_the_storage_layout(loaded: Loaded) -> None:
    """DESIGN ◆: {partition}/studies/{Study}/series/{Series}/instances/{SOP}.dcm, nothing else there."""
    expected = {instance_path(loaded.pacs.objects_dir, i).relative_to(loaded.pacs.objects_dir).as_posix()
                for i in loaded.dataset.instances}
    stored = {p for p in snapshot(loaded.pacs.objects_dir) if p.startswith("default/studies/")}
    assert stored == expected


def test_storescu_profile_resends_everything_in_one_association_as_a_no_op(
    loaded: Loaded, dcmtk: Callable[[str], str], storescu_profile: Path,
) -> None:
    """One storescu call with an association profile (-xf) sends every file as stored; re-sent
    identical instances are no-op successes: nothing replaced, counts unchanged."""
    before = snapshot(loaded.pacs.objects_dir)
    run = run_tool([dcmtk("storescu"), "-aec", "PACS", "+sd", "+r", "-xf", str(storescu_profile), "AsStored",
                    "127.0.0.1", str(loaded.pacs.dimse_port), str(loaded.dataset.root)])
    assert run.returncode == 0, _output(run)
    assert "Store Failed" not in run.stderr + run.stdout, _output(run)
    assert snapshot(loaded.pacs.objects_dir) == before  # no history entry: identical content
    wait_indexed(loaded.qido, loaded.dataset.studies)


# -- QIDO-RS ---------------------------------------------------------------------------------------

def test_qido_lists_every_study_with_its_attributes_and_exact_aggregates(loaded: Loaded) -> None:
    items = loaded.qido.studies()
    assert len(items) == len(loaded.dataset.studies)
    by_uid = {value(i, STUDY_UID): i for i in items}
    for study in loaded.dataset.studies:
        item = by_uid[study.uid]
        assert value(item, PATIENT_ID) == study.patient_id
        assert value(item, PATIENT_NAME) == study.patient_name
        assert value(item, STUDY_DATE) == study.date
        assert value(item, "00080030") == study.time
        assert value(item, ACCESSION) == study.accession
        assert value(item, "00081030") == study.description
        assert values(item, MODALITIES_IN_STUDY) == study.modalities
        assert value(item, N_STUDY_SERIES) == len(study.series)
        assert value(item, N_STUDY_INSTANCES) == len(study.instances)
        assert sorted(values(item, "00080062")) == sorted({i.sop_class_uid for i in study.instances})
        assert value(item, "00081190") == f"{loaded.pacs.dicomweb_url}/studies/{study.uid}"


def _study(dataset: DataSet, patient: str, modality: str) -> str:
    return dataset.study(patient, modality).uid


STUDY_QUERIES: list[tuple[dict[str, str], list[tuple[str, str]]]] = [
    ({"PatientID": "PAT001"}, [("PAT001", "CT"), ("PAT001", "MR")]),
    ({"PatientID": "PAT002"}, [("PAT002", "CT"), ("PAT002", "MR")]),
    ({"PatientID": "PAT00*"}, [("PAT001", "CT"), ("PAT001", "MR"), ("PAT002", "CT"), ("PAT002", "MR")]),
    ({"PatientID": "NOBODY"}, []),
    ({"PatientName": "Smith*"}, [("PAT002", "CT"), ("PAT002", "MR")]),
    ({"PatientName": "*Jane*"}, [("PAT002", "CT"), ("PAT002", "MR")]),
    ({"PatientName": "Doe^J?hn"}, [("PAT001", "CT"), ("PAT001", "MR")]),
    ({"PatientName": "Doe^John"}, [("PAT001", "CT"), ("PAT001", "MR")]),
    ({"PatientName": "Do"}, []),
    ({"PatientName": "doe", "fuzzymatching": "true"}, [("PAT001", "CT"), ("PAT001", "MR")]),
    ({"StudyDate": "20240115"}, [("PAT001", "CT")]),
    ({"StudyDate": "20240301-20240701"}, [("PAT001", "MR"), ("PAT002", "CT")]),
    ({"StudyDate": "20240601-"}, [("PAT002", "CT"), ("PAT002", "MR")]),
    ({"StudyDate": "-20240320"}, [("PAT001", "CT"), ("PAT001", "MR")]),
    ({"StudyDate": "20250101-20251231"}, []),
    ({"ModalitiesInStudy": "MR"}, [("PAT001", "MR"), ("PAT002", "MR")]),
    ({"ModalitiesInStudy": "CT"}, [("PAT001", "CT"), ("PAT002", "CT")]),
    ({"ModalitiesInStudy": "US"}, []),
    ({"PatientID": "PAT002", "ModalitiesInStudy": "CT"}, [("PAT002", "CT")]),
    ({"PatientName": "Smith*", "StudyDate": "20241101-20241130"}, [("PAT002", "MR")]),
    ({"AccessionNumber": "ACC2024007"}, [("PAT001", "MR")]),
]


@pytest.mark.parametrize(("params", "expected"), STUDY_QUERIES,
                         ids=["&".join(f"{k}={v}" for k, v in q.items()) for q, _ in STUDY_QUERIES])
def test_qido_study_filters(loaded: Loaded, params: dict[str, str],
                            expected: list[tuple[str, str]]) -> None:
    items = loaded.qido.studies(params)
    assert uids(items, STUDY_UID) == {_study(loaded.dataset, p, m) for p, m in expected}
    assert len(items) == len(expected)  # no duplicates


def test_qido_study_uid_list(loaded: Loaded) -> None:
    wanted = [loaded.dataset.studies[0].uid, loaded.dataset.studies[3].uid]
    items = loaded.qido.studies({"StudyInstanceUID": ",".join(wanted)})
    assert uids(items, STUDY_UID) == set(wanted)


def test_qido_limit_and_offset_page_through_every_study(loaded: Loaded) -> None:
    r = loaded.qido.client.get("/studies", params={"limit": "3"})
    assert r.status_code == 200
    assert len(r.json()) == 3
    assert "Warning" in r.headers  # more results can be requested
    seen: list[str] = []
    for offset in range(0, 6, 2):
        seen += [value(i, STUDY_UID) for i in loaded.qido.studies({"limit": "2", "offset": str(offset)})]
    assert sorted(seen) == sorted(s.uid for s in loaded.dataset.studies)


def test_qido_series_of_each_study(loaded: Loaded) -> None:
    for study in loaded.dataset.studies:
        items = loaded.qido.series(study.uid)
        assert len(items) == len(study.series)
        by_uid = {value(i, SERIES_UID): i for i in items}
        assert set(by_uid) == {s.uid for s in study.series}
        for series in study.series:
            item = by_uid[series.uid]
            assert value(item, MODALITY) == series.modality
            assert value(item, "00200011") == series.number
            assert value(item, N_SERIES_INSTANCES) == len(series.instances)
            assert value(item, STUDY_UID) == study.uid


def test_qido_series_filters(loaded: Loaded) -> None:
    ct = loaded.dataset.study("PAT001", "CT")
    assert uids(loaded.qido.series(ct.uid, {"SeriesNumber": "2"}), SERIES_UID) == {ct.series[1].uid}
    assert len(loaded.qido.series(ct.uid, {"Modality": "CT"})) == 2
    assert loaded.qido.series(ct.uid, {"Modality": "MR"}) == []


def test_qido_instances_of_each_study_and_series(loaded: Loaded) -> None:
    for study in loaded.dataset.studies:
        items = loaded.qido.instances(study.uid)
        assert uids(items, SOP_UID) == {i.sop_uid for i in study.instances}
        assert len(items) == len(study.instances)
        for series in study.series:
            items = loaded.qido.instances(study.uid, series.uid)
            assert len(items) == len(series.instances)
            by_uid = {value(i, SOP_UID): i for i in items}
            for inst in series.instances:
                item = by_uid[inst.sop_uid]
                assert value(item, "00080016") == inst.sop_class_uid
                assert value(item, TRANSFER_SYNTAX_UID) == inst.transfer_syntax
                assert value(item, SERIES_UID) == series.uid
                assert value(item, STUDY_UID) == study.uid
                assert value(item, "00280010") == 64
                assert value(item, "00081190") == (
                    f"{loaded.pacs.dicomweb_url}/studies/{study.uid}/series/{series.uid}"
                    f"/instances/{inst.sop_uid}"
                )


def test_qido_instance_filters_and_includefield(loaded: Loaded) -> None:
    study = loaded.dataset.study("PAT002", "CT")
    items = loaded.qido.instances(study.uid, params={"InstanceNumber": "1"})
    assert uids(items, SOP_UID) == {s.instances[0].sop_uid for s in study.series}
    series = study.series[0]
    (item,) = loaded.qido.instances(study.uid, series.uid,
                                    {"InstanceNumber": "2", "includefield": "SliceLocation"})
    assert value(item, "00201041") == 5.0


# -- WADO-RS ---------------------------------------------------------------------------------------

def assert_same_dataset(got: Dataset, inst: Instance) -> None:
    """Every top-level element of the sent file, with its value, and nothing else; Pixel Data as sent
    (still encapsulated for a compressed syntax)."""
    sent = pydicom.dcmread(inst.path)
    assert got.file_meta.TransferSyntaxUID == inst.transfer_syntax
    assert [e.tag for e in got] == [e.tag for e in sent]
    for elem in sent:
        mine = got[elem.tag]
        assert (mine.VR, mine.value) == (elem.VR, elem.value), f"{inst.path}: {elem.keyword} differs"
    assert got.PixelData == sent.PixelData


def test_wado_retrieve_instance_returns_what_was_sent(loaded: Loaded) -> None:
    client = DICOMwebClient(url=loaded.pacs.dicomweb_url)
    for inst in loaded.dataset.instances:
        got = client.retrieve_instance(inst.study_uid, inst.series_uid, inst.sop_uid)
        assert_same_dataset(got, inst)


def test_wado_retrieve_series_returns_what_was_sent(loaded: Loaded) -> None:
    client = DICOMwebClient(url=loaded.pacs.dicomweb_url)
    for series in loaded.dataset.series:
        # transfer-syntax=*: as stored (without it, PS3.18 8.7.3.4 asks for Explicit VR Little Endian)
        got = {ds.SOPInstanceUID: ds for ds in client.retrieve_series(
            series.instances[0].study_uid, series.uid, media_types=(("application/dicom", "*"),))}
        assert set(got) == {i.sop_uid for i in series.instances}
        for inst in series.instances:
            assert_same_dataset(got[inst.sop_uid], inst)


def test_compressed_and_implicit_instances_come_back_as_sent(loaded: Loaded) -> None:
    client = DICOMwebClient(url=loaded.pacs.dicomweb_url)
    for ts in (JPEGLSLossless, RLELossless, ImplicitVRLittleEndian):
        (inst,) = loaded.dataset.by_syntax(ts)
        got = client.retrieve_instance(inst.study_uid, inst.series_uid, inst.sop_uid)
        assert got.file_meta.TransferSyntaxUID == ts
        sent = pydicom.dcmread(inst.path)
        if ts != ImplicitVRLittleEndian:  # still encapsulated: the very same fragments
            assert got.PixelData == sent.PixelData
        assert (got.pixel_array == sent.pixel_array).all()


def test_stored_bytes_are_the_sent_data_set_and_wado_serves_them_unchanged(loaded: Loaded) -> None:
    """The stored Part 10 object holds the sent data set byte for byte (only the file meta is the
    receiver's), and a study's WADO-RS parts are the stored objects byte for byte."""
    stored: dict[str, bytes] = {}
    for inst in loaded.dataset.instances:
        data = instance_path(loaded.pacs.objects_dir, inst).read_bytes()
        assert dataset_bytes(data) == dataset_bytes(inst.path.read_bytes()), inst.path
        stored[inst.sop_uid] = data
    with httpx.Client(timeout=60) as http:
        for study in loaded.dataset.studies:
            r = http.get(f"{loaded.pacs.dicomweb_url}/studies/{study.uid}",
                         headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
            assert r.status_code == 200, r.text[:500]
            parts = parse_multipart(r.content, r.headers["content-type"])
            assert len(parts) == len(study.instances)
            assert sorted(parts) == sorted(stored[i.sop_uid] for i in study.instances)


def test_wado_unknown_study_is_404(loaded: Loaded) -> None:
    r = httpx.get(f"{loaded.pacs.dicomweb_url}/studies/1.2.3.4.5.6.7.8.9", timeout=30)
    assert r.status_code == 404


# -- health ----------------------------------------------------------------------------------------

def test_health_and_metrics(loaded: Loaded) -> None:
    r = httpx.get(f"{loaded.pacs.http_url}/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    r = httpx.get(f"{loaded.pacs.http_url}/metrics", timeout=30)
    assert r.status_code == 200
    assert "pacs_http_requests" in r.text
