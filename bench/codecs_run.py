"""Codec encode/decode speed of the registry beside dcmtk and gdcm (`make bench-codecs`, bench/run_codecs.sh).

Usage:
  python bench/codecs_run.py gen8 --src bench/out/data/ct300 --out bench/out/data/ct300-8bit
      the 8-bit copy of the CT series for JPEG Baseline (cached like gen_data.py): every stored value v
      (HU + 1024, 0..4095) becomes clip((v - 1024 - (C - W/2)) * 255 / W, 0, 255) with the series' own window
      C=40 W=400 (the soft-tissue window a viewer shows), rounded; BitsAllocated/Stored 8, unsigned, no
      rescale. Every tool gets these same 8-bit files, so the JPEG reduction is identical for all.
  python bench/codecs_run.py bench --ct16 DIR --ct8 DIR --work DIR --results OUT.json
         [--count 300] [--runs 3] [--procs N] [--syntaxes rle,jpegls,j2k,htj2k,jpeg]
         [--tools ours-1,ours-N,proto-1,dcmtk,gdcm] [--quality 90] [--startup-reps 15]
      For each run, each syntax, each tool (order rotated per run): encode the first COUNT files of the series
      (Explicit VR LE in, files out), then decode what that tool encoded back to Explicit VR LE files out.
      Wall time of the whole directory, MB/s = uncompressed pixel bytes / wall seconds.
      - ours-1: the registry (`pacs.codecs.transcode`) in this process: dcmread, transcode, save_as, per file;
        a syntax the registry cannot encode (`pacs.codecs.can_encode`) is "not available".
      - ours-N: the same in N worker processes (a process pool started and warmed before the clock).
      - proto-1: what the codec engineer's imagecodecs paths will give (imagecodecs htj2k/jpeg8/jpegls/jpeg2k
        encode+decode, pylibjpeg-rle for RLE), same file in / file out, in this process.
      - dcmtk, gdcm: one process per file (neither has a directory mode), run one after the other; their
        per-file start-up is measured on a 1x1-pixel file of the same header (median of --startup-reps runs)
        and reported apart: MB/s raw and with COUNT x start-up taken off.
      Checks (outside the timing): every output exists and reads; the first run checks every encoded file's
      transfer syntax, its ratio (pixel bytes / encapsulated pixel data bytes) and decodes 5 of them
      with pydicom (another decoder than the encoder's, for the peers) against the original pixels: equal for
      lossless, max error and PSNR for JPEG Baseline; every decoded file is compared with the original pixels
      (lossless) or checked for size (lossy). A tool whose output fails a check is recorded as failed.
Requires the project venv (pydicom, numpy, imagecodecs, the pacs package).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

GEN8_VERSION = 1


@dataclass(frozen=True)
class Syntax:
    key: str
    uid: UID
    bits8: bool  # runs on the 8-bit copy
    lossless: bool
    dcmtk_enc: tuple[str, ...] | None
    dcmtk_dec: tuple[str, ...] | None
    gdcm_enc: tuple[str, ...] | None
    dcmtk_note: str = ""
    gdcm_note: str = ""


def syntaxes(quality: int) -> dict[str, Syntax]:
    q = str(quality)
    return {
        "rle": Syntax("rle", RLELossless, False, True, ("dcmcrle",), ("dcmdrle",), ("gdcmconv", "--rle")),
        "jpegls": Syntax(
            "jpegls",
            JPEGLSLossless,
            False,
            True,
            ("dcmcjpls", "+el"),
            ("dcmdjpls",),
            ("gdcmconv", "--jpegls"),
        ),
        "j2k": Syntax(
            "j2k",
            JPEG2000Lossless,
            False,
            True,
            None,
            None,
            ("gdcmconv", "--j2k"),
            dcmtk_note="Debian's dcmtk has no JPEG 2000 tools (dcmcjp2k is the commercial DCMJP2K)",
        ),
        "htj2k": Syntax(
            "htj2k",
            HTJ2KLossless,
            False,
            True,
            None,
            None,
            None,
            dcmtk_note="no HTJ2K in dcmtk 3.6.7",
            gdcm_note="gdcm 3.0 has no HTJ2K encoder (nor decoder)",
        ),
        "jpeg": Syntax(
            "jpeg",
            JPEGBaseline8Bit,
            True,
            False,
            ("dcmcjpeg", "+eb", "+q", q),
            ("dcmdjpeg",),
            ("gdcmconv", "--jpeg", "--lossy", "-q", q),
        ),
    }


# ------------------------------------------------------------------------------------------------ data
def gen8(src: Path, out: Path, center: float = 40.0, width: float = 400.0) -> int:
    files = sorted(src.glob("*.dcm"))
    params = {"v": GEN8_VERSION, "src": [f.name for f in files], "c": center, "w": width}
    stamp = hashlib.sha256(json.dumps(params).encode()).hexdigest()
    mpath = out / "manifest.json"
    if mpath.exists() and json.loads(mpath.read_text()).get("stamp") == stamp:
        print(f"[gen8] cached: {out} ({len(files)} files)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.dcm"):
        old.unlink()
    lo = center - width / 2
    for f in files:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        px = np.clip(np.rint((hu - lo) * 255.0 / width), 0, 255).astype(np.uint8)
        ds.BitsAllocated = 8
        ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        for kw in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth"):
            if kw in ds:
                delattr(ds, kw)
        ds.PixelData = px.tobytes()
        ds["PixelData"].VR = "OB"
        ds.save_as(out / f.name, enforce_file_format=True)
    mpath.write_text(json.dumps({"stamp": stamp, "instances": len(files), "center": center, "width": width}))
    print(f"[gen8] wrote {len(files)} 8-bit files to {out}")
    return 0


TINY = 16  # gdcm 3.0.21 fails on smaller images (JPEG-LS below 4x4, a crash in J2K below 8x8)


def tiny_copy(src: Path, out: Path) -> Path:
    """The same header with a 16x16 crop (0.1 % of the pixels): a peer's per-file start-up cost."""
    ds = pydicom.dcmread(src)
    h, w = int(ds.Rows) // 2, int(ds.Columns) // 2
    ds.PixelData = np.ascontiguousarray(_frame_array(ds)[0, h : h + TINY, w : w + TINY]).tobytes()
    ds.Rows = ds.Columns = TINY
    ds.save_as(out, enforce_file_format=True)
    return out


