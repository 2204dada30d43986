"""dcmtk findscu → `pacs up`: C-FIND over both Query/Retrieve models at every level.

One `pacs up` (two gateway workers) for the module, loaded with dcmtk storescu: the generated set (2
patients, 4 studies), a patient whose name is not ASCII (stored as ISO_IR 192), one with a Greek name
(outside Latin-1), and a 100-instance series to cancel a query in. Responses are read from the files
`findscu -X` extracts; statuses from its log (`-v`).
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest
from pacs.backends import open_backend
from pacs.catalog.records import DicomJson
from pacs.config import Settings
from pacs.services import index_worker
from pacs.services.dimse_query import FindRequest, FindService
from pacs.services.indexer import IndexerService
from pacs.services.ingest import IngestService
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from gateway import find as find_module
from gateway.ae import make_ae
from gateway.context import GatewayContext
from gateway.handlers import handlers
from tests.unit.conftest import build_dataset, to_part10

from .conftest import Launcher
from .dicomgen import DataSet, Series, Study, new_study, write_extra_instance
from .support import PacsProcess, Qido, free_port, run_tool, wait_indexed, wait_until

pytestmark = pytest.mark.interop

UTF8_NAME, GREEK_NAME = "Gómez^José", "Παπαδόπουλος^Νίκος"
BIG_SERIES = 100


@dataclass
class Loaded:
    pacs: PacsProcess
    dataset: DataSet
    utf8: Study
    greek: Study
    big: Study
    findscu: str
    out: Path


@dataclass
class Answer:
    run: subprocess.CompletedProcess[str]
    results: list[Dataset]

    @property
    def log(self) -> str:
        return f"rc={self.run.returncode}\n{self.run.stdout}\n{self.run.stderr}"

    @property
    def final(self) -> str:
        """findscu's name of the final status, e.g. "Success", "Cancel", "Failed: UnableToProcess"."""
        m = re.search(r"Received Final Find Response \(([^)]*)\)", self.log)
        assert m, self.log[-3000:]
        return m.group(1)

    @property
    def statuses(self) -> list[int]:
        """The statuses of the C-FIND responses (needs findscu's `-d`)."""
        return [int(m, 16) for m in re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", self.log)]

    @property
    def pending(self) -> int:
        return len(re.findall(r"Find Response:? \d+ \(Pending", self.log))


def _extra_study(key: str, root: Path, count: int, *, patient_id: str, name: str, charset: str,
                 date: str) -> tuple[Study, list[Path]]:
    study, series = new_study(key, patient_id=patient_id, date=date)
    study = replace(study, patient_name=name)
    paths = []
    with disable_value_validation():  # the generator's content times overflow past 59 s: replaced below
        for n in range(1, count + 1):
            path = root / key / f"{n}.dcm"
            series.instances.append(write_extra_instance(
                series, study, n, path, PatientName=name, PatientID=patient_id, SpecificCharacterSet=charset,
                ContentTime="120000", SeriesTime="120000",
            ))
            paths.append(path)
    return study, paths


@pytest.fixture(scope="module")
def loaded(launch_module: Launcher, dataset: DataSet, dcmtk: Callable[[str], str],
           storescu_profile: Path, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    extra = tmp_path_factory.mktemp("find-extra")
    utf8, p1 = _extra_study("find-utf8", extra, 1, patient_id="PAT-UTF8", name=UTF8_NAME,
                            charset="ISO_IR 192", date="20230505")
    greek, p2 = _extra_study("find-greek", extra, 1, patient_id="PAT-GREEK", name=GREEK_NAME,
                             charset="ISO_IR 192", date="20230506")
    big, p3 = _extra_study("find-big", extra, BIG_SERIES, patient_id="PAT-BIG", name="Big^Series",
                           charset="ISO_IR 100", date="20220101")
    pacs = launch_module(workers=2)
    storescu, port = dcmtk("storescu"), str(pacs.dimse_port)
    files = [str(i.path) for i in dataset.instances] + [str(p) for p in p1 + p2 + p3]
    run = run_tool([storescu, "-aec", "PACS", "-xf", str(storescu_profile), "AsStored", "127.0.0.1", port, *files],
                   timeout=300)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    qido = Qido(pacs)
    try:
        wait_indexed(qido, [*dataset.studies, utf8, greek, big], timeout=120)
    finally:
        qido.close()
    return Loaded(pacs, dataset, utf8, greek, big, dcmtk("findscu"), tmp_path_factory.mktemp("find-out"))


_RUNS = [0]


def findscu(loaded: Loaded, model: str, keys: Sequence[str | bytes], *extra: str, extract: bool = True) -> Answer:
    """Run findscu (`model` "-S" or "-P") with `-k` keys; the extracted responses, in order."""
    _RUNS[0] += 1
    out = loaded.out / f"run{_RUNS[0]}"
    out.mkdir()
    args: list[str | bytes] = [loaded.findscu, "-v", model, "-aec", "PACS", *extra]
    if extract:
        args += ["-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    args += ["127.0.0.1", str(loaded.pacs.dimse_port)]
    run = subprocess.run(args, capture_output=True, timeout=120)
    text = subprocess.CompletedProcess(
        run.args, run.returncode, run.stdout.decode(errors="replace"), run.stderr.decode(errors="replace")
    )
    results: list[Dataset] = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return Answer(text, results)


def ok(answer: Answer) -> list[Dataset]:
    assert answer.run.returncode == 0 and answer.final == "Success", answer.log[-4000:]
    assert answer.pending == len(answer.results), answer.log[-4000:]
    return answer.results


def all_studies(loaded: Loaded) -> list[Study]:
    return [*loaded.dataset.studies, loaded.utf8, loaded.greek, loaded.big]


# -- Study Root --------------------------------------------------------------------------------------

def test_study_level_all_studies_with_aggregates(loaded: Loaded) -> None:
    results = ok(findscu(loaded, "-S", [
        "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID", "StudyDate",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy",
    ]))
    expected = {s.uid: (len(s.series), len(s.instances), s.modalities) for s in all_studies(loaded)}
    found = {r.StudyInstanceUID: (r.NumberOfStudyRelatedSeries, r.NumberOfStudyRelatedInstances,
                                  sorted(r.ModalitiesInStudy if isinstance(r.ModalitiesInStudy, list)
                                         else [r.ModalitiesInStudy]))
             for r in results}
    assert found == expected
    dates = [r.StudyDate for r in results]
    assert dates == sorted(dates, reverse=True)  # newest first
    assert all(r.QueryRetrieveLevel == "STUDY" and r.RetrieveAETitle == "PACS" for r in results)


def test_study_level_returns_exactly_the_requested_keys(loaded: Loaded) -> None:
    study = loaded.dataset.studies[0]
    (r,) = ok(findscu(loaded, "-S", [
        "QueryRetrieveLevel=STUDY", f"AccessionNumber={study.accession}", "PatientName", "PatientComments",
    ]))
    assert {e.keyword for e in r} == {
        "QueryRetrieveLevel", "RetrieveAETitle", "AccessionNumber", "PatientName", "PatientComments",
        "StudyInstanceUID", "SpecificCharacterSet",
    } - ({"SpecificCharacterSet"} if "SpecificCharacterSet" not in r else set())
    assert r.StudyInstanceUID == study.uid and str(r.PatientName) == study.patient_name
    assert r["PatientComments"].is_empty  # not kept by the archive: zero-length


@pytest.mark.parametrize(
    ("key", "which"),
    [
        ("PatientID=PAT002", lambda s: s.patient_id == "PAT002"),
        ("PatientID=PAT00?", lambda s: s.patient_id in ("PAT001", "PAT002")),
        ("PatientName=smith*", lambda s: s.patient_name.startswith("Smith")),  # PN: case-insensitive
        ("PatientName=DOE^JOHN", lambda s: s.patient_name == "Doe^John"),
        ("StudyDate=20240301-20241231", lambda s: "20240301" <= s.date <= "20241231"),
        ("StudyDate=-20231231", lambda s: s.date <= "20231231"),
        ("StudyDescription=*BRAIN*", lambda s: "BRAIN" in s.description),
        ("ModalitiesInStudy=MR", lambda s: "MR" in s.modalities),
    ],
)
def test_study_level_matching(loaded: Loaded, key: str, which: Callable[[Study], bool]) -> None:
    results = ok(findscu(loaded, "-S", ["QueryRetrieveLevel=STUDY", key]))
    expected = {s.uid for s in all_studies(loaded) if which(s)}
    assert expected and {r.StudyInstanceUID for r in results} == expected


def test_study_level_uid_list(loaded: Loaded) -> None:
    a, b = loaded.dataset.studies[0], loaded.dataset.studies[3]
    results = ok(findscu(loaded, "-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={a.uid}\\{b.uid}"]))
    assert {r.StudyInstanceUID for r in results} == {a.uid, b.uid}


def test_series_and_image_levels(loaded: Loaded) -> None:
    study = loaded.dataset.study("PAT001", "CT")
    series = ok(findscu(loaded, "-S", [
        "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study.uid}", "SeriesInstanceUID", "Modality=CT",
        "SeriesNumber", "NumberOfSeriesRelatedInstances",
    ]))
    assert [(r.SeriesInstanceUID, r.SeriesNumber, r.NumberOfSeriesRelatedInstances) for r in series] == [
        (s.uid, s.number, len(s.instances)) for s in study.series
    ]
    assert all(r.StudyInstanceUID == study.uid for r in series)
    target: Series = study.series[1]
    wanted = [i.sop_uid for i in target.instances[:2]]
    images = ok(findscu(loaded, "-S", [
        "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study.uid}", f"SeriesInstanceUID={target.uid}",
        "SOPInstanceUID=" + "\\".join(wanted), "InstanceNumber", "SOPClassUID",
    ]))
    assert [r.SOPInstanceUID for r in images] == wanted
    assert [r.InstanceNumber for r in images] == [1, 2]
    assert all(r.SOPClassUID == i.sop_class_uid for r, i in zip(images, target.instances, strict=False))


# -- Patient Root ------------------------------------------------------------------------------------

def test_patient_root_every_level(loaded: Loaded) -> None:
    patients = ok(findscu(loaded, "-P", [
        "QueryRetrieveLevel=PATIENT", "PatientID=PAT00*", "PatientName", "PatientBirthDate",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances",
    ]))
    by_id = {r.PatientID: r for r in patients}
    assert set(by_id) == {"PAT001", "PAT002"}
    p1 = [s for s in loaded.dataset.studies if s.patient_id == "PAT001"]
    assert by_id["PAT001"].NumberOfPatientRelatedStudies == len(p1)
    assert by_id["PAT001"].NumberOfPatientRelatedInstances == sum(len(s.instances) for s in p1)
    assert str(by_id["PAT001"].PatientName) == "Doe^John" and by_id["PAT001"].PatientBirthDate == "19600214"

    studies = ok(findscu(loaded, "-P", ["QueryRetrieveLevel=STUDY", "PatientID=PAT001", "StudyInstanceUID"]))
    assert {r.StudyInstanceUID for r in studies} == {s.uid for s in p1}
    assert all(r.PatientID == "PAT001" for r in studies)  # the unique key of the level above

    study = p1[0]
    series = ok(findscu(loaded, "-P", [
        "QueryRetrieveLevel=SERIES", "PatientID=PAT001", f"StudyInstanceUID={study.uid}", "SeriesInstanceUID",
    ]))
    assert [r.SeriesInstanceUID for r in series] == [s.uid for s in study.series]
    images = ok(findscu(loaded, "-P", [
        "QueryRetrieveLevel=IMAGE", "PatientID=PAT001", f"StudyInstanceUID={study.uid}",
        f"SeriesInstanceUID={study.series[0].uid}", "SOPInstanceUID",
    ]))
    assert [r.SOPInstanceUID for r in images] == [i.sop_uid for i in study.series[0].instances]
    # The study exists, but not under that patient.
    assert ok(findscu(loaded, "-P", [
        "QueryRetrieveLevel=SERIES", "PatientID=PAT002", f"StudyInstanceUID={study.uid}",
    ])) == []


# -- character sets ----------------------------------------------------------------------------------

def test_utf8_query_and_answer(loaded: Loaded) -> None:
    (r,) = ok(findscu(loaded, "-S", [
        "SpecificCharacterSet=ISO_IR 192", "QueryRetrieveLevel=STUDY", "PatientName=GÓMEZ*".encode(),
        "PatientID",
    ]))
    assert r.SpecificCharacterSet == "ISO_IR 192" and str(r.PatientName) == UTF8_NAME
    assert r.PatientID == "PAT-UTF8" and r.StudyInstanceUID == loaded.utf8.uid


def test_latin1_query_and_answer(loaded: Loaded) -> None:
    answer = findscu(loaded, "-S", [
        "SpecificCharacterSet=ISO_IR 100", "QueryRetrieveLevel=STUDY", "PatientName=gómez^josé".encode("latin-1"),
    ])
    (r,) = ok(answer)
    assert r.SpecificCharacterSet == "ISO_IR 100" and str(r.PatientName) == UTF8_NAME


def test_answer_falls_back_to_utf8_when_latin1_cannot_hold_the_name(loaded: Loaded) -> None:
    (r,) = ok(findscu(loaded, "-S", [
        "SpecificCharacterSet=ISO_IR 100", "QueryRetrieveLevel=STUDY", "PatientID=PAT-GREEK", "PatientName",
    ]))
    assert r.SpecificCharacterSet == "ISO_IR 192" and str(r.PatientName) == GREEK_NAME


# -- failures and cancel -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("model", "keys", "status", "comment"),
    [
        ("-S", ["QueryRetrieveLevel=FOO"], 0xC000, "QueryRetrieveLevel 'FOO' unknown"),
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=20241301-20240101"], 0xC000, "invalid date"),
        ("-S", ["QueryRetrieveLevel=STUDY", "StudyDate=2024-01-01-"], 0xC000, "00080020"),
        ("-S", ["QueryRetrieveLevel=PATIENT", "PatientID"], 0xA900, "no PATIENT level in Study Root"),
        ("-S", ["QueryRetrieveLevel=SERIES", "Modality=CT"], 0xA900, "StudyInstanceUID required"),
        ("-P", ["QueryRetrieveLevel=STUDY", "StudyDate=20240101-"], 0xA900, "PatientID required"),
    ],
)
def test_malformed_identifiers_are_refused_with_a_reason(
    loaded: Loaded, model: str, keys: list[str], status: int, comment: str,
) -> None:
    answer = findscu(loaded, model, keys, "-d")
    assert answer.statuses == [status] and answer.results == [], answer.log[-4000:]
    assert re.search(r"\(0000,0902\) LO \[[^]]*" + re.escape(comment), answer.log), answer.log[-4000:]
    # The gateway still serves.
    assert len(ok(findscu(loaded, "-S", ["QueryRetrieveLevel=STUDY", "PatientID=PAT001"]))) == 2


def _image_keys(loaded: Loaded) -> list[str]:
    return ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={loaded.big.uid}",
            f"SeriesInstanceUID={loaded.big.series[0].uid}", "SOPInstanceUID"]


