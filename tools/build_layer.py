"""Build the `pacs` Lambda layer without Docker: `.build/layer/python` = wheels for Lambda + the library.

    python tools/build_layer.py [--out .build/layer] [--print-size]    # prints the layer's root
    python tools/build_layer.py --profile transcoder                   # the transcoder's own layer
    python tools/build_layer.py --profile anonymizer                   # the anonymizer's own layer

Two profiles. `shared` (every function but the transcoder): the library's dependencies and the
`functions` extra, without imagecodecs (82 MB: the shared layer would pass Lambda's 250 MB). `transcoder`
(`.build/transcoder-layer`): the same library with imagecodecs (the encoders pydicom lacks) and without
the web and DIMSE stacks the transcoder never imports (FastAPI, Mangum, pynetdicom, rich).

Third-party packages come from `pip install --target --platform manylinux_2_28_x86_64 (and the
other manylinux tags AL2023's glibc 2.34 loads) --python-version 3.12 --only-binary=:all:`: wheels
built for Amazon Linux 2023, whatever this machine runs, cached by a hash of the requirement list (pip
only runs when pyproject.toml's dependencies change). The library
(`layers/pacs`) is copied afresh every time. What the layer holds: the `pacs` dependencies and the
`functions` extra minus the local-only server (uvicorn). pylibjpeg-libjpeg (GPL-3.0) is refused.

Lambda mounts layers read-only, so Python cannot cache bytecode there: a layer of sources is compiled
again at every cold start (about 4 s for the DICOMweb handler's imports, against 1 s with bytecode).
When a CPython 3.12 is found here ($LAYER_PYTHON, `python3.12` on PATH, or pyenv's), every module is
compiled with it (`--invalidation-mode unchecked-hash`: the layer never changes, so no timestamp
checks): the wheels once when installed, the library at every build.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".build" / "layer"
PYTHON = "3.12"
#: Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34): every manylinux tag up to 2_34 loads.
#: pip does not widen an explicit --platform to older tags, so each is listed.
PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(34, 16, -1)), "manylinux2014_x86_64")
#: Only `pacs up` uses these (uvicorn serves DICOMweb locally; API Gateway + Mangum do it on Lambda).
LOCAL_ONLY = ("uvicorn",)
#: In the transcoder's layer only (too large for the shared one; FIELD-NOTES §1d).
TRANSCODER_ONLY = ("imagecodecs",)
#: Left out of the transcoder's layer: it never imports them (its function loads that layer alone).
NOT_IN_TRANSCODER = ("fastapi", "starlette", "mangum", "pynetdicom", "rich")
#: Left out of the DICOMweb function's layer (the shared one plus imagecodecs, for encoding on the fly).
NOT_IN_DICOMWEB = ("pynetdicom", "rich")
#: Left out of the anonymizer's layer: the transcoder's (imagecodecs re-encodes cleaned pixels) plus
#: pynetdicom (export jobs send to remote nodes by C-STORE) and cryptography (keys, the crosswalk).
NOT_IN_ANONYMIZER = ("fastapi", "starlette", "mangum", "rich")
PROFILES = ("shared", "transcoder", "dicomweb", "anonymizer")
DEFAULT_OUTS = {"shared": DEFAULT_OUT, "transcoder": ROOT / ".build" / "transcoder-layer",
                "dicomweb": ROOT / ".build" / "dicomweb-layer",
                "anonymizer": ROOT / ".build" / "anonymizer-layer"}
_LEFT_OUT = {"shared": TRANSCODER_ONLY, "transcoder": NOT_IN_TRANSCODER, "dicomweb": NOT_IN_DICOMWEB,
             "anonymizer": NOT_IN_ANONYMIZER}
#: Licences we do not ship.
FORBIDDEN = ("pylibjpeg-libjpeg",)
#: Removed from the layer: not needed at run time, and they count against the 250 MB limit.
STRIP_DIRS = ("__pycache__", "tests", "testing")  # (bytecode is compiled afresh for 3.12 after)
STRIP_SUFFIXES = (".pyc", ".pyi")
#: Layer builds kept in `.build/layer` (older ones are pruned; each is mostly hard links).
KEEP_BUILDS = 3


def _name(requirement: str) -> str:
    """The distribution name of a requirement string (`uvicorn[standard]==1` -> `uvicorn`)."""
    for sep in "[=<>!~; ":
        requirement = requirement.split(sep, 1)[0]
    return requirement.strip().lower().replace("_", "-")


def requirements(pyproject: Path = ROOT / "pyproject.toml", profile: str = "shared") -> list[str]:
    """What the layer installs: the library's dependencies and the `functions` extra (per profile)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["functions"]]
    bad = [r for r in reqs if _name(r) in FORBIDDEN]
    if bad:
        raise SystemExit(f"refusing to ship {bad}: GPL-licensed")
    left_out = LOCAL_ONLY + _LEFT_OUT[profile]
    return [r for r in reqs if _name(r) not in left_out]


def requirements_hash(reqs: list[str]) -> str:
    return hashlib.sha256("\n".join([*PLATFORMS, PYTHON, *sorted(reqs)]).encode()).hexdigest()