def make_multiframe(files: list[Path], out: Path) -> Path:
    """The files' frames in one multi-frame object (same header, NumberOfFrames, a new SOP Instance UID)."""
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(files[0])
    ds.PixelData = b"".join(bytes(pydicom.dcmread(f).PixelData) for f in files)
    ds.NumberOfFrames = len(files)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=["pacs-bench-mf", out.name, str(len(files))]
    )
    ds.save_as(out, enforce_file_format=True)
    return out


# ------------------------------------------------------------------------------------- our paths
def ours_encode(src: str, dst: str, target: str, quality: int) -> None:
    from pacs.codecs import EncodeOptions, transcode

    ds = pydicom.dcmread(src)
    opts = EncodeOptions(quality=quality) if target == JPEGBaseline8Bit else None
    transcode(ds, target, opts)
    ds.save_as(dst, enforce_file_format=True)


def ours_decode(src: str, dst: str, target: str, quality: int) -> None:
    from pacs.codecs import transcode

    ds = pydicom.dcmread(src)
    transcode(ds, ExplicitVRLittleEndian)
    ds.save_as(dst, enforce_file_format=True)


def _frame_array(ds: Dataset) -> np.ndarray:
    bits = int(ds.BitsAllocated)
    dt = np.dtype(f"{'i' if int(ds.PixelRepresentation) else 'u'}{bits // 8}").newbyteorder("<")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return np.frombuffer(ds.PixelData, dtype=dt).reshape(n, int(ds.Rows), int(ds.Columns))


