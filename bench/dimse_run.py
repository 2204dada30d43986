"""C-FIND latency, our PACS vs Orthanc, same data: the client side of bench/run_dimse.sh.

    dimse_run.py wait  --server NAME=HOST:PORT:AET ... --data DIR ... [--timeout 120]
    dimse_run.py bench --server NAME=HOST:PORT:AET@PID ... --data DIR ... --results OUT.json [--n 50]

`wait` polls a Study Root STUDY-level C-FIND on every server until it lists every study of the data
directories (their manifest.json files, or the headers of their files) with exact instance counts.

`bench` measures Study Root STUDY-level C-FIND latency on one open association per server (the SCU is
pynetdicom in this process; the responses are read straight from its DIMSE queue), from sending the
C-FIND-RQ to receiving the final response, every answer received and decoded (lazily, as pydicom does):

- all studies; by PatientID (one patient of the data); by StudyDate range (about half the studies);
- the same "all studies" query with a new association per query (association set-up and release
  included: what a findscu-like client pays).

The client is wire-level (bench/dimse_wire.py: PDUs written and read by hand on a blocking socket, the
matches decoded only after the clock stops), so that the figure is the server's latency plus the
loopback's: a pynetdicom SCU costs about a millisecond of its own per query, as much as a fast server
takes to answer. `DIMSE_CLIENT=event` uses pynetdicom with the project's event-driven reactors
(pacs.dimse.reactor.EventAE), `DIMSE_CLIENT=pynetdicom` pynetdicom's own AE, its DUL thread polling every
0.1 ms when idle (`CLIENT_POLL`). The same client serves both servers.

Every row: one untimed warm-up query per server, then `--n` timed queries per server interleaved
(A B, B A, ...). Each answer is checked (final status Success, the expected number of matches); a
server that fails a row shows its errors and no figure. The return keys are those a worklist asks for
(names, IDs, dates, accession, description, ModalitiesInStudy, study-related series and instance
counts). Per row the "other load" is the CPU (cores) used by neither the client nor the servers'
process trees (servers are identified by their session id, `@PID` of a `setsid` leader).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pacs.dimse.reactor import EventAE
from pydicom.dataset import Dataset
from pynetdicom import AE, _config
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu import box_cpu, own_cpu, session_cpu  # bench/cpu.py, beside this script
from dimse_wire import WireAssociation

_config.LOG_REQUEST_IDENTIFIERS = False  # the client pretty-prints nothing (the same for every server)
_config.LOG_RESPONSE_IDENTIFIERS = False
MODEL = StudyRootQueryRetrieveInformationModelFind
CALLING_AET = "BENCHSCU"
#: How long the client's DUL thread sleeps when idle (pynetdicom: 1 ms, which would add up to a
#: millisecond to sending the request and again to receiving the answers, for every server).
CLIENT_POLL = 0.0001
#: `wire` (default): bench/dimse_wire.py; `event`: pynetdicom with the project's event-driven requestor;
#: `pynetdicom`: pynetdicom's polling one.
CLIENT = os.environ.get("DIMSE_CLIENT", "wire")
RETURN_KEYS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
    "StudyTime", "AccessionNumber", "StudyDescription", "StudyID", "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)


def log(msg: str) -> None:
    print(f"[dimse {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ data
@dataclass(frozen=True, slots=True)
class StudyInfo:
    uid: str
    patient_id: str
    date: str
    instances: int


def studies_of(data_dir: Path) -> list[StudyInfo]:
    """The studies of a generated data directory, from the header of one file per study."""
    per_study: dict[str, list[Any]] = {}
    for path in sorted(data_dir.glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "PatientID",
                                                                          "StudyDate"])
        entry = per_study.setdefault(ds.StudyInstanceUID, [ds.PatientID, ds.StudyDate, 0])
        entry[2] += 1
    return [StudyInfo(uid, pid, date, n) for uid, (pid, date, n) in per_study.items()]


def load_studies(dirs: list[Path]) -> list[StudyInfo]:
    return [s for d in dirs for s in studies_of(d)]


# --------------------------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    host: str
    port: int
    aet: str
    pid: int | None = None
    ae: Any = None
    assoc: Any = None

    def connect(self) -> Any:
        if CLIENT == "wire":
            return WireAssociation(self.host, self.port, self.aet, CALLING_AET, str(MODEL))
        if self.ae is None:
            self.ae = EventAE(ae_title=CALLING_AET) if CLIENT == "event" else AE(ae_title=CALLING_AET)
            self.ae.add_requested_context(MODEL)
            self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 60
        assoc = self.ae.associate(self.host, self.port, ae_title=self.aet)
        if not assoc.is_established:
            raise RuntimeError(f"{self.name}: association refused or aborted")
        # pynetdicom leaves Nagle on: a C-FIND-RQ (command, then identifier) would wait for a delayed ACK
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assoc.dul._run_loop_delay = CLIENT_POLL
        return assoc

    def open(self) -> None:
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = quiet(self.connect())

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            release(self.assoc)
        self.assoc = None
        if self.ae is not None:
            self.ae.shutdown()
            self.ae = None


def parse_servers(specs: list[str]) -> list[Server]:
    out = []
    for spec in specs:
        name, _, rest = spec.partition("=")
        addr, _, pid = rest.partition("@")
        host, port, aet = addr.split(":")
        out.append(Server(name, host, int(port), aet, int(pid) if pid else None))
    return out


def quiet(assoc: Any) -> Any:
    """Stop the association's own reactor from taking DIMSE messages: `find` reads the responses
    itself. (Its pause handshake with `send_c_find` races when the reactor is woken by every
    message, as the event-driven one is: a response could be taken by the reactor and dropped.)"""
    if isinstance(assoc, WireAssociation):
        return assoc
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 5
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)  # an iteration that passed the checkpoint before it closed has ended by now
    if assoc.is_established and not assoc._is_paused:
        raise RuntimeError("the association's reactor did not pause")
    return assoc


def release(assoc: Any) -> None:
    if isinstance(assoc, WireAssociation):
        assoc.release()
        return
    assoc._reactor_checkpoint.set()
    assoc.release()


_MSG_ID = [0]


def prepared(assoc: Any, query: Dataset) -> Dataset | bytes:
    """The query as `find` sends it: encoded already for the wire client."""
    return assoc.encode(query) if isinstance(assoc, WireAssociation) else query


def datasets(assoc: Any, matches: list[Any]) -> list[Dataset]:
    return [assoc.decode(m) for m in matches] if isinstance(assoc, WireAssociation) else matches


def find(assoc: Any, query: Dataset | bytes) -> tuple[int, list[Any]]:
    """One C-FIND on an open, quieted association: the final status and the matches (decoded lazily;
    as received with the wire client: `datasets` decodes them)."""
    if isinstance(assoc, WireAssociation):
        assert isinstance(query, bytes)
        return assoc.find(query)
    assert isinstance(query, Dataset)
    cx = assoc.accepted_contexts[0]
    ts = cx.transfer_syntax[0]
    raw = encode(query, ts.is_implicit_VR, ts.is_little_endian)
    assert raw is not None
    _MSG_ID[0] = _MSG_ID[0] % 65535 + 1
    req = C_FIND()
    req.MessageID, req.AffectedSOPClassUID, req.Priority = _MSG_ID[0], MODEL, 2
    req.Identifier = BytesIO(raw)
    assoc.dimse.send_msg(req, cx.context_id)
    matches: list[Dataset] = []
    while True:
        _, rsp = assoc.dimse.get_msg(block=True)
        if rsp is None or not isinstance(rsp, C_FIND):
            raise RuntimeError(f"no C-FIND response (association aborted or timed out): {rsp!r}")
        if rsp.MessageIDBeingRespondedTo != _MSG_ID[0]:
            raise RuntimeError(f"response to message {rsp.MessageIDBeingRespondedTo}, not {_MSG_ID[0]}")
        if rsp.Status in (0xFF00, 0xFF01):
            if rsp.Identifier is not None:
                matches.append(decode(rsp.Identifier, ts.is_implicit_VR, ts.is_little_endian))
        else:
            return int(rsp.Status or 0), matches


def study_query(**match: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for key in RETURN_KEYS:
        setattr(ds, key, "")
    for key, value in match.items():
        setattr(ds, key, value)
    return ds


# ---------------------------------------------------------------------------------------- wait
def wait(a: argparse.Namespace) -> int:
    studies = load_studies(a.data)
    expected = {s.uid: s.instances for s in studies}
    deadline = time.monotonic() + a.timeout
    for server in parse_servers(a.server):
        last: Any = None
        while True:
            try:
                assoc = quiet(server.connect())
                try:
                    final, raw = find(assoc, prepared(assoc, study_query()))
                    matches = datasets(assoc, raw)
                finally:
                    release(assoc)
                got = {str(m.StudyInstanceUID): int(m.get("NumberOfStudyRelatedInstances") or 0)
                       for m in matches}
                if final == 0 and all(got.get(uid) == n for uid, n in expected.items()):
                    log(f"{server.name}: {len(expected)} studies, {sum(expected.values())} instances listed")
                    break
                last = {"status": hex(final), "studies": len(got), "instances": sum(got.values())}
            except Exception as exc:  # the server may still be indexing or starting
                last = repr(exc)
            if time.monotonic() > deadline:
                log(f"!! {server.name}: not every instance listed after {a.timeout:.0f}s; last: {last}")
                server.close()
                return 1
            time.sleep(0.5)
        server.close()
    return 0


# --------------------------------------------------------------------------------------- bench
@dataclass
class Row:
    name: str
    expected: int
    query: Dataset
    new_association: bool = False
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


def one(server: Server, row: Row) -> tuple[float, str | None]:
    """One timed query (ms) and what was wrong with its answer, if anything."""
    if row.new_association:  # association set-up, query and release; not the client's `quiet`
        t0 = time.perf_counter()
        assoc = server.connect()
        setup = time.perf_counter() - t0
        quiet(assoc)
        query = prepared(assoc, row.query)
        t0 = time.perf_counter()
        try:
            final, matches = find(assoc, query)
        finally:
            release(assoc)
        ms = (setup + time.perf_counter() - t0) * 1000
    else:
        server.open()
        query = prepared(server.assoc, row.query)
        t0 = time.perf_counter()
        final, matches = find(server.assoc, query)
        ms = (time.perf_counter() - t0) * 1000
    if final != 0:
        return ms, f"final status 0x{final:04X}"
    if len(matches) != row.expected:
        return ms, f"{len(matches)} matches, expected {row.expected}"
    return ms, None


def run_row(servers: list[Server], row: Row, n: int, cap: float) -> dict[str, Any]:
    for s in servers:
        row.samples[s.name], row.errors[s.name] = [], []
        try:
            _, err = one(s, row)  # warm-up, untimed
            if err:
                row.errors[s.name].append(f"warm-up: {err}")
        except Exception as exc:
            row.errors[s.name].append(f"warm-up: {exc!r}")
    live = [s for s in servers if not row.errors[s.name]]
    spent = {s.name: 0.0 for s in servers}
    c0, box0, own0 = {s.name: session_cpu(s.pid) for s in servers}, box_cpu(), own_cpu()
    w0 = time.monotonic()
    for i in range(n):
        order = live if i % 2 == 0 else list(reversed(live))
        for s in order:
            if row.errors[s.name] or spent[s.name] > cap:
                continue
            try:
                ms, err = one(s, row)
            except Exception as exc:
                ms, err = 0.0, repr(exc)
                s.assoc = None
            spent[s.name] += ms / 1000
            if err:
                row.errors[s.name].append(err)
            else:
                row.samples[s.name].append(ms)
    wall = time.monotonic() - w0
    servers_cpu = sum(session_cpu(s.pid) - c0[s.name] for s in servers)
    other = (box_cpu() - box0) - servers_cpu - (own_cpu() - own0)
    result: dict[str, Any] = {
        "name": row.name, "expected": row.expected, "new_association": row.new_association,
        "other_load": round(max(other, 0.0) / wall, 2) if wall > 0 else None, "servers": {},
    }
    for s in servers:
        vals = sorted(row.samples[s.name])
        result["servers"][s.name] = {
            "n": len(vals),
            "median_ms": round(statistics.median(vals), 3) if vals else None,
            "p95_ms": round(vals[min(len(vals) - 1, int(0.95 * len(vals)))], 3) if vals else None,
            "min_ms": round(vals[0], 3) if vals else None,
            "errors": row.errors[s.name][:5],
            "samples_ms": [round(v, 3) for v in row.samples[s.name]],
        }
    return result


def pick_rows(studies: list[StudyInfo]) -> list[Row]:
    by_patient: dict[str, int] = {}
    for s in studies:
        by_patient[s.patient_id] = by_patient.get(s.patient_id, 0) + 1
    patient = max(sorted(by_patient), key=lambda p: by_patient[p])  # a patient with the most studies
    dates = sorted(s.date for s in studies)
    lo, hi = dates[0], dates[len(dates) // 2]  # about half the studies
    in_range = sum(1 for s in studies if lo <= s.date <= hi)
    return [
        Row("all studies", len(studies), study_query()),
        Row(f"PatientID={patient}", by_patient[patient], study_query(PatientID=patient)),
        Row(f"StudyDate={lo}-{hi}", in_range, study_query(StudyDate=f"{lo}-{hi}")),
        Row("all studies, new association per query", len(studies), study_query(), new_association=True),
    ]


def bench(a: argparse.Namespace) -> int:
    servers = parse_servers(a.server)
    studies = load_studies(a.data)
    rows = pick_rows(studies)
    results: dict[str, Any] = {
        "client": ("wire-level SCU (bench/dimse_wire.py)" if CLIENT == "wire" else
                   f"pynetdicom {__import__('pynetdicom').__version__} SCU ({CLIENT} reactor)")
                  + " in the bench process, one association per server",
        "n": a.n, "studies": len(studies), "instances": sum(s.instances for s in studies),
        "servers": [s.name for s in servers], "rows": [],
    }
    try:
        for row in rows:
            log(f"measuring: {row.name} ({row.expected} matches)")
            results["rows"].append(run_row(servers, row, a.n, a.cap_seconds))
    finally:
        for s in servers:
            s.close()
    a.results.write_text(json.dumps(results, indent=1) + "\n")
    bad = [(r["name"], name) for r in results["rows"] for name, v in r["servers"].items() if not v["n"]]
    for row_name, name in bad:
        log(f"!! {name}: no valid answer for '{row_name}'")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--server", action="append", required=True)
    w.add_argument("--data", type=Path, action="append", required=True)
    w.add_argument("--timeout", type=float, default=120.0)
    b = sub.add_parser("bench")
    b.add_argument("--server", action="append", required=True)
    b.add_argument("--data", type=Path, action="append", required=True)
    b.add_argument("--results", type=Path, required=True)
    b.add_argument("--n", type=int, default=50)
    b.add_argument("--cap-seconds", type=float, default=30.0)
    a = ap.parse_args()
    commands: dict[str, Callable[[argparse.Namespace], int]] = {"wait": wait, "bench": bench}
    return commands[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
