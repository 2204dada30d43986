"""C-MOVE and C-GET against `pacs up`: dcmtk movescu to dcmtk storescp destinations registered as nodes,
dcmtk getscu, and pynetdicom as the SCU where dcmtk has no switch (C-CANCEL, no role selection).

One `pacs up` (two gateway workers) for the module, loaded with the generated set (4 studies, one
instance Implicit VR LE, one JPEG-LS, one RLE) and a 20-instance series to interrupt. Destinations are
storescp processes started per test on free ports and registered with `pacs nodes add`; what they
received is read back from their output directories.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from .conftest import Launcher
from .dicomgen import DataSet, Instance, Study, new_study, write_extra_instance
from .support import Moved, PacsProcess, Qido, free_port, run_tool, wait_indexed, wait_until
from .test_tls_policy import Pki, make_pki

pytestmark = pytest.mark.interop

BIG = 20
SUCCESS, WARNING, CANCEL, NOT_AUTHORIZED = 0x0000, 0xB000, 0xFE00, 0x0124
DESTINATION_UNKNOWN, IDENTIFIER_DOES_NOT_MATCH, UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA801, 0xA900, 0xA702


@dataclass
class Loaded:
    pacs: PacsProcess
    dataset: DataSet
    big: Study
    tools: Callable[[str], str]
    pki: Pki

    def nodes(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`pacs nodes ...` on the running PACS's data dir (the registry is read per request)."""
        cmd = [sys.executable, "-m", "pacs.cli.main", "nodes", *args, "--data-dir", str(self.pacs.data_dir)]
        run = run_tool(cmd, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        return run


@pytest.fixture(scope="module")
def loaded(launch_module: Launcher, dataset: DataSet, dcmtk: Callable[[str], str],
           storescu_profile: Path, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    pki = make_pki(tmp_path_factory.mktemp("move-pki"))
    extra = tmp_path_factory.mktemp("move-extra")
    big, series = new_study("move-big", patient_id="PAT-MOVE", date="20220202")
    paths = [extra / f"{n}.dcm" for n in range(1, BIG + 1)]
    for n, path in enumerate(paths, 1):
        series.instances.append(write_extra_instance(series, big, n, path))
    # TLS destinations: their certificates are checked against this CA; the PACS presents its own
    pacs = launch_module(workers=2, env={
        "PACS_TLS_CERT": str(pki.server_cert), "PACS_TLS_KEY": str(pki.server_key), "PACS_TLS_CA": str(pki.ca),
        "PACS_TLS_PORT": str(free_port()),
    })
    files = [str(i.path) for i in dataset.instances] + [str(p) for p in paths]
    run = run_tool([dcmtk("storescu"), "-aec", "PACS", "-xf", str(storescu_profile), "AsStored", "127.0.0.1",
                    str(pacs.dimse_port), *files], timeout=300)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    qido = Qido(pacs)
    try:
        wait_indexed(qido, [*dataset.studies, big], timeout=120)
    finally:
        qido.close()
    return Loaded(pacs, dataset, big, dcmtk, pki)


@dataclass
class Destination:
    """A dcmtk storescp registered as a node; `received()` reads what it wrote."""

    ae_title: str
    port: int
    out: Path
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: bool = field(default=False)

    def received(self) -> dict[str, Dataset]:
        found: dict[str, Dataset] = {}
        for p in self.out.iterdir():
            if p.is_file() and not p.name.startswith("."):
                try:
                    ds = pydicom.dcmread(p)
                except Exception:
                    continue  # still being written
                found[ds.SOPInstanceUID] = ds
        return found

    def kill(self) -> None:
        if not self.stopped:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
            self.stopped = True


@pytest.fixture
def destination(loaded: Loaded, tmp_path: Path) -> Iterator[Callable[..., Destination]]:
    started: list[Destination] = []

    def start(ae_title: str = "DEST", *options: str, operations: str = "store,find,move,get",
              tls: bool = False) -> Destination:
        out = tmp_path / f"{ae_title}-{len(started)}"
        out.mkdir()
        log = tmp_path / f"{ae_title}-{len(started)}.log"
        port = free_port()
        with open(log, "wb") as f:
            proc = subprocess.Popen([loaded.tools("storescp"), "-v", "-aet", ae_title, "-od", str(out), *options,
                                     str(port)], stdout=f, stderr=subprocess.STDOUT)
        dest = Destination(ae_title, port, out, proc, log)
        started.append(dest)
        echo = [loaded.tools("echoscu"), "-aec", ae_title, "127.0.0.1", str(port)]
        if tls:
            echo[1:1] = ["+tls", str(loaded.pki.client_key), str(loaded.pki.client_cert), "+cf", str(loaded.pki.ca)]
        wait_until(lambda: proc.poll() is not None or run_tool(echo, timeout=30).returncode == 0,
                   bool, timeout=30, what="storescp to answer C-ECHO")
        assert proc.poll() is None, log.read_text(errors="replace")
        loaded.nodes("add", ae_title, "127.0.0.1", str(port), "--operations", operations,
                     *(["--tls"] if tls else []))
        return dest

    yield start
    for dest in started:
        dest.kill()
        loaded.nodes("remove", dest.ae_title)


def movescu(loaded: Loaded, dest: str, keys: list[str], model: str = "-S", *extra: str,
            timeout: float = 180) -> Moved:
    args = [loaded.tools("movescu"), "-d", model, "-aec", "PACS", "-aem", dest, *extra]
    for k in keys:
        args += ["-k", k]
    return Moved(run_tool([*args, "127.0.0.1", str(loaded.pacs.dimse_port)], timeout=timeout))


def getscu(loaded: Loaded, out: Path, keys: list[str], *extra: str) -> Moved:
    args = [loaded.tools("getscu"), "-d", "-S", "-aec", "PACS", "-od", str(out), *extra]
    for k in keys:
        args += ["-k", k]
    return Moved(run_tool([*args, "127.0.0.1", str(loaded.pacs.dimse_port)], timeout=180))


def uids(instances: list[Instance]) -> set[str]:
    return {i.sop_uid for i in instances}


def by_syntax(study: Study, syntax: str) -> Instance:
    return next(i for i in study.instances if i.transfer_syntax == syntax)


def study_with(loaded: Loaded, syntax: str) -> Study:
    return next(s for s in loaded.dataset.studies if any(i.transfer_syntax == syntax for i in s.instances))


# -- C-MOVE --------------------------------------------------------------------------------------------


def test_move_study_series_and_image_levels_as_stored(loaded: Loaded, destination: Callable[..., Destination]) -> None:
    dest = destination("DEST", "+xa")  # accepts the compressed syntaxes too: everything goes as stored
    study = study_with(loaded, JPEGLSLossless)
    moved = movescu(loaded, "DEST", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study.uid}"])
    assert moved.run.returncode == 0 and moved.status == SUCCESS, moved.log[-4000:]
    assert moved.count("Completed") == len(study.instances)
    got = dest.received()
    assert set(got) == uids(study.instances)
    for inst in study.instances:
        assert got[inst.sop_uid].file_meta.TransferSyntaxUID == inst.transfer_syntax

    other = loaded.dataset.study("PAT001", "CT")
    series = other.series[1]
    moved = movescu(loaded, "DEST", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={other.uid}",
                                     f"SeriesInstanceUID={series.uid}"])
    assert moved.status == SUCCESS, moved.log[-4000:]
    two = other.series[0].instances[:2]
    moved = movescu(loaded, "DEST", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={other.uid}",
                                     f"SeriesInstanceUID={other.series[0].uid}",
                                     "SOPInstanceUID=" + "\\".join(i.sop_uid for i in two)])
    assert moved.status == SUCCESS, moved.log[-4000:]
    assert set(dest.received()) == uids(study.instances) | uids(series.instances) | uids(two)


