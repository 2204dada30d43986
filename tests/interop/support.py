"""Helpers of the interop suite: `pacs up` in a subprocess, dcmtk tools, QIDO polling, Part 10 bytes.

Everything binds 127.0.0.1 on free ports; whatever is started here is stopped here (by pid or by the
process group this module created). Waits poll with generous bounds instead of sleeping fixed times:
ingest is asynchronous and the machine may be busy.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .dicomgen import Instance, Study

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
INDEX_TIMEOUT = 60.0
T = TypeVar("T")

# DICOM JSON tags used by the assertions.
PATIENT_ID, PATIENT_NAME, STUDY_UID, SERIES_UID, SOP_UID = (
    "00100020", "00100010", "0020000D", "0020000E", "00080018",
)
MODALITIES_IN_STUDY, N_STUDY_SERIES, N_STUDY_INSTANCES, N_SERIES_INSTANCES = (
    "00080061", "00201206", "00201208", "00201209",
)
TRANSFER_SYNTAX_UID, MODALITY, STUDY_DATE, ACCESSION = "00083002", "00080060", "00080020", "00080050"


# -- processes -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], *, timeout: float = INDEX_TIMEOUT,
               interval: float = 0.1, what: str = "condition") -> T:
    """Call `probe` until `done(result)`; fail with the last result after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {value!r}"[:4000])
        time.sleep(interval)


def dcmtk_tool(name: str) -> str | None:
    """The dcmtk binary `name`. The venv also holds pynetdicom's apps under the same names
    (echoscu, storescu, ...), so a candidate counts only when `--version` says dcmtk."""
    candidates = [f"/usr/bin/{name}", f"/usr/local/bin/{name}"]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        candidates.append(os.path.join(entry, name))
    for path in candidates:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return path
    return None


