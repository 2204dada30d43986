"""Integration tests against moto (in-process `mock_aws`): dummy credentials, nothing real reachable."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy AWS credentials in us-east-1, Powertools' tracer off.

    Every inherited `PACS_*` variable and every AWS profile / endpoint / region override is dropped
    first, so a developer's shell can neither point the tests at a real account nor change settings.
    """
    for name in list(os.environ):
        if name.startswith(("PACS_", "AWS_ENDPOINT_URL")) or name in (
            "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "indexer")
