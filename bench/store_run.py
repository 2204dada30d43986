"""One timed C-STORE ingest run: dcmtk storescu over N parallel associations, with server RSS/CPU sampling.

Usage: python bench/store_run.py --data DIR --port P --aec AE --par N --server-pid PID --server NAME
                                 [--host 127.0.0.1] [--aet BENCHSCU] [--timeout 60] [--count-cmd SHELL]
                                 [--count-wait S] [--pass K] [--results FILE.jsonl]

Splits the *.dcm files under DIR (sorted) round-robin into N lists and starts one `storescu` process per
list at once (one association each; TCP_NODELAY=1 in their environment: Debian's dcmtk leaves Nagle's
algorithm on otherwise). The run's time is from the first start to the last exit. While it runs, the
server's process tree (PID and its descendants) is sampled every 0.1 s: peak RSS (sum over the tree, KiB)
and CPU seconds. Afterwards --count-cmd (optional, run with bash) must print the number of instances the
server holds; it is re-run for up to --count-wait s while lower (asynchronous indexing). A number different
from the file count fails the run; anything else (empty output) records the count as unknown.
Prints one line and appends one JSON object to --results: instances/s, MB/s (10^6 bytes of file size),
peak and start RSS, server / client / whole-box CPU seconds and "other" (box - server - clients, in
cores: load from anything else on the machine, which makes a run unreliable). Exit status 0 if the run
succeeded (every storescu exited 0 within --timeout and the count, if known, matched), 3 if it timed out,
else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def box_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK


def proc_stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own CPU s, reaped children's CPU s) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # rest[0] is the state (field 3); utime, stime, cutime, cstime are fields 14-17
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, (int(rest[13]) + int(rest[14])) / CLK_TCK


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def tree(root: int) -> list[int]:
    """root and all its live descendants."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                parent[int(name)] = st[0]
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in parent:
            out.append(p)
            todo.extend(children.get(p, []))
    return out


