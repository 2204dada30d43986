"""C-MOVE throughput: a 300-instance series moved to dcmtk storescp, our PACS vs Orthanc, same run and data.

Usage (as root: Orthanc 1.10 binds every interface, so the servers run in a private network namespace):

    .venv/bin/python bench/move_run.py [--netns] [--data bench/out/data/ct300] [--runs 5]
        [--servers pacs,orthanc] [--workers 2] [--out bench/out]

  --netns     create a namespace `pacsbench-move-<pid>` with only loopback, re-run this script inside it,
              delete it afterwards (leave it out when the caller already runs in one, e.g. bench/run_dimse.sh)
  --data      the series (bench/gen_data.py: 300 CT 512x512 int16, Explicit VR LE, one study, one series,
              with manifest.json); generated there when missing
  --runs      interleaved passes (each pass moves the series once from every server; the order alternates)
  --servers   which sources: pacs (`PACS_CMD`, default `<repo>/.venv/bin/pacs up`, AE PACS) and orthanc
              (`ORTHANC_BIN`, default /usr/sbin/Orthanc, AE ORTHANC)
  --workers   gateway worker processes of `pacs up`
  --out       where move-<UTC>.md (the table) and move-<UTC>.jsonl (every run) are written

Each source is started once on fresh storage and loaded with the series by dcmtk storescu (then indexed);
the destination is dcmtk storescp (TCP_NODELAY=1, writing files, fresh directory each run), registered with
`pacs nodes add` / Orthanc's DicomModalities. A run is dcmtk `movescu -S` at SERIES level; its wall time
(process start to exit, association included) gives instances/s, checked against the files the destination
wrote. Each run also records the CPU the source used and the CPU the rest of the machine used beside the
source and the destination ("other load", % of one core). Needs dcmtk (storescu, movescu, storescp, echoscu)
and, for orthanc, the Debian package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

B = Path(__file__).resolve().parent
ROOT = B.parent
PY = os.environ.get("PY", str(ROOT / ".venv" / "bin" / "python"))
HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[move {datetime.now():%H:%M:%S}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def machine_ticks() -> int:
    """Busy CPU ticks of the whole machine (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return sum(int(cpu[i]) for i in (1, 2, 3, 6, 7, 8))


def tree_ticks(pid: int) -> int:
    """CPU ticks used so far by a process and its live descendants (utime + stime)."""
    total = 0
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for p in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = p.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        stats[int(p.parent.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(p.parent.name))
    todo = [pid]
    while todo:
        q = todo.pop()
        if q in stats:
            total += int(stats[q][11]) + int(stats[q][12])
        todo += children.get(q, [])
    return total


def wait_for(what: str, probe: Callable[[], object], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"move bench: timed out waiting for {what}")
        time.sleep(0.2)


def echo(aet: str, port: int) -> bool:
    return subprocess.run(["echoscu", "-aec", aet, HOST, str(port)], capture_output=True).returncode == 0


def http_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read() or b"null")


@dataclass
class Server:
    """A C-MOVE source started in its own session; `stop()` ends exactly it (then its process group)."""

    name: str
    aet: str
    port: int
    http: int
    work: Path
    proc: subprocess.Popen[bytes] | None = None
    logfile: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logfile = self.work / f"{self.name}.log"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the session we created


def start_pacs(work: Path, workers: int, dest: tuple[str, int]) -> Server:
    s = Server("pacs", "PACS", free_port(), free_port(), work)
    data = work / "pacs-data"
    cmd = os.environ.get("PACS_CMD", f"{ROOT}/.venv/bin/pacs up").split()
    subprocess.run([PY, "-m", "pacs.cli.main", "nodes", "add", dest[0], HOST, str(dest[1]),
                    "--data-dir", str(data), "--description", "bench destination"], check=True,
                   capture_output=True)
    with open(s.logfile, "wb") as out:
        proc = s.proc = subprocess.Popen(
            [*cmd, "--data-dir", str(data), "--dimse-port", str(s.port), "--http-port", str(s.http),
             "--host", HOST, "--gateway-workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )
    wait_for("pacs up",
             lambda: "pacs: ready" in s.logfile.read_text(errors="replace") or proc.poll() is not None)
    if proc.poll() is not None:
        raise SystemExit(f"move bench: pacs up exited:\n{s.logfile.read_text()[-3000:]}")
    return s


def pacs_count(s: Server, study: str) -> int:
    rows = http_json(f"http://{HOST}:{s.http}/dicomweb/studies?StudyInstanceUID={study}")
    if not isinstance(rows, list) or not rows:
        return 0
    return int(rows[0].get("00201208", {}).get("Value", [0])[0])


def start_orthanc(work: Path, dest: tuple[str, int]) -> Server:
    s = Server("orthanc", "ORTHANC", free_port(), free_port(), work)
    db = work / "orthanc-db"
    db.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench-orthanc", "StorageDirectory": str(db), "IndexDirectory": str(db), "Plugins": [],
        "HttpServerEnabled": True, "HttpPort": s.http, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True, "DicomAet": s.aet, "DicomPort": s.port, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFind": True, "DicomAlwaysAllowMove": True, "SaveJobs": False, "WebDavEnabled": False,
        "OrthancExplorerEnabled": False, "DicomModalities": {dest[0]: [dest[0], HOST, dest[1]]},
    }
    (work / "orthanc.json").write_text(json.dumps(config, indent=1))
    binary = os.environ.get("ORTHANC_BIN", shutil.which("Orthanc") or "/usr/sbin/Orthanc")
    # TCP_NODELAY=1: Debian's Orthanc (dcmtk inside) leaves Nagle on otherwise (~40 ms per C-STORE)
    with open(s.logfile, "wb") as out:
        proc = s.proc = subprocess.Popen([binary, str(work / "orthanc.json")], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "TCP_NODELAY": "1"})
    wait_for("Orthanc", lambda: proc.poll() is not None or echo(s.aet, s.port))
    if proc.poll() is not None:
        raise SystemExit(f"move bench: Orthanc exited:\n{s.logfile.read_text()[-3000:]}")
    return s


def orthanc_count(s: Server, study: str) -> int:
    stats = http_json(f"http://{HOST}:{s.http}/statistics")
    return int(stats["CountInstances"]) if isinstance(stats, dict) else 0


def load(s: Server, files: list[Path], study: str, count: Callable[[Server, str], int], n: int) -> None:
    t0 = time.monotonic()
    run = subprocess.run(["storescu", "-aec", s.aet, HOST, str(s.port), *map(str, files)],
                         capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"})
    if run.returncode != 0:
        raise SystemExit(f"move bench: loading {s.name} failed:\n{run.stdout}\n{run.stderr}")
    wait_for(f"{s.name} to index {n} instances", lambda: count(s, study) >= n, timeout=300)
    log(f"{s.name}: loaded and indexed {n} instances in {time.monotonic() - t0:.1f} s")


def move_once(s: Server, dest: tuple[str, int], dest_dir: Path, uids: tuple[str, str], n: int,
              work: Path) -> dict[str, Any]:
    (dest_aet, dest_port), (study, series) = dest, uids
    assert s.proc is not None
    shutil.rmtree(dest_dir, ignore_errors=True)
    dest_dir.mkdir(parents=True)
    with open(work / "storescp.log", "ab") as out:
        scp = subprocess.Popen(["storescp", "-aet", dest_aet, "-od", str(dest_dir), str(dest_port)],
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "TCP_NODELAY": "1"})
    try:
        wait_for("storescp", lambda: scp.poll() is not None or echo(dest_aet, dest_port), timeout=30)
        args = ["movescu", "-S", "-aec", s.aet, "-aem", dest_aet, "-k", "QueryRetrieveLevel=SERIES",
                "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series}", HOST, str(s.port)]
        m0, s0 = machine_ticks(), tree_ticks(s.proc.pid)
        d0 = tree_ticks(scp.pid)
        t0 = time.perf_counter()
        run = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TCP_NODELAY": "1"},
                             timeout=600)
        seconds = time.perf_counter() - t0
        m1, s1, d1 = machine_ticks(), tree_ticks(s.proc.pid), tree_ticks(scp.pid)
    finally:
        scp.send_signal(signal.SIGTERM)
        try:
            scp.wait(30)
        except subprocess.TimeoutExpired:
            scp.kill()
            scp.wait()
    received = sum(1 for p in dest_dir.iterdir() if p.is_file())
    server_pct = 100 * (s1 - s0) / TICK / seconds
    dest_pct = 100 * (d1 - d0) / TICK / seconds
    machine_pct = 100 * (m1 - m0) / TICK / seconds
    return {
        "server": s.name, "ok": run.returncode == 0 and received == n, "instances": received,
        "seconds": seconds, "inst_per_s": received / seconds, "server_cpu_pct": server_pct,
        "dest_cpu_pct": dest_pct,
        "other_load_pct": max(0.0, machine_pct - server_pct - dest_pct),
        "error": "" if run.returncode == 0 else (run.stderr or run.stdout)[-500:],
    }


