"""MPPS and storage commitment against `pacs up`, with pynetdicom as the modality.

MPPS: N-CREATE → N-SET → COMPLETED, the refused transitions with their statuses, `pacs mpps list`.
Storage commitment: instances stored by C-STORE and indexed are committed, an unknown one is failed
(0x0112), the N-EVENT-REPORT comes on the same association when the modality keeps it open, on a
new association to its registered node (an SCP in this test) when it does not, and stays recorded
(`pacs commitment list`) when no node is registered.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pacs.events.embedded import EmbeddedEventLog
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
)

from .conftest import Launcher
from .dicomgen import Instance, new_study, write_extra_instance
from .support import SOP_UID, PacsProcess, Qido, free_port, uids, wait_until

pytestmark = pytest.mark.interop

SC_INSTANCE = "1.2.840.10008.1.20.1.1"
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
#: Generous: the gateway waits up to 5 s for the indexer before reporting an instance failed.
REPORT_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def pacs(launch_module: Launcher) -> PacsProcess:
    return launch_module(workers=2)


def pacs_cli(pacs: PacsProcess, *args: str) -> str:
    cmd = [sys.executable, "-m", "pacs.cli.main", *args, "--data-dir", str(pacs.data_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def modality_ae(title: str) -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(ModalityPerformedProcedureStep, SYNTAXES)
    ae.add_requested_context(StorageCommitmentPushModel, SYNTAXES)
    ae.add_requested_context(CTImageStorage, SYNTAXES)
    return ae


@pytest.fixture
def modality() -> Iterator[AE]:
    ae = modality_ae("MODALITY")
    yield ae
    ae.shutdown()


def associate(ae: AE, pacs: PacsProcess, **kwargs: Any) -> Association:
    assoc = ae.associate("127.0.0.1", pacs.dimse_port, ae_title="PACS", **kwargs)
    assert assoc.is_established, "association with the gateway refused"
    return assoc


# -- MPPS -------------------------------------------------------------------------------------------


def create_attrs(study_uid: str, status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedStationAETitle = "MODALITY"
    ds.PerformedProcedureStepStartDate = "20260101"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MPPS-PID"
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = "ACC-MPPS"
    ds.ScheduledStepAttributesSequence = [step]
    ds.PerformedSeriesSequence = []
    return ds


def modification(**attrs: Any) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_mpps_create_set_complete_and_refusals(pacs: PacsProcess, modality: AE) -> None:
    done_uid, open_uid, study_uid = generate_uid(), generate_uid(), generate_uid()
    assoc = associate(modality, pacs)
    try:
        status, attrs = assoc.send_n_create(create_attrs(study_uid), ModalityPerformedProcedureStep, done_uid)
        assert status.Status == 0x0000
        assert attrs is not None and attrs.PerformedProcedureStepStatus == "IN PROGRESS"

        status, _ = assoc.send_n_create(create_attrs(study_uid), ModalityPerformedProcedureStep, done_uid)
        assert status.Status == 0x0111  # duplicate SOP instance

        status, _ = assoc.send_n_create(create_attrs(study_uid, "COMPLETED"), ModalityPerformedProcedureStep,
                                        generate_uid())
        assert status.Status == 0x0106  # must start IN PROGRESS

        status, attrs = assoc.send_n_set(modification(PerformedProcedureStepDescription="CT chest"),
                                         ModalityPerformedProcedureStep, done_uid)
        assert status.Status == 0x0000 and attrs.PerformedProcedureStepDescription == "CT chest"

        status, _ = assoc.send_n_set(modification(PatientID="OTHER"), ModalityPerformedProcedureStep, done_uid)
        assert status.Status == 0x0105  # not allowed in an N-SET
        assert [int(t) for t in _as_list(status.AttributeIdentifierList)] == [0x00100020]

        series = Dataset()
        series.SeriesInstanceUID = generate_uid()
        series.ReferencedImageSequence = []
        status, attrs = assoc.send_n_set(
            modification(PerformedProcedureStepStatus="COMPLETED", PerformedProcedureStepEndDate="20260101",
                         PerformedProcedureStepEndTime="103000", PerformedSeriesSequence=[series]),
            ModalityPerformedProcedureStep, done_uid)
        assert status.Status == 0x0000 and attrs.PerformedProcedureStepStatus == "COMPLETED"

        status, _ = assoc.send_n_set(modification(PerformedProcedureStepStatus="IN PROGRESS"),
                                     ModalityPerformedProcedureStep, done_uid)
        assert (status.Status, status.ErrorID) == (0x0110, 0xA710)  # final: may no longer be updated
        assert status.ErrorComment == "Performed Procedure Step Object may no longer be updated"

        status, _ = assoc.send_n_set(modification(PerformedProcedureStepStatus="COMPLETED"),
                                     ModalityPerformedProcedureStep, generate_uid())
        assert status.Status == 0x0112  # no such SOP instance

        utf8 = create_attrs(study_uid)
        utf8.SpecificCharacterSet = "ISO_IR 192"
        utf8.PatientName = "Müller^Jürgen"
        status, _ = assoc.send_n_create(utf8, ModalityPerformedProcedureStep, open_uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()

    listed = pacs_cli(pacs, "mpps", "list")
    rows = {line.split("\t")[0]: line.split("\t") for line in listed.splitlines()}
    assert rows[done_uid][1] == "COMPLETED" and rows[open_uid][1] == "IN PROGRESS"
    assert rows[done_uid][7:10] == ["MPPS-PID", "Doe^Jane", study_uid]
    assert rows[open_uid][8] == "Müller^Jürgen"  # decoded with the step's Specific Character Set
    in_progress = pacs_cli(pacs, "mpps", "list", "--status", "IN PROGRESS")
    assert open_uid in in_progress and done_uid not in in_progress

    log = EmbeddedEventLog(pacs.data_dir / "events.db")  # the gateway's MppsUpdated events, in order
    try:
        mine = [e.detail for e in log.read(limit=1000, detail_types=("MppsUpdated",))
                if e.detail["mppsInstanceUID"] == done_uid]
    finally:
        log.close()
    assert [d["status"] for d in mine] == ["IN PROGRESS", "IN PROGRESS", "COMPLETED"]
    assert mine[-1]["studyInstanceUIDs"] == [study_uid] and mine[-1]["partition"] == "default"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) or hasattr(value, "__iter__") else [value]


# -- storage commitment -----------------------------------------------------------------------------


@dataclass
class Reports:
    """N-EVENT-REPORTs received by a modality (on its association or its own SCP)."""

    received: list[tuple[str, int, Dataset]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def handle(self, event: Event) -> tuple[int, None]:
        info = event.event_information
        with self.arrived:
            self.received.append((event.assoc.requestor.ae_title, event.event_type, info))
            self.arrived.notify_all()
        return 0x0000, None

    def wait_for(self, transaction_uid: str) -> tuple[str, int, Dataset]:
        with self.arrived:
            ok = self.arrived.wait_for(lambda: any(r[2].TransactionUID == transaction_uid for r in self.received),
                                       timeout=REPORT_TIMEOUT)
        assert ok, f"no N-EVENT-REPORT for {transaction_uid} within {REPORT_TIMEOUT:.0f} s"
        return next(r for r in self.received if r[2].TransactionUID == transaction_uid)


def action_info(transaction_uid: str, refs: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = []
    for cls, inst in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = inst
        ds.ReferencedSOPSequence.append(item)
    return ds


def store_instances(ae: AE, pacs: PacsProcess, tmp_path: Path, key: str, count: int) -> list[Instance]:
    """C-STORE `count` new instances and wait until QIDO lists them (indexing is asynchronous; the
    gateway's own bounded wait is covered by the unit tests, on a fake clock)."""
    study, series = new_study(key)
    instances = [write_extra_instance(series, study, n, tmp_path / f"{key}-{n}.dcm") for n in range(1, count + 1)]
    assoc = associate(ae, pacs)
    try:
        for inst in instances:
            assert assoc.send_c_store(inst.path).Status == 0x0000
    finally:
        assoc.release()
    qido = Qido(pacs)

    def listed() -> set[str]:
        try:
            return uids(qido.instances(study.uid), SOP_UID)
        except AssertionError:  # the study is not there yet (404)
            return set()

    try:
        wait_until(listed, lambda found: found == {i.sop_uid for i in instances}, what=f"{key} indexed")
    finally:
        qido.close()
    return instances


def refs_of(instances: list[Instance]) -> list[tuple[str, str]]:
    return [(i.sop_class_uid, i.sop_uid) for i in instances]


def items(ds: Dataset, keyword: str) -> list[tuple[str, ...]]:
    out = []
    for item in ds.get(keyword, None) or []:
        row = (item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID)
        out.append(row + ((int(item.FailureReason),) if "FailureReason" in item else ()))
    return sorted(out)


def test_commitment_on_the_same_association(pacs: PacsProcess, modality: AE, tmp_path: Path) -> None:
    stored = store_instances(modality, pacs, tmp_path, "commit-same", 3)
    reports = Reports()
    assoc = associate(modality, pacs, ext_neg=[build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)],
                      evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    try:
        all_ok = generate_uid()
        status, _ = assoc.send_n_action(action_info(all_ok, refs_of(stored)), 1, StorageCommitmentPushModel,
                                        SC_INSTANCE)
        assert status.Status == 0x0000
        _, event_type, info = reports.wait_for(all_ok)
        assert event_type == 1
        assert items(info, "ReferencedSOPSequence") == sorted(refs_of(stored))
        assert "FailedSOPSequence" not in info
        assert info.RetrieveAETitle == "PACS"

        some_failed, unknown = generate_uid(), (CTImageStorage, generate_uid())
        status, _ = assoc.send_n_action(action_info(some_failed, [*refs_of(stored[:1]), unknown]), 1,
                                        StorageCommitmentPushModel, SC_INSTANCE)
        assert status.Status == 0x0000
        _, event_type, info = reports.wait_for(some_failed)
        assert event_type == 2
        assert items(info, "ReferencedSOPSequence") == refs_of(stored[:1])
        assert items(info, "FailedSOPSequence") == [(*unknown, 0x0112)]

        status, _ = assoc.send_n_action(action_info(some_failed, refs_of(stored)), 1, StorageCommitmentPushModel,
                                        SC_INSTANCE)
        assert status.Status == 0x0000  # a reused Transaction UID: every instance fails with 0x0131
        wait_until(lambda: [r for r in reports.received if r[2].TransactionUID == some_failed],
                   lambda found: len(found) == 2, timeout=REPORT_TIMEOUT, what="the duplicate's report")
        dup = [r for r in reports.received if r[2].TransactionUID == some_failed][1][2]
        assert items(dup, "FailedSOPSequence") == sorted((*r, 0x0131) for r in refs_of(stored))

        status, _ = assoc.send_n_action(action_info(generate_uid(), []), 1, StorageCommitmentPushModel, SC_INSTANCE)
        assert status.Status == 0x0115  # no Referenced SOP Sequence
        status, _ = assoc.send_n_action(action_info(generate_uid(), refs_of(stored)), 2, StorageCommitmentPushModel,
                                        SC_INSTANCE)
        assert status.Status == 0x0123  # no such action
    finally:
        assoc.release()
    listed = pacs_cli(pacs, "commitment", "list", "--delivery", "same-association")
    assert all_ok in listed and some_failed in listed


@pytest.fixture
def modality_scp() -> Iterator[tuple[AE, int, Reports]]:
    """The modality's own SCP, accepting the gateway's SCP role on the Storage Commitment context."""
    ae = modality_ae("MODALITY2")
    ae.add_supported_context(StorageCommitmentPushModel, SYNTAXES, scu_role=True, scp_role=True)
    reports = Reports()
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])
    yield ae, port, reports
    server.shutdown()
    ae.shutdown()