def test_move_patient_root_patient_level(loaded: Loaded, destination: Callable[..., Destination]) -> None:
    dest = destination("DESTP", "+xa")
    moved = movescu(loaded, "DESTP", ["QueryRetrieveLevel=PATIENT", "PatientID=PAT001"], "-P")
    assert moved.status == SUCCESS, moved.log[-4000:]
    expected = {i.sop_uid for s in loaded.dataset.studies if s.patient_id == "PAT001" for i in s.instances}
    assert set(dest.received()) == expected


def test_move_transcodes_for_a_destination_that_accepts_only_uncompressed(
    loaded: Loaded, destination: Callable[..., Destination],
) -> None:
    dest = destination("DESTX", "+xe")  # uncompressed only, Explicit VR LE preferred
    jls = by_syntax(study_with(loaded, JPEGLSLossless), JPEGLSLossless)
    rle = by_syntax(study_with(loaded, RLELossless), RLELossless)
    for inst in (jls, rle):
        moved = movescu(loaded, "DESTX", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={inst.study_uid}",
                                          f"SeriesInstanceUID={inst.series_uid}", f"SOPInstanceUID={inst.sop_uid}"])
        assert moved.status == SUCCESS, moved.log[-4000:]
    got = dest.received()
    for inst in (jls, rle):
        ds = got[inst.sop_uid]
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(inst.path).pixel_array)
    # a whole study: the Explicit VR LE instances go as stored, the JPEG-LS one transcoded, one association
    study = study_with(loaded, JPEGLSLossless)
    moved = movescu(loaded, "DESTX", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study.uid}"])
    assert moved.status == SUCCESS and moved.count("Completed") == len(study.instances), moved.log[-4000:]
    got = dest.received()
    assert uids(study.instances) <= set(got)
    assert {got[i.sop_uid].file_meta.TransferSyntaxUID for i in study.instances} == {ExplicitVRLittleEndian}


