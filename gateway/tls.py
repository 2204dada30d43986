"""DICOM TLS on the gateway's second port: the acceptor context (BCP 195 non-downgrading, built by
`pacs.dimse.tls`) and the handshake, done in the connection's own thread with a timeout (never in
the accepting thread, where one silent peer would stall every other connection).
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from pacs.config import Settings
from pacs.dimse.tls import server_context
from pacs.monitoring.metrics import tls_handshake_failed

from gateway.counters import COUNTERS
from gateway.policy import PduGuard

log = logging.getLogger("gateway")


class GuardedSSLSocket(PduGuard, ssl.SSLSocket):  # type: ignore[misc]
    """A TLS connection whose received PDUs are bounded in size and time (see `PduGuard`)."""


def acceptor_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the gateway, or None when TLS is off (no certificate and key)."""
    if not (settings.tls_cert and settings.tls_key):
        return None
    ctx = server_context(settings.tls_cert, settings.tls_key, settings.tls_ca or None,
                         require_client_cert=bool(settings.tls_require_client_cert))
    ctx.sslsocket_class = GuardedSSLSocket
    return ctx


def handshake(sock: ssl.SSLSocket) -> bool:
    """Complete the server side of the handshake (bounded by the socket's timeout); False, logged,
    when it fails: a protocol below TLS 1.2, no common cipher suite, a missing or untrusted client
    certificate, a peer that says nothing."""
    try:
        sock.do_handshake()
    except (OSError, ValueError) as exc:
        COUNTERS.reject("tls-handshake", _peer(sock), f"TLS handshake with {{peer}} refused: {exc}")
        tls_handshake_failed(exc)
        return False
    return True


def _peer(sock: ssl.SSLSocket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return "a peer"
