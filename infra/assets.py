"""Code assets built without Docker: the `pacs` layer and the transcoder's (tools/build_layer.py), and
the functions' code.

The layer is built under `.build/layer` (pip runs only when the requirements change), named by a hash
of its requirements and of the library's source, which is also the asset's hash: CDK need not
fingerprint 160 MB at every synth.
The functions' code is one asset: a copy of `functions/` (caches left out), so every handler is
`functions.<name>.handler.handler` from the same zip.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".build"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", "node_modules")
_BUILDER: ModuleType | None = None


def layer_builder() -> ModuleType:
    """tools/build_layer.py, loaded once (it is a script, not a package module)."""
    global _BUILDER
    if _BUILDER is not None:
        return _BUILDER
    spec = importlib.util.spec_from_file_location("build_layer", ROOT / "tools" / "build_layer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _BUILDER = module
    return module


def pacs_layer(out: Path = BUILD / "layer") -> tuple[Path, str]:
    """Build the layer; returns its root (holding `python/`) and its content hash (the asset's hash)."""
    root: Path = layer_builder().build(out)
    return root, root.name


def transcoder_layer(out: Path = BUILD / "transcoder-layer") -> tuple[Path, str]:
    """The transcoder's own layer (the library with imagecodecs, without the web and DIMSE stacks);
    returns its root and content hash, as `pacs_layer`."""
    root: Path = layer_builder().build(out, "transcoder")
    return root, root.name


def dicomweb_layer(out: Path = BUILD / "dicomweb-layer") -> tuple[Path, str]:
    """The DICOMweb function's layer: the shared one plus imagecodecs (HTJ2K and JPEG baseline encoding
    on the fly), without pynetdicom and rich, which it never imports (≈ 231 MB unzipped)."""
    root: Path = layer_builder().build(out, "dicomweb")
    return root, root.name


def anonymizer_layer(out: Path = BUILD / "anonymizer-layer") -> tuple[Path, str]:
    """The anonymizer's layer: the transcoder's (imagecodecs, to re-encode cleaned pixels) plus
    pynetdicom (export jobs' C-STORE destinations), without the web stack; root and content hash."""
    root: Path = layer_builder().build(out, "anonymizer")
    return root, root.name


def functions_code(out: Path = BUILD / "functions") -> Path:
    """`<root>/functions/…`: a clean copy of the handlers' package, with Python 3.12 bytecode when a
    3.12 interpreter is here (the code directory is read-only on Lambda too); returns the asset root.
    Content-addressed and published in one rename, like the layer, so concurrent synths never see a
    half-written copy."""
    builder = layer_builder()
    compiled = builder.python312() is not None
    root = out / builder.tree_digest(ROOT / "functions", "bytecode" if compiled else "sources")
    if root.is_dir():
        return root
    tmp = builder.scratch(out)
    shutil.copytree(ROOT / "functions", tmp / "functions", ignore=_IGNORE)
    if compiled:
        builder.compile_bytecode(tmp / "functions")
    builder.prune(out, keep=builder.KEEP_BUILDS)
    published: Path = builder.publish(tmp, root)
    return published


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (what Lambda counts against 250 MB, unzipped)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