class _PausingFind(FindService):
    """The real query, paused after its first match until the test says so."""

    resume = threading.Event()

    def _matches(self, req: FindRequest) -> Iterator[Sequence[DicomJson]]:
        matches = super()._matches(req)
        yield next(matches)
        assert type(self).resume.wait(60), "the test never resumed the query"
        yield from matches


@pytest.fixture
def paused_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AE, int]]:
    """The gateway AE in this process over an embedded backend holding one 40-instance series, its
    C-FIND paused after the first match (so a C-CANCEL is known to have arrived mid-query)."""
    backend = open_backend(Settings(data_dir=tmp_path / "data"))
    ingest = IngestService(backend.store)
    for n in range(1, 41):
        ingest.ingest(to_part10(build_dataset(
            StudyInstanceUID=f"{PAUSED_STUDY}", SeriesInstanceUID=f"{PAUSED_STUDY}.1",
            SOPInstanceUID=f"{PAUSED_STUDY}.1.{n}", InstanceNumber=n,
        )))
    assert backend.queue is not None
    while index_worker.drain_once(backend.queue, IndexerService(backend.store, backend.catalog)):
        pass
    _PausingFind.resume.clear()
    monkeypatch.setattr(find_module, "FindService", _PausingFind)
    ae = make_ae("PACS")
    port = free_port()
    scp = ae.start_server(("127.0.0.1", port), block=False,
                          evt_handlers=handlers(GatewayContext(ingest, backend, Settings())))
    assert scp is not None
    try:
        yield ae, port
    finally:
        _PausingFind.resume.set()
        scp.shutdown()
        ae.shutdown()
        backend.close()


