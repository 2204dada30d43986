"""Lambda entry point: the DICOMweb app behind API Gateway, through Mangum."""

from __future__ import annotations

from mangum import Mangum

from functions.dicomweb.app import create_app

handler = Mangum(create_app(), lifespan="off")
