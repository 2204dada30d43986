"""WADO-RS in a transfer syntax that is not stored, ours beside Orthanc (bench/run_wado_syntax.sh).

Usage:
  python bench/wado_syntax_run.py bench --server NAME=URL[@PID] [...] --ct300 DIR --frames DIR
         --results OUT.json --pass N [--syntaxes jpegls,htj2k] [--cap-seconds 60]
      one pass against servers started fresh (nothing transcoded or cached yet), for each syntax:
      - frames: frame 1 of each instance of the --frames series (50 instances, not the --ct300 series), one
        request per instance, "first" (each instance's first request in that syntax: transcoding) then
        "cached" (the same 50 again), interleaved request by request between the servers (A B, B A, ...);
        Accept: multipart/related; type="image/jls" (or "image/jphc"); transfer-syntax=<UID>. Latency ms.
      - series: the --ct300 series (300 instances) retrieved once ("first") and again ("cached") from each
        server (order alternating), Accept: multipart/related; type="application/dicom"; transfer-syntax=UID;
        MB/s of the answer's bytes and of the stored (uncompressed) bytes, seconds.
      and, for scale, the series as stored (transfer-syntax=*) once per server.
      Every answer is checked: status 200, multipart, the part count (1 frame / 300 instances), the frame's
      codestream marker (JPEG-LS SOI+SOF55, J2K SOC+SIZ) or each part's Transfer Syntax UID in its file meta
      (the first and last part parsed). An answer that fails is recorded with status, content type and the
      first 300 characters of the body (for a 406: the server's reason), and that server's remaining requests
      of that row are skipped (n/a): the run goes on.
  python bench/wado_syntax_run.py report RESULTS.json [...] [--header H.md] [--out OUT.md]
      the Markdown table of one or more passes (medians over the passes' samples, ranges).
Standard library only for the HTTP side; pydicom for the part checks.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import sys
import time
import urllib.parse
from pathlib import Path

SYNTAX = {
    "jpegls": ("1.2.840.10008.1.2.4.80", "image/jls", "JPEG-LS Lossless"),
    "htj2k": ("1.2.840.10008.1.2.4.201", "image/jphc", "HTJ2K Lossless"),
    "j2k": ("1.2.840.10008.1.2.4.90", "image/jp2", "JPEG 2000 Lossless"),
    "rle": ("1.2.840.10008.1.2.5", "image/dicom-rle", "RLE Lossless"),
}
PROBE = (
    ("RLE Lossless", "1.2.840.10008.1.2.5"),
    ("JPEG Lossless SV1", "1.2.840.10008.1.2.4.70"),
    ("JPEG-LS Lossless", "1.2.840.10008.1.2.4.80"),
    ("JPEG-LS Near-Lossless", "1.2.840.10008.1.2.4.81"),
    ("JPEG 2000 Lossless", "1.2.840.10008.1.2.4.90"),
    ("JPEG 2000", "1.2.840.10008.1.2.4.91"),
    ("HTJ2K Lossless", "1.2.840.10008.1.2.4.201"),
    ("HTJ2K Lossless RPCL", "1.2.840.10008.1.2.4.202"),
    ("HTJ2K", "1.2.840.10008.1.2.4.203"),
    ("JPEG Baseline 8-bit (of 12-bit CT)", "1.2.840.10008.1.2.4.50"),
    ("JPEG Extended 12-bit", "1.2.840.10008.1.2.4.51"),
    ("Deflated Explicit VR LE", "1.2.840.10008.1.2.1.99"),
    ("Implicit VR LE", "1.2.840.10008.1.2"),
)
MARKERS = {
    "jpegls": b"\xff\xd8\xff\xf7",  # SOI, SOF55
    "htj2k": b"\xff\x4f\xff\x51",  # SOC, SIZ
    "j2k": b"\xff\x4f\xff\x51",
}


class Server:
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.root = u.hostname or "127.0.0.1", u.port or 80, u.path.rstrip("/")
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, accept: str, timeout: float = 300) -> tuple[int, dict[str, str], bytes, float]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            try:
                t0 = time.perf_counter()
                self.conn.request(
                    "GET", self.root + path, headers={"Accept": accept, "Accept-Encoding": "identity"}
                )
                r = self.conn.getresponse()
                body = r.read()
                dt = time.perf_counter() - t0
                headers = {k.lower(): v for k, v in r.getheaders()}
                if headers.get("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return r.status, headers, body, dt
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def parts(headers: dict[str, str], body: bytes) -> list[tuple[dict[str, str], bytes]]:
    ctype = headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/related"):
        raise ValueError(f"not multipart: {ctype!r}")
    boundary = None
    for f in ctype.split(";")[1:]:
        k, _, v = f.strip().partition("=")
        if k.lower() == "boundary":
            boundary = v.strip('"')
    if not boundary:
        raise ValueError(f"no boundary in {ctype!r}")
    delim = b"--" + boundary.encode()
    out = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        hdrs = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
        if content.endswith(b"\r\n"):
            content = content[:-2]
        out.append((hdrs, content))
    return out


def check_frame(syn: str, headers: dict[str, str], body: bytes) -> None:
    ps = parts(headers, body)
    if len(ps) != 1:
        raise ValueError(f"{len(ps)} parts, expected 1")
    h, content = ps[0]
    _uid, media, _ = SYNTAX[syn]
    ct = h.get("content-type", "")
    if not ct.lower().startswith(media):
        raise ValueError(f"part Content-Type {ct!r}, expected {media}")
    marker = MARKERS.get(syn)
    if marker and not content.startswith(marker):
        raise ValueError(f"part does not start with the {SYNTAX[syn][2]} markers: {content[:8].hex()}")


def part_syntax(content: bytes) -> str:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True)
    return str(ds.file_meta.TransferSyntaxUID)


def check_series(syn: str | None, headers: dict[str, str], body: bytes, count: int) -> None:
    ps = parts(headers, body)
    if len(ps) != count:
        raise ValueError(f"{len(ps)} parts, expected {count}")
    if syn is None:
        return
    for _, content in (ps[0], ps[-1]):
        ts = part_syntax(content)
        if ts != SYNTAX[syn][0]:
            raise ValueError(f"a part is in {ts}, not the asked {SYNTAX[syn][0]}")


def sop_uids(d: Path) -> list[str]:
    import pydicom

    return [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sorted(d.glob("*.dcm"))]


def failure(status: int, headers: dict[str, str], body: bytes, why: str) -> dict[str, object]:
    return {
        "status": status,
        "content_type": headers.get("content-type", ""),
        "why": why,
        "body": body[:300].decode("utf-8", "replace"),
    }


def bench(a: argparse.Namespace) -> int:
    servers = []
    for spec in a.server:
        name, _, rest = spec.partition("=")
        servers.append(Server(name, rest.partition("@")[0]))
    ct = json.loads((a.ct300 / "manifest.json").read_text())
    fr = json.loads((a.frames / "manifest.json").read_text())
    ct_bytes = int(ct["bytes"])

    def series_path(m: dict[str, object]) -> str:
        return f"/studies/{m['study_uid']}/series/{m['series_uid']}"

    frame_insts = sop_uids(a.frames)
    rows: list[dict[str, object]] = []

    def row(kind: str, syn: str, phase: str) -> dict[str, object]:
        r: dict[str, object] = {
            "kind": kind,
            "syntax": syn,
            "phase": phase,
            "pass": a.pass_no,
            "samples": {s.name: [] for s in servers},
            "failed": {},
            "bytes": {},
        }
        rows.append(r)
        return r

    t_all = time.monotonic()
    for syn in a.syntaxes.split(","):
        uid, media, _ = SYNTAX[syn]
        accept = f'multipart/related; type="{media}"; transfer-syntax={uid}'
        for phase in ("first", "cached"):
            r = row("frame", syn, phase)
            t0 = time.monotonic()
            for i, sop in enumerate(frame_insts):
                order = servers if i % 2 == 0 else servers[::-1]
                for s in order:
                    if s.name in r["failed"]:  # type: ignore[operator]
                        continue
                    path = f"{series_path(fr)}/instances/{sop}/frames/1"
                    status, h, body, dt = s.get(path, accept)
                    try:
                        if status != 200:
                            raise ValueError("not 200")
                        check_frame(syn, h, body)
                    except ValueError as exc:
                        r["failed"][s.name] = failure(status, h, body, str(exc))  # type: ignore[index]
                        continue
                    r["samples"][s.name].append(dt * 1000)  # type: ignore[index]
                if time.monotonic() - t0 > a.cap_seconds:
                    r["capped"] = i + 1
                    break
            print(
                f"[wado] pass {a.pass_no} frame {syn} {phase}: "
                + ", ".join(f"{s.name} {_med(r['samples'][s.name])}" for s in servers),
                flush=True,
            )  # type: ignore[index]
        saccept = f'multipart/related; type="application/dicom"; transfer-syntax={uid}'
        for k, phase in enumerate(("first", "cached")):
            r = row("series", syn, phase)
            order = servers if (k + a.pass_no) % 2 == 0 else servers[::-1]
            for s in order:
                status, h, body, dt = s.get(series_path(ct), saccept)
                try:
                    if status != 200:
                        raise ValueError("not 200")
                    check_series(syn, h, body, int(ct["instances"]))
                except ValueError as exc:
                    r["failed"][s.name] = failure(status, h, body, str(exc))  # type: ignore[index]
                    continue
                r["samples"][s.name].append(dt)  # type: ignore[index]
                r["bytes"][s.name] = len(body)  # type: ignore[index]
            print(
                f"[wado] pass {a.pass_no} series {syn} {phase}: "
                + ", ".join(f"{s.name} {_med(r['samples'][s.name])}" for s in servers),
                flush=True,
            )  # type: ignore[index]
    # which syntaxes each server can produce: one instance retrieve per syntax (pass 0 only)
    if a.pass_no == 0:
        probe: dict[str, dict[str, str]] = {}
        sop = frame_insts[0]
        for key, uid in PROBE:
            probe[key] = {}
            for s in servers:
                acc = f'multipart/related; type="application/dicom"; transfer-syntax={uid}'
                status, h, body, _ = s.get(f"{series_path(fr)}/instances/{sop}", acc)
                if status != 200:
                    probe[key][s.name] = f"HTTP {status}"
                    continue
                try:
                    ps = parts(h, body)
                    ts = part_syntax(ps[0][1])
                    probe[key][s.name] = "yes" if ts == uid else f"answered {ts}"
                except ValueError as exc:
                    probe[key][s.name] = f"bad answer: {exc}"
        rows.append(
            {
                "kind": "probe",
                "syntax": "",
                "phase": "",
                "pass": a.pass_no,
                "probe": probe,
                "samples": {},
                "failed": {},
            }
        )
    r = row("series", "stored", "as stored")
    for s in servers if a.pass_no % 2 == 0 else servers[::-1]:
        status, h, body, dt = s.get(
            series_path(ct), 'multipart/related; type="application/dicom"; transfer-syntax=*'
        )
        try:
            if status != 200:
                raise ValueError("not 200")
            check_series(None, h, body, int(ct["instances"]))
        except ValueError as exc:
            r["failed"][s.name] = failure(status, h, body, str(exc))  # type: ignore[index]
            continue
        r["samples"][s.name].append(dt)  # type: ignore[index]
        r["bytes"][s.name] = len(body)  # type: ignore[index]
    out = {
        "meta": {
            "servers": [s.name for s in servers],
            "ct_bytes": ct_bytes,
            "ct_count": int(ct["instances"]),
            "frames": len(frame_insts),
            "seconds": round(time.monotonic() - t_all, 1),
        },
        "rows": rows,
    }
    a.results.write_text(json.dumps(out, indent=1))
    return 0


def _med(v: list[float]) -> str:
    return f"{statistics.median(v):.3g}" if v else "n/a"


def _fmt(v: list[float], unit: str) -> str:
    if not v:
        return "n/a"
    med = statistics.median(v)
    if len(v) == 1:
        return f"{med:.1f} {unit} (1)"
    return f"**{med:.1f}** {unit} ({min(v):.1f}–{max(v):.1f}, n={len(v)})"


def report(a: argparse.Namespace) -> int:
    passes = [json.loads(Path(p).read_text()) for p in a.results]
    passes = [p for p in passes if p.get("rows")]
    if not passes:
        print("no WADO-RS results")
        return 1
    meta = passes[0]["meta"]
    names: list[str] = meta["servers"]
    ours, peer = names[0], names[-1]
    merged: dict[tuple[str, str, str], dict[str, object]] = {}
    probe: dict[str, dict[str, str]] = {}
    for p in passes:
        for r in p["rows"]:
            if r["kind"] == "probe":
                probe = probe or r["probe"]
                continue
            key = (r["kind"], r["syntax"], r["phase"])
            m = merged.setdefault(key, {"samples": {n: [] for n in names}, "failed": {}, "bytes": {}})
            for n in names:
                m["samples"][n] += r["samples"].get(n, [])  # type: ignore[index]
                if n in r["failed"]:
                    m["failed"].setdefault(n, r["failed"][n])  # type: ignore[union-attr]
                if n in r.get("bytes", {}):
                    m["bytes"][n] = r["bytes"][n]  # type: ignore[index]
    lines = [
        "## WADO-RS in a transfer syntax that is not stored (ours vs Orthanc + DICOMweb plugin)",
        "",
        f"{len(passes)} pass(es), servers started fresh for each; frames: frame 1 of each of {meta['frames']}"
        f" instances of a separate series, one request each (first = transcoding, cached = the same again);"
        f" series: {meta['ct_count']} instances, {meta['ct_bytes'] / 1e6:.0f} MB stored. Series MB/s are of"
        " the stored (uncompressed) bytes / seconds, so the syntaxes compare. Target: ours ≥ 2× Orthanc.",
        "",
        f"| request | syntax | phase | {ours} | {peer} | {peer} / {ours} (time) | ≥ 2×? |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for (kind, syn, phase), m in merged.items():
        smp: dict[str, list[float]] = m["samples"]  # type: ignore[assignment]
        cells = []
        for n in names:
            if kind == "frame":
                cells.append(_fmt(smp[n], "ms"))
            else:
                mbs = [meta["ct_bytes"] / s / 1e6 for s in smp[n]]
                cells.append(_fmt(mbs, "MB/s") + (f", {statistics.median(smp[n]):.2f} s" if smp[n] else ""))
            f = m["failed"].get(n)  # type: ignore[union-attr]
            if f:
                cells[-1] += f" — failed: HTTP {f['status']}"
                body = " ".join(str(f["body"]).split())
                notes.append(
                    f"- {n}, {kind} {syn} {phase}: HTTP {f['status']} ({f['content_type']}): {f['why']};"
                    f" body: `{body[:200]}`"
                )
        ratio, meets = "—", "—"
        if smp[ours] and smp[peer]:
            x = statistics.median(smp[peer]) / statistics.median(smp[ours])
            ratio = f"{x:.2f}×"
            meets = "yes" if x >= 2 else "no"
        label = "frame 1 (50 instances)" if kind == "frame" else "series (300)"
        lines.append(
            f"| {label} | {SYNTAX.get(syn, ('', '', syn))[2]} | {phase} | {cells[0]} | {cells[-1]} |"
            f" {ratio} | {meets} |"
        )
    text = ""
    if a.header and a.header.exists():
        text += a.header.read_text()
    text += "\n".join(lines) + "\n"
    if probe:
        text += (
            f"\nWhich syntaxes each server produces (one instance retrieve each, `transfer-syntax=` in"
            f" Accept, the answer's file meta checked; stored: Explicit VR LE, 16-bit signed, 12 bits stored)"
            f":\n\n| syntax | {' | '.join(names)} |\n|---|{'---|' * len(names)}\n"
        )
        for key, by in probe.items():
            text += f"| {key} | {' | '.join(by.get(n, '?') for n in names)} |\n"
    if notes:
        text += "\nFailed answers (first of each row):\n\n" + "\n".join(dict.fromkeys(notes)) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--server", action="append", required=True)
    b.add_argument("--ct300", type=Path, required=True)
    b.add_argument("--frames", type=Path, required=True)
    b.add_argument("--results", type=Path, required=True)
    b.add_argument("--pass", dest="pass_no", type=int, default=0)
    b.add_argument("--syntaxes", default="jpegls,htj2k")
    b.add_argument("--cap-seconds", type=float, default=60)
    r = sub.add_parser("report")
    r.add_argument("results", nargs="+")
    r.add_argument("--header", type=Path)
    r.add_argument("--out", type=Path)
    a = p.parse_args()
    return bench(a) if a.cmd == "bench" else report(a)


if __name__ == "__main__":
    sys.exit(main())