def proto_encode(src: str, dst: str, target: str, quality: int) -> None:
    """The imagecodecs paths (pylibjpeg-rle for RLE) with pydicom for the file, as a registry plugin would."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(src)
    if target == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        ds.save_as(dst, enforce_file_format=True)
        return
    arrs = _frame_array(ds)
    if arrs.dtype == np.int16 and target == JPEGLSLossless:
        if int(arrs.min()) < 0:  # CharLS through imagecodecs takes unsigned samples only
            raise ValueError("negative samples: imagecodecs.jpegls_encode takes unsigned data")
        arrs = arrs.view(np.uint16)
    frames = []
    for arr in arrs:
        if target == HTJ2KLossless:
            frame = imagecodecs.htj2k_encode(arr, level=0)
        elif target == JPEGLSLossless:
            frame = imagecodecs.jpegls_encode(arr, level=0)
        elif target == JPEG2000Lossless:
            frame = imagecodecs.jpeg2k_encode(arr, level=0, codecformat="J2K", reversible=True, numthreads=1)
        elif target == JPEGBaseline8Bit:
            frame = imagecodecs.jpeg8_encode(arr, level=quality)
        else:
            raise ValueError(target)
        frames.append(bytes(frame))
    if target == JPEGBaseline8Bit:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = target
    ds.save_as(dst, enforce_file_format=True)


def proto_decode(src: str, dst: str, target: str, quality: int) -> None:
    import imagecodecs
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(src)
    if target == RLELossless:
        ds.decompress(decoding_plugin="pylibjpeg", generate_instance_uid=False)
        ds.save_as(dst, enforce_file_format=True)
        return
    n = int(ds.get("NumberOfFrames", 1) or 1)
    dec: Callable[[bytes], np.ndarray] = {
        HTJ2KLossless: imagecodecs.htj2k_decode,
        JPEGLSLossless: imagecodecs.jpegls_decode,
        JPEG2000Lossless: imagecodecs.jpeg2k_decode,
        JPEGBaseline8Bit: imagecodecs.jpeg8_decode,
    }[target]
    want = np.dtype(f"{'i' if int(ds.PixelRepresentation) else 'u'}{int(ds.BitsAllocated) // 8}")
    ds.PixelData = b"".join(
        dec(f).astype(want, copy=False).tobytes() for f in generate_frames(ds.PixelData, number_of_frames=n)
    )
    ds["PixelData"].VR = "OW" if int(ds.BitsAllocated) > 8 else "OB"
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(dst, enforce_file_format=True)


PY_PATHS: dict[tuple[str, str], Callable[[str, str, str, int], None]] = {
    ("ours", "encode"): ours_encode,
    ("ours", "decode"): ours_decode,
    ("proto", "encode"): proto_encode,
    ("proto", "decode"): proto_decode,
}


def py_batch(kind: str, op: str, pairs: list[tuple[str, str]], target: str, quality: int) -> int:
    fn = PY_PATHS[(kind, op)]
    for a, b in pairs:
        fn(a, b, target, quality)
    return len(pairs)


def warm_worker() -> None:
    """Pool initializer: import what the paths import (codec plugins too), so the clock does not count it."""
    import imagecodecs  # noqa: F401
    import jpeg_ls  # noqa: F401
    import openjpeg  # noqa: F401
    import pacs.codecs  # noqa: F401
    import pydicom.pixels  # noqa: F401
    import rle  # noqa: F401


def _pause() -> int:
    time.sleep(0.2)
    return os.getpid()


# -------------------------------------------------------------------------------------- the bench
@dataclass
class Ctx:
    count: int
    procs: int
    quality: int
    work: Path
    results: list[dict[str, object]]
    pool: cf.ProcessPoolExecutor | None
    startup: dict[tuple[str, str, str], list[float]]
    reps: int


def _nframes(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def pixel_bytes(files: list[Path]) -> int:
    total = 0
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        total += int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8 * _nframes(ds)
    return total


def peer_cmd(tool: str, op: str, syn: Syntax) -> tuple[str, ...] | None:
    if tool == "dcmtk":
        return syn.dcmtk_enc if op == "encode" else syn.dcmtk_dec
    if tool == "gdcm":
        if syn.gdcm_enc is None:
            return None
        return (*syn.gdcm_enc, "--quiet") if op == "encode" else ("gdcmconv", "--raw", "--quiet")
    return None


def run_peer(cmd: tuple[str, ...], pairs: list[tuple[str, str]]) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    for a, b in pairs:
        r = subprocess.run([*cmd, a, b], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if r.returncode != 0:
            return (
                time.perf_counter() - t0,
                f"{cmd[0]} exit {r.returncode} on {Path(a).name}: "
                + r.stderr.decode(errors="replace").strip()[-300:],
            )
    return time.perf_counter() - t0, None


def peer_startup(ctx: Ctx, tool: str, op: str, syn: Syntax, src_dir: Path) -> float:
    """Median wall time of the tool on the 16x16 file, measured again in every run (next to the timed one)."""
    cmd = peer_cmd(tool, op, syn)
    assert cmd is not None
    d = ctx.work / "tiny" / f"{tool}-{syn.key}"
    d.mkdir(parents=True, exist_ok=True)
    raw = tiny_copy(sorted(src_dir.glob("*.dcm"))[0], d / "raw.dcm")
    src = raw
    if op == "decode":
        enc_cmd = peer_cmd(tool, "encode", syn)
        assert enc_cmd is not None
        src = d / "enc.dcm"
        subprocess.run(
            [*enc_cmd, str(raw), str(src)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    times = []
    for i in range(ctx.reps):
        t0 = time.perf_counter()
        subprocess.run(
            [*cmd, str(src), str(d / f"out{i % 2}.dcm")],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    ctx.startup.setdefault((tool, op, syn.key), []).append(med)
    return med


def run_py(ctx: Ctx, kind: str, nprocs: int, op: str, syn: Syntax, pairs: list[tuple[str, str]]) -> float:
    if nprocs == 1:
        t0 = time.perf_counter()
        py_batch(kind, op, pairs, syn.uid, ctx.quality)
        return time.perf_counter() - t0
    assert ctx.pool is not None
    nchunks = nprocs * 4
    chunks = [pairs[i::nchunks] for i in range(nchunks) if pairs[i::nchunks]]
    t0 = time.perf_counter()
    futs = [ctx.pool.submit(py_batch, kind, op, c, syn.uid, ctx.quality) for c in chunks]
    done = sum(f.result() for f in futs)
    dt = time.perf_counter() - t0
    assert done == len(pairs)
    return dt


def check_encoded(files: list[Path], originals: list[Path], syn: Syntax, full: bool) -> dict[str, object]:
    """Transfer syntax of every file, the ratio, and 5 files decoded by pydicom against the originals."""
    enc_bytes = 0
    raw_bytes = 0
    for f in files:
        ds = pydicom.dcmread(f)
        ts = ds.file_meta.TransferSyntaxUID
        if ts != syn.uid:
            raise AssertionError(f"{f.name}: transfer syntax {ts} ({UID(ts).name}), expected {syn.uid.name}")
        enc_bytes += len(ds.PixelData)
        raw_bytes += int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8 * _nframes(ds)
        if not full:
            break
    out: dict[str, object] = {"ratio": raw_bytes / enc_bytes if full else None}
    picks = sorted({0, len(files) // 4, len(files) // 2, 3 * len(files) // 4, len(files) - 1})
    maxerr, psnrs = 0, []
    for i in picks:
        a = pydicom.dcmread(files[i]).pixel_array.astype(np.int64)
        b = pydicom.dcmread(originals[i]).pixel_array.astype(np.int64)
        if a.shape != b.shape:
            raise AssertionError(f"{files[i].name}: shape {a.shape} != {b.shape}")
        err = int(np.abs(a - b).max())
        if syn.lossless and err:
            raise AssertionError(f"{files[i].name}: lossless but max |error| {err} (pydicom decode)")
        maxerr = max(maxerr, err)
        mse = float(np.mean((a - b) ** 2))
        psnrs.append(99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse))
    out["max_err"] = maxerr
    if not syn.lossless:
        out["psnr"] = round(min(psnrs), 2)
        if min(psnrs) < 30:
            raise AssertionError(f"PSNR {min(psnrs):.1f} dB < 30 (pydicom decode)")
    return out


def check_decoded(files: list[Path], originals: list[Path], syn: Syntax) -> None:
    for f, o in zip(files, originals, strict=True):
        ds = pydicom.dcmread(f)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            raise AssertionError(f"{f.name}: still {UID(ds.file_meta.TransferSyntaxUID).name}")
        ref = pydicom.dcmread(o)
        if syn.lossless:
            if bytes(ds.PixelData) != bytes(ref.PixelData):
                a, b = ds.pixel_array, ref.pixel_array
                if a.shape != b.shape or not np.array_equal(a, b):
                    raise AssertionError(f"{f.name}: decoded pixels differ from the original")
        elif len(ds.PixelData) < len(ref.PixelData):
            raise AssertionError(f"{f.name}: {len(ds.PixelData)} pixel bytes, expected {len(ref.PixelData)}")


def one(
    ctx: Ctx,
    layout: str,
    run: int,
    syn: Syntax,
    tool: str,
    op: str,
    src_files: list[Path],
    nbytes: int,
    enc_dirs: dict[str, Path],
) -> None:
    kind, _, par = tool.partition("-")
    nprocs = (ctx.procs if par == "N" else 1) if kind in ("ours", "proto") else 1
    rec: dict[str, object] = {
        "run": run,
        "layout": layout,
        "syntax": syn.key,
        "tool": tool,
        "op": op,
        "files": len(src_files),
        "bytes": nbytes,
        "procs": nprocs,
    }
    out_dir = ctx.work / f"{op}-{tool}-{syn.key}-{layout}"
    if layout == "multiframe" and par == "N":
        rec["status"] = "not available"
        rec["reason"] = "one file: one process"
        ctx.results.append(rec)
        return
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    note = ""
    if kind in ("ours", "proto"):
        if kind == "ours" and op == "encode" and not _can_encode(syn.uid):
            rec["status"] = "not available"
            rec["reason"] = f"pacs.codecs.can_encode({syn.uid.name}) is False"
            ctx.results.append(rec)
            print(f"[codecs] run {run + 1} {layout[:5]} {syn.key:6} {op:6} {tool:8} n/a: {rec['reason']}")
            return
        if kind == "ours" and op == "decode" and not _can_decode(syn.uid):
            rec["status"] = "not available"
            rec["reason"] = f"pacs.codecs.can_decode({syn.uid.name}) is False"
            ctx.results.append(rec)
            return
    else:
        cmd = peer_cmd(kind, op, syn)
        if cmd is None:
            rec["status"] = "not available"
            rec["reason"] = syn.dcmtk_note if kind == "dcmtk" else syn.gdcm_note
            ctx.results.append(rec)
            return
    if op == "encode":
        inputs = src_files
    else:
        # decode what this tool encoded; when it cannot encode (ours before the encoders merge), the
        # first other tool's output
        enc = enc_dirs.get(tool) or next((enc_dirs[t] for t in DECODE_FROM if t in enc_dirs), None)
        if enc is None:
            rec["status"] = "failed"
            rec["reason"] = "nothing encoded to decode"
            ctx.results.append(rec)
            return
        if tool not in enc_dirs:
            note = f"decodes {enc.name.removeprefix('encode-')}'s files"
        inputs = [enc / f.name for f in src_files]
    pairs = [(str(a), str(out_dir / a.name)) for a in inputs]
    err = None
    try:
        if kind in ("ours", "proto"):
            dt = run_py(ctx, kind, nprocs, op, syn, pairs)
        else:
            cmd = peer_cmd(kind, op, syn)
            assert cmd is not None
            dt, err = run_peer(cmd, pairs)
            try:
                if layout == "multiframe":
                    raise _NoStartup
                rec["startup_s"] = peer_startup(ctx, kind, op, syn, src_files[0].parent)
            except _NoStartup:
                pass
            except subprocess.CalledProcessError as exc:
                rec["startup_error"] = str(exc)[:200]
    except Exception as exc:  # a codec that fails shows as failed, the run goes on
        dt, err = float("nan"), f"{type(exc).__name__}: {exc}"[:300]
    rec["seconds"] = dt
    if note:
        rec["note"] = note
    if err is None:
        try:
            outs = [out_dir / f.name for f in src_files]
            if op == "encode":
                rec.update(check_encoded(outs, src_files, syn, full=run == 0))
                enc_dirs[tool] = out_dir
            else:
                check_decoded(outs, src_files, syn)
        except Exception as exc:
            err = f"check: {type(exc).__name__}: {exc}"[:300]
    rec["status"] = "ok" if err is None else "failed"
    if err:
        rec["reason"] = err
    ctx.results.append(rec)
    mbs = nbytes / dt / 1e6 if err is None else float("nan")
    extra = f" ratio {rec['ratio']:.2f}" if rec.get("ratio") else ""
    print(
        f"[codecs] run {run + 1} {layout[:5]} {syn.key:6} {op:6} {tool:8} {dt:7.2f}s {mbs:7.1f} MB/s{extra}"
        + (f"  !! {err}" if err else ""),
        flush=True,
    )


class _NoStartup(Exception):
    """One process for the whole file: no start-up to take off."""


#: Whose encoded files a tool decodes when it encoded none (ours, before the registry has the encoder).
DECODE_FROM = ("proto-1", "proto-N", "gdcm", "dcmtk", "ours-1", "ours-N")


def _can_encode(u: str) -> bool:
    from pacs.codecs import can_encode

    return can_encode(u)


def _can_decode(u: str) -> bool:
    from pacs.codecs import can_decode

    return can_decode(u)


def bench(a: argparse.Namespace) -> int:
    syns = syntaxes(a.quality)
    keys = [k for k in a.syntaxes.split(",") if k]
    tools = [t for t in a.tools.split(",") if t]
    for k in keys:
        if k not in syns:
            raise SystemExit(f"unknown syntax {k} (known: {', '.join(syns)})")
    procs = a.procs or os.cpu_count() or 1
    work: Path = a.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results: list[dict[str, object]] = []
    pool = None
    if any(t.endswith("-N") for t in tools):
        pool = cf.ProcessPoolExecutor(max_workers=procs, initializer=warm_worker)
        pids = {f.result() for f in [pool.submit(_pause) for _ in range(procs * 2)]}
        print(f"[codecs] pool of {procs} processes warm ({len(pids)} seen)", flush=True)
    ctx = Ctx(a.count, procs, a.quality, work, results, pool, {}, a.startup_reps)
    warm_worker()
    layouts = [x for x in a.layouts.split(",") if x]
    files = {False: sorted(a.ct16.glob("*.dcm"))[: a.count], True: sorted(a.ct8.glob("*.dcm"))[: a.count]}
    data: dict[tuple[str, bool], list[Path]] = {}
    for bits8, fs in files.items():
        if "files" in layouts:
            data[("files", bits8)] = fs
        if "multiframe" in layouts:
            mfd = work / f"mf{8 if bits8 else 16}"
            mfd.mkdir()
            data[("multiframe", bits8)] = [make_multiframe(fs, mfd / f"multiframe-{len(fs)}.dcm")]
    nbytes = {k: pixel_bytes(v) for k, v in data.items()}
    for fs in data.values():
        for f in fs:
            f.read_bytes()  # page cache
    meta = {
        "count": a.count,
        "procs": procs,
        "runs": a.runs,
        "quality": a.quality,
        "tools": tools,
        "syntaxes": keys,
        "layouts": layouts,
        "cpu_count": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    t_start = time.monotonic()
    try:
        for run in range(a.runs):
            for si, (layout, k) in enumerate((lay, k) for lay in layouts for k in keys):
                syn = syns[k]
                srcs = data[(layout, syn.bits8)]
                # untimed warm-up of our paths on one file (plugin imports, first-call set-up)
                for kind in ("ours", "proto"):
                    if any(t.startswith(kind) for t in tools) and run == 0 and layout == layouts[0]:
                        try:
                            tmp = work / "warm.dcm"
                            PY_PATHS[(kind, "encode")](str(srcs[0]), str(tmp), syn.uid, a.quality)
                            PY_PATHS[(kind, "decode")](str(tmp), str(work / "warm2.dcm"), syn.uid, a.quality)
                        except Exception as exc:
                            print(f"[codecs] warm-up {kind} {k}: {type(exc).__name__}: {exc}"[:200])
                shift = (run + si) % len(tools)
                order = tools[shift:] + tools[:shift]
                enc_dirs: dict[str, Path] = {}
                for op in ("encode", "decode"):
                    for tool in order:
                        one(ctx, layout, run, syn, tool, op, srcs, nbytes[(layout, syn.bits8)], enc_dirs)
                for d in work.glob(f"*-*-{k}-{layout}"):
                    shutil.rmtree(d, ignore_errors=True)
            if a.max_seconds and time.monotonic() - t_start > a.max_seconds and run + 1 < a.runs:
                print(f"[codecs] stopping after run {run + 1}: over --max-seconds {a.max_seconds}")
                meta["stopped_early"] = run + 1
                break
    finally:
        if pool is not None:
            pool.shutdown()
        meta["startup_s"] = {"/".join(k): statistics.median(v) for k, v in ctx.startup.items()}
        meta["seconds"] = round(time.monotonic() - t_start, 1)
        a.results.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen8")
    g.add_argument("--src", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    b = sub.add_parser("bench")
    b.add_argument("--ct16", type=Path, required=True)
    b.add_argument("--ct8", type=Path, required=True)
    b.add_argument("--work", type=Path, required=True)
    b.add_argument("--results", type=Path, required=True)
    b.add_argument("--count", type=int, default=300)
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--procs", type=int, default=0, help="ours-N's process count (default: every core)")
    b.add_argument("--syntaxes", default="rle,jpegls,j2k,htj2k,jpeg")
    b.add_argument("--tools", default="ours-1,ours-N,proto-1,dcmtk,gdcm")
    b.add_argument("--quality", type=int, default=90)
    b.add_argument("--startup-reps", type=int, default=15)
    b.add_argument("--max-seconds", type=float, default=0)
    b.add_argument(
        "--layouts", default="files,multiframe", help="files: COUNT files; multiframe: one file of them"
    )
    a = p.parse_args()
    if a.cmd == "gen8":
        return gen8(a.src, a.out)
    return bench(a)


if __name__ == "__main__":
    sys.exit(main())
