"""Lambda entry point: the DICOMweb app behind API Gateway, through Mangum.

Mangum buffers the whole response, and Lambda returns at most 6 MB of JSON (about 4.5 MB of binary
after base64). Under Lambda, unless `PACS_MAX_INLINE_RESPONSE` says otherwise, WADO-RS bodies above
`LAMBDA_MAX_INLINE` are therefore answered with a 303 to a pre-packed object in S3 (see `wado`).
"""

from __future__ import annotations

import dataclasses
import os

from mangum import Mangum
from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
from pacs.backends import open_backend
from pacs.config import Settings
from pacs.monitoring import emf

from functions.dicomweb.app import create_app

#: The largest multipart body answered inline on Lambda (base64 makes it about 5.3 MB of JSON).
LAMBDA_MAX_INLINE = 4_000_000


def lambda_settings(environ: dict[str, str] | None = None) -> Settings:
    """The settings from the environment, with the inline limit Lambda needs when none is set."""
    env = dict(os.environ) if environ is None else environ
    settings = Settings.from_env(env)
    if "AWS_LAMBDA_FUNCTION_NAME" in env and "PACS_MAX_INLINE_RESPONSE" not in env:
        settings = dataclasses.replace(settings, max_inline_response=LAMBDA_MAX_INLINE)
    return settings


#: DICOM JSON is text: returned as is, not base64 (a third smaller against Lambda's 6 MB limit).
#: STOW's stored and refused instances, object store errors: EMF lines at the end of each invocation.
handler = emf.flushed("dicomweb")(Mangum(
    create_app(open_backend(lambda_settings())),
    lifespan="off",
    text_mime_types=[*DEFAULT_TEXT_MIME_TYPES, "application/dicom+json"],
))
