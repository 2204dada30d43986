"""Serve the DICOMweb app with uvicorn on a listening socket inherited from `pacs up`.

`uvicorn --fd` rebuilds an inherited socket as AF_UNIX, so asyncio never sets TCP_NODELAY on its
connections and every keep-alive response waits for the client's delayed ACK (about 40 ms here;
Kludex/uvicorn#3149). Rebuilding it with `socket.socket(fileno=…)` keeps its real family, and uvicorn
then serves it as TCP.

uvicorn's own proxy-header handling is off (it would believe `X-Forwarded-*` from 127.0.0.1 and
rewrite the peer's address): `functions.dicomweb.urls` honours them from PACS_TRUSTED_PROXIES only.
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys

import uvicorn
from pacs.cli.children import follow_parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.dicomweb.serve", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening TCP socket")
    args = parser.parse_args(argv)
    follow_parent()  # under `pacs up`: never outlive it
    sock = socket.socket(fileno=args.fd)  # the family and type are read from the socket itself
    config = uvicorn.Config(
        "functions.dicomweb.app:create_app", factory=True, access_log=False, log_level="warning",
        timeout_graceful_shutdown=10, proxy_headers=False,
    )
    server = uvicorn.Server(config)
    config.load()  # imports and builds the app now, so its long-lived objects exist before the freeze
    # Move everything alive after start-up (pydicom's dictionaries, the app) out of the collector's
    # reach: full collections then scan only request garbage (300-instance QIDO list p95 48 -> 12 ms).
    gc.freeze()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