def _strip(site: Path) -> None:
    for path in sorted(site.rglob("*"), reverse=True):
        if path.is_dir() and path.name in STRIP_DIRS and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.suffix in STRIP_SUFFIXES:
            path.unlink()


def publish(tmp: Path, final: Path) -> Path:
    """Move a finished build into place in one rename; a concurrent build that got there first wins
    (builds are content-addressed, so both are the same): nobody ever sees a half-written tree."""
    try:
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def scratch(out: Path) -> Path:
    """A new private directory under `out` to build in (world-readable, as Lambda needs its files)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out))
    tmp.chmod(0o755)
    return tmp


def _install(reqs: list[str], final: Path) -> Path:
    """The wheels for `reqs`, stripped and compiled, at `final` (the requirements' hash)."""
    tmp = scratch(final.parent)
    site = tmp / "python"
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
           "--target", str(site), *platforms, "--python-version", PYTHON,
           "--implementation", "cp", "--only-binary=:all:", *reqs]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:  # pip's own output only when it failed (it warns about the local indexes)
        shutil.rmtree(tmp, ignore_errors=True)
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"pip could not build the layer (exit {done.returncode})")
    installed = {_name(p.name.split("-")[0]) for p in site.glob("*.dist-info")}
    if installed & set(FORBIDDEN):
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"a dependency pulled in {sorted(installed & set(FORBIDDEN))}: GPL-licensed")
    _strip(site)
    compile_bytecode(site)
    return publish(tmp, final)


def tree_digest(root: Path, *salt: str) -> str:
    """A hash of the files under `root` (paths and contents; bytecode caches left out) and `salt`."""
    digest = hashlib.sha256("\0".join(salt).encode())
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def python312() -> str | None:
    """A CPython 3.12 interpreter (bytecode must match Lambda's runtime), or None: $LAYER_PYTHON, else
    `python3.12` on PATH, else one installed by pyenv."""
    candidates = [os.environ.get("LAYER_PYTHON", ""), shutil.which(f"python{PYTHON}") or ""]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = pyenv_root.glob(f"versions/{PYTHON}.*/bin/python{PYTHON}")
    candidates += [str(p) for p in sorted(found, reverse=True)]
    for path in filter(None, candidates):
        probe = subprocess.run([path, "-c", "import sys, platform; print(platform.python_implementation(), "
                                "*sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.split() == ["CPython", *PYTHON.split(".")]:
            return path
    return None


def compile_bytecode(site: Path) -> bool:
    """Compile every module under `site` (a tree) for Python 3.12; False when no 3.12 is here."""
    python = python312()
    if python is None:
        print(f"build_layer: no python{PYTHON} on PATH: the layer ships sources only, compiled again at "
              "every cold start", file=sys.stderr)
        return False
    # Failures (a vendored file with old syntax) leave that module as source: not fatal.
    subprocess.run([python, "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                    "unchecked-hash", str(site)], capture_output=True)
    return True


def build(out: Path = DEFAULT_OUT, profile: str = "shared") -> Path:
    """The layer's root (holding `python/`: the wheels plus `pacs`), content-addressed under `out`:
    `out/deps/<requirements hash>` is pip's work, kept; `out/<layer hash>` hard-links it and adds the
    library. A build is never modified once published, so concurrent builds and synths are safe."""
    reqs = requirements(profile=profile)
    compiled = python312() is not None
    deps = out / "deps" / requirements_hash(reqs)
    if not deps.is_dir():
        _install(reqs, deps)
        prune(deps.parent, keep=2)
    library = ROOT / "layers" / "pacs"
    final = out / tree_digest(library, deps.name, "bytecode" if compiled else "sources")
    if final.is_dir():
        return final
    tmp = scratch(out)
    shutil.copytree(deps / "python", tmp / "python", copy_function=os.link)
    shutil.copytree(library, tmp / "python" / "pacs", ignore=shutil.ignore_patterns(*STRIP_DIRS, "*.pyc"))
    if compiled:
        compile_bytecode(tmp / "python" / "pacs")
    prune(out, keep=KEEP_BUILDS)
    return publish(tmp, final)


def prune(out: Path, keep: int) -> None:
    """Drop all but the `keep` newest builds under `out` (and scratch directories over an hour old)."""
    builds = sorted((d for d in out.iterdir() if d.is_dir() and len(d.name) == 64),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    stale = [d for d in out.glob(".tmp-*") if time.time() - d.stat().st_mtime > 3600]
    for d in builds[keep:] + stale:
        shutil.rmtree(d, ignore_errors=True)


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (what Lambda counts, unzipped)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", choices=PROFILES, default="shared")
    parser.add_argument("--print-size", action="store_true", help="print the layer's unzipped size")
    args = parser.parse_args(argv)
    root = build(args.out or DEFAULT_OUTS[args.profile], args.profile)
    print(root)
    if args.print_size:
        print(f"{root / 'python'}: {tree_size(root / 'python') / 1e6:.1f} MB unzipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
