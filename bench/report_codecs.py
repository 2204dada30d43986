"""The Markdown table of bench/codecs_run.py's results (and, when given, the WADO-RS transfer-syntax table).

Usage: python bench/report_codecs.py RESULTS.json [--header HEADER.md] [--wado WADO.md] [--out REPORT.md]
Per syntax: ours (1 process, N processes), the imagecodecs prototype, dcmtk, gdcm: encode and decode MB/s
(uncompressed pixel bytes / wall time of the directory), median and range (min-max) over the runs, the
peers' MB/s with their per-file start-up taken off, the compression ratio and the check; then, per syntax,
ours / the faster peer.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

NAMES = {
    "rle": "RLE Lossless",
    "jpegls": "JPEG-LS Lossless",
    "j2k": "JPEG 2000 Lossless",
    "htj2k": "HTJ2K Lossless",
    "jpeg": "JPEG Baseline 8-bit",
}
TOOL_NAMES = {
    "ours-1": "ours, 1 process",
    "ours-N": "ours, {n} processes",
    "proto-1": "prototype (imagecodecs), 1 process",
    "proto-N": "prototype (imagecodecs), {n} processes",
    "dcmtk": "dcmtk",
    "gdcm": "gdcm `gdcmconv`",
}


def fmt(vals: list[float]) -> str:
    if not vals:
        return "—"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.1f} (1 run)"
    return f"**{med:.1f}** ({min(vals):.1f}–{max(vals):.1f})"


def mbs(rec: dict[str, object], corrected: bool = False) -> float | None:
    if rec.get("status") != "ok":
        return None
    secs = float(rec["seconds"])  # type: ignore[arg-type]
    if corrected:
        st = rec.get("startup_s")
        if st is None:
            return None
        secs -= float(st) * int(rec["files"])  # type: ignore[arg-type]
        if secs < 0.1 * float(rec["seconds"]):  # type: ignore[arg-type]
            return None  # start-up bound: what is left is within the start-up's noise
    return float(rec["bytes"]) / secs / 1e6  # type: ignore[arg-type]


def _corr(v: float) -> str:
    return "" if math.isnan(v) else f" (start-up off {v:.1f})"


def table(data: dict[str, object]) -> str:
    meta: dict[str, object] = data["meta"]  # type: ignore[assignment]
    results: list[dict[str, object]] = data["results"]  # type: ignore[assignment]
    n = meta["procs"]
    lines: list[str] = []
    summary: list[str] = []
    count = meta["count"]
    lay_title = {
        "files": f"{count} files, one file in, one file out (the peers: one process per file)",
        "multiframe": f"one multi-frame file of the same {count} frames (every tool: one process)",
    }
    layouts: list[str] = meta.get("layouts", ["files"])  # type: ignore[assignment,attr-defined]
    syntaxes: list[str] = meta["syntaxes"]  # type: ignore[assignment]
    for layout, syn in ((lay, s) for lay in layouts for s in syntaxes):
        lines.append(f"### {NAMES.get(syn, syn)} — {lay_title.get(layout, layout)}")
        lines.append("")
        lines.append(
            "| tool | encode MB/s | encode MB/s, start-up off | decode MB/s | decode MB/s, start-up off"
            " | ratio | check | runs ok | notes |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|")
        best: dict[str, dict[str, float]] = {}
        for tool in meta["tools"]:  # type: ignore[attr-defined]
            recs = {
                op: [
                    r
                    for r in results
                    if r["syntax"] == syn
                    and r["tool"] == tool
                    and r["op"] == op
                    and r.get("layout", "files") == layout
                ]
                for op in ("encode", "decode")
            }
            cells: list[str] = []
            notes: list[str] = []
            okc = []
            for op in ("encode", "decode"):
                rs = recs[op]
                raw = [v for r in rs if (v := mbs(r)) is not None]
                cor = [v for r in rs if (v := mbs(r, True)) is not None]
                best.setdefault(tool, {})[op] = statistics.median(raw) if raw else math.nan
                best[tool][op + "_c"] = statistics.median(cor) if cor else math.nan
                na = [r for r in rs if r.get("status") == "not available"]
                failed = [r for r in rs if r.get("status") == "failed"]
                if na and not raw:
                    cells += ["not available", "—"]
                    reason = str(na[0].get("reason", ""))
                    if reason and reason not in notes:
                        notes.append(reason)
                else:
                    cells.append(fmt(raw))
                    if tool in ("dcmtk", "gdcm") and layout == "files":
                        cells.append(fmt(cor) if cor else ("start-up bound" if raw else "—"))
                    else:
                        cells.append("—")
                for r in failed:
                    notes.append(f"{op} run {int(r['run']) + 1} failed: {r.get('reason', '')}")
                for r in rs:
                    if r.get("note") and str(r["note"]) not in notes:
                        notes.append(str(r["note"]))
                st = [float(r["startup_s"]) * 1000 for r in rs if r.get("startup_s") is not None]  # type: ignore[arg-type]
                if st:
                    notes.append(
                        f"{op} start-up {statistics.median(st):.0f} ms/file ({min(st):.0f}–{max(st):.0f})"
                    )
                okc.append(f"{len(raw)}/{len(rs)}")
            enc0 = [r for r in recs["encode"] if r.get("ratio")]
            ratio = f"{float(enc0[0]['ratio']):.2f}" if enc0 else "—"  # type: ignore[arg-type]
            check = "—"
            if enc0:
                check = (
                    "exact"
                    if not enc0[0].get("psnr")
                    else f"PSNR {enc0[0]['psnr']} dB, max err {enc0[0]['max_err']}"
                )
            label = TOOL_NAMES.get(tool, tool).format(n=n)
            lines.append(
                f"| {label} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {ratio} | {check} | "
                f"enc {okc[0]}, dec {okc[1]} | {'; '.join(notes)} |"
            )
        lines.append("")
        peers = [
            t for t in ("dcmtk", "gdcm") if t in best and not math.isnan(best[t].get("encode", math.nan))
        ]
        for op in ("encode", "decode"):
            pv = [(best[t][op], t) for t in peers if not math.isnan(best[t].get(op, math.nan))]
            if not pv:
                continue
            top, who = max(pv)
            for ours in ("ours-1", "ours-N", "proto-1"):
                if ours in best and not math.isnan(best[ours].get(op, math.nan)):
                    summary.append(
                        f"| {NAMES.get(syn, syn)} | {layout} | {op} | {TOOL_NAMES[ours].format(n=n)} | "
                        f"{best[ours][op]:.1f} | {who} {top:.1f}{_corr(best[who][op + '_c'])} | "
                        f"{best[ours][op] / top:.2f}× | "
                        f"{'yes' if best[ours][op] >= top else 'no'} |"
                    )
    out = ["## Codecs: MB/s of uncompressed pixels (median, range over runs)", "", *lines]
    if summary:
        out += [
            "### Ours / the faster peer (medians; target: ≥ 1× in one process)",
            "",
            "| syntax | layout | op | ours | MB/s | faster peer (raw) | ours / peer | meets |",
            "|---|---|---|---|---|---|---|---|",
            *summary,
            "",
        ]
    st = meta.get("startup_s") or {}
    if st:
        out.append(
            "Peer start-up per file (median on a 16×16 crop with the same header): "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in sorted(st.items()))
            + "."
        )  # type: ignore[union-attr]
        out.append("")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("results", type=Path)
    p.add_argument("--header", type=Path)
    p.add_argument("--wado", type=Path)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    text = ""
    if a.header and a.header.exists():
        text += a.header.read_text()
    text += table(json.loads(a.results.read_text()))
    if a.wado and a.wado.exists():
        text += "\n" + a.wado.read_text()
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