def test_commitment_on_a_new_association_to_the_registered_node(
    pacs: PacsProcess, modality_scp: tuple[AE, int, Reports], tmp_path: Path,
) -> None:
    ae, port, reports = modality_scp
    pacs_cli(pacs, "nodes", "add", "MODALITY2", "127.0.0.1", str(port))
    stored = store_instances(ae, pacs, tmp_path, "commit-new", 2)
    tuid = generate_uid()
    assoc = associate(ae, pacs)
    try:
        status, _ = assoc.send_n_action(action_info(tuid, refs_of(stored)), 1, StorageCommitmentPushModel,
                                        SC_INSTANCE)
        assert status.Status == 0x0000
    finally:
        assoc.release()  # at once: the report must come on a new association
    caller, event_type, info = reports.wait_for(tuid)
    assert caller == "PACS" and event_type == 1
    assert items(info, "ReferencedSOPSequence") == sorted(refs_of(stored))
    assert "FailedSOPSequence" not in info
    listed = wait_until(lambda: pacs_cli(pacs, "commitment", "list", "--delivery", "new-association"),
                        lambda out: tuid in out, timeout=REPORT_TIMEOUT, what="the recorded delivery")
    assert "committed=2" in next(line for line in listed.splitlines() if tuid in line)


def test_commitment_without_a_node_is_kept(pacs: PacsProcess, tmp_path: Path) -> None:
    ae = modality_ae("NOBODY")
    try:
        stored = store_instances(ae, pacs, tmp_path, "commit-none", 1)
        tuid = generate_uid()
        assoc = associate(ae, pacs)
        try:
            status, _ = assoc.send_n_action(action_info(tuid, refs_of(stored)), 1, StorageCommitmentPushModel,
                                            SC_INSTANCE)
            assert status.Status == 0x0000
        finally:
            assoc.release()
    finally:
        ae.shutdown()
    listed = wait_until(lambda: pacs_cli(pacs, "commitment", "list", "--delivery", "undelivered"),
                        lambda out: tuid in out, timeout=REPORT_TIMEOUT, what="the undelivered result")
    line = next(line for line in listed.splitlines() if tuid in line)
    assert "NOBODY" in line and "committed=1" in line and "no node is registered" in line


