"""The real `pacs` layer, built without Docker (tools/build_layer.py, cached in .build/layer; pip only
runs when the requirements change), synthesized once with bundling on: what Lambda will load."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from infra import assets
from tests.infra.conftest import FULL, Synth, synthesize

#: Lambda's limit for a function and all its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
NEEDED = ("pacs", "pydicom", "numpy", "pylibjpeg", "openjpeg", "rle", "jpeg_ls", "PIL", "orjson", "pynamodb",
          "boto3", "fastapi", "starlette", "mangum", "aws_lambda_powertools", "prometheus_client")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize(tmp_path_factory.mktemp("real-layer"), {**FULL, "nag": "false"}, tiny_layer=False)


def asset_dirs(synth: Synth) -> dict[str, Path]:
    """Staged asset directories by what they hold (`python/` = the layer, `python/imagecodecs` = the
    transcoder's layer, `functions/` = the code)."""
    out: dict[str, Path] = {}
    for d in synth.outdir.glob("asset.*"):
        if (d / "python" / "imagecodecs").is_dir():
            out["transcoder-layer"] = d
        elif (d / "python").is_dir():
            out["layer"] = d
        elif (d / "functions").is_dir() and not (d / "gateway").is_dir():
            out["code"] = d
    return out


def test_layer_holds_the_library_and_its_runtime_dependencies(real: Synth) -> None:
    site = asset_dirs(real)["layer"] / "python"
    for name in NEEDED:
        assert (site / name).is_dir(), name
    assert (site / "pacs" / "catalog" / "dynamodb.py").read_bytes() == (
        assets.ROOT / "layers" / "pacs" / "catalog" / "dynamodb.py").read_bytes()


def test_layer_wheels_are_for_cp312_linux_and_nothing_gpl_or_local_only(real: Synth) -> None:
    site = asset_dirs(real)["layer"] / "python"
    dists = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "pylibjpeg_libjpeg" not in dists and "uvicorn" not in dists
    for wheel in site.glob("*.dist-info/WHEEL"):
        tags = [line.split(": ", 1)[1] for line in wheel.read_text().splitlines() if line.startswith("Tag: ")]
        assert any(t.startswith(("py3-", "py2.py3-", "cp312-")) or _abi3_up_to_312(t) for t in tags), (wheel, tags)
        binary = [t for t in tags if not t.endswith("-any")]
        assert all("manylinux" in t and t.endswith("_x86_64") for t in binary), (wheel, tags)
    assert all(p.name.split(".")[-2] == "cpython-312" for p in site.rglob("*.pyc"))


def _abi3_up_to_312(tag: str) -> bool:
    """A stable-ABI wheel for CPython 3.x ≤ 3.12 (`cp311-abi3-…`: cryptography) loads on 3.12."""
    python, abi, *_ = tag.split("-")
    return abi == "abi3" and python.startswith("cp3") and int(python[3:]) <= 12


def test_layer_plus_each_function_fits_lambdas_unzipped_limit(real: Synth) -> None:
    dirs = asset_dirs(real)
    layer, code = assets.tree_size(dirs["layer"]), assets.tree_size(dirs["code"])
    assert layer + code < LAMBDA_UNZIPPED_LIMIT, (layer, code)
    assert code < 2 * 1024 * 1024  # the handlers only: everything else is in the layer


def test_the_synthesized_layer_points_at_that_asset(real: Synth) -> None:
    (layer,) = [r for r in real.resources("AWS::Lambda::LayerVersion").values()
                if "imagecodecs" not in r["Properties"]["Description"]]
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["LicenseInfo"] == "Apache-2.0"
    key = layer["Properties"]["Content"]["S3Key"]
    assert asset_dirs(real)["layer"].name.removeprefix("asset.") in str(key)


def test_layer_and_code_ship_python312_bytecode(real: Synth) -> None:
    """Lambda's /opt is read-only: without bytecode in the layer every cold start compiles it all."""
    if assets.layer_builder().python312() is None:
        pytest.skip("no CPython 3.12 here to compile with (the build then ships sources, and says so)")
    site = asset_dirs(real)["layer"] / "python"
    code = asset_dirs(real)["code"]
    for package in (site / "pacs", site / "pydicom", site / "fastapi", code / "functions"):
        sources = list(package.rglob("*.py"))
        compiled = {p.name.split(".")[0] for p in package.rglob("__pycache__/*.cpython-312.pyc")}
        assert sources and {p.stem for p in sources} <= compiled, package


SMOKE = """
import json, sys
import functions.indexer.handler, functions.reconcile.handler
import functions.dicomweb.handler as h
event = {"version": "2.0", "routeKey": "$default", "rawPath": "/health", "rawQueryString": "",
         "headers": {"host": "api.example.org"}, "isBase64Encoded": False,
         "requestContext": {"http": {"method": "GET", "path": "/health", "protocol": "HTTP/1.1",
                                     "sourceIp": "10.0.0.1", "userAgent": "test"},
                            "domainName": "api.example.org", "requestId": "r", "routeKey": "$default",
                            "stage": "$default", "accountId": "1", "apiId": "a", "time": "", "timeEpoch": 0}}
class Context:
    function_name, aws_request_id, memory_limit_in_mb = "dicomweb", "r", 2048
    invoked_function_arn, function_version = "arn:aws:lambda:eu-west-1:1:function:dicomweb", "1"
print(json.dumps(h.handler(event, Context())))
"""


def test_handlers_run_on_python312_from_the_staged_layer_and_code(real: Synth) -> None:
    """The deployed bytes, on Lambda's Python: every handler imports from the layer and the code asset
    alone, and the DICOMweb app answers through Mangum (503 here: no AWS behind the closed endpoint)."""
    python = assets.layer_builder().python312()
    if python is None:
        pytest.skip("no CPython 3.12 here")
    dirs = asset_dirs(real)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PACS_BACKEND": "aws", "PACS_BUCKET": "b",
           "PACS_DERIVED_BUCKET": "d", "PACS_TABLE": "t", "PACS_REGION": "eu-west-1",
           "PACS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "y", "AWS_LAMBDA_FUNCTION_NAME": "dicomweb",
           "PACS_MAX_INLINE_RESPONSE": "4194304", "AWS_EC2_METADATA_DISABLED": "true"}
    paths = [str(dirs["code"]), str(dirs["layer"] / "python")]
    done = subprocess.run([python, "-I", "-c", f"import sys; sys.path[:0] = {paths!r}\n{SMOKE}"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=dirs["code"])
    assert done.returncode == 0, done.stderr[-3000:]
    response = json.loads(done.stdout.strip().splitlines()[-1])
    assert response["statusCode"] == 503
    assert json.loads(response["body"])["status"] == "down"