class ServerSampler(threading.Thread):
    """Samples RSS and CPU of a process tree until stopped."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.stop_event = threading.Event()
        self.peak_kib = 0
        self.seen: dict[int, float] = {}  # descendant pid -> last own CPU s
        st = proc_stat(root)
        self.root_cpu0 = (st[1] + st[2]) if st else 0.0
        for pid in tree(root):
            s = proc_stat(pid)
            if pid != root and s is not None:
                self.seen[pid] = s[1]
        self.desc_cpu0 = sum(self.seen.values())
        self.sample()

    def sample(self) -> None:
        pids = tree(self.root)
        self.peak_kib = max(self.peak_kib, sum(rss_kib(p) for p in pids))
        for pid in pids:
            s = proc_stat(pid)
            if pid != self.root and s is not None:
                self.seen[pid] = s[1]

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def cpu_s(self) -> float:
        """CPU s used by the tree since the start: root incl. reaped children, plus live descendants."""
        self.sample()
        st = proc_stat(self.root)
        root_cpu = (st[1] + st[2]) if st else self.root_cpu0
        live = 0.0
        for pid, last in self.seen.items():
            s = proc_stat(pid)
            if s is not None and s[0] != 1:  # not yet reaped by its parent: not in any cutime
                live += max(last, s[1])
        return root_cpu - self.root_cpu0 + live - self.desc_cpu0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--aec", required=True)
    ap.add_argument("--aet", default="BENCHSCU")
    ap.add_argument("--par", type=int, default=1)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--server", required=True, help="label of the server in the results")
    ap.add_argument("--pass", dest="pass_no", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--count-cmd", default="")
    ap.add_argument(
        "--count-wait",
        type=float,
        default=0.0,
        help="re-run --count-cmd for up to this many seconds while it shows fewer instances",
    )
    ap.add_argument("--results", default="")
    a = ap.parse_args()

    files = sorted(str(p) for p in Path(a.data).rglob("*.dcm"))
    if not files:
        print(f"no *.dcm under {a.data}", file=sys.stderr)
        return 2
    nbytes = sum(os.path.getsize(f) for f in files)
    chunks = [files[i :: a.par] for i in range(a.par) if files[i :: a.par]]
    env = dict(os.environ, TCP_NODELAY="1")
    cmd = ["storescu", "-q", "-aet", a.aet, "-aec", a.aec, a.host, str(a.port)]

    sampler = ServerSampler(a.server_pid)
    start_rss = sampler.peak_kib
    sampler.start()
    box0 = box_busy_s()
    results: list[tuple[int, float, float]] = [(-1, 0.0, 0.0)] * len(chunks)  # (status, end time, CPU s)
    procs: list[subprocess.Popen[bytes]] = []

    def reap(i: int, pid: int) -> None:
        _, status, ru = os.wait4(pid, 0)
        results[i] = (os.waitstatus_to_exitcode(status), time.monotonic(), ru.ru_utime + ru.ru_stime)

    t0 = time.monotonic()
    waiters = []
    for i, chunk in enumerate(chunks):
        p = subprocess.Popen(cmd + chunk, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        w = threading.Thread(target=reap, args=(i, p.pid), daemon=True)
        w.start()
        waiters.append(w)
    deadline = t0 + a.timeout
    for w in waiters:
        w.join(max(0.0, deadline - time.monotonic()))
    timed_out = any(w.is_alive() for w in waiters)
    if timed_out:
        for p, w in zip(procs, waiters, strict=True):
            if w.is_alive():
                p.send_signal(signal.SIGKILL)
        for w in waiters:
            w.join(5)
    t1 = max(r[1] for r in results) if not timed_out else time.monotonic()
    box = box_busy_s() - box0
    sampler.stop_event.set()
    sampler.join()
    time.sleep(0.3)  # let per-association children (storescp --fork) exit and be reaped
    server_cpu = sampler.cpu_s()
    client_cpu = sum(r[2] for r in results)
    logs = []
    for p in procs:
        out = p.stdout.read().decode(errors="replace").strip() if p.stdout else ""
        if out:
            logs.append(out)

    count: int | None = None
    count_wait = 0.0
    if a.count_cmd:
        c0 = time.monotonic()
        while True:
            res = subprocess.run(["bash", "-c", a.count_cmd], capture_output=True, text=True, timeout=60)
            try:
                count = int(res.stdout.strip())
            except ValueError:
                count = None
            count_wait = time.monotonic() - c0
            if count is None or count >= len(files) or count_wait >= a.count_wait:
                break
            time.sleep(0.2)
    statuses = [r[0] for r in results]
    ok = not timed_out and all(s == 0 for s in statuses) and (count is None or count == len(files))
    secs = t1 - t0
    rec = {
        "server": a.server,
        "par": a.par,
        "pass": a.pass_no,
        "instances": len(files),
        "bytes": nbytes,
        "seconds": round(secs, 4),
        "inst_per_s": round(len(files) / secs, 2),
        "mb_per_s": round(nbytes / secs / 1e6, 2),
        "ok": ok,
        "error": "" if ok else ("timeout" if timed_out else "storescu failed" if any(statuses) else "count"),
        "timed_out": timed_out,
        "storescu_status": statuses,
        "count": count,
        "count_wait_s": round(count_wait, 2),
        "start_rss_kib": start_rss,
        "peak_rss_kib": sampler.peak_kib,
        "server_cpu_s": round(server_cpu, 3),
        "client_cpu_s": round(client_cpu, 3),
        "box_cpu_s": round(box, 3),
        "other_cores": round(max(0.0, box - server_cpu - client_cpu) / secs, 3),
        "client_log": "\n".join(logs)[:2000],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if a.results:
        with open(a.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
    flag = "ok" if ok else f"FAILED (storescu exit {statuses}, timed out {timed_out}, count {count})"
    rate = (
        f"{rec['inst_per_s']:7.1f} inst/s {rec['mb_per_s']:6.1f} MB/s"
        if ok
        else f"{'-':>7} inst/s {'-':>6} MB/s"
    )
    print(
        f"  {a.server:<22} par={a.par} pass={a.pass_no}: {rate}  {secs:6.2f} s  "
        f"peak RSS {sampler.peak_kib / 1024:6.0f} MiB  "
        f"server CPU {server_cpu:5.2f} s  other {rec['other_cores']:.2f} cores  count {count} "
        f"(+{count_wait:.1f} s)  {flag}",
        flush=True,
    )
    if logs and not ok:
        print("    " + "\n    ".join("\n".join(logs).splitlines()[:8]), flush=True)
    return 0 if ok else 3 if timed_out else 1


if __name__ == "__main__":
    sys.exit(main())