def run_tool(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def terminate(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exited(pid: int) -> bool:
    """True when `pid` (a child of this process) has exited; it is left unreaped."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for `pid` to exit, leaving it unreaped (a zombie holds its group id)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.05)
    return False


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc (Linux)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return sorted(members)


def _clean_env() -> dict[str, str]:
    """This process's environment without PACS_* settings: `pacs up` gets only what a test asks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class PacsProcess:
    """`pacs up` on a data dir and two ports, its output captured into `log_path`."""

    data_dir: Path
    log_path: Path
    dimse_port: int = 0
    http_port: int = 0
    workers: int = 2
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    returncode: int | None = None
    #: Pids still in the supervisor's process group when it exited (a clean stop leaves none).
    stragglers: list[int] = field(default_factory=list)
    interrupted: bool = False

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicomweb"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, *, attempts: int = 3) -> PacsProcess:
        """Start and wait for "pacs: ready"; new free ports are tried when a port was taken."""
        for attempt in range(attempts):
            if not self.dimse_port or attempt:
                self.dimse_port = free_port()
            if not self.http_port or attempt:
                self.http_port = free_port()
            if self._start_once():
                return self
            if "Address already in use" not in self.log_text():
                break
        raise AssertionError(f"pacs up did not become ready:\n{self.log_text()[-6000:]}")

    def _start_once(self) -> bool:
        cmd = [
            str(Path(sys.executable).with_name("pacs")), "up", "--data-dir", str(self.data_dir),
            "--host", "127.0.0.1", "--dimse-port", str(self.dimse_port),
            "--http-port", str(self.http_port), "--gateway-workers", str(self.workers),
        ]
        if not Path(cmd[0]).exists():
            cmd[:1] = [sys.executable, "-m", "pacs.cli.main"]
        with open(self.log_path, "ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            # A session of its own: a last-resort kill reaches the gateway and web children too.
            self.interrupted = False
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**_clean_env(), **(self.env or {})},
                                         start_new_session=True)
        start = len(self.log_text())
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_text()[start:]
            if "pacs: ready" in text:
                return True
            if _exited(self.proc.pid):
                self.stop()
                return False
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Ctrl-C (SIGINT) and wait; kill the process group if it does not exit in time.

        The supervisor is not reaped before its group is checked: while it is a zombie its pid (the
        group id) cannot be reused, so a last-resort kill reaches only what this test started."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.returncode
        if not _exited(proc.pid):
            if not self.interrupted:
                proc.send_signal(signal.SIGINT)
            if not _wait_unreaped(proc.pid, timeout):
                self._note("pacs up did not stop after SIGINT: killed")
                _killpg(proc.pid)
        self.stragglers = [p for p in _group_members(proc.pid) if p != proc.pid]
        if self.stragglers:
            self._note(f"processes left in pacs up's group after it exited: {self.stragglers}: killed")
            _killpg(proc.pid)
        proc.wait(30)
        self.returncode = proc.returncode
        return self.returncode

    def interrupt(self) -> None:
        """Ctrl-C without waiting (`stop()` then waits, without a second SIGINT)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.interrupted = True

    def _note(self, text: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n[test] {text}\n".encode())

    @property
    def running(self) -> bool:
        return self.proc is not None and not _exited(self.proc.pid)


# -- DICOMweb --------------------------------------------------------------------------------------

class Qido:
    def __init__(self, pacs: PacsProcess) -> None:
        self.client = httpx.Client(base_url=pacs.dicomweb_url, timeout=30.0)

    def close(self) -> None:
        self.client.close()

    def get(self, path: str, params: Any = None) -> list[dict[str, Any]]:
        r = self.client.get(path, params=params)
        if r.status_code == 204:
            return []
        assert r.status_code == 200, f"GET {r.url} -> {r.status_code}: {r.text[:500]}"
        assert r.headers["content-type"].startswith("application/dicom+json"), r.headers
        result = r.json()
        assert isinstance(result, list)
        return result

    def studies(self, params: Any = None) -> list[dict[str, Any]]:
        return self.get("/studies", params)

    def series(self, study: str, params: Any = None) -> list[dict[str, Any]]:
        return self.get(f"/studies/{study}/series", params)

    def instances(self, study: str, series: str | None = None, params: Any = None) -> list[dict[str, Any]]:
        path = f"/studies/{study}/series/{series}/instances" if series else f"/studies/{study}/instances"
        return self.get(path, params)


def value(item: dict[str, Any], tag: str) -> Any:
    """The single value of `tag` in a DICOM JSON object (PN as its Alphabetic string)."""
    values = item.get(tag, {}).get("Value", [])
    if not values:
        return None
    v = values[0]
    return v.get("Alphabetic") if isinstance(v, dict) else v


def values(item: dict[str, Any], tag: str) -> list[Any]:
    return list(item.get(tag, {}).get("Value", []))


def uids(items: Iterable[dict[str, Any]], tag: str) -> set[str]:
    return {value(i, tag) for i in items}


def parse_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a multipart/related body (headers dropped)."""
    params = dict(
        p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p
    )
    boundary = params["boundary"].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        assert b"content-type: application/dicom" in head.lower(), head
        assert payload.endswith(b"\r\n"), "a part must end with CRLF before the boundary"
        parts.append(payload[:-2])
    return parts


# -- Part 10 ----------------------------------------------------------------------------------------

def dataset_offset(part10: bytes) -> int:
    """Where the data set starts in a Part 10 object: after the file meta group (its length is
    (0002,0000), the first element, explicit VR little endian)."""
    assert part10[128:132] == b"DICM", "not a Part 10 object"
    group, elem = struct.unpack_from("<HH", part10, 132)
    assert (group, elem) == (0x0002, 0x0000), "the file meta must start with its group length"
    (length,) = struct.unpack_from("<I", part10, 140)
    return 144 + length


def dataset_bytes(part10: bytes) -> bytes:
    return part10[dataset_offset(part10):]


def snapshot(root: Path) -> set[str]:
    """Every stored file under `root`: originals and replaced versions. Not the SQLite databases
    (which change on any query), nor derived data (metadata written when an ingest burst ends,
    rebuilt from the originals whenever missing)."""
    skip = (".db", ".db-wal", ".db-shm", ".db-journal")
    if not root.exists():
        return set()
    return {key for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(skip)
            and "/derived/" not in (key := p.relative_to(root).as_posix())}


# -- expectations from the generated set ------------------------------------------------------------

def study_summary(items: Iterable[dict[str, Any]]) -> dict[str, tuple[int | None, int | None, list[str]]]:
    """StudyInstanceUID → (NumberOfStudyRelatedSeries, NumberOfStudyRelatedInstances, modalities)."""
    return {value(i, STUDY_UID): (value(i, N_STUDY_SERIES), value(i, N_STUDY_INSTANCES),
                                  sorted(values(i, MODALITIES_IN_STUDY)))
            for i in items}


def expected_summary(studies: Iterable[Study]) -> dict[str, tuple[int | None, int | None, list[str]]]:
    return {s.uid: (len(s.series), len(s.instances), s.modalities) for s in studies}


def wait_indexed(qido: Qido, studies: Iterable[Study], *, timeout: float = INDEX_TIMEOUT) -> list[dict]:
    """Poll QIDO until every study of `studies` is listed with its exact aggregates."""
    expected = expected_summary(studies)

    def probe() -> dict[str, tuple[int | None, int | None, list[str]]]:
        return study_summary(qido.studies({"StudyInstanceUID": ",".join(expected)}))

    wait_until(probe, lambda found: found == expected, timeout=timeout,
               what=f"QIDO to list {len(expected)} studies with exact aggregates {expected}")
    return qido.studies({"StudyInstanceUID": ",".join(expected)})


def instance_path(objects_dir: Path, inst: Instance, partition: str = "default") -> Path:
    return (objects_dir / partition / "studies" / inst.study_uid / "series" / inst.series_uid
            / "instances" / f"{inst.sop_uid}.dcm")


@dataclass
class Moved:
    """A dcmtk movescu/getscu run (with -d): its final status and sub-operation counts."""

    run: subprocess.CompletedProcess[str]

    @property
    def log(self) -> str:
        return f"rc={self.run.returncode}\n{self.run.stdout}\n{self.run.stderr}"

    def last(self, pattern: str) -> str:
        found = re.findall(pattern, self.log, re.IGNORECASE)
        assert found, self.log[-3000:]
        return str(found[-1])

    @property
    def status(self) -> int:
        return int(self.last(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})"), 16)

    def count(self, what: str) -> int:
        return int(self.last(rf"{what} Sub-?operations\s*:\s*(\d+)"))
