"""The embedded anonymizer: the event log followed by a process pool with a durable cursor (the shared
`pacs.services.event_worker`), permanent failures dead-lettered with the reason, redrive, the CLI; and
`pacs up --deid-rules` end to end: a modality sends as RESEARCH_CT, the copy is searchable in the
research partition."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from pacs.backends import Backend
from pacs.services.anonymize_worker import AnonymizerState, AnonymizeWorker
from pacs.services.deid_rules import RulesError
from pacs.services.ingest import IngestService
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tests.interop.support import PacsProcess
from tests.unit.conftest import build_dataset, to_part10
from tests.unit.event_workers import DEADLINE, index_all, until

SRC, DST = "trial-7", "trial-7-deid"
S = "1.2.826.0.1.3680043.8.498.41"
RULES = json.dumps({"rule": [{"name": "t7", "partitions": [SRC], "destination": {"partition": DST}}]})


def ingest(backend: Backend, *sops: int) -> None:
    for n in sops:
        ds = build_dataset(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.1", SOPInstanceUID=f"{S}.1.{n}")
        IngestService(backend.store, partition=SRC).ingest(to_part10(ds))
    index_all(backend)


def copies(backend: Backend) -> int:
    return sum(1 for _ in backend.store.list(f"{DST}/studies/"))


def test_worker_deidentifies_with_a_durable_cursor_and_dead_letters(embedded: Backend,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings = dataclasses.replace(embedded.settings, deid_rules=RULES)
    ingest(embedded, 1, 2)
    embedded.events.publish("InstanceStored", {"partition": SRC, "studyInstanceUID": "../x"})  # type: ignore[union-attr]
    worker = AnonymizeWorker(settings, workers=2)
    try:
        log = embedded.events
        assert log is not None
        # done once the copies' own events (in the destination partition) were read too, and ignored
        until(lambda: copies(embedded) == 2 and worker.failed == 1 and not worker.busy
              and worker.cursor == log.last_id(), worker)  # type: ignore[attr-defined]
        [dead] = worker.state.dead_letters()
        assert "not an instance event detail" in dead.error and dead.attempts == 1
    finally:
        worker.close()
    assert worker.failed == 1  # the copies' own events were ignored, not dead-lettered
    # a restart repeats nothing; a new instance is taken
    ingest(embedded, 3)
    again = AnonymizeWorker(settings, workers=1)
    try:
        until(lambda: copies(embedded) == 3 and not again.busy, again)
        assert again.failed == 0
    finally:
        again.close()
    from pacs.cli.main import main

    data_dir = str(settings.data_dir)
    capsys.readouterr()
    assert main(["anonymizer", "dlq", "list", "--data-dir", data_dir]) == 0
    assert "InstanceStored" in capsys.readouterr().out
    assert main(["anonymizer", "dlq", "redrive", "--data-dir", data_dir]) == 0
    assert "redriven 1" in capsys.readouterr().out
    state = AnonymizerState(settings.data_dir / "anonymizer.db")
    assert state.dead_letters()[0].detail["studyInstanceUID"] == "../x"
    state.close()


def test_invalid_rules_are_refused_at_start(embedded: Backend, tmp_path: Path) -> None:
    settings = dataclasses.replace(embedded.settings, deid_rules='{"rule": [{"name": "x"}]}')
    with pytest.raises(RulesError, match="`partitions` is required"):
        AnonymizeWorker(settings)
    from pacs.cli.main import main

    assert main(["anonymizer", "dlq", "list", "--data-dir", str(tmp_path / "none")]) == 2


def test_pacs_up_deidentifies_what_research_ct_sends(tmp_path: Path) -> None:
    rules = json.dumps({"rule": [{"name": "research", "partitions": ["default"], "calling_aes": ["RESEARCH_CT"],
                                  "destination": {"partition": "research"}}]})
    pacs = PacsProcess(tmp_path / "data", tmp_path / "up.log",
                       env={"PACS_DEID_RULES": rules, "PACS_DEID_WORKERS": "1"})
    pacs.start()
    try:
        assert "pacs: anonymizer: 1 process(es), rules: research: on InstanceStored" in pacs.log_text()
        ct, mr = get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")
        assert ct and mr
        for calling, path in (("RESEARCH_CT", ct), ("OTHER_CT", mr)):
            ae = AE(ae_title=calling)
            ae.add_requested_context(CTImageStorage)
            ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")
            assoc = ae.associate("127.0.0.1", pacs.dimse_port, ae_title="PACS")
            assert assoc.is_established
            try:
                assert assoc.send_c_store(dcmread(path)).Status == 0
            finally:
                assoc.release()
        deadline = time.monotonic() + DEADLINE
        found: list[Path] = []
        while not found:
            assert time.monotonic() < deadline, pacs.log_text()[-3000:]
            time.sleep(0.3)
            found = list((pacs.data_dir / "objects" / "research" / "studies").rglob("*.dcm"))
        [copy] = found
        original = dcmread(ct)
        ds = dcmread(copy)
        assert ds.PatientName != original.PatientName and ds.PatientID != original.PatientID
        for uid in (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID):
            assert uid.encode() not in copy.read_bytes()  # (the byte scan of every value: the engine's tests)
        # searchable: the copy is indexed in the research partition's catalog
        from pacs.catalog.sqlite import SqliteCatalog

        catalog = SqliteCatalog(pacs.data_dir / "catalog.db")
        try:
            assert catalog.get_study("research", ds.StudyInstanceUID) is not None
        finally:
            catalog.close()
    finally:
        assert pacs.stop() == 0 and pacs.stragglers == [], pacs.log_text()[-3000:]
    assert len(list((pacs.data_dir / "objects" / "research" / "studies").rglob("*.dcm"))) == 1  # not the MR's


def test_pacs_up_refuses_unusable_rules_before_starting(tmp_path: Path) -> None:
    from pacs.cli.main import main

    bad = json.dumps({"rule": [{"name": "loop", "partitions": ["a"], "destination": {"partition": "a"}}]})
    with pytest.raises(SystemExit, match=r"the de-identification rules cannot be used: .*a loop"):
        main(["up", "--data-dir", str(tmp_path / "data"), "--deid-rules", bad, "--dimse-port", "0",
              "--http-port", "0"])
