"""What the routes share: the services of one backend, media types, and the request error type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from fastapi import Request
from pacs.backends import Backend
from pacs.errors import PacsError
from pacs.services.query import QueryService
from pacs.services.retrieve import RetrieveService

from functions.dicomweb.urls import base_url

DICOM_JSON = "application/dicom+json"


class BadRequest(PacsError):
    """A request parameter the server cannot use (HTTP 400 with the reason)."""

    http_status = 400


@dataclass(slots=True)
class Services:
    backend: Backend
    query: QueryService
    retrieve: RetrieveService

    @classmethod
    def of(cls, backend: Backend) -> Services:
        p = backend.settings.partition
        return cls(
            backend, QueryService(backend.catalog, p), RetrieveService(backend.store, backend.catalog, p)
        )


def services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


def dicomweb_url(request: Request) -> str:
    """The absolute URL of the DICOMweb root (`…/dicomweb`) for this request (`functions.dicomweb.urls`)."""
    settings = services(request).backend.settings
    base = base_url(request, public_url=settings.public_url, trusted_proxies=settings.trusted_proxies)
    return base + "/dicomweb"
