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
