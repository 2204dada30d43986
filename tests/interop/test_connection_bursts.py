"""Bare TCP connections against `pacs up` (two workers sharing the port): 400 connects that close
without a byte (a port scan, a load balancer's health checks), twice, and dcmtk's echoscu is
accepted right after each burst; the gateway logs the refusals."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from .conftest import Launcher
from .support import run_tool, wait_until

pytestmark = pytest.mark.interop


def test_bursts_of_bare_connects_lock_no_association_out(launch: Launcher, dcmtk: Callable[[str], str]) -> None:
    pacs = launch(workers=2)
    for burst in range(2):
        for _ in range(400):
            with socket.create_connection(("127.0.0.1", pacs.dimse_port), timeout=30):
                pass
        # before: "Association Rejected ... Reason: Local" (pynetdicom's slots held for the ACSE timeout)
        echo = run_tool([dcmtk("echoscu"), "-aec", "PACS", "-to", "60", "-ta", "60",
                         "127.0.0.1", str(pacs.dimse_port)])
        assert echo.returncode == 0, f"burst {burst}: {echo.stdout}\n{echo.stderr}"
    wait_until(pacs.log_text, lambda log: "closed before sending anything [closed-before-request]" in log,
               timeout=60)
