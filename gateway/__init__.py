"""The DIMSE gateway: a pynetdicom AE whose handlers call `pacs.services`."""
