"""Markdown table of the C-STORE ingest runs written by store_run.py.

Usage: python bench/report_store.py RESULTS.jsonl [--header FILE] [--ceiling storescp] [--out FILE.md]

One row per (server, associations): successful runs (and failed ones), median and range (min-max) of
instances/s, median MB/s, median as % of the ceiling server's median for the same association count,
peak server RSS (max over the runs; sum over the server's process tree), server RSS at the start of a run,
server CPU per instance (median) and the median (max) "other" load (CPU used by anything but the server and
the clients, in cores: a noisy machine shows here; ~0.05 is the harness's own sampling).
--header prepends a file's text (Markdown) to the output.
Prints the Markdown and writes it to --out if given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def fmt(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--header", default="")
    ap.add_argument("--ceiling", default="storescp")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    runs = [json.loads(line) for line in Path(a.results).read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["server"], r["par"]), []).append(r)
    order = sorted(groups, key=lambda k: (k[1], list(dict.fromkeys(r["server"] for r in runs)).index(k[0])))
    medians = {
        k: statistics.median(r["inst_per_s"] for r in v if r["ok"])
        for k, v in groups.items()
        if any(r["ok"] for r in v)
    }
    lines = []
    if a.header:
        lines.append(Path(a.header).read_text().rstrip() + "\n")
    lines += [
        "| server | assoc. | runs ok | median inst/s | range inst/s | median MB/s | % of "
        f"{a.ceiling} | peak RSS MiB | start RSS MiB | server CPU ms/inst "
        "| other load, cores: median (max) | all queryable after, s: median (max) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for key in order:
        server, par = key
        ok = [r for r in groups[key] if r["ok"]]
        failed = len(groups[key]) - len(ok)
        errors = sorted({r.get("error") or "see log" for r in groups[key] if not r["ok"]})
        runs_txt = f"{len(ok)}" + (f" ({failed} failed: {', '.join(errors)})" if failed else "")
        if not ok:
            lines.append(f"| {server} | {par} | {runs_txt} | - | - | - | - | - | - | - | - | - |")
            continue
        ips = [r["inst_per_s"] for r in ok]
        ceil = medians.get((a.ceiling, par))
        pct = f"{100 * medians[key] / ceil:.0f} %" if ceil else "-"
        cpu_ms = statistics.median(1000 * r["server_cpu_s"] / r["instances"] for r in ok)
        lines.append(
            f"| {server} | {par} | {runs_txt} | {fmt(medians[key])} | {fmt(min(ips))}-{fmt(max(ips))} "
            f"| {statistics.median(r['mb_per_s'] for r in ok):.0f} | {pct} "
            f"| {max(r['peak_rss_kib'] for r in ok) / 1024:.0f} "
            f"| {statistics.median(r['start_rss_kib'] for r in ok) / 1024:.0f} "
            f"| {cpu_ms:.2f} | {statistics.median(r['other_cores'] for r in ok):.2f} "
            f"({max(r['other_cores'] for r in ok):.2f}) "
            f"| {statistics.median(r.get('count_wait_s', 0) for r in ok):.2f} "
            f"({max(r.get('count_wait_s', 0) for r in ok):.2f}) |"
        )
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
