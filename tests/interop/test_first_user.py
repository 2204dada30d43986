"""The README's walk-through ("Send a study, find it, fetch it"), run as written against a real
`pacs up` on free ports: every query in it returns something on the data it tells you to send. Also
what `pacs up` prints (the viewer's URL) and its `/` (a redirect to the viewer)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.interop.conftest import Launcher
from tests.interop.support import PacsProcess

README = Path(__file__).resolve().parents[2] / "README.md"
VENV_BIN = Path(sys.executable).parent
MARK = "### README command "


def walkthrough() -> list[str]:
    """The commands of the README's first bash block after "## Send a study…" (continuations joined)."""
    text = README.read_text()
    section = text[text.index("## Send a study, find it, fetch it"):]
    block = section[section.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("```")]
    return [c.strip() for c in re.sub(r"\\\n\s*", "", block).splitlines() if c.strip()]


@pytest.fixture(scope="module")
def pacs(launch_module: Launcher) -> PacsProcess:
    return launch_module(name="first-user")


def test_pacs_up_names_the_viewer_and_root_redirects_to_it(pacs: PacsProcess) -> None:
    assert f"pacs: viewer {pacs.http_url}/viewer/\n" in pacs.log_text()
    rsp = httpx.get(pacs.http_url + "/", follow_redirects=False, timeout=30)
    assert rsp.is_redirect and rsp.headers["location"] == "/viewer/"
    assert httpx.get(pacs.http_url + "/", follow_redirects=True, timeout=30).status_code == 200


def test_the_readme_walkthrough_returns_something_at_every_step(pacs: PacsProcess, tmp_path: Path) -> None:
    commands = walkthrough()
    assert any("storescu" in c and "-xw" in c and "-xu" in c and "-xx" in c for c in commands)
    assert any("storescu" in c and ("+sp '*.dcm'" in c or "-nh" in c) for c in commands)
    script = ["set -u"]  # not -e: `pacs store` exits 1, rightly, for the set's broken files
    for n, command in enumerate(commands):
        command = command.replace("11112", str(pacs.dimse_port)).replace("8080", str(pacs.http_port))
        command = command.replace(".venv/bin/", f"{VENV_BIN}/")
        script += [f"echo '{MARK}{n}'", command]
    # dcmtk's tools, not pynetdicom's of the same name in the venv
    out = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert "command not found" not in out.stderr, out.stderr[-3000:]
    outputs = dict(zip(commands, re.split(rf"^{MARK}\d+\n", out.stdout, flags=re.M)[1:], strict=True))
    for command, printed in outputs.items():
        if command.startswith(("curl", ".venv/bin/pacs find", ".venv/bin/pacs get", ".venv/bin/pacs store")) \
                and "-o " not in command:
            assert printed.strip() not in ("", "[]", "null"), f"{command!r} printed nothing"
    finds = [p for c, p in outputs.items() if c.startswith(".venv/bin/pacs find")]
    assert finds and all("CompressedSamples^CT1" in p and "final status 0x0000 Success" in p for p in finds)
    gets = [p for c, p in outputs.items() if c.startswith(".venv/bin/pacs get")]
    assert gets and all("C-GET final status 0x0000 Success: remaining 0, completed 1" in p for p in gets)
    assert (tmp_path / "study.multipart").stat().st_size > 10_000
    assert list((tmp_path / "out").glob("*.dcm"))
    studies = httpx.get(pacs.dicomweb_url + "/studies", params={"PatientName": "compressed*"}, timeout=30).json()
    assert len(studies) == 4
    instances = httpx.get(pacs.dicomweb_url + "/instances", params={"limit": "1000"}, timeout=30).json()
    assert len(instances) > 100  # 116-117 with pydicom 3.0 (a few files share a SOP Instance UID)