def test_move_implicit_only_destination(loaded: Loaded, destination: Callable[..., Destination]) -> None:
    dest = destination("DESTI", "+xi")
    study = study_with(loaded, JPEGLSLossless)
    moved = movescu(loaded, "DESTI", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study.uid}"])
    assert moved.status == SUCCESS, moved.log[-4000:]
    got = dest.received()
    assert set(got) == uids(study.instances)
    assert {ds.file_meta.TransferSyntaxUID for ds in got.values()} == {ImplicitVRLittleEndian}


def test_move_to_a_tls_destination(loaded: Loaded, destination: Callable[..., Destination]) -> None:
    pki = loaded.pki
    # storescp over TLS with the server certificate of the test CA; it does not ask for a client certificate
    dest = destination("DESTTLS", "+tls", str(pki.server_key), str(pki.server_cert), "-ic", tls=True)
    study = loaded.dataset.study("PAT002", "MR")
    moved = movescu(loaded, "DESTTLS", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study.uid}"])
    assert moved.status == SUCCESS, moved.log[-4000:] + dest.log.read_text(errors="replace")[-2000:]
    assert set(dest.received()) == uids(study.instances)


def test_unknown_or_unauthorised_destination_is_refused(
    loaded: Loaded, destination: Callable[..., Destination],
) -> None:
    study = loaded.dataset.studies[0]
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study.uid}"]
    moved = movescu(loaded, "NOSUCHNODE", keys)
    assert moved.status == DESTINATION_UNKNOWN, moved.log[-4000:]
    dest = destination("NOMOVE", operations="store,find")  # registered, but not allowed move
    moved = movescu(loaded, "NOMOVE", keys)
    assert moved.status == DESTINATION_UNKNOWN, moved.log[-4000:]
    assert dest.received() == {}


