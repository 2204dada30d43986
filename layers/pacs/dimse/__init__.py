"""DIMSE service users of the PACS: sending instances (C-STORE SCU), selecting what a retrieve asks for."""
