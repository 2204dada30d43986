"""The first user's path through the real `pacs` entry point of the venv (a subprocess each):
--version, a closed pipe, list wording, data-directory errors, and what the SCU commands print about
a peer's answers (Error Comment, failed SOP Instance UIDs, UIDs never cut)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pacs import __version__
from pacs.backends import open_backend
from pacs.config import Settings
from pacs.events.embedded import EmbeddedEventLog
from pacs.services.ingest import IngestService
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from tests.unit.conftest import MakePart10

PACS = str(Path(sys.executable).with_name("pacs"))
UID64 = "1.2.826.0.1.3680043.8.498." + "1234567890" * 3 + "12345678"


def run(*args: str, cwd: Path | None = None, columns: int = 100, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    return subprocess.run([PACS, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**clean, "COLUMNS": str(columns), **env})


def test_uid64_is_64_characters() -> None:
    assert len(UID64) == 64


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"pacs {__version__}"


def test_events_into_a_pipe_closed_early_leaves_no_traceback(tmp_path: Path) -> None:
    """`pacs events | head -1`: far more than a pipe buffer is left to write when head exits."""
    data = tmp_path / "data"
    data.mkdir()
    log = EmbeddedEventLog(data / "events.db")
    log.publish_batch([("StudyUpdated", {"studyInstanceUID": f"1.2.3.{n}", "padding": "x" * 200})
                       for n in range(3000)])
    log.close()
    out = subprocess.run(["sh", "-c", f"'{PACS}' events --data-dir '{data}' | head -1"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.count("\n") == 1 and '"detail-type":"StudyUpdated"' in out.stdout
    assert out.stderr == ""


def test_dlq_list_says_how_many(tmp_path: Path) -> None:
    open_backend(Settings(data_dir=tmp_path / "data")).close()
    out = run("dlq", "list", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "0 failed events\n"


def test_a_bad_value_is_reported_once(tmp_path: Path, make_part10: MakePart10) -> None:
    """pydicom both logs and warns about an invalid IS value: `pacs` prints only its own line."""
    backend = open_backend(Settings(data_dir=tmp_path / "data"))
    try:
        element = b"\x28\x00\x08\x00IS\x02\x00"  # (0028,0008) Number of Frames, explicit VR, 2 bytes
        part10 = make_part10(NumberOfFrames="77")
        assert part10.count(element + b"77") == 1
        IngestService(backend.store).ingest(part10.replace(element + b"77", element + b"1A"))
    finally:
        backend.close()
    out = run("reconcile", "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 0, out.stderr
    assert "scanned 1, indexed 1, failed 0" in out.stdout
    assert out.stderr.count("Dropping undecodable value of 00280008 (VR IS)") == 1, out.stderr
    assert "Invalid value for VR IS" not in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


# -- the data directory ----------------------------------------------------------------------------------

def test_nodes_add_names_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = run("nodes", "add", "STORESCP", "127.0.0.1", "11113", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"added STORESCP 127.0.0.1:11113 to the node registry in {data / 'catalog.db'}\n"
    listed = run("nodes", "list", "--data-dir", str(data))
    assert listed.stderr == f"1 node in {data / 'catalog.db'}\n"
    removed = run("nodes", "remove", "STORESCP", "--data-dir", str(data))
    assert removed.stdout == f"removed STORESCP from the node registry in {data / 'catalog.db'}\n"


def test_nodes_add_by_pacs_data_dir_names_it(tmp_path: Path) -> None:
    out = run("nodes", "add", "X", "h", "104", cwd=tmp_path, PACS_DATA_DIR=str(tmp_path / "d"))
    assert out.returncode == 0 and f"{tmp_path / 'd' / 'catalog.db'}" in out.stdout


@pytest.mark.parametrize("command", [["nodes", "add", "X", "h", "104"], ["nodes", "list"], ["dlq", "list"],
                                     ["events"], ["mpps", "list"], ["commitment", "list"], ["reconcile"],
                                     ["echo", "X"]])
def test_no_data_directory_here_is_refused_with_a_hint(tmp_path: Path, command: list[str]) -> None:
    out = run(*command, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "./pacs-data does not exist here" in out.stderr
    assert "--data-dir" in out.stderr and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_a_named_data_directory_that_does_not_exist_is_not_created_by_a_list(tmp_path: Path) -> None:
    out = run("nodes", "list", "--data-dir", str(tmp_path / "typo"))
    assert out.returncode == 1 and f"no data directory {tmp_path / 'typo'}" in out.stderr
    assert not (tmp_path / "typo").exists()


def test_a_data_directory_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for command in (["nodes", "add", "X", "h", "104"], ["up", "--dimse-port", "0", "--http-port", "0"]):
        out = run(*command, "--data-dir", str(tmp_path / "file" / "data"))
        assert out.returncode == 1
        assert out.stderr == f"pacs: cannot use the data directory {tmp_path / 'file' / 'data'}: Not a directory\n"


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[list[str]]:
    """A prefix running a command with `tmp_path/ro` a read-only tmpfs (in a mount namespace of its
    own: nothing is mounted for anyone else, nothing to unmount). Root needs no user namespace."""
    (tmp_path / "ro").mkdir()
    unshare = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
    yield [*unshare, "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(tmp_path / "ro")]


def test_a_read_only_data_directory_is_one_line_naming_it(tmp_path: Path, read_only_dir: list[str]) -> None:
    data = tmp_path / "ro" / "data"
    for command in (["nodes", "add", "X", "h", "104"], ["up", "--dimse-port", "0", "--http-port", "0"]):
        out = subprocess.run([*read_only_dir, PACS, *command, "--data-dir", str(data)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1
        assert out.stderr == f"pacs: cannot use the data directory {data}: Read-only file system\n"


# -- what the SCU commands print -----------------------------------------------------------------------

@pytest.fixture
def peer() -> Iterator[int]:
    """A pynetdicom SCP on a free port: C-FIND answers one study with a 64-character UID; C-STORE
    refuses every instance with 0xA900 and an Error Comment; C-GET ends at once with 0xA702, an Error
    Comment and two failed SOP Instance UIDs."""
    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        many = event.identifier.get("PatientID") == "MANY"  # 2000 matches: far more than a pipe buffer
        for n in range(2000 if many else 1):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = UID64 if not many else f"1.2.826.0.1.3680043.8.498.{n + 1}"
            ds.PatientID = "PID1"
            ds.StudyDescription = "a description long enough to need some room on a line"
            yield 0xFF00, ds

    def on_get(event: Any) -> Iterator[int | tuple[Dataset, Dataset]]:
        yield 2  # sub-operations; none is attempted: the peer gives up with its reason
        status, identifier = Dataset(), Dataset()
        status.Status = 0xA702
        status.ErrorComment = "archive volume offline"
        identifier.FailedSOPInstanceUIDList = [UID64, "1.2.3.4"]
        yield status, identifier

    def on_store(event: Any) -> Dataset:
        rsp = Dataset()
        rsp.Status = 0xA900
        rsp.ErrorComment = "Patient ID PID1 belongs to another patient"
        return rsp

    ae = AE(ae_title="PEER")
    ae.add_supported_context(CTImageStorage)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_C_FIND, on_find), (evt.EVT_C_STORE, on_store), (evt.EVT_C_GET, on_get)])
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


@pytest.mark.parametrize("columns", [40, 80, 300])
def test_find_never_cuts_a_uid(peer: int, columns: int) -> None:
    out = run("find", f"PEER@127.0.0.1:{peer}", "-L", "STUDY", "-k", "StudyInstanceUID", "-k", "PatientID",
              "-k", "StudyDescription", columns=columns)
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(UID64 in line for line in out.stdout.splitlines()), out.stdout
    assert "C-FIND PEER: 1 match(es)" in out.stdout and "final status 0x0000 Success" in out.stdout


@pytest.mark.parametrize(("flags", "head", "first"), [([], "-n 1", "C-FIND PEER: 2000 match(es)\n"),
                                                     (["--json"], "-c 2", "[{")])
def test_find_into_a_pipe_closed_early_leaves_no_traceback(peer: int, flags: list[str], head: str,
                                                           first: str) -> None:
    find = [PACS, "find", f"PEER@127.0.0.1:{peer}", "-L", "STUDY", "-k", "PatientID=MANY", "-k", "StudyInstanceUID",
            "-k", "StudyDescription", *flags]
    out = subprocess.run(["sh", "-c", f"{' '.join(find)} | head {head}"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert out.stdout == first
    assert out.stderr == ""


def test_store_refused_shows_the_error_comment_and_the_uid(
    peer: int, tmp_path: Path, make_part10: MakePart10
) -> None:
    f = tmp_path / "ct.dcm"
    f.write_bytes(make_part10(SOPInstanceUID=UID64))
    out = run("store", f"PEER@127.0.0.1:{peer}", str(f))
    assert out.returncode == 1
    assert f"0xA900 Failure {f} {UID64}: Patient ID PID1 belongs to another patient" in out.stdout, out.stdout
    assert "1 file(s): 0 stored, 0 with a warning, 1 failed" in out.stdout
    assert f"  {UID64}  0xA900 Failure: Patient ID PID1 belongs to another patient" in out.stdout


def test_get_failed_shows_the_error_comment_and_the_failed_uids(peer: int, tmp_path: Path) -> None:
    out = run("get", f"PEER@127.0.0.1:{peer}", "-od", str(tmp_path), "-L", "STUDY", "-k", f"StudyInstanceUID={UID64}")
    assert out.returncode == 1
    assert "C-GET final status 0xA702 Failure: archive volume offline: " in out.stdout, out.stdout
    assert f"failed SOP Instance UIDs (2):\n  {UID64}\n  1.2.3.4\n" in out.stdout
