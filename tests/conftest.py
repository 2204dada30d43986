"""Parallel runs with pytest-xdist (`make test`: `-n auto --dist loadgroup`): which tests share a worker.

- Every test that needs the installed OHIF viewer or the browser tools (`viewer_dist`, `browser_tools`:
  `npm ci` in tests/viewer, the OHIF install into .build/viewer, Chromium) is in the group `viewer`: no two
  workers install or drive them at once.
- A test that uses a fixture of module (or class, package) scope is grouped with its module: the module's
  `pacs up`, Orthanc, synthesized stack or loaded data start once, on one worker, as in a serial run
  (instead of once on each worker that draws one of its tests).
- Everything else is distributed test by test. An explicit `xdist_group` mark wins.

Without `--dist loadgroup` (a serial run, or another mode) nothing changes.
"""

from __future__ import annotations

import pytest

#: Fixtures whose users all go to the `viewer` group.
VIEWER_FIXTURES = frozenset({"viewer_dist", "browser_tools"})
SHARED_SCOPES = frozenset({"module", "class", "package"})


def _group(item: pytest.Item) -> str | None:
    names = set(getattr(item, "fixturenames", ()))
    if names & VIEWER_FIXTURES:
        return "viewer"
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) or {}
    if any(getattr(d, "scope", "function") in SHARED_SCOPES for seq in defs.values() for d in seq):
        return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into scheduling groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if getattr(config.option, "dist", "no") != "loadgroup":
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None and (group := _group(item)):
            item.add_marker(pytest.mark.xdist_group(group))
