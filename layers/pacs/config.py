"""Settings of a PACS process, from the environment (`PACS_*`), shared by every component.

`pacs up` passes its settings to the processes it starts through the same variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

Backend = Literal["embedded", "aws"]


@dataclass(frozen=True, slots=True)
class Settings:
    backend: Backend = "embedded"
    #: Embedded storage: objects under DATA_DIR/objects, catalog.db and queue.db beside them.
    data_dir: Path = Path("pacs-data")
    #: The tenant every object and catalog row belongs to.
    partition: str = "default"
    ae_title: str = "PACS"
    host: str = "127.0.0.1"
    dimse_port: int = 11112
    http_port: int = 8080
    #: Gateway worker processes sharing the DICOM port.
    gateway_workers: int = 2
    #: What a re-sent SOP Instance UID with different content does: replace, keep or reject.
    duplicate_policy: str = "replace"
    #: Largest PDU the gateway accepts (bytes); 0 means unlimited.
    max_pdu: int = 1 << 20
    #: Largest PDU the gateway sends, whatever a peer announces (0 or 4 GB): bounds send buffers.
    max_send_pdu: int = 1 << 20
    #: Concurrent associations over all gateway workers; one more is rejected (local limit exceeded).
    max_associations: int = 64
    #: Connections from one address that have not sent a byte yet (per gateway worker): over this,
    #: the oldest is closed. They hold no thread; one still silent after ACSE_TIMEOUT is closed.
    max_silent_per_source: int = 16
    #: Seconds: a silent or trickling peer is dropped after NETWORK_TIMEOUT (idle, or one PDU taking
    #: longer); ACSE_TIMEOUT bounds association set-up and release (ARTIM); DIMSE_TIMEOUT a DIMSE reply.
    network_timeout: int = 60
    acse_timeout: int = 30
    dimse_timeout: int = 60
    #: The calling-AE allowlist (the node registry): `auto` (on unless embedded on a loopback
    #: address), `1` or `0`.
    require_known_callers: str = "auto"
    #: DICOM TLS (BCP 195 non-downgrading) on its own port, on when TLS_CERT and TLS_KEY are set.
    #: TLS_CA verifies client certificates (required when TLS_REQUIRE_CLIENT_CERT is 1).
    tls_port: int = 2762
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    tls_require_client_cert: int = 0
    #: 1: the gateway spools each received data set to a file (memory stays bounded whatever the
    #: instance size; on the filesystem backend the file is then linked into place, no copy).
    #: 0: data sets are assembled in memory.
    spool_received: int = 1
    #: 1 (default, like Orthanc's `UnknownSopClassAccepted`): an abstract syntax the standard does not
    #: define (a private SOP class, or one newer than this release) proposed to the gateway is accepted
    #: as a storage SOP class, with both roles, and its instances stored, indexed and served like the
    #: rest; 0: refused at negotiation. Every storage SOP class of the standard, retired ones included,
    #: is accepted either way; known non-storage classes the gateway does not serve are refused.
    accept_unknown_sop_classes: int = 1
    #: Which instance UIDs (Study, Series, SOP Instance) ingest accepts: `key-safe` (default) also takes
    #: non-conformant identifiers real devices emit (hashes, GUIDs: letters, digits, dots and dashes,
    #: at most 64 characters), stored under keys that cannot leave their prefix and served by their
    #: value; `strict` takes conformant UIDs only (digits and dots). Path characters, NUL, other
    #: characters and over-long values are refused under both (DIMSE 0xA900, HTTP 400).
    uid_policy: str = "key-safe"
    #: DICOMweb CORS: `*` (any origin) or a comma-separated list of allowed origins.
    cors_origins: str = "*"
    #: The largest WADO-RS multipart body (bytes, estimated from the catalog) answered inline; above
    #: it, when the store can presign, the body is pre-packed in the store and answered with a 303 to
    #: a presigned GET. 0: unlimited (streamed, as under uvicorn); the Lambda handler sets 4 MB.
    max_inline_response: int = 0
    #: Lifetime (seconds) of the presigned URLs of pre-packed responses.
    presign_expires: int = 900
    #: Seconds between the gateway's CloudWatch EMF reports on stdout (`pacs.monitoring.emf_reporter`);
    #: 0: none. The gateway image sets 60.
    emf_interval: int = 0
    #: AWS backend.
    bucket: str = ""
    #: Derived data (`{partition}/derived/…`) in its own bucket; empty: the same bucket as originals.
    derived_bucket: str = ""
    table: str = ""
    #: The EventBridge bus domain events go to (InstanceStored, StudyUpdated…); empty: none emitted.
    event_bus: str = ""
    #: The index queue S3 notifies and its dead-letter queue (`pacs up --backend aws`, `pacs dlq`).
    queue_url: str = ""
    dlq_url: str = ""
    endpoint_url: str = ""
    region: str = "us-east-1"
    #: 1: a C-STORE is indexed before it is answered (queryable by the next C-FIND, as STOW-RS
    #: always is); 0: it is answered once durable and indexed asynchronously, shortly after.
    index_on_store: int = 0
    #: The public base URL of the server (`https://pacs.example.org`, an API Gateway stage URL):
    #: RetrieveURLs and BulkDataURIs start with it. Empty: from the request (see TRUSTED_PROXIES).
    public_url: str = ""
    #: Comma-separated addresses or networks (`10.0.0.0/8`) of reverse proxies whose `Forwarded` /
    #: `X-Forwarded-*` headers are believed; empty: none (the headers are ignored).
    trusted_proxies: str = ""
    #: The transcoder's policy (`pacs.services.transcode_policy`): a TOML or JSON file, or the JSON text
    #: itself; empty: no rules, nothing derived (and `pacs up` starts no transcoder).
    transcode_policy: str = ""
    #: Transcoder worker processes under `pacs up` (transcoding is CPU-bound); 0: one per CPU.
    transcode_workers: int = 0
    #: AWS: the transcoder function's dead-letter queue; a permanently failing event (a corrupt original)
    #: is sent there at once with the reason as its `error` message attribute.
    transcode_dlq_url: str = ""
    #: De-identification (`pacs.deid`): the anonymizer's rules (`pacs.services.deid_rules`), a TOML or JSON
    #: file or the JSON text itself; empty: no rules (export jobs still run).
    deid_rules: str = ""
    #: The master secret behind pseudonyms and UIDs. Embedded: a file (default DATA_DIR/deid/secret.key,
    #: made on first use). AWS: a Secrets Manager ARN (`arn:aws:secretsmanager:…`) or an SSM SecureString
    #: parameter name (`/pacs/deid/secret`).
    deid_secret: str = ""
    #: Clean Pixel Data's rules (`pacs.deid.pixels`: burned-in regions per modality / manufacturer / model
    #: / size), a TOML or JSON file or text; empty: none (every image that burns in is then held back).
    deid_pixel_rules: str = ""
    #: Where export jobs write ZIPs and Part 10 files (AWS: the exports bucket; empty: the main bucket,
    #: under `{partition}/export/`).
    exports_bucket: str = ""
    #: AWS: the anonymizer's queue (rule events and export tasks) and its dead-letter queue.
    anonymizer_queue_url: str = ""
    anonymizer_dlq_url: str = ""
    #: The partitions export jobs may write de-identified copies into (comma-separated); `*`: any (embedded).
    #: The AWS stack sets the ones its anonymizer may write (the rules' destinations, context
    #: `exportPartitions`); empty: none.
    export_partitions: str = "*"
    #: Anonymizer worker processes under `pacs up`; 0: one per CPU.
    deid_workers: int = 0
    #: A study is stable (a `StudyStable` event) when no instance arrived for this long; 0: no
    #: study-stable worker under `pacs up`.
    study_quiet_seconds: int = 60
    #: AWS: the study-stable function's queue (StudyUpdated events and its own timer messages).
    stable_queue_url: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"PACS_{f.name.upper()}")
            if raw is None:
                continue
            if f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("Path", Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        return {f"PACS_{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}
