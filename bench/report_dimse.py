"""The Markdown report of bench/run_dimse.sh: C-FIND latency per query, ours against Orthanc, and the C-MOVE
table of bench/move_run.py when it ran.

    report_dimse.py RESULTS.json [--header HEADER.md] [--rss rss.txt] [--move DIR] [--out REPORT.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Issue 5: C-FIND latency at most half of Orthanc's (the rows on one open association).
TARGET = 0.5


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def table(results: dict[str, Any]) -> list[str]:
    names: list[str] = results["servers"]
    ours, peer = names[0], names[1] if len(names) > 1 else None
    head = ["query", "matches"]
    for n in names:
        head += [f"{n} median ms", f"{n} p95 ms"]
    if peer:
        head += [f"{ours} / {peer}", "target", "met"]
    head += ["n", "other load (cores)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for row in results["rows"]:
        cells = [row["name"], str(row["expected"])]
        for n in names:
            v = row["servers"][n]
            cells += [fmt(v["median_ms"]), fmt(v["p95_ms"])]
            for err in v["errors"]:
                notes.append(f"- {n}, {row['name']}: {err}")
        if peer:
            a, b = row["servers"][ours]["median_ms"], row["servers"][peer]["median_ms"]
            ratio = a / b if a is not None and b else None
            target = "(informative)" if row.get("new_association") else f"≤ {TARGET:g}"
            met = ""
            if ratio is not None and not row.get("new_association"):
                met = "yes" if ratio <= TARGET else "**no**"
            cells += [fmt(ratio), target, met]
        cells += ["/".join(str(row["servers"][n]["n"]) for n in names), fmt(row.get("other_load"))]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Errors (first of each):", *notes]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--header", type=Path)
    ap.add_argument("--rss", type=Path)
    ap.add_argument("--move", type=Path, help="where bench/move_run.py wrote move-*.md")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    results = json.loads(a.results.read_text())
    out: list[str] = []
    if a.header and a.header.exists():
        out += [*a.header.read_text().rstrip("\n").splitlines(), ""]
    out += [f"## C-FIND latency (Study Root, STUDY level; {results['n']} queries per server and row)", ""]
    out += [f"Client: {results['client']}. Data: {results['studies']} studies, "
            f"{results['instances']} instances.", ""]
    out += table(results)
    if a.rss and a.rss.exists():
        pairs = (line.split() for line in a.rss.read_text().splitlines() if line.strip())
        rss = ", ".join(f"{name} {mb} MB" for name, mb in pairs)
        out += ["", f"Server RSS after the queries (process tree): {rss}."]
    moves = sorted(a.move.glob("move-*.md")) if a.move and a.move.is_dir() else []
    out += ["", "## C-MOVE (bench/move_run.py)", ""]
    if moves:
        out += moves[-1].read_text().rstrip("\n").splitlines()
    else:
        out += ["Not measured in this run (bench/move_run.py absent, MOVE=0, or it failed: see its log)."]
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
