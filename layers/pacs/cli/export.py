"""`pacs export`: de-identified export jobs through the HTTP API (`POST /exports`), with a progress bar.

    pacs export [--url URL] [--study UID]... [--series STUDY/SERIES]... [--query Key=Value]...
                [--profile P] [--option O]... [--project P] --to partition:NAME|zip|files|node:AE
                [--download OUT.zip] [--no-wait]
    pacs export status ID | list | cancel ID | download ID -o OUT.zip
    pacs export dlq [--data-dir DIR] | redrive [--data-dir DIR]      (embedded: tasks given up, again)

Exit status: 0 done with every instance exported; 1 done with failures or held-back instances, or the
job failed or was cancelled; 2 the request was refused or the server could not be reached.
"""

from __future__ import annotations

import argparse
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pacs.config import Settings

console = Console(highlight=False, soft_wrap=True)  # one line per item, whatever the width
POLL_SECONDS = 0.5
FINAL = ("done", "failed", "cancelled")


class ApiError(Exception):
    """An HTTP error answer (its status and the server's reason) or no answer at all."""


def _request(url: str, method: str = "GET", body: Any = None, timeout: float = 60.0) -> Any:
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            reason = orjson.loads(raw).get("error") or raw.decode(errors="replace")
        except (orjson.JSONDecodeError, AttributeError):
            reason = raw.decode(errors="replace")[:500] or exc.reason
        raise ApiError(f"HTTP {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def destination(text: str) -> dict[str, str]:
    """`partition:NAME`, `zip`, `files` or `node:AE` as the request's destination."""
    kind, _, value = text.partition(":")
    if text in ("zip", "files"):
        return {"type": text}
    if kind in ("partition", "node") and value:
        return {kind: value}
    raise argparse.ArgumentTypeError(f"{text!r}: use partition:NAME, zip, files or node:AE_TITLE")


def _series(text: str) -> dict[str, str]:
    study, sep, series = text.partition("/")
    if not sep or not study or not series:
        raise argparse.ArgumentTypeError(f"{text!r}: give STUDY_UID/SERIES_UID")
    return {"study": study, "series": series}


def _query(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: give Key=Value (a QIDO-RS attribute filter)")
    return key, value


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"destination": args.to, "profile": args.profile, "options": args.option or [],
                            "project": args.project}
    if args.study:
        body["studies"] = args.study
    if args.series:
        body["series"] = args.series
    if args.query:
        body["query"] = dict(args.query)
    return body


def summary(job: dict[str, Any]) -> int:
    """Print what the job did; its exit status."""
    p, status = job["progress"], job["status"]
    colour = {"done": "green", "failed": "red", "cancelled": "yellow"}.get(status, "white")
    total = job["totals"]["instances"]
    console.print(f"[{colour}]{status}[/] export {job['id']}: {p['done']} of {total} instance(s) exported "
                  f"({p['bytes']:,} bytes), {p['failed']} failed, {p['heldBack']} held back")
    if job.get("error"):
        console.print(f"  reason: {job['error']}", markup=False)
    for f in job.get("failures", []):
        label = "held back" if f.get("heldBack") else "failed"
        console.print(f"  {label} {f['sop']}: {f['reason']}", markup=False)
    shown = len(job.get("failures", []))
    if p["failed"] + p["heldBack"] > shown:
        console.print(f"  … and {p['failed'] + p['heldBack'] - shown} more")
    out = job.get("output", {})
    for key in ("zip", "path", "bucket", "prefix", "partition", "node"):
        if key in out:
            console.print(f"  {key}: {out[key]}", markup=False)
    if status != "done":
        return 1
    return 0 if p["failed"] == 0 and p["heldBack"] == 0 else 1


def wait(base: str, job: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """Poll the job until it finishes, with a progress bar."""
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(f"export {job['id']} {job['status']}", total=None)
        while job["status"] not in FINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise ApiError(f"export {job['id']} still {job['status']} after {timeout} s")
            time.sleep(POLL_SECONDS)
            job = _request(f"{base}/exports/{job['id']}")
            total = job["totals"]["instances"] or None
            progress.update(bar, total=total, completed=job["progress"]["processed"],
                            description=f"export {job['id']} {job['status']}")
    return job


def download(base: str, job_id: str, out: Path) -> int:
    """Stream the job's ZIP to `out` (following the redirect to a presigned URL); its size."""
    req = urllib.request.Request(f"{base}/exports/{job_id}/download")
    try:
        with urllib.request.urlopen(req, timeout=300) as resp, open(out, "wb") as fh:
            shutil.copyfileobj(resp, fh, 1 << 20)
    except urllib.error.HTTPError as exc:
        try:
            reason = orjson.loads(exc.read()).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            reason = exc.reason
        raise ApiError(f"HTTP {exc.code}: {reason}") from None
    return out.stat().st_size


def _dead_letters(args: argparse.Namespace) -> int:
    """The embedded task queue's dead letters (tasks given up), listed or put back."""
    from pacs.events.tasks import SqliteTaskQueue

    path = Settings.from_env(data_dir=args.data_dir).data_dir / "tasks.db"
    if not path.exists():
        console.print(f"pacs export: no task queue at {path}", markup=False)
        return 2
    queue = SqliteTaskQueue(path)
    try:
        if args.action == "redrive":
            console.print(f"redriven {queue.redrive()}")
            return 0
        letters = queue.dead_letters()
        for d in letters:
            console.print(f"{d.id}\t{orjson.dumps(d.body).decode()}\tattempts={d.attempts}\t{d.error}",
                          markup=False)
        console.print(f"{len(letters)} task(s) given up", markup=False)
        return 0
    finally:
        queue.close()


def cmd_export(args: argparse.Namespace) -> int:
    if args.action in ("dlq", "redrive"):
        return _dead_letters(args)
    base = args.url.rstrip("/")
    try:
        if args.action == "list":
            for j in _request(f"{base}/exports?limit={args.limit}")["jobs"]:
                p = j["progress"]
                total = j["totals"]["instances"]
                console.print(f"{j['id']}  {j['status']:<9} {j['created']}  {p['done']}/{total}"
                              f" done, {p['failed']} failed, {p['heldBack']} held back  "
                              f"{orjson.dumps(j['request']['destination']).decode()}", markup=False)
            return 0
        if args.action in ("status", "cancel", "download"):
            if not args.job:
                raise ApiError(f"pacs export {args.action} needs a job id")
            if args.action == "download":
                out = args.download or Path(f"export-{args.job}.zip")
                console.print(f"{out}: {download(base, args.job, out):,} bytes")
                return 0
            job = _request(f"{base}/exports/{args.job}", "DELETE" if args.action == "cancel" else "GET")
            return summary(job) if job["status"] in FINAL else _progress_line(job)
        if args.action is not None:
            raise ApiError(f"unknown action {args.action!r}: "
                           "use status, list, cancel, download, dlq or redrive")
        if args.to is None:
            raise ApiError("--to is required: partition:NAME, zip, files or node:AE_TITLE")
        job = _request(f"{base}/exports", "POST", build_request(args))
        console.print(f"export {job['id']} queued", markup=False)
        if args.no_wait:
            return 0
        job = wait(base, job)
        code = summary(job)
        if args.download is not None and job["status"] == "done" and job["output"].get("zip"):
            size = download(base, job["id"], args.download)
            console.print(f"{args.download}: {size:,} bytes", markup=False)
        return code
    except ApiError as exc:
        console.print(f"[red]pacs export:[/] {exc}", markup=True)
        return 2
    except KeyboardInterrupt:
        return 130


def _progress_line(job: dict[str, Any]) -> int:
    p = job["progress"]
    total = job["totals"]["instances"]
    console.print(f"{job['status']} export {job['id']}: {p['processed']} of {total} instance(s) processed "
                  f"({p['done']} exported, {p['failed']} failed, {p['heldBack']} held back)", markup=False)
    return 0


def default_url(settings: Settings) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(settings.host, settings.host)
    return f"http://{host}:{settings.http_port}"


def register(sub: Any) -> None:
    """Add `pacs export` to the `pacs` command's subparsers."""
    p = sub.add_parser("export", help="de-identified export jobs (POST /exports) with a progress bar")
    p.add_argument("action", nargs="?", default=None, help="status ID | list | cancel ID | download ID | "
                   "dlq | redrive (none: start a job)")
    p.add_argument("job", nargs="?", default=None, help="a job id (status, cancel, download)")
    p.add_argument("--url", default=default_url(Settings.from_env()),
                   help="the PACS's HTTP root (default from PACS_HOST / PACS_HTTP_PORT)")
    p.add_argument("--study", action="append", metavar="UID", help="a study to export (repeatable)")
    p.add_argument("--series", action="append", type=_series, metavar="STUDY/SERIES",
                   help="a series to export (repeatable)")
    p.add_argument("--query", action="append", type=_query, metavar="Key=Value",
                   help="a QIDO-RS filter on study / series attributes (repeatable: all must match)")
    p.add_argument("--profile", default="basic", help="basic, research, or basic+option+… (default basic)")
    p.add_argument("--option", action="append", metavar="O", help="a PS3.15 option, e.g. retain-uids")
    p.add_argument("--project", default="default", help="the project: its key makes the pseudonyms")
    p.add_argument("--to", type=destination, default=None, metavar="DEST",
                   help="partition:NAME | zip | files | node:AE_TITLE")
    p.add_argument("--download", "-o", type=Path, default=None, metavar="OUT.zip",
                   help="save the ZIP here once done")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    p.add_argument("--limit", type=int, default=20, help="list: how many recent jobs")
    p.add_argument("--data-dir", type=Path, default=None, help="dlq, redrive: the embedded data directory")
    p.set_defaults(fn=cmd_export)
