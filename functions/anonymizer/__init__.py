"""The anonymizer function (de-identification rules and export tasks)."""
