"""The scheduled reconciliation Lambda."""
