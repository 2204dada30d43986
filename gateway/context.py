"""What the gateway's event handlers work with: the ingest service and, for the services that read
(C-FIND, C-MOVE, C-GET, storage commitment) or record (MPPS), the backend and the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from pacs.backends import Backend
from pacs.config import Settings
from pacs.services.ingest import IngestService


@dataclass(slots=True)
class GatewayContext:
    ingest: IngestService
    #: The backend of this worker (catalog, store, node registry); None in tests that only store.
    backend: Backend | None = None
    settings: Settings = field(default_factory=Settings)
