"""The embedded transcoder worker: the event log followed by a process pool with a durable cursor;
a restart repeats nothing and loses nothing; corrupt originals dead-letter with the reason; redrive."""

from __future__ import annotations

import dataclasses
import threading
import time

import pydicom
import pytest
from pacs.backends import Backend
from pacs.services.ingest import IngestService
from pacs.services.transcode_policy import PolicyError
from pacs.services.transcode_worker import TranscoderState, TranscodeWorker

from tests.unit.conftest import build_dataset, to_part10
from tests.unit.event_workers import DEADLINE, index_all, until

P = "default"
S = "1.2.826.0.1.3680043.8.498.31"
RLE = "1.2.840.10008.1.2.5"
POLICY = '{"rule": [{"modalities": ["CT"], "copies": ["JPEGLSLossless"]}]}'


def ingest(backend: Backend, *sops: int, corrupt: bool = False) -> None:
    for n in sops:
        ds = build_dataset(StudyInstanceUID=S, SeriesInstanceUID=f"{S}.1", SOPInstanceUID=f"{S}.1.{n}")
        syntax = "1.2.840.10008.1.2.1"
        if corrupt:
            ds.PixelData = pydicom.encaps.encapsulate([b"\x00 not RLE"])
            ds["PixelData"].VR = "OB"
            syntax = RLE
        IngestService(backend.store).ingest(to_part10(ds, syntax))
    index_all(backend)


def copies(backend: Backend) -> int:
    return len(backend.catalog.list_derived(P, S))  # type: ignore[attr-defined]


def test_worker_transcodes_with_a_durable_cursor(embedded: Backend) -> None:
    settings = dataclasses.replace(embedded.settings, transcode_policy=POLICY)
    ingest(embedded, 1, 2, 3)
    worker = TranscodeWorker(settings, workers=2)
    try:
        until(lambda: copies(embedded) == 3 and not worker.busy, worker)
    finally:
        worker.close()
    assert worker.done == 3 and worker.failed == 0
    last = embedded.events.last_id()  # type: ignore[union-attr]
    state = TranscoderState(settings.data_dir / "transcoder.db")
    assert state.cursor() == last - 1  # the StudyUpdated after the last InstanceStored is not its concern
    # a restart: nothing repeated; a new event after it is taken
    ingest(embedded, 4)
    again = TranscodeWorker(settings, workers=1)
    try:
        until(lambda: copies(embedded) == 4 and not again.busy, again)
        assert again.done == 1
    finally:
        again.close()
    state.close()


def test_corrupt_original_dead_letters_and_redrive(embedded: Backend) -> None:
    settings = dataclasses.replace(embedded.settings, transcode_policy=POLICY)
    ingest(embedded, 5)
    ingest(embedded, 6, corrupt=True)
    worker = TranscodeWorker(settings, workers=1)
    try:
        until(lambda: worker.done + worker.failed == 2 and not worker.busy, worker)
        [dead] = worker.state.dead_letters()
        assert dead.detail["sopInstanceUID"] == f"{S}.1.6" and dead.attempts == 1
        assert "cannot decode the RLE Lossless pixel data" in dead.error
        assert worker.cursor >= dead.event_id  # dead-lettered work does not hold the cursor back
        assert worker.state.redrive() == 1
        until(lambda: worker.failed == 2 and not worker.busy, worker)  # fails again, dead-lettered again
        assert len(worker.state.dead_letters()) == 1
    finally:
        worker.close()


def test_run_stops_cleanly(embedded: Backend) -> None:
    settings = dataclasses.replace(embedded.settings, transcode_policy=POLICY)
    ingest(embedded, 7)
    worker = TranscodeWorker(settings, workers=1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"poll": 0.1})
    thread.start()
    deadline = time.monotonic() + DEADLINE
    while copies(embedded) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    thread.join(DEADLINE)
    assert not thread.is_alive() and copies(embedded) == 1


def test_an_invalid_policy_is_refused_at_start(embedded: Backend) -> None:
    settings = dataclasses.replace(embedded.settings, transcode_policy='{"rule": [{"copies": ["Nope"]}]}')
    with pytest.raises(PolicyError, match="unknown transfer syntax 'Nope'"):
        TranscodeWorker(settings)


def test_cli_check_and_dlq(embedded: Backend, tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pacs.cli.main import main

    assert main(["transcoder", "check", POLICY]) == 0
    assert "JPEG-LS Lossless" in capsys.readouterr().out
    assert main(["transcoder", "check", '{"rule": [{"copies": ["Nope"]}]}']) == 1
    assert "unknown transfer syntax 'Nope'" in capsys.readouterr().err
    data_dir = str(embedded.settings.data_dir)
    assert main(["transcoder", "dlq", "list", "--data-dir", data_dir]) == 2  # never ran here
    state = TranscoderState(embedded.settings.data_dir / "transcoder.db")
    from pacs.events.embedded import StoredEvent

    state.dead_letter(StoredEvent(9, 0.0, "pacs", "InstanceStored", {"key": "k"}), "corrupt", 1)
    state.close()
    capsys.readouterr()
    assert main(["transcoder", "dlq", "list", "--data-dir", data_dir]) == 0
    assert "9\tInstanceStored\tk\tattempts=1\tcorrupt" in capsys.readouterr().out
    assert main(["transcoder", "dlq", "redrive", "--data-dir", data_dir]) == 0
    assert "redriven 1" in capsys.readouterr().out


def test_a_dead_pool_process_is_replaced_and_nothing_is_lost(embedded: Backend) -> None:
    import os
    import signal

    settings = dataclasses.replace(embedded.settings, transcode_policy=POLICY)
    worker = TranscodeWorker(settings, workers=2, retry_delay=0.1)
    try:
        worker.warm()
        assert worker._pool is not None
        for pid in list(worker._pool._processes):  # every pool process killed, as an OOM kill would
            os.kill(pid, signal.SIGKILL)
        ingest(embedded, 8, 9)
        until(lambda: copies(embedded) == 2 and not worker.busy, worker)
        assert worker.failed == 0 and worker.state.dead_letters() == []
    finally:
        worker.close()
