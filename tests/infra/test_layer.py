"""The real `pacs` layer, built without Docker (tools/build_layer.py, cached in .build/layer; pip only
runs when the requirements change), synthesized once with bundling on: what Lambda will load."""

from __future__ import annotations

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
    """Staged asset directories by what they hold (`python/` = the layer, `functions/` = the code)."""
    out: dict[str, Path] = {}
    for d in synth.outdir.glob("asset.*"):
        if (d / "python").is_dir():
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
        assert any(t.startswith(("py3-", "py2.py3-")) or t.startswith("cp312-") for t in tags), (wheel, tags)
        binary = [t for t in tags if not t.endswith("-any")]
        assert all("manylinux" in t and t.endswith("_x86_64") for t in binary), (wheel, tags)
    assert not list(site.rglob("__pycache__"))


def test_layer_plus_each_function_fits_lambdas_unzipped_limit(real: Synth) -> None:
    dirs = asset_dirs(real)
    layer, code = assets.tree_size(dirs["layer"]), assets.tree_size(dirs["code"])
    assert layer + code < LAMBDA_UNZIPPED_LIMIT, (layer, code)
    assert code < 2 * 1024 * 1024  # the handlers only: everything else is in the layer


def test_the_synthesized_layer_points_at_that_asset(real: Synth) -> None:
    (layer,) = real.resources("AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["LicenseInfo"] == "Apache-2.0"
    key = layer["Properties"]["Content"]["S3Key"]
    assert asset_dirs(real)["layer"].name.removeprefix("asset.") in str(key)
