"""DIMSE status codes the gateway answers with (PS3.4 Annex B, PS3.7 Annex C): named, never bare hex."""

SUCCESS = 0x0000
#: Refused: Out of Resources (storage could not accept the object).
OUT_OF_RESOURCES = 0xA700
#: Error: Data Set does not match SOP Class (also: invalid UIDs, duplicate refused).
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
#: Error: Cannot understand (malformed, truncated or non-DICOM payload).
CANNOT_UNDERSTAND = 0xC000
#: Processing failure (an unexpected error in the gateway itself).
PROCESSING_FAILURE = 0x0110
#: Failed: Unable to process (C-FIND, C-MOVE, C-GET: an identifier or a catalog that cannot be used).
UNABLE_TO_PROCESS = 0xC000

#: The transfer syntaxes of the query/retrieve contexts: identifiers are small, and these are what every
#: SCU proposes (Explicit and Implicit VR LE, Deflated, Explicit VR BE).
QUERY_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"]
