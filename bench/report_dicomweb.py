"""Markdown table of a bench/dicomweb_run.py results file (what `bash bench/run_dicomweb.sh` prints).

Usage: python bench/report_dicomweb.py RESULTS.json [--header HEADER.md] [--rss rss.txt] [--out REPORT.md]

One row per request: ours (the first server) and the peer (the second): median and p95 latency in ms, or for
the series retrieve and STOW-RS median MB/s and the slowest request's MB/s; the ratio ours/peer (latency
rows: lower is better; MB/s rows: higher is better); issue 4's target and whether the median meets it; the
other load on the machine during the measurement (cores used by neither client nor servers). A server that
answered the measurement with an error shows n/a (the error is listed under the table).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LABELS = {
    "qido_studies_all": "QIDO studies, all ({n_studies})",
    "qido_studies_patientid": "QIDO studies, PatientID={patient_id}",
    "qido_studies_daterange": "QIDO studies, StudyDate={date_range}",
    "qido_instances_300": "QIDO instances of the 300-instance series",
    "metadata_study": "study metadata (300 instances)",
    "metadata_series": "series metadata (300 instances)",
    "frame_identity": "frame 1 (512x512x16), Accept-Encoding: identity",
    "frame_gzip": "frame 1 (512x512x16), Accept-Encoding: gzip",
    "thumbnail": "thumbnail",
    "retrieve_series": "retrieve series, multipart ({series_mb} MB), MB/s",
    "stow_50": "STOW-RS, 50 instances in one request ({stow_mb} MB), MB/s",
}
# (kind of target, factor): latency ratio <= factor; "frame": ours <= the peer's identity median; "mbps": >=
TARGETS = {
    "qido_studies_all": ("ratio", 0.5),
    "qido_studies_patientid": ("ratio", 0.5),
    "qido_studies_daterange": ("ratio", 0.5),
    "qido_instances_300": ("ratio", 0.1),
    "metadata_study": ("ratio", 0.1),
    "metadata_series": ("ratio", 0.1),
    "frame_identity": ("frame", None),
    "frame_gzip": ("frame", None),
    "retrieve_series": ("mbps", None),
    "stow_50": ("mbps", None),
}


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f}{unit}" if x >= 100 else f"{x:.1f}{unit}" if x >= 10 else f"{x:.2f}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--header", default="")
    ap.add_argument("--rss", default="")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    res = json.loads(Path(a.results).read_text())
    names = res["servers"]
    ours, peer = names[0], names[1] if len(names) > 1 else None
    q = res["query"]
    ctx = {
        "n_studies": q.get("n_studies", "?"),
        "patient_id": q["patient_id"],
        "date_range": q["date_range"],
        "series_mb": round(q["series_bytes"] / 1e6),
        "stow_mb": round(q["stow_bytes"] / 1e6),
    }
    by = {m["name"]: m for m in res["measurements"]}
    peer_frame = by.get("frame_identity", {}).get("servers", {}).get(peer, {}).get("median_ms")

    lines = []
    if a.header and Path(a.header).exists():
        lines.append(Path(a.header).read_text().rstrip("\n"))
        lines.append(
            f"- {res['n']} requests per latency row ({res['n_big']} series retrieves, {res['n_stow']} STOW"
            f" POSTs), after one warm-up each; a server taking over {res['cap_seconds']:.0f} s for a row"
            f" stops early (n below). Measuring took {res.get('seconds', '?')} s"
        )
        lines.append("")
    head = f"| request | {ours} median | {ours} p95 |"
    if peer:
        head += f" {peer} median | {peer} p95 | {ours} / {peer} | target | met |"
    head += " n | other load, cores |"
    lines += [head, "|---" + "|--:" * (head.count("|") - 2) + "|"]
    errors, na = [], []
    for m in res["measurements"]:
        name, kind = m["name"], m["kind"]
        label = LABELS.get(name, name).format(**ctx)
        cells, vals = [], {}
        for s in [ours] + ([peer] if peer else []):
            r = m["servers"].get(s, {})
            if "error" in r:
                errors.append(f"{s}, {name}: {r['error']}")
                na.append(f"{s}: {name}")
                cells += ["n/a", "n/a"]
                vals[s] = None
            elif kind == "throughput":
                cells += [fmt(r["median_MBps"], " MB/s"), fmt(r["min_MBps"], " MB/s") + " (min)"]
                vals[s] = r["median_MBps"]
            else:
                enc = "" if r.get("encoding", "identity") == "identity" else f" ({r['encoding']})"
                cells += [fmt(r["median_ms"], " ms") + enc, fmt(r["p95_ms"], " ms")]
                vals[s] = r["median_ms"]
        row = f"| {label} | " + " | ".join(cells) + " |"
        if peer:
            o, p = vals[ours], vals[peer]
            ratio = f"{o / p:.2f}" if o is not None and p else "n/a"
            tkind, factor = TARGETS.get(name, (None, None))
            met = "n/a"
            if tkind == "ratio":
                target = f"≤ {'½' if factor == 0.5 else '⅒'}"
                if o is not None and p:
                    met = "yes" if o <= factor * p else "no"
            elif tkind == "frame":
                target = f"≤ {peer} identity ({fmt(peer_frame, ' ms')})"
                if o is not None and peer_frame:
                    met = "yes" if o <= peer_frame else "no"
            elif tkind == "mbps":
                target = f"≥ {peer}"
                if o is not None and p:
                    met = "yes" if o >= p else "no"
            else:
                target, met = "—", "—"
            row += f" {ratio} | {target} | {met} |"
        n = "/".join(str(m["servers"].get(s, {}).get("n", 0)) for s in [ours] + ([peer] if peer else []))
        took = any(m["servers"].get(s, {}).get("n") for s in names)
        row += f" {n} | {m['load']['other_cores']:.2f} |" if took else f" {n} | — |"
        lines.append(row)
    if a.rss and Path(a.rss).exists():
        pairs = [x.split() for x in Path(a.rss).read_text().splitlines() if x.strip()]
        rss = ", ".join(f"{name} {mib} MiB" for name, mib in pairs)
        lines += ["", f"Server RSS after the run (process tree): {rss}."]
    if errors:
        lines += ["", "n/a (the server answered an error or a malformed answer):", ""]
        lines += [f"- {e}" for e in errors]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
