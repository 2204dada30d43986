"""DICOMweb: a FastAPI app (uvicorn in `pacs up`, Mangum on Lambda)."""
