"""Parallel associations against the pre-forked gateway workers of `pacs up`.

The whole set is sent by several storescu processes at once, the uncompressed files twice at the
same time, and a 2 MiB instance in 16 KiB PDUs alongside: every C-STORE succeeds, the re-sent
identical instances are no-ops (nothing in history), the aggregates are exact, and the large object
is stored byte for byte.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from .conftest import Launcher
from .dicomgen import DataSet, new_study, write_extra_instance
from .support import Qido, dataset_bytes, instance_path, snapshot, wait_indexed

pytestmark = pytest.mark.interop


def test_parallel_associations_store_everything_once(
    launch: Launcher, dataset: DataSet, dcmtk: Callable[[str], str], storescu_profile: Path,
    tmp_path: Path,
) -> None:
    pacs = launch(workers=2)
    study, series = new_study("large")
    pixels = (np.arange(1024 * 1024, dtype=np.uint32) * 2654435761 % 4096).astype(np.uint16)
    large = write_extra_instance(series, study, 1, tmp_path / "large.dcm", Rows=1024, Columns=1024,
                                 PixelData=pixels.tobytes())
    series.instances.append(large)
    storescu, port = dcmtk("storescu"), str(pacs.dimse_port)
    commands = [
        [storescu, "-aec", "PACS", "+sd", "+r", "127.0.0.1", port, str(dataset.native_dir)],
        [storescu, "-aec", "PACS", "+sd", "+r", "127.0.0.1", port, str(dataset.native_dir)],
        [storescu, "-aec", "PACS", "+sd", "+r", "-xf", str(storescu_profile), "AsStored", "127.0.0.1",
         port, str(dataset.compressed_dir)],
        [storescu, "-aec", "PACS", "--max-send-pdu", "16384", "127.0.0.1", port, str(large.path)],
    ]
    senders = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for c in commands]
    outputs = []
    for sender in senders:
        try:
            out, _ = sender.communicate(timeout=120)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        outputs.append((sender.returncode, out))
    assert all(code == 0 for code, _ in outputs), outputs

    qido = Qido(pacs)
    try:
        wait_indexed(qido, [*dataset.studies, study])
        assert len(qido.studies()) == len(dataset.studies) + 1
    finally:
        qido.close()
    stored = snapshot(pacs.objects_dir)
    assert not [k for k in stored if k.startswith("default/history/")], "identical re-sends were replaced"
    assert len([k for k in stored if k.startswith("default/studies/")]) == len(dataset.instances) + 1
    data = instance_path(pacs.objects_dir, large).read_bytes()
    assert dataset_bytes(data) == dataset_bytes(large.path.read_bytes())
