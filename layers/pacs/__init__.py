"""pacs: the shared library of the serverless PACS (DICOM handling, ports and adapters, services, CLI)."""

__version__ = "0.1.0"
