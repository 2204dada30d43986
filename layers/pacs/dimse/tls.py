"""TLS contexts for DICOM (PS3.15 B.10, the Non-Downgrading BCP 195 TLS Secure Transport Connection
Profile): TLS 1.2 or later only, with the TLS 1.2 suites the profile permits (ECDHE key exchange,
AES-GCM) and every TLS 1.3 suite (all AEAD). No compression, no renegotiation.
"""

from __future__ import annotations

import ssl
from pathlib import Path

#: The TLS 1.2 cipher suites of the profile (OpenSSL names of TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128,256}_GCM_*).
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
])


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are OpenSSL's defaults: all permitted
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def server_context(cert: str | Path, key: str | Path, ca: str | Path | None = None, *,
                   require_client_cert: bool = False) -> ssl.SSLContext:
    """The acceptor's context: its certificate and key; with `ca`, client certificates are verified
    against it (required with `require_client_cert`, else verified only when presented)."""
    if require_client_cert and not ca:
        raise ValueError("requiring client certificates needs a CA to verify them (tls_ca)")
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(str(cert), str(key))
    if ca:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """The requestor's context: the server certificate verified against `ca` (or the system's CAs);
    `cert`/`key` present a client certificate. Host names are not checked: DICOM nodes are known by
    AE title and address, their certificates rarely name them (as dcmtk does)."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca:
            ctx.load_verify_locations(cafile=str(ca))
        else:
            ctx.load_default_certs()
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx
