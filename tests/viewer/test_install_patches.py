"""`tools/install_viewer.py`'s patches of OHIF's build: applied once, refused when they do not match.

The getModalities fix is also checked in OHIF's own code: the patched function, run by Node.js,
merges an empty ModalitiesInStudy (`{"vr":"CS"}`) where the shipped one throws.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import _installer

installer: ModuleType = _installer()
GET_MODALITIES = re.compile(r"function getModalities\(Modality, ModalitiesInStudy\) \{.*?\n\}\n", re.S)


def _dist(tmp_path: Path, text: str) -> Path:
    dist = tmp_path / "viewer"
    dist.mkdir()
    (dist / "app.bundle.1234567890abcdef.js").write_text(text)
    (dist / "other.js").write_text("/* nothing to patch */")
    return dist


def test_each_patch_is_applied_once(tmp_path: Path) -> None:
    assert len(installer.PATCHES) >= 2
    dist = _dist(tmp_path, "\n".join(f"a();\n{fix.old}\nb();" for fix in installer.PATCHES))
    installer.patch(dist)
    text = (dist / "app.bundle.1234567890abcdef.js").read_text()
    for fix in installer.PATCHES:
        assert text.count(fix.new) == 1 and fix.old not in text.replace(fix.new, "")


@pytest.mark.parametrize("copies", [0, 2])
def test_a_patch_that_does_not_match_once_fails_the_install(tmp_path: Path, copies: int) -> None:
    dist = _dist(tmp_path, "\n".join([installer.PATCHES[0].old] * copies))
    with pytest.raises(installer.InstallError, match="must match once"):
        installer.patch(dist)


def _run_get_modalities(source: str, modality: object, in_study: object) -> object:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed (make setup installs it)"
    script = f"{source}\nconsole.log(JSON.stringify(getModalities({json.dumps(modality)}, {json.dumps(in_study)})));"
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        return RuntimeError(out.stderr.strip() or "failed")
    return json.loads(out.stdout)


def test_installed_getmodalities_accepts_an_empty_modalities_in_study(viewer_dist: Path) -> None:
    """The installed build carries the fix; the shipped code (the patch undone) throws."""
    bundles = [p for p in viewer_dist.glob("app.bundle.*.js")]
    text = "".join(p.read_text(encoding="utf-8") for p in bundles)
    match = GET_MODALITIES.search(text)
    assert match is not None, "getModalities not found in the installed app bundle"
    patched = match.group(0)
    fix = installer.PATCHES[0]
    assert fix.new in patched
    empty = {"vr": "CS"}
    assert _run_get_modalities(patched, None, empty) == {"vr": "CS", "Value": []}
    assert _run_get_modalities(patched, None, {"vr": "CS", "Value": ["CT", "SR"]}) == {
        "vr": "CS", "Value": ["CT", "SR"]}
    shipped = _run_get_modalities(patched.replace(fix.new, fix.old), None, empty)
    assert isinstance(shipped, RuntimeError) and "reading 'length'" in str(shipped)
