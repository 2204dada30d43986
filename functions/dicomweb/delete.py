"""DELETE of a study, series or instance (as the Azure DICOM service and dcm4chee offer): 204."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pacs.dicom.uids import check_uid
from pacs.services.delete import DeleteService
from pacs.services.indexer import IndexerService

from functions.dicomweb.context import services

router = APIRouter()


def _delete(request: Request, study: str, series: str | None = None, instance: str | None = None) -> Response:
    check_uid(study, "StudyInstanceUID")
    if series is not None:
        check_uid(series, "SeriesInstanceUID")
    if instance is not None:
        check_uid(instance, "SOPInstanceUID")
    backend = services(request).backend
    indexer = IndexerService(backend.store, backend.catalog, backend.events)  # InstanceDeleted
    DeleteService(backend.store, indexer, backend.settings.partition).delete(study, series, instance)
    return Response(status_code=204)


@router.delete("/studies/{study}")
def delete_study(request: Request, study: str) -> Response:
    return _delete(request, study)


@router.delete("/studies/{study}/series/{series}")
def delete_series(request: Request, study: str, series: str) -> Response:
    return _delete(request, study, series)


@router.delete("/studies/{study}/series/{series}/instances/{instance}")
def delete_instance(request: Request, study: str, series: str, instance: str) -> Response:
    return _delete(request, study, series, instance)
