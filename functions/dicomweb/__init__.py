"""dicomweb."""
