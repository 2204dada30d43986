"""OHIF end to end: what a new user sends to `pacs up` is listed and drawn by the served OHIF.

One `pacs up` (serving `/viewer/` and `/dicomweb` on one origin, as `make up` does) receives:
a synthetic CT series (dcmtk storescu), a study with missing optional attributes (no Modality, so
QIDO answers ModalitiesInStudy `{"vr":"CS"}` with no Value; no patient, date or numbers), an image
whose Pixel Spacing is 0\\0 (OHIF drew it black before its patch; pydicom-data's RG1 CRs), and every
file of pydicom's test files (but three replacements nobody draws: `UNDRAWABLE`), sent with
one dcmsend over the tree as a new user would (`--scan-directories --recurse`, as stored: many share
SOP Instance UIDs across transfer syntaxes and SOP classes, and the newest version replaces the older).

Then headless Chromium (playwright-core, `ohif_probe.mjs`) opens the study list, which must count
every study and show no error, and opens every study that holds images: its viewport must be drawn
(enough non-black pixels with enough variance), without an "n/0" slice counter (a stack that never
loaded) and without a warning icon. Screenshots go to `tests/viewer/artifacts/`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.interop.support import PacsProcess, dcmtk_tool, wait_until

from .conftest import PATIENT_ID, PATIENT_SHOWN, Series, Tools, write_bare_study, write_ct_series

pytestmark = [pytest.mark.interop, pytest.mark.timeout(1200)]

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
WAIT = 90.0
#: Pixel data elements: an instance with one of them is an image for the viewer.
PIXEL_TAGS = ("7FE00010", "7FE00008", "7FE00009")
#: Segmentations are drawn over the series they reference, not on their own.
NOT_ON_THEIR_OWN = {"1.2.840.10008.5.1.4.1.1.66.4"}
#: Not sent. Each shares its SOP Instance UID with a drawable version, so, sent after it (the newest
#: is kept), it would replace it with an image nobody draws: OHIF 3.13.2 cannot decode 32-bit RGB RLE
#: (cornerstone: "unsupported pixel format for RLE"), and the JPEG 2000 codestream of the
#: embedded-delimiter file does not decode at all (pydicom and our rendered route refuse it too).
UNDRAWABLE = {"SC_rgb_rle_32bit.dcm", "SC_rgb_rle_32bit_2frame.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}


@dataclass
class Stored:
    ct: Series
    bare: Series
    zero_spacing: Series
    #: StudyInstanceUID -> the name of the first pydicom test file stored in it.
    pydicom_studies: dict[str, str]


def _serves_viewer(base: str) -> bool:
    try:
        r = httpx.get(f"{base}/viewer/", timeout=10)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and "app-config.js" in r.text


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, viewer_dist: Path) -> Iterator[PacsProcess]:
    tmp = tmp_path_factory.mktemp("ohif-pacs")
    proc = PacsProcess(data_dir=tmp / "pacs-data", log_path=tmp / "pacs.log", workers=1,
                       env={"PACS_VIEWER_DIR": str(viewer_dist)})
    try:
        yield proc.start()
    finally:
        proc.stop()


def _tool(name: str) -> str:
    path = dcmtk_tool(name)
    assert path is not None, f"dcmtk {name} is not installed (make setup installs dcmtk)"
    return path


def _storescu(pacs: PacsProcess, directory: Path) -> None:
    out = subprocess.run([_tool("storescu"), "-aec", "PACS", "+sd", "+r", "127.0.0.1", str(pacs.dimse_port),
                          str(directory)], capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, f"storescu failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def _send_test_files(pacs: PacsProcess, tmp: Path) -> dict[str, str]:
    """Send pydicom's test files as a new user would: one dcmsend over the whole tree (a broken file
    fails alone); the studies of the files it stored (by its report), each named by its first file."""
    tree = tmp / "test_files"
    shutil.copytree(TEST_FILES, tree, ignore=shutil.ignore_patterns(*UNDRAWABLE))
    assert sum(1 for p in tree.rglob("*") if p.is_file()) > 100, f"pydicom's test files not found in {TEST_FILES}"
    report = tmp / "dcmsend-report.txt"
    out = subprocess.run([_tool("dcmsend"), "-aec", "PACS", "-nh", "--scan-directories", "--recurse",
                          "--create-report-file", str(report), "127.0.0.1", str(pacs.dimse_port), str(tree)],
                         capture_output=True, text=True, timeout=WAIT * 3)
    assert report.is_file(), f"dcmsend wrote no report (exit {out.returncode}):\n{out.stderr[-3000:]}"
    stored = [Path(m.group(1)) for m in re.finditer(
        r"^Filename\s*: (.+)$(?:\n(?!\n).*)*?\nDIMSE Status\s*: 0x0000 ", report.read_text(), re.M)]
    assert "DUL Finite State Machine Error" not in out.stderr, f"an association was lost:\n{out.stderr[-3000:]}"
    studies: dict[str, str] = {}
    for path in sorted(stored, key=lambda p: p.name):
        study = str(pydicom.dcmread(path, stop_before_pixels=True).get("StudyInstanceUID", ""))
        if study:
            studies.setdefault(study, path.stem)
    return studies


def _listed(base: str) -> set[str]:
    r = httpx.get(f"{base}/dicomweb/studies", params={"limit": 1000}, timeout=30)
    return {s["0020000D"]["Value"][0] for s in r.json()} if r.status_code == 200 else set()


@pytest.fixture(scope="module")
def stored(pacs: PacsProcess, tmp_path_factory: pytest.TempPathFactory) -> Stored:
    tmp = tmp_path_factory.mktemp("ohif-data")
    ct, bare = write_ct_series(tmp / "ct"), write_bare_study(tmp / "bare")
    zero = write_bare_study(tmp / "zero", Modality="CR", PatientName="Zero^Spacing", PixelSpacing=[0, 0])
    for series in (ct, bare, zero):
        _storescu(pacs, series.directory)
    pydicom_studies = _send_test_files(pacs, tmp)
    assert len(pydicom_studies) > 15, pydicom_studies
    expected = {ct.study_uid, bare.study_uid, zero.study_uid, *pydicom_studies}
    wait_until(lambda: _listed(pacs.http_url), lambda got: expected <= got, timeout=WAIT, interval=0.5,
               what="QIDO to list every stored study")
    return Stored(ct, bare, zero, pydicom_studies)


def _metadata(base: str, study: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/dicomweb/studies/{study}/metadata", timeout=60)
    assert r.status_code == 200, f"metadata of {study}: {r.status_code} {r.text[:300]}"
    return list(r.json())


def _shows_images(instances: list[dict[str, Any]]) -> bool:
    return any(any(t in i for t in PIXEL_TAGS)
               and (i.get("00080016", {}).get("Value") or [""])[0] not in NOT_ON_THEIR_OWN
               for i in instances)


def _probe(tools: Tools, base: str, plan: dict[str, Any], out: Path) -> dict[str, Any]:
    plan_file = out / "plan.json"
    plan_file.write_text(json.dumps(plan, indent=1))
    cmd = [tools.node, str(HERE / "ohif_probe.mjs"), "--base", base, "--studies", str(plan_file),
           "--out", str(out), "--timeout", str(int(WAIT)), "--chromium", tools.chromium]
    budget = WAIT * (3 + len(plan["studies"]))
    try:
        done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as exc:  # the probe's own watchdog should come first
        raise AssertionError(f"the browser probe did not finish in {budget:.0f}s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result from the probe (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def test_ohif_lists_every_study_and_draws_every_image(
    browser_tools: Tools, pacs: PacsProcess, stored: Stored,
) -> None:
    base = pacs.http_url
    assert _serves_viewer(base), f"pacs up does not serve /viewer/ at {base}"
    started = time.monotonic()
    # The study that broke OHIF's study list: ModalitiesInStudy present, empty (correct DICOM JSON).
    bare = httpx.get(f"{base}/dicomweb/studies", params={"StudyInstanceUID": stored.bare.study_uid},
                     timeout=10).json()
    assert [s.get("00080061") for s in bare] == [{"vr": "CS"}], bare
    ct = httpx.get(f"{base}/dicomweb/studies", params={"PatientID": PATIENT_ID}, timeout=10).json()
    assert [s["0020000D"]["Value"][0] for s in ct] == [stored.ct.study_uid]

    listed = _listed(base)
    studies: list[dict[str, Any]] = [{"name": "synthetic-ct", "uid": stored.ct.study_uid, "image": True},
               {"name": "missing-attributes", "uid": stored.bare.study_uid, "image": True},
               {"name": "zero-pixel-spacing", "uid": stored.zero_spacing.study_uid, "image": True}]
    skipped: dict[str, str] = {}
    for uid, name in sorted(stored.pydicom_studies.items(), key=lambda kv: kv[1]):
        if _shows_images(_metadata(base, uid)):
            studies.append({"name": f"pydicom-{name}", "uid": uid, "image": True})
        else:
            skipped[name] = uid  # SR, RT plan/structure set, ECG, the file-set's pixel-less CTs
    names = {str(s["name"]) for s in studies}
    for must in ("pydicom-CT_small", "pydicom-MR_small"):
        assert must in names, f"{must} not among the image studies: {sorted(names)}"
    plan = {"listed": len(listed), "patients": [PATIENT_SHOWN], "studies": studies}

    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    result = _probe(browser_tools, base, plan, ARTIFACTS)
    summary = json.dumps({k: v for k, v in result.items() if k != "studies"}, indent=1)[:4000]
    rows = [f"{s['name']:<40} ok={s['ok']} {s.get('seconds')}s pixels={s.get('pixels')} "
            f"overlay={s.get('overlay', '')[-40:]!r} icons={s.get('icons')} {s.get('error', '')[:300]}"
            for s in result["studies"]]
    print(f"\nscreenshots in {ARTIFACTS}; not opened (no image): {sorted(skipped)}\n" + "\n".join(rows)
          + f"\n{summary}\ntotal {time.monotonic() - started:.1f}s")

    assert "error" not in result, summary
    assert result["list"]["ok"] is True, f"the study list is wrong: {result['list']}"
    bad = [row for row, s in zip(rows, result["studies"], strict=True) if not s["ok"]]
    assert not bad, "studies not drawn:\n" + "\n".join(bad)
    assert result["failed"] == [], f"failed DICOMweb requests:\n{summary}"
    for s in result["studies"]:
        assert Path(s["screenshot"]).is_file(), s
