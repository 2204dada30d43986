"""What C-STORE guarantees (README, "Read-your-writes"): by default an instance is answered once it is
durable and indexed asynchronously, shortly after; with PACS_INDEX_ON_STORE=1 it is indexed before
the answer, so the catalog (C-FIND, QIDO-RS) has it when storescu returns.

The gateway runs alone here (`python -m gateway`, no index worker), so nothing else can index.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacs.backends import open_backend
from pacs.config import Settings
from pacs.events.local import LocalQueue
from pydicom import dcmread
from pydicom.data import get_testdata_file

from .support import dcmtk_tool, free_port, terminate, wait_until

pytestmark = pytest.mark.interop
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]


def gateway(data_dir: Path, port: int, index_on_store: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
    env.update(PACS_DATA_DIR=str(data_dir), PACS_INDEX_ON_STORE=index_on_store, PACS_HOST="127.0.0.1")
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway", "--port", str(port), "--workers", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(params=["0", "1"], ids=["default", "PACS_INDEX_ON_STORE=1"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """CT_small.dcm sent by dcmtk's storescu to a lone gateway; (the setting, the data dir)."""
    storescu, echoscu = dcmtk_tool("storescu"), dcmtk_tool("echoscu")
    assert storescu and echoscu, "dcmtk's storescu and echoscu are required"
    data_dir, port = tmp_path / "data", free_port()
    proc = gateway(data_dir, port, request.param, tmp_path / "gateway.log")
    try:
        wait_until(lambda: subprocess.run([echoscu, "-aec", "PACS", "127.0.0.1", str(port)],
                                          capture_output=True, check=False).returncode,
                   lambda rc: rc == 0, what="the gateway to answer C-ECHO")
        sent = subprocess.run([storescu, "-aec", "PACS", "127.0.0.1", str(port), str(CT_SMALL)],
                              capture_output=True, check=False)
        assert sent.returncode == 0, sent.stderr.decode()
        yield request.param, data_dir
    finally:
        terminate(proc)


def test_what_a_c_store_answer_guarantees(stored: tuple[str, Path]) -> None:
    setting, data_dir = stored
    ds = dcmread(CT_SMALL, stop_before_pixels=True)
    backend = open_backend(Settings(data_dir=data_dir))
    try:
        p = backend.settings.partition
        indexed = backend.catalog.get_instance(p, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        assert isinstance(backend.queue, LocalQueue)
        assert backend.queue.depth() == 1  # its object event, for the index worker (not running here)
        if setting == "1":
            assert indexed is not None and indexed.sop_uid == ds.SOPInstanceUID
        else:
            assert indexed is None  # durable, not yet indexed: queryable once the worker has run
    finally:
        backend.close()
