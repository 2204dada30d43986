"""OHIF end to end: a CT series sent with dcmtk storescu to `pacs up` opens and renders in OHIF.

Headless Debian Chromium, driven by playwright-core from `ohif_probe.mjs`: the study list shows the
patient, `/viewer/viewer?StudyInstanceUIDs=...` draws a non-blank image, and no DICOMweb request fails.
The screenshot goes to `tests/viewer/artifacts/ohif.png`. `pacs up` serves both `/viewer/` and
`/dicomweb` on one origin, as a user gets it from `make up`.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.interop.support import PacsProcess, dcmtk_tool, wait_until

from .conftest import PATIENT_ID, PATIENT_SHOWN, Series, Tools

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"
WAIT = 90.0


def _serves_viewer(base: str) -> bool:
    try:
        r = httpx.get(f"{base}/viewer/", timeout=10)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and "app-config.js" in r.text


@pytest.fixture
def pacs(tmp_path: Path, viewer_dist: Path) -> Iterator[PacsProcess]:
    proc = PacsProcess(data_dir=tmp_path / "pacs-data", log_path=tmp_path / "pacs.log", workers=1,
                       env={"PACS_VIEWER_DIR": str(viewer_dist)})
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture
def viewer_url(pacs: PacsProcess) -> str:
    """The base URL that serves both /viewer and /dicomweb: `pacs up` itself."""
    assert _serves_viewer(pacs.http_url), f"pacs up does not serve /viewer/ at {pacs.http_url}"
    return pacs.http_url


def _store(pacs: PacsProcess, series: Series) -> None:
    storescu = dcmtk_tool("storescu")
    if storescu is None:
        pytest.fail("dcmtk storescu is not installed: run `make setup` (Debian dcmtk)")
    out = subprocess.run([storescu, "-aec", "PACS", "+sd", "+r", "127.0.0.1", str(pacs.dimse_port),
                          str(series.directory)], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, f"storescu failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def _indexed(base: str, series: Series) -> int:
    r = httpx.get(f"{base}/dicomweb/studies/{series.study_uid}/series/{series.series_uid}/instances",
                  timeout=10)
    return len(r.json()) if r.status_code == 200 else 0


def _probe(tools: Tools, base: str, series: Series, screenshot: Path) -> dict[str, object]:
    cmd = [tools.node, str(HERE / "ohif_probe.mjs"), "--base", base, "--study", series.study_uid,
           "--patient", PATIENT_SHOWN, "--screenshot", str(screenshot), "--timeout", str(int(WAIT)),
           "--chromium", tools.chromium]
    try:
        out = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=WAIT * 3)
    except subprocess.TimeoutExpired as exc:  # the probe's own watchdog should come first
        raise AssertionError(f"the browser probe did not finish in {WAIT * 3:.0f}s") from exc
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result from the probe (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    result: dict[str, object] = json.loads(lines[-1][len("RESULT "):])
    result["exit"] = out.returncode
    return result


def _distinct_colours(png: Path) -> int | None:
    try:
        from PIL import Image
    except ImportError:
        return None
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return len(colours) if colours else 1 << 20


def test_ohif_opens_and_renders_a_stored_ct_series(
    browser_tools: Tools, pacs: PacsProcess, viewer_url: str, ct_series: Series,
) -> None:
    started = time.monotonic()
    _store(pacs, ct_series)
    wait_until(lambda: _indexed(viewer_url, ct_series), lambda n: n == ct_series.count, timeout=WAIT,
               interval=0.2, what=f"QIDO to list the {ct_series.count} instances")
    studies = httpx.get(f"{viewer_url}/dicomweb/studies", params={"PatientID": PATIENT_ID}, timeout=10).json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [ct_series.study_uid]

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "ohif.png"
    screenshot.unlink(missing_ok=True)
    result = _probe(browser_tools, viewer_url, ct_series, screenshot)
    summary = json.dumps(result, indent=1)[:6000]
    print(f"\nOHIF screenshot: {screenshot}\nprobe: {summary}\ntotal {time.monotonic() - started:.1f}s")

    assert result.get("ok") is True, f"the browser probe failed:\n{summary}"
    assert result.get("studyListShowsPatient") is True, summary
    assert result.get("failed") == [], f"failed DICOMweb requests:\n{summary}"
    pixels = result["pixels"]
    assert isinstance(pixels, dict) and pixels["nonBlackFraction"] > 0.05, summary
    assert screenshot.is_file(), f"no screenshot at {screenshot}"
    colours = _distinct_colours(screenshot)
    assert colours is None or colours > 16, f"the screenshot looks blank ({colours} colours)"