def test_bad_identifier_fails_with_a_reason(loaded: Loaded, destination: Callable[..., Destination]) -> None:
    destination("DESTB")
    moved = movescu(loaded, "DESTB", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={loaded.big.uid}"])
    assert moved.status == IDENTIFIER_DOES_NOT_MATCH, moved.log[-4000:]
    assert "SeriesInstanceUID is required" in moved.log  # the Error Comment
    moved = movescu(loaded, "DESTB", ["QueryRetrieveLevel=PATIENT", "PatientID=PAT001"])  # Study Root
    assert moved.status == IDENTIFIER_DOES_NOT_MATCH, moved.log[-4000:]
    moved = movescu(loaded, "DESTB", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2.3.999"])
    assert moved.status == SUCCESS and moved.count("Completed") == 0, moved.log[-4000:]


def _move_request(loaded: Loaded) -> tuple[AE, object]:
    ae = AE(ae_title="MOVER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", loaded.pacs.dimse_port, ae_title="PACS")
    assert assoc.is_established
    return ae, assoc


def test_cancel_in_the_middle_of_a_move(loaded: Loaded, destination: Callable[..., Destination]) -> None:
    dest = destination("DESTC", "--sleep-during", "1")  # one second per instance: the move is slow
    ae, assoc = _move_request(loaded)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = loaded.big.uid
    responses = []
    try:
        cx = next(c for c in assoc.accepted_contexts  # type: ignore[attr-defined]
                  if c.abstract_syntax == StudyRootQueryRetrieveInformationModelMove)
        for status, _ in assoc.send_c_move(identifier, "DESTC", StudyRootQueryRetrieveInformationModelMove,  # type: ignore[attr-defined]
                                           msg_id=7):
            assert status, "no response"
            responses.append(status)
            if len(responses) == 2:
                assoc.send_c_cancel(7, cx.context_id)  # type: ignore[attr-defined]
        final = responses[-1]
        assert final.Status == CANCEL, final
        assert final.NumberOfCompletedSuboperations >= 2
        assert final.NumberOfRemainingSuboperations > 0
        assert final.NumberOfCompletedSuboperations + final.NumberOfRemainingSuboperations \
            + final.NumberOfFailedSuboperations <= BIG
        assert len(responses) < BIG + 1
        assoc.release()  # type: ignore[attr-defined]
    finally:
        ae.shutdown()
    assert len(dest.received()) < BIG


def test_destination_killed_mid_move(loaded: Loaded, destination: Callable[..., Destination]) -> None:
    dest = destination("DESTK", "--sleep-during", "1")
    args = [loaded.tools("movescu"), "-d", "-S", "-aec", "PACS", "-aem", "DESTK",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={loaded.big.uid}",
            "127.0.0.1", str(loaded.pacs.dimse_port)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: len(dest.received()), lambda n: n >= 2, timeout=60, what="two instances moved")
        dest.kill()
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    moved = Moved(subprocess.CompletedProcess(args, proc.returncode, out, ""))
    assert moved.status in (UNABLE_TO_PERFORM_SUBOPERATIONS, WARNING), moved.log[-4000:]
    completed, failed = moved.count("Completed"), moved.count("Failed")
    assert completed >= 1 and failed >= 1 and completed + failed == BIG, moved.log[-4000:]
    # the gateway keeps serving: a new move to a live destination completes
    again = destination("DESTK2", "+xa")
    moved = movescu(loaded, "DESTK2", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={loaded.big.uid}"])
    assert moved.status == SUCCESS, moved.log[-4000:]
    assert len(again.received()) == BIG


# -- C-GET ---------------------------------------------------------------------------------------------


def test_get_study_and_instance_levels(loaded: Loaded, tmp_path: Path) -> None:
    study = study_with(loaded, JPEGLSLossless)
    (tmp_path / "study").mkdir()
    got = getscu(loaded, tmp_path / "study", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study.uid}"])
    assert got.run.returncode == 0, got.log[-4000:]
    assert got.count("Completed") == len(study.instances) and got.count("Failed") == 0, got.log[-4000:]
    files = [pydicom.dcmread(p) for p in (tmp_path / "study").iterdir()]
    assert {ds.SOPInstanceUID for ds in files} == uids(study.instances)
    # getscu proposes uncompressed syntaxes only: the JPEG-LS instance was transcoded
    jls = by_syntax(study, JPEGLSLossless)
    [ds] = [ds for ds in files if ds.SOPInstanceUID == jls.sop_uid]
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(jls.path).pixel_array)

    (tmp_path / "image").mkdir()
    inst = study.instances[-1]
    got = getscu(loaded, tmp_path / "image", ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={inst.study_uid}",
                                              f"SeriesInstanceUID={inst.series_uid}", f"SOPInstanceUID={inst.sop_uid}"])
    assert got.count("Completed") == 1, got.log[-4000:]
    assert [pydicom.dcmread(p).SOPInstanceUID for p in (tmp_path / "image").iterdir()] == [inst.sop_uid]


def test_get_without_role_selection_fails_every_sub_operation(loaded: Loaded) -> None:
    study = loaded.dataset.study("PAT001", "MR")
    ae = AE(ae_title="NOROLE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class)  # no SCP/SCU role selection: the PACS may not send back
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study.uid
    assoc = ae.associate("127.0.0.1", loaded.pacs.dimse_port, ae_title="PACS")
    try:
        assert assoc.is_established
        responses = [s for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)]
        final = responses[-1]
        assert final.Status == UNABLE_TO_PERFORM_SUBOPERATIONS, final
        assert final.NumberOfFailedSuboperations == len(study.instances)
        assert final.NumberOfCompletedSuboperations == 0
        assoc.release()
    finally:
        ae.shutdown()


def test_get_with_role_selection_through_pynetdicom(loaded: Loaded) -> None:
    study = loaded.dataset.study("PAT001", "MR")
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="ROLE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles: list[Any] = []
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        roles.append(build_role(sop_class, scp_role=True))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study.uid
    assoc = ae.associate("127.0.0.1", loaded.pacs.dimse_port, ae_title="PACS", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        assert assoc.is_established
        final = [s for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)][-1]
        assert final.Status == SUCCESS, final
        assoc.release()
    finally:
        ae.shutdown()
    assert set(received) == uids(study.instances)


def test_get_refused_for_a_node_not_allowed_get(loaded: Loaded, tmp_path: Path) -> None:
    loaded.nodes("add", "NOGET", "127.0.0.1", "104", "--operations", "find")
    try:
        got = getscu(loaded, tmp_path, ["QueryRetrieveLevel=STUDY",
                                        f"StudyInstanceUID={loaded.dataset.studies[0].uid}"], "-aet", "NOGET")
        assert got.status == NOT_AUTHORIZED, got.log[-4000:]
        assert list(tmp_path.iterdir()) == []
    finally:
        loaded.nodes("remove", "NOGET")


# -- C-MOVE to a pynetdicom destination: what it received, byte for byte, and what it answered -----------


@dataclass
class PyDestination:
    """A pynetdicom Storage SCP in this process, registered as a node (maximum PDU 16 KiB): the C-STORE
    requests it received, the status it answers per SOP Instance UID (default Success), and after how
    many received instances it aborts the association instead of answering the next."""

    ae_title: str
    port: int
    received: list[Any] = field(default_factory=list)
    statuses: dict[str, Dataset | int] = field(default_factory=dict)
    abort_after: int | None = None


@pytest.fixture
def py_destination(loaded: Loaded) -> Iterator[PyDestination]:
    dest = PyDestination("DESTPY", 0)

    def on_store(event: evt.Event) -> Dataset | int:
        if dest.abort_after is not None and len(dest.received) >= dest.abort_after:
            event.assoc.abort()
            return 0x0000
        dest.received.append(event.request)
        return dest.statuses.get(str(event.request.AffectedSOPInstanceUID), 0x0000)

    ae = AE(ae_title=dest.ae_title)
    ae.maximum_pdu_size = 16384
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    dest.port = server.server_address[1]
    loaded.nodes("add", dest.ae_title, "127.0.0.1", str(dest.port), "--operations", "store,move")
    try:
        yield dest
    finally:
        server.shutdown()
        loaded.nodes("remove", dest.ae_title)


def _move_big(loaded: Loaded, dest: str, msg_id: int) -> list[tuple[Dataset, Dataset | None]]:
    ae, assoc = _move_request(loaded)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = loaded.big.uid
    identifier.SeriesInstanceUID = loaded.big.series[0].uid
    try:
        responses = list(assoc.send_c_move(identifier, dest, StudyRootQueryRetrieveInformationModelMove,  # type: ignore[attr-defined]
                                           msg_id=msg_id))
        assoc.release()  # type: ignore[attr-defined]
    finally:
        ae.shutdown()
    assert responses and all(status for status, _ in responses), responses
    return responses


def _stored_body(loaded: Loaded, sop_uid: str) -> bytes:
    [path] = list(loaded.pacs.objects_dir.rglob(f"{sop_uid}.dcm"))
    data = path.read_bytes()
    return data[144 + int.from_bytes(data[140:144], "little"):]


def test_move_counts_what_the_destination_refused_or_warned(loaded: Loaded, py_destination: PyDestination) -> None:
    big = loaded.big.series[0].instances
    refused = Dataset()
    refused.Status, refused.ErrorComment = 0xA700, "out of room"
    py_destination.statuses = {big[3].sop_uid: refused, big[5].sop_uid: 0xC000, big[7].sop_uid: 0xB000}
    responses = _move_big(loaded, py_destination.ae_title, msg_id=11)
    pending = [status for status, _ in responses[:-1]]
    final, identifier = responses[-1]
    assert [s.Status for s in pending] == [0xFF00] * BIG
    assert [s.NumberOfRemainingSuboperations for s in pending] == list(range(BIG - 1, -1, -1))
    assert [(s.NumberOfCompletedSuboperations, s.NumberOfFailedSuboperations, s.NumberOfWarningSuboperations)
            for s in pending][-1] == (BIG - 3, 2, 1)
    assert final.Status == WARNING, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (BIG - 3, 2, 1)
    assert identifier is not None
    assert set(identifier.FailedSOPInstanceUIDList) == {big[3].sop_uid, big[5].sop_uid}
    # every instance arrived as stored, byte for byte, naming the move's originator
    requests = {str(r.AffectedSOPInstanceUID): r for r in py_destination.received}
    assert set(requests) == uids(big)
    assert len({r.MessageID for r in py_destination.received}) == BIG
    for inst in big:
        req = requests[inst.sop_uid]
        assert req.DataSet.getvalue() == _stored_body(loaded, inst.sop_uid)
        assert req.MoveOriginatorApplicationEntityTitle == "MOVER" and req.MoveOriginatorMessageID == 11


def test_move_to_a_destination_that_aborts(loaded: Loaded, py_destination: PyDestination) -> None:
    big = loaded.big.series[0].instances
    py_destination.abort_after = 4
    final, identifier = _move_big(loaded, py_destination.ae_title, msg_id=3)[-1]
    assert final.Status == UNABLE_TO_PERFORM_SUBOPERATIONS, final  # the store association is gone
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (4, BIG - 4), final
    assert "NumberOfRemainingSuboperations" not in final
    completed = {str(r.AffectedSOPInstanceUID) for r in py_destination.received}
    assert len(completed) == 4
    assert identifier is not None and set(identifier.FailedSOPInstanceUIDList) == uids(big) - completed
    py_destination.received.clear()
    py_destination.abort_after = 0
    final, identifier = _move_big(loaded, py_destination.ae_title, msg_id=4)[-1]
    assert final.Status == UNABLE_TO_PERFORM_SUBOPERATIONS, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, BIG), final
    assert identifier is not None and set(identifier.FailedSOPInstanceUIDList) == uids(big)
