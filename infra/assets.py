"""Code assets built without Docker: the `pacs` layer (tools/build_layer.py) and the functions' code.

The layer is built into `.build/layer` (pip runs only when the requirements change) and given a hash
of its requirements and of the library's source, so CDK need not fingerprint 160 MB at every synth.
The functions' code is one asset: a copy of `functions/` (caches left out), so every handler is
`functions.<name>.handler.handler` from the same zip.
"""

from __future__ import annotations

import hashlib
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


def _tree_digest(root: Path, digest: hashlib._Hash) -> None:
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")


def pacs_layer(out: Path = BUILD / "layer") -> tuple[Path, str]:
    """Build the layer; returns its root (holding `python/`) and a content hash for the asset."""
    builder = layer_builder()
    root = builder.build(out)
    digest = hashlib.sha256(builder.requirements_hash(builder.requirements()).encode())
    digest.update(b"bytecode" if builder.python312() else b"sources")
    _tree_digest(ROOT / "layers" / "pacs", digest)
    return root, digest.hexdigest()


def functions_code(out: Path = BUILD / "functions") -> Path:
    """`out/functions/…`: a clean copy of the handlers' package (the asset root is `out`), with Python
    3.12 bytecode when a 3.12 interpreter is here (the code directory is read-only on Lambda too)."""
    dest = out / "functions"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT / "functions", dest, ignore=_IGNORE)
    layer_builder().compile_bytecode(dest)
    return out


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (what Lambda counts against 250 MB, unzipped)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
