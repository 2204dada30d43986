"""`pacs up` across stops and starts (DESIGN ◆ local contract, ingest contract 6).

- data survives a restart on the same data dir;
- Ctrl-C (SIGINT) stops cleanly: exit 0, no traceback, no process left, everything acknowledged indexed;
- start-up reconciliation indexes objects that reached the store but never the catalog.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient

from .conftest import Launcher
from .dicomgen import DataSet, write_extra_instance
from .support import (
    SOP_UID,
    STUDY_UID,
    PacsProcess,
    Qido,
    free_port,
    instance_path,
    run_tool,
    uids,
    wait_indexed,
    wait_until,
)

pytestmark = pytest.mark.interop


def send_all(pacs: PacsProcess, storescu: str, profile: Path, *paths: Path) -> None:
    run = run_tool([storescu, "-aec", "PACS", "+sd", "+r", "-xf", str(profile), "AsStored",
                    "127.0.0.1", str(pacs.dimse_port), *map(str, paths)])
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"


def assert_stops(pacs: PacsProcess) -> str:
    """SIGINT: `pacs up` exits 0, saying so, and leaves no process behind; its log is returned."""
    code = pacs.stop()
    log = pacs.log_text()
    assert code == 0, log[-4000:]
    assert "pacs: stopped" in log
    assert pacs.stragglers == [], "gateway or web processes outlived pacs up"
    return log


def reconciled(log: str) -> list[tuple[int, int]]:
    """(scanned, indexed) of every start-up reconciliation in a `pacs up` log."""
    return [(int(a), int(b)) for a, b in
            re.findall(r"pacs: reconciled (\d+) stored instances, indexed (\d+) missing", log)]


def test_data_survives_a_restart(launch: Launcher, dataset: DataSet, dcmtk: Callable[[str], str],
                                 storescu_profile: Path) -> None:
    first = launch()
    send_all(first, dcmtk("storescu"), storescu_profile, dataset.root)
    with_first = Qido(first)
    wait_indexed(with_first, dataset.studies)
    studies = with_first.studies()
    instances = {s.uid: with_first.instances(s.uid) for s in dataset.studies}
    with_first.close()
    assert_stops(first)

    second = launch(like=first)  # the same data dir and ports
    assert reconciled(second.log_text()) == [(18, 0)]  # the catalog was complete: nothing to index
    qido = Qido(second)
    try:
        assert qido.studies() == studies
        assert {s.uid: qido.instances(s.uid) for s in dataset.studies} == instances
    finally:
        qido.close()
    client = DICOMwebClient(url=second.dicomweb_url)
    for ts in {i.transfer_syntax for i in dataset.instances}:
        inst = dataset.by_syntax(ts)[0]
        got = client.retrieve_instance(inst.study_uid, inst.series_uid, inst.sop_uid)
        assert got.SOPInstanceUID == inst.sop_uid
        assert got.file_meta.TransferSyntaxUID == ts
    run = run_tool([dcmtk("echoscu"), "-aec", "PACS", "127.0.0.1", str(second.dimse_port)])
    assert run.returncode == 0, run.stderr
    assert_stops(second)


def test_sigint_stops_cleanly_and_keeps_everything_acknowledged(
    launch: Launcher, dataset: DataSet, dcmtk: Callable[[str], str], storescu_profile: Path,
) -> None:
    """Ctrl-C while a storescu association is open: `pacs up` exits 0 without a traceback or a
    leftover process; every instance whose C-STORE was answered with success is stored and was
    indexed before the exit (the next start-up finds nothing missing)."""
    pacs = launch()
    sender = subprocess.Popen(
        [dcmtk("storescu"), "-v", "-aec", "PACS", "+sd", "+r", "-nh", "-xf", str(storescu_profile),
         "AsStored", "127.0.0.1", str(pacs.dimse_port), str(dataset.root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until(lambda: list((pacs.objects_dir / "default").rglob("*.dcm")), bool,
                   timeout=60, interval=0.01, what="the first stored instance")
        pacs.interrupt()
        output, _ = sender.communicate(timeout=120)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    log = assert_stops(pacs)
    assert "Traceback" not in log, log[-4000:]

    # storescu -v logs "Sending file: F" ... "Received Store Response (Success)" per file.
    acknowledged: list[Path] = []
    current: Path | None = None
    for line in output.splitlines():
        if m := re.search(r"Sending file: (.+)$", line):
            current = Path(m[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    assert acknowledged, output
    by_path = {i.path: i for i in dataset.instances}
    acked = [by_path[p if p.is_absolute() else p.resolve()] for p in acknowledged]
    for inst in acked:
        assert instance_path(pacs.objects_dir, inst).is_file(), inst

    again = launch(like=pacs)
    (scan,) = reconciled(again.log_text())
    assert scan[1] == 0, "acknowledged instances were left unindexed at exit"
    qido = Qido(again)
    try:
        for study in {i.study_uid for i in acked}:
            listed = uids(qido.instances(study), SOP_UID)
            assert {i.sop_uid for i in acked if i.study_uid == study} <= listed
    finally:
        qido.close()
    assert_stops(again)


def test_startup_reconciliation_indexes_objects_missing_from_the_catalog(
    launch: Launcher, dataset: DataSet, dcmtk: Callable[[str], str], storescu_profile: Path,
    tmp_path: Path,
) -> None:
    """With pacs stopped, valid Part 10 files copied straight into the storage layout (a crash
    between the write and the event, or a restore) are indexed at the next start; a file whose UIDs
    do not match its key is reported and left out, and does not stop the start-up."""
    pacs = launch()
    pat1 = [s for s in dataset.studies if s.patient_id == "PAT001"]
    send_all(pacs, dcmtk("storescu"), storescu_profile, dataset.native_dir / "PAT001",
             dataset.compressed_dir / "PAT001")
    qido = Qido(pacs)
    wait_indexed(qido, pat1)
    qido.close()
    assert_stops(pacs)

    # PAT002's studies as files, and one more instance in a series PAT001 already has.
    copied = [i for s in dataset.studies if s.patient_id == "PAT002" for i in s.instances]
    for inst in copied:
        target = instance_path(pacs.objects_dir, inst)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(inst.path, target)
    ct = dataset.study("PAT001", "CT")
    extra = write_extra_instance(ct.series[0], ct, 4, tmp_path / "extra.dcm")
    target = instance_path(pacs.objects_dir, extra)
    shutil.copyfile(extra.path, target)
    # A file at the key of an instance it does not hold.
    liar = write_extra_instance(ct.series[0], ct, 5, tmp_path / "liar.dcm")
    wrong_key = instance_path(pacs.objects_dir, liar).with_name("1.2.826.0.1.3680043.8.498.999.dcm")
    shutil.copyfile(liar.path, wrong_key)

    again = launch(like=pacs)
    log = again.log_text()
    # scanned: 9 sent + the copies + the extra + the liar; indexed: the copies + the extra.
    assert reconciled(log) == [(9 + len(copied) + 2, len(copied) + 1)], log
    assert re.search(r"indexed \d+ missing, 1 failed", log), log
    qido = Qido(again)
    try:
        items = wait_indexed(qido, [s for s in dataset.studies if s is not ct], timeout=30)
        assert uids(items, STUDY_UID) == {s.uid for s in dataset.studies if s is not ct}
        (ct_item,) = qido.studies({"StudyInstanceUID": ct.uid})
        assert ct_item["00201208"]["Value"] == [len(ct.instances) + 1]
        series_uids = uids(qido.instances(ct.uid, ct.series[0].uid), SOP_UID)
        assert series_uids == {i.sop_uid for i in ct.series[0].instances} | {extra.sop_uid}
        (series_item,) = qido.series(ct.uid, {"SeriesInstanceUID": ct.series[0].uid})
        assert series_item["00201209"]["Value"] == [4]
    finally:
        qido.close()
    client = DICOMwebClient(url=again.dicomweb_url)
    got = client.retrieve_instance(extra.study_uid, extra.series_uid, extra.sop_uid)
    assert got.InstanceNumber == 4
    assert_stops(again)


def test_not_ready_when_the_gateway_cannot_start(tmp_path: Path) -> None:
    """`pacs up` says ready only once the gateway answers on its DICOM port, not merely when the web
    server does: a gateway that fails at start-up makes it fail, never print ready."""
    env = {**os.environ, "PACS_REQUIRE_KNOWN_CALLERS": "bogus"}  # only the gateway reads (and refuses) it
    run = subprocess.run(
        [str(Path(sys.executable).with_name("pacs")), "up", "--data-dir", str(tmp_path / "data"),
         "--dimse-port", str(free_port()), "--http-port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=240,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out[-4000:]
    assert "a service failed to start" in out, out[-4000:]
    assert "pacs: ready" not in out, out[-4000:]
