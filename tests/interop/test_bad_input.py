"""What the gateway of `pacs up` refuses, and what it does with duplicates (DESIGN ◆ ingest contract).

Every refusal is a DIMSE failure status (0xA7xx / 0xA9xx / 0xCxxx) with an Error Comment; nothing
reaches the data dir or the catalog; and the gateway goes on serving. Crafted payloads are sent with
pynetdicom: a Part 10 file whose data set bytes are whatever the test wrote, sent as they are
(`STORE_SEND_CHUNKED_DATASET`: pynetdicom streams the bytes after the file meta, undecoded).

One `pacs up` with a single gateway worker for the module, so a crash of the worker cannot hide
behind a second one.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import config as pydicom_config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .conftest import Launcher
from .dicomgen import PATIENTS, DataSet, Instance, build_instance, new_study, uid, write_extra_instance
from .support import (
    PATIENT_ID,
    SOP_UID,
    STUDY_UID,
    PacsProcess,
    Qido,
    dataset_bytes,
    instance_path,
    run_tool,
    snapshot,
    uids,
    value,
    wait_indexed,
    wait_until,
)

pytestmark = pytest.mark.interop

#: Values that are not key-safe: refused whatever the UID policy (key-safe non-UIDs, e.g. GUIDs, are
#: stored: tests/interop/test_real_senders.py).
BAD_UIDS = {
    "traversal": "1.2.3/../../../x",
    "nul": "1.2.3\x004",
    "too-long": "1." + "2" * 70,
    "leading-dot": "..",
}
UID_ATTRIBUTES = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


@dataclass
class Gateway:
    pacs: PacsProcess
    qido: Qido
    dataset: DataSet
    baseline: list[Instance]
    tmp: Path


@pytest.fixture(scope="module")
def gw(launch_module: Launcher, dataset: DataSet, dcmtk: Callable[[str], str],
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    pacs = launch_module(workers=1, name="bad-input")
    mr = dataset.study("PAT001", "MR")
    run = run_tool([dcmtk("storescu"), "-aec", "PACS", "+sd", "+r", "127.0.0.1", str(pacs.dimse_port),
                    str(dataset.native_dir / "PAT001" / "study1")])
    assert run.returncode == 0, run.stderr
    qido = Qido(pacs)
    wait_indexed(qido, [mr])
    yield Gateway(pacs, qido, dataset, mr.instances, tmp_path_factory.mktemp("crafted"))
    qido.close()


@contextlib.contextmanager
def lenient_pydicom() -> Iterator[None]:
    """Let pydicom set and write invalid values, without a warning: they are the point here."""
    settings = pydicom_config.settings
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = modes


def associate(pacs: PacsProcess, called: str = "PACS") -> Association:
    ae = AE(ae_title="INTEROP")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(Verification)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    return ae.associate("127.0.0.1", pacs.dimse_port, ae_title=called)


def store_file(pacs: PacsProcess, path: Path) -> Dataset:
    """C-STORE a Part 10 file's data set bytes unchanged (pynetdicom streams the bytes after the file
    meta, undecoded); the response status data set."""
    assoc = associate(pacs)
    assert assoc.is_established, "the gateway did not accept the association"
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        with lenient_pydicom():
            status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        assoc.release()
    assert "Status" in status, "no C-STORE response (the association was aborted?)"
    return status


def write_raw(path: Path, data_set: bytes, *, sop_uid: str, sop_class: str = CTImageStorage,
              transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """A Part 10 file: a valid file meta and then `data_set`, byte for byte."""
    with lenient_pydicom():
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = UID(sop_class)
        meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        meta.TransferSyntaxUID = UID(transfer_syntax)
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        buf = pydicom.filebase.DicomBytesIO()
        buf.write(b"\x00" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(buf, meta, enforce_standard=True)
    path.write_bytes(buf.getvalue() + data_set)
    return path


def encode_dataset(ds: Dataset) -> bytes:
    """Explicit VR little endian data set bytes of `ds`, whatever its values (no validation)."""
    buf = pydicom.filebase.DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    with lenient_pydicom():
        pydicom.filewriter.write_dataset(buf, ds)
    return buf.getvalue()


def is_failure(status: Dataset) -> bool:
    code = int(status.Status)
    return 0xA700 <= code <= 0xA7FF or 0xA900 <= code <= 0xA9FF or 0xC000 <= code <= 0xCFFF


def assert_refused(gw: Gateway, path: Path, before: set[str]) -> Dataset:
    status = store_file(gw.pacs, path)
    assert is_failure(status), f"status 0x{int(status.Status):04X} is not a failure"
    assert str(status.get("ErrorComment", "")).strip(), "a refusal must carry an Error Comment"
    assert snapshot(gw.pacs.data_dir) == before, "a refused object left something in the data dir"
    return status


def assert_still_serves(gw: Gateway, key: str) -> None:
    """C-ECHO and C-STORE still succeed, and the stored sentinel gets indexed: anything a refused
    request had queued would have been indexed before it."""
    assert gw.pacs.running, "pacs up exited"
    assoc = associate(gw.pacs)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    study, series = new_study(f"sentinel-{key}")
    sentinel = write_extra_instance(series, study, 1, gw.tmp / f"sentinel-{key}.dcm")
    assert int(store_file(gw.pacs, sentinel.path).Status) == 0
    wait_until(lambda: gw.qido.studies({"StudyInstanceUID": study.uid}), lambda r: len(r) == 1,
               what=f"the sentinel study {study.uid} to be indexed")


def bad_dataset(case: str, attribute: str, bad: str) -> tuple[Dataset, str]:
    """A valid CT instance of a study of its own, with `attribute` set to the bad UID."""
    study, series = new_study(f"bad-{case}-{attribute}", patient_id=f"BAD-{case}-{attribute}")
    ds = build_instance(study, series, 1, patient=(study.patient_id, PATIENTS[0][1], "19600214", "M"),
                        seed=7)
    tag = tag_for_keyword(attribute)
    assert tag is not None
    ds[tag] = DataElement(tag, "UI", bad, validation_mode=pydicom_config.IGNORE)
    # The command's Affected SOP Instance UID: the data set's when pynetdicom can send it.
    meta_sop = ds.SOPInstanceUID if 0 < len(str(ds.SOPInstanceUID)) <= 64 else uid("meta", case)
    return ds, meta_sop


@pytest.mark.parametrize("attribute", UID_ATTRIBUTES)
@pytest.mark.parametrize("case", sorted(BAD_UIDS))
def test_malformed_uid_is_refused(gw: Gateway, case: str, attribute: str) -> None:
    ds, meta_sop = bad_dataset(case, attribute, BAD_UIDS[case])
    path = write_raw(gw.tmp / f"bad-{case}-{attribute}.dcm", encode_dataset(ds), sop_uid=meta_sop)
    before = snapshot(gw.pacs.data_dir)
    status = assert_refused(gw, path, before)
    assert attribute in str(status.ErrorComment), status
    assert_still_serves(gw, f"{case}-{attribute}")
    assert gw.qido.studies({"PatientID": ds.PatientID}) == []
    assert not list(gw.pacs.data_dir.rglob("x*")), "a path escaped its study directory"


def _valid_instance_bytes(gw: Gateway, key: str) -> tuple[bytes, str]:
    study, series = new_study(key, patient_id=f"BAD-{key}")
    inst = write_extra_instance(series, study, 1, gw.tmp / f"{key}-source.dcm")
    return dataset_bytes(inst.path.read_bytes()), inst.sop_uid


def _pixel_data_offset(data_set: bytes) -> int:
    """Where the (7FE0,0010) element starts in explicit VR little endian data set bytes."""
    at = data_set.rfind(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW")
    assert at > 0
    return at


TRUNCATIONS: dict[str, Callable[[bytes], bytes]] = {
    "inside-pixel-data": lambda b: b[: len(b) - 1000],
    "inside-pixel-data-header": lambda b: b[: _pixel_data_offset(b) + 6],
    "inside-an-element-header": lambda b: b[:3],
    "inside-the-attributes": lambda b: b[: _pixel_data_offset(b) // 2],
}


@pytest.mark.parametrize("how", sorted(TRUNCATIONS))
def test_truncated_data_set_is_refused(gw: Gateway, how: str) -> None:
    data_set, sop = _valid_instance_bytes(gw, f"truncated-{how}")
    path = write_raw(gw.tmp / f"truncated-{how}.dcm", TRUNCATIONS[how](data_set), sop_uid=sop)
    before = snapshot(gw.pacs.data_dir)
    assert_refused(gw, path, before)
    assert_still_serves(gw, f"truncated-{how}")
    assert gw.qido.studies({"PatientID": f"BAD-truncated-{how}"}) == []


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_deflated_data_set_is_refused(gw: Gateway, keep: float) -> None:
    study, series = new_study(f"deflated-{keep}", patient_id=f"BAD-deflated-{keep}")
    inst = write_extra_instance(series, study, 1, gw.tmp / f"deflated-{keep}.dcm",
                                transfer_syntax=DeflatedExplicitVRLittleEndian)
    deflated = dataset_bytes(inst.path.read_bytes())
    path = write_raw(gw.tmp / f"deflated-{keep}-cut.dcm", deflated[: int(len(deflated) * keep)],
                     sop_uid=inst.sop_uid, transfer_syntax=DeflatedExplicitVRLittleEndian)
    before = snapshot(gw.pacs.data_dir)
    assert_refused(gw, path, before)
    assert_still_serves(gw, f"deflated-{keep}")
    assert gw.qido.studies({"PatientID": f"BAD-deflated-{keep}"}) == []


NOT_DICOM: dict[str, bytes] = {
    "text": b"This is not a DICOM data set, just some text.\n" * 40,
    "random": np.random.default_rng(20240131).bytes(8192),
    "zeros": b"\x00" * 4096,
    "pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 20,
}


@pytest.mark.parametrize("kind", sorted(NOT_DICOM))
def test_non_dicom_payload_is_refused(gw: Gateway, kind: str) -> None:
    path = write_raw(gw.tmp / f"not-dicom-{kind}.dcm", NOT_DICOM[kind], sop_uid=uid("not-dicom", kind))
    before = snapshot(gw.pacs.data_dir)
    assert_refused(gw, path, before)
    assert_still_serves(gw, f"not-dicom-{kind}")


def test_a_part10_file_sent_as_the_data_set_is_refused(gw: Gateway) -> None:
    """A client that sends the whole file (preamble, 'DICM', file meta) as the data set."""
    study, series = new_study("whole-file", patient_id="BAD-whole-file")
    inst = write_extra_instance(series, study, 1, gw.tmp / "whole-file-source.dcm")
    path = write_raw(gw.tmp / "whole-file.dcm", inst.path.read_bytes(), sop_uid=inst.sop_uid)
    before = snapshot(gw.pacs.data_dir)
    assert_refused(gw, path, before)
    assert_still_serves(gw, "whole-file")
    assert gw.qido.studies({"PatientID": "BAD-whole-file"}) == []


def test_sop_instance_uid_differing_from_the_command_is_refused(gw: Gateway) -> None:
    data_set, _sop = _valid_instance_bytes(gw, "mismatch")
    path = write_raw(gw.tmp / "mismatch.dcm", data_set, sop_uid=uid("another", "instance"))
    before = snapshot(gw.pacs.data_dir)
    assert_refused(gw, path, before)
    assert_still_serves(gw, "mismatch")


def test_unknown_called_ae_title_is_rejected(gw: Gateway, dcmtk: Callable[[str], str]) -> None:
    before = snapshot(gw.pacs.data_dir)
    run = run_tool([dcmtk("echoscu"), "-aec", "WRONG", "127.0.0.1", str(gw.pacs.dimse_port)])
    assert run.returncode != 0
    assert "Called AE Title Not Recognized" in run.stdout + run.stderr, run.stderr
    inst = next(i for i in gw.dataset.instances if i.patient_id == "PAT002")
    run = run_tool([dcmtk("storescu"), "-aec", "WRONG", "127.0.0.1", str(gw.pacs.dimse_port),
                    str(inst.path)])
    assert run.returncode != 0
    assoc = associate(gw.pacs, called="WRONG")
    assert assoc.is_rejected
    assert snapshot(gw.pacs.data_dir) == before
    run = run_tool([dcmtk("echoscu"), "-aec", "PACS", "127.0.0.1", str(gw.pacs.dimse_port)])
    assert run.returncode == 0, run.stderr
    assert gw.qido.studies({"StudyInstanceUID": inst.study_uid}) == []


def test_resending_identical_bytes_is_a_no_op_success(gw: Gateway, dcmtk: Callable[[str], str]) -> None:
    before = snapshot(gw.pacs.data_dir)
    run = run_tool([dcmtk("storescu"), "-aec", "PACS", "127.0.0.1", str(gw.pacs.dimse_port),
                    *[str(i.path) for i in gw.baseline]])
    assert run.returncode == 0, run.stderr
    assert snapshot(gw.pacs.data_dir) == before  # nothing rewritten, nothing kept in history
    assert_still_serves(gw, "identical")
    mr = gw.dataset.study("PAT001", "MR")
    (study,) = gw.qido.studies({"StudyInstanceUID": mr.uid})
    assert study["00201208"]["Value"] == [len(mr.instances)]
    assert uids(gw.qido.instances(mr.uid), SOP_UID) == {i.sop_uid for i in mr.instances}


def test_resending_different_content_replaces_and_keeps_the_old_version(gw: Gateway) -> None:
    """Default policy `replace`: success, still one instance (aggregates unchanged), the newest
    served, the replaced version kept under DIR/objects/default/history/."""
    mr = gw.dataset.study("PAT001", "MR")
    old = gw.baseline[1]
    revised = write_extra_instance(mr.series[0], mr, 2, gw.tmp / "revised.dcm",
                                   SOPInstanceUID=old.sop_uid, ImageComments="revised")
    assert revised.sop_uid == old.sop_uid
    original_stored = instance_path(gw.pacs.objects_dir, old).read_bytes()
    assert int(store_file(gw.pacs, revised.path).Status) == 0

    def comments() -> str | None:
        (item,) = gw.qido.instances(mr.uid, mr.series[0].uid,
                                    {"SOPInstanceUID": old.sop_uid, "includefield": "ImageComments"})
        return value(item, "00204000")

    wait_until(comments, lambda c: c == "revised", what="the revised instance to be indexed")
    (study,) = gw.qido.studies({"StudyInstanceUID": mr.uid})
    assert study["00201208"]["Value"] == [len(mr.instances)]
    assert study["00201206"]["Value"] == [1]
    (series,) = gw.qido.series(mr.uid)
    assert series["00201209"]["Value"] == [len(mr.series[0].instances)]
    assert len(gw.qido.instances(mr.uid)) == len(mr.instances)

    stored = instance_path(gw.pacs.objects_dir, old).read_bytes()
    assert dataset_bytes(stored) == dataset_bytes(revised.path.read_bytes())
    history = gw.pacs.objects_dir / "default" / "history"
    kept = [p for p in history.rglob("*.dcm") if old.sop_uid in p.as_posix()]
    assert len(kept) == 1, sorted(history.rglob("*"))
    assert kept[0].read_bytes() == original_stored

    got = DICOMwebClient(url=gw.pacs.dicomweb_url).retrieve_instance(old.study_uid, old.series_uid,
                                                                     old.sop_uid)
    assert got.ImageComments == "revised"


def test_nothing_refused_was_indexed(gw: Gateway) -> None:
    """No study of a refused payload ever reached the catalog (their PatientIDs start with BAD-)."""
    items = gw.qido.studies({"PatientID": "BAD-*"})
    assert items == [], [value(i, PATIENT_ID) for i in items]
    assert {value(i, STUDY_UID) for i in gw.qido.studies()} >= {gw.baseline[0].study_uid}

