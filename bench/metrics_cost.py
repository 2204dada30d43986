"""Per-call cost of the metrics the DIMSE fast paths record, in memory and in multiprocess mode.

    .venv/bin/python bench/metrics_cost.py            # both modes, each in its own process

Each figure is the best of 3 runs of 200,000 calls (microseconds per call).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable

CALLS = 200_000


def measure(mode: str) -> None:
    from pacs.monitoring import metrics

    m = metrics.get()
    child = m.dimse_operations.labels("C-STORE", "0x0000")
    cases: list[tuple[str, Callable[[], None]]] = [
        ("counter increment (labelled child)", child.inc),
        ("counter labels(...).inc()", lambda: m.dimse_operations.labels("C-STORE", "0x0000").inc()),
        ("dimse_operation (counter, histogram, bytes)",
         lambda: metrics.dimse_operation("C-STORE", 0, 0.003, 40_000)),
        ("instance_stored", lambda: metrics.instance_stored("stored")),
    ]
    for name, call in cases:
        best = min(timeit.repeat(call, number=CALLS, repeat=3)) / CALLS
        print(f"{mode:12s}  {name:45s} {best * 1e6:6.2f} µs", flush=True)


def main() -> int:
    if len(sys.argv) > 1:
        measure(sys.argv[1])
        return 0
    with tempfile.TemporaryDirectory(prefix="pacs-metrics-cost-") as files:
        for mode, env in (("in-memory", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": files})):
            subprocess.run([sys.executable, __file__, mode], check=True, env={**os.environ, **env})
    return 0


if __name__ == "__main__":
    sys.exit(main())
