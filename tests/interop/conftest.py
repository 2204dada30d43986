"""Fixtures of the interop suite: the generated data set, dcmtk tools, `pacs up` processes.

Each module marks its tests `interop` (`pytestmark`). A failing test gets the output of the `pacs up` processes its
module started attached to its report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from .dicomgen import DataSet, generate
from .support import PacsProcess, dcmtk_tool

#: Every `pacs up` started by this suite, with the test module that started it.
STARTED: list[tuple[str, PacsProcess]] = []

#: A storescu association profile that proposes every syntax of the generated set in a context of
#: its own, so each file goes as stored: `storescu -xf FILE AsStored ...`.
STORESCU_PROFILE = """\
[[TransferSyntaxes]]
[ExplicitLE]
TransferSyntax1 = 1.2.840.10008.1.2.1
[ImplicitLE]
TransferSyntax1 = 1.2.840.10008.1.2
[JPEGLSLossless]
TransferSyntax1 = 1.2.840.10008.1.2.4.80
[RLELossless]
TransferSyntax1 = 1.2.840.10008.1.2.5

[[PresentationContexts]]
[AsStored]
PresentationContext1 = 1.2.840.10008.5.1.4.1.1.2\\ExplicitLE
PresentationContext2 = 1.2.840.10008.5.1.4.1.1.2\\ImplicitLE
PresentationContext3 = 1.2.840.10008.5.1.4.1.1.2\\JPEGLSLossless
PresentationContext4 = 1.2.840.10008.5.1.4.1.1.2\\RLELossless
PresentationContext5 = 1.2.840.10008.5.1.4.1.1.4\\ExplicitLE
PresentationContext6 = 1.2.840.10008.5.1.4.1.1.4\\ImplicitLE
PresentationContext7 = 1.2.840.10008.5.1.4.1.1.4\\JPEGLSLossless
PresentationContext8 = 1.2.840.10008.5.1.4.1.1.4\\RLELossless

[[Profiles]]
[AsStored]
PresentationContexts = AsStored
"""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not report.failed:
        return report
    module = item.nodeid.split("::")[0]
    for origin, pacs in STARTED:
        if origin == module:
            tail = pacs.log_text()[-6000:]
            report.sections.append((f"pacs up log {pacs.log_path}", tail))
    return report


class Launcher:
    """Starts `pacs up` processes and stops every one of them at teardown."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[PacsProcess] = []

    def __call__(self, data_dir: Path | None = None, *, workers: int = 2,
                 env: dict[str, str] | None = None, name: str = "pacs",
                 like: PacsProcess | None = None) -> PacsProcess:
        """Start `pacs up` (on a new data dir and free ports, or the data dir and ports of `like`)."""
        n = len(self.started)
        pacs = PacsProcess(
            data_dir=like.data_dir if like else data_dir or self.base / f"{name}-data-{n}",
            log_path=self.base / f"{name}-{n}.log", workers=like.workers if like else workers,
            env=like.env if like else env,
            dimse_port=like.dimse_port if like else 0, http_port=like.http_port if like else 0,
        )
        module = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0]
        STARTED.append((module, pacs))
        self.started.append(pacs)
        return pacs.start()

    def stop_all(self) -> None:
        for pacs in reversed(self.started):
            pacs.stop()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> DataSet:
    return generate(tmp_path_factory.mktemp("dicom"))


@pytest.fixture(scope="session")
def dcmtk() -> Callable[[str], str]:
    """`dcmtk("storescu")` is the path of the dcmtk tool; a test fails without it (`make setup`
    installs Debian dcmtk)."""
    found: dict[str, str] = {}

    def tool(name: str) -> str:
        if name not in found:
            path = dcmtk_tool(name)
            if path is None:
                pytest.fail(f"dcmtk {name} is not installed: run `make setup` (Debian dcmtk)")
            found[name] = path
        return found[name]

    return tool


@pytest.fixture(scope="session")
def storescu_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("storescu") / "storescu.cfg"
    path.write_text(STORESCU_PROFILE)
    return path


@pytest.fixture(scope="module")
def launch_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("pacs"))
    yield launcher
    launcher.stop_all()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.stop_all()