def test_commitment_falls_back_when_the_requester_closes_before_answering(
    pacs: PacsProcess, modality_scp: tuple[AE, int, Reports], tmp_path: Path,
) -> None:
    """The report reached the open association, but the requester released it without answering: the
    gateway stops waiting at once and sends the report again on a new association to its node."""
    ae, port, reports = modality_scp
    pacs_cli(pacs, "nodes", "add", "MODALITY2", "127.0.0.1", str(port))
    stored = store_instances(ae, pacs, tmp_path, "commit-closing", 1)
    tuid = generate_uid()
    arrived, proceed = threading.Event(), threading.Event()

    def never_answers(event: Event) -> tuple[int, None]:
        arrived.set()
        proceed.wait(REPORT_TIMEOUT)  # holds the answer until the association is gone
        return 0x0000, None

    assoc = associate(ae, pacs, evt_handlers=[(evt.EVT_N_EVENT_REPORT, never_answers)])
    try:
        status, _ = assoc.send_n_action(action_info(tuid, refs_of(stored)), 1, StorageCommitmentPushModel,
                                        SC_INSTANCE)
        assert status.Status == 0x0000
        assert arrived.wait(REPORT_TIMEOUT), "no N-EVENT-REPORT on the open association"
    finally:
        assoc.release()
        proceed.set()
    assert assoc.is_released
    caller, event_type, info = reports.wait_for(tuid)
    assert caller == "PACS" and event_type == 1
    assert items(info, "ReferencedSOPSequence") == refs_of(stored)
    listed = wait_until(lambda: pacs_cli(pacs, "commitment", "list", "--delivery", "new-association"),
                        lambda out: tuid in out, timeout=REPORT_TIMEOUT, what="the recorded delivery")
    assert "committed=1" in next(line for line in listed.splitlines() if tuid in line)
