"""What the infra tests of the transcoder and the anonymizer share: finding a function and a construct's
resource in a synthesized template, checking a function's real layer, and importing its handler from
that layer on CPython 3.12."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra import assets
from tests.infra.conftest import Synth

LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


def props(r: dict[str, Any]) -> dict[str, Any]:
    return r.get("Properties", {})  # type: ignore[no-any-return]


def function(synth: Synth, handler: str) -> tuple[str, dict[str, Any]]:
    """(logical id, properties) of the one function with this handler."""
    [(lid, fn)] = [(k, r) for k, r in synth.resources("AWS::Lambda::Function").items()
                   if props(r).get("Handler") == handler]
    return lid, props(fn)


def logical_id(synth: Synth, path: str) -> str:
    """The logical id of the resource at a construct path under the stack (`Transcoder/Queue`)."""
    node: Any = synth.stack
    for part in path.split("/"):
        node = node.node.find_child(part)
    child = node.node.default_child
    return str(synth.stack.resolve(child.logical_id))


def check_layer(layer: Path, present: tuple[str, ...], absent: tuple[str, ...]) -> None:
    """The layer's site-packages has `present` and none of `absent`; with all of `functions/` it fits
    Lambda's unzipped limit."""
    site = layer / "python"
    for name in present:
        assert (site / name).is_dir(), name
    for name in absent:
        assert not (site / name).exists(), name
    code = assets.tree_size(assets.functions_code())
    size = assets.tree_size(layer)
    assert size + code < LAMBDA_UNZIPPED_LIMIT, (size, code)


def smoke(layer: Path, script: str) -> Any:
    """The JSON `script` prints last, run by CPython 3.12 (skipped without one) on the functions' code
    and the layer, as the Lambda runtime would."""
    python = assets.layer_builder().python312()
    if python is None:
        pytest.skip("no CPython 3.12 here")
    code = assets.functions_code()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PACS_BACKEND": "aws", "PACS_BUCKET": "b",
           "PACS_TABLE": "t", "PACS_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}
    paths = [str(code), str(layer / "python")]
    done = subprocess.run([python, "-I", "-c", f"import sys; sys.path[:0] = {paths!r}\n{script}"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=code)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