PAUSED_STUDY = "1.2.826.0.1.3680043.8.498.555"


def test_cancel_mid_query_is_answered_with_cancel(paused_gateway: tuple[AE, int]) -> None:
    """C-FIND, the first match, C-CANCEL: once the cancel has reached the SCP, the query ends with
    Cancel (0xFE00) instead of the 39 other matches."""
    gateway_ae, port = paused_gateway
    ae = AE(ae_title="CANCELSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS")
    try:
        assert assoc.is_established
        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.StudyInstanceUID, ident.SeriesInstanceUID = PAUSED_STUDY, f"{PAUSED_STUDY}.1"
        ident.SOPInstanceUID = ""
        responses = assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind, msg_id=7)
        first_status, first = next(responses)
        assert first_status.Status == 0xFF00 and first is not None and first.SOPInstanceUID == f"{PAUSED_STUDY}.1.1"
        assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelFind)
        (served,) = gateway_ae.active_associations
        wait_until(lambda: 7 in served.dimse.cancel_req, bool, timeout=30, what="the C-CANCEL to reach the SCP")
        _PausingFind.resume.set()
        rest = [status.Status for status, _ in responses]
        assert rest == [0xFE00], rest
    finally:
        assoc.release()
        ae.shutdown()


def test_findscu_cancel(loaded: Loaded) -> None:
    """findscu --cancel 1 sends its C-CANCEL after the first response: whether it lands before the last
    match depends on the client's timing, so the final status is Cancel or, when every match had gone
    out, Success; either way the exchange ends cleanly and the gateway serves on."""
    answer = findscu(loaded, "-S", _image_keys(loaded), "--cancel", "1")
    assert answer.run.returncode == 0, answer.log[-4000:]
    if answer.final.startswith("Cancel"):  # 0xFE00
        assert 1 <= answer.pending < BIG_SERIES, answer.log[-4000:]
    else:
        assert answer.final == "Success" and answer.pending == BIG_SERIES, answer.log[-4000:]
    assert "Sending Cancel Request" in answer.log
    assert len(ok(findscu(loaded, "-S", _image_keys(loaded)))) == BIG_SERIES


def test_several_queries_and_an_echo_on_one_association(loaded: Loaded) -> None:
    """Each C-FIND ends with exactly one final response, so the association carries on."""
    ae = AE(ae_title="MANYSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, ExplicitVRLittleEndian)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", loaded.pacs.dimse_port, ae_title="PACS")
    try:
        assert assoc.is_established
        for patient, expected in (("PAT001", 2), ("PAT002", 2), ("NOBODY", 0), ("PAT-BIG", 1)):
            ident = Dataset()
            ident.QueryRetrieveLevel, ident.PatientID, ident.StudyInstanceUID = "STUDY", patient, ""
            statuses = [s.Status for s, _ in assoc.send_c_find(ident, StudyRootQueryRetrieveInformationModelFind)]
            assert statuses == [0xFF00] * expected + [0x0000], (patient, statuses)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
        ae.shutdown()
