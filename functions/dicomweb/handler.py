"""Lambda entry point: the DICOMweb app behind API Gateway, through Mangum."""

from __future__ import annotations

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES

from functions.dicomweb.app import create_app

#: DICOM JSON is text: returned as is, not base64 (a third smaller against Lambda's 6 MB limit).
handler = Mangum(
    create_app(), lifespan="off", text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/dicom+json"]
)