def report(runs: list[dict[str, Any]], servers: list[str], header: list[str]) -> str:
    lines = [*header, "", "| source | runs ok | instances/s median (min-max) | s per move | source CPU % | "
             "other load % |", "|---|---|---|---|---|---|"]
    for name in servers:
        ok = [r for r in runs if r["server"] == name and r["ok"]]
        total = sum(1 for r in runs if r["server"] == name)
        if not ok:
            lines.append(f"| {name} | 0/{total} | - | - | - | - |")
            continue
        ips = [float(r["inst_per_s"]) for r in ok]
        secs = statistics.median(float(r["seconds"]) for r in ok)
        cpu = statistics.median(float(r["server_cpu_pct"]) for r in ok)
        other = statistics.median(float(r["other_load_pct"]) for r in ok)
        lines.append(f"| {name} | {len(ok)}/{total} | {statistics.median(ips):.0f} "
                     f"({min(ips):.0f}-{max(ips):.0f}) | {secs:.2f} | {cpu:.0f} | {other:.0f} |")
    return "\n".join(lines) + "\n"


def in_netns(argv: list[str]) -> int:
    ns = f"pacsbench-move-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__,
                               *[a for a in argv if a != "--netns"]]).returncode
    finally:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:  # only what runs in the namespace we made
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--netns", action="store_true")
    ap.add_argument("--data", type=Path, default=B / "out" / "data" / "ct300")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--servers", default="pacs,orthanc")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=B / "out")
    args = ap.parse_args(argv)
    if args.netns:
        return in_netns(argv)
    servers = [s for s in args.servers.split(",") if s]
    if not (args.data / "manifest.json").exists():
        subprocess.run([PY, str(B / "gen_data.py"), "--out", str(args.data)], check=True)
    manifest = json.loads((args.data / "manifest.json").read_text())
    study, series = manifest["study_uid"], manifest["series_uid"]
    files = sorted(args.data.glob("*.dcm"))
    n = len(files)
    for f in files:
        f.read_bytes()  # into the page cache
    work = Path(tempfile.mkdtemp(prefix="move-bench-"))
    dest = ("BENCHDEST", free_port())
    started: dict[str, Server] = {}
    runs: list[dict[str, Any]] = []
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    try:
        for name in servers:
            sw = work / name
            sw.mkdir()
            if name == "pacs":
                started[name] = start_pacs(sw, args.workers, dest)
                load(started[name], files, study, pacs_count, n)
            elif name == "orthanc":
                started[name] = start_orthanc(sw, dest)
                load(started[name], files, study, orthanc_count, n)
            else:
                raise SystemExit(f"move bench: unknown server {name!r}")
        for i in range(args.runs):
            order = servers if i % 2 == 0 else servers[::-1]
            for name in order:
                r = move_once(started[name], dest, work / "dest", (study, series), n, work)
                r["pass"] = i + 1
                runs.append(r)
                log(f"pass {i + 1} {name}: {r['instances']}/{n} in {r['seconds']:.2f} s = "
                    f"{r['inst_per_s']:.0f} inst/s, source CPU {r['server_cpu_pct']:.0f} %, "
                    f"other load {r['other_load_pct']:.0f} %" + ("" if r["ok"] else f" FAILED {r['error']}"))
    finally:
        for s in started.values():
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    ts = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    header = [
        f"# C-MOVE of a {n}-instance series to dcmtk storescp, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- data: {args.data} ({n} instances, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB, "
        "Explicit VR LE)",
        "- client: dcmtk movescu -S, SERIES level; wall time of the movescu process; "
        f"{args.runs} interleaved passes",
        f"- destination: dcmtk storescp writing files, TCP_NODELAY=1; pacs: `pacs up` ({args.workers} "
        f"gateway workers, git {rev}); orthanc: Debian package, TCP_NODELAY=1, destination in "
        "DicomModalities",
        f"- machine: {os.cpu_count()} CPU, load average before {' '.join(load_before)}; other load = CPU "
        "used by neither the source nor the destination (movescu and anything else running), % of one core",
    ]
    table = report(runs, servers, header)
    (args.out / f"move-{ts}.md").write_text(table)
    with open(args.out / f"move-{ts}.jsonl", "w") as f:
        for r in runs:
            f.write(json.dumps(r) + "\n")
    print()
    print(table)
    log(f"wrote {args.out / f'move-{ts}.md'}")
    return 0 if all(any(r["ok"] and r["server"] == s for r in runs) for s in servers) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
