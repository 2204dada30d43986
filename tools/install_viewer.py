"""Install the OHIF viewer (prebuilt `@ohif/app` from npm) under `.build/viewer`, served at `/viewer/`.

Idempotent: does nothing when `.build/viewer/index.html` and the version marker of the pinned
version are present. Otherwise `npm pack`s the pinned package (a plain `npm install` fails: its
runtime dependencies are not all published), extracts `package/dist/` only, relocates the build
from `/` to `/viewer/`, writes `app-config.js` (same-origin DICOMweb at `/dicomweb`) and checks the
relocation, and patches what OHIF gets wrong (`PATCHES`). See /work/shared/notes/ohif-recipe.md.

    python tools/install_viewer.py [--dest DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "@ohif/app"
VERSION = "3.13.2"
PREFIX = "/viewer/"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / ".build" / "viewer"
MARKER = ".ohif-version"
#: Written to MARKER: the OHIF version and the revision of `PATCHES` (a new revision reinstalls).
INSTALL_ID = f"{VERSION}+pacs.2"
NPM_TIMEOUT = 600
#: Netlify/serve/service-worker files of the build that this server does not use.
UNUSED = ("sw.js", "_headers", "_redirects", "serve.json")
WEBPACK_ROOT = '__webpack_require__.p = "/";'

APP_CONFIG = """\
/* Written by tools/install_viewer.py: OHIF with the PACS's DICOMweb on the same origin. */
(function () {
  var origin = window.location.origin; // same-origin DICOMweb: no CORS needed
  window.config = {
    routerBasename: '/viewer', // study list = /viewer/ ; viewer = /viewer/viewer?StudyInstanceUIDs=<uid>
    extensions: [],
    modes: [],
    customizationService: [{ 'ohif.tours': { $set: [] } }], // no onboarding tour over the viewport
    investigationalUseDialog: { option: 'never' },
    showStudyList: true,
    maxNumberOfWebWorkers: 3,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    showErrorDetails: 'always',
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
    defaultDataSourceName: 'pacs',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'pacs',
        configuration: {
          friendlyName: 'Local PACS',
          name: 'pacs',
          qidoRoot: origin + '/dicomweb',
          wadoRoot: origin + '/dicomweb',
          wadoUriRoot: origin + '/wado',
          qidoSupportsIncludeField: true,
          supportsReject: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
          dicomUploadEnabled: false,
        },
      },
    ],
  };
})();
"""


@dataclass(frozen=True)
class Patch:
    """A fix of OHIF's own code in its build: `old` must occur exactly once in the bundles."""

    why: str
    old: str
    new: str


#: OHIF 3.13.2 bugs worked around in what we serve (each `old` is checked to occur exactly once).
PATCHES = (
    # @ohif/core DICOMWeb/getModalities: a study whose ModalitiesInStudy (0008,0061) is present but
    # empty, `{"vr":"CS"}` (correct DICOM JSON for a study without a Modality), makes it read
    # `undefined.length`: the study list fails with "Data Source Connection Error ... Cannot read
    # properties of undefined (reading 'length')" and hides every other study.
    Patch(
        why="getModalities: ModalitiesInStudy without a Value",
        old="for (let i = 0; i < ModalitiesInStudy.Value.length; i++) {",
        new="for (let i = 0; i < (ModalitiesInStudy.Value || []).length; i++) {",
    ),
    # @ohif/core MetadataProvider imagePlaneModule: a Pixel Spacing of 0\0 (pydicom-data's RG1_*.dcm
    # CRs have one) is taken as is, and cornerstone draws a zero-sized image: a black viewport. A
    # spacing that is not two positive numbers is treated as absent (1 mm, as OHIF does then).
    Patch(
        why="imagePlaneModule: a Pixel Spacing that is not positive",
        old="    if (PixelSpacing) {\n      [rowPixelSpacing, columnPixelSpacing] = PixelSpacing;",
        new=("    if (PixelSpacing && PixelSpacing.length >= 2 && PixelSpacing.every(v => Number(v) > 0)) {\n"
             "      [rowPixelSpacing, columnPixelSpacing] = PixelSpacing;"),
    ),
)


class InstallError(Exception):
    pass


def installed(dest: Path) -> bool:
    marker = dest / MARKER
    return (dest / "index.html").is_file() and marker.is_file() and marker.read_text().strip() == INSTALL_ID


def npm_pack(workdir: Path) -> Path:
    """`npm pack` the pinned package into `workdir`; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not installed (Debian: apt-get install npm); it is needed to fetch OHIF")
    try:
        out = subprocess.run(
            [npm, "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", str(workdir), "--json"],
            capture_output=True, text=True, timeout=NPM_TIMEOUT, cwd=workdir,
        )
    except subprocess.TimeoutExpired:
        raise InstallError(f"npm pack {PACKAGE}@{VERSION} timed out after {NPM_TIMEOUT}s") from None
    if out.returncode != 0:
        raise InstallError(f"npm pack {PACKAGE}@{VERSION} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    try:
        filename = json.loads(out.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        tarballs = sorted(workdir.glob("*.tgz"))
        if not tarballs:
            raise InstallError(f"npm pack produced no tarball:\n{out.stdout[-2000:]}") from None
        return tarballs[0]
    # npm ≥ 9 names scoped tarballs ohif-app-3.13.2.tgz; the json filename may keep the scope.
    path = workdir / Path(filename.replace("@", "").replace("/", "-")).name
    if not path.is_file():
        tarballs = sorted(workdir.glob("*.tgz"))
        if not tarballs:
            raise InstallError(f"npm pack: tarball {filename} not found in {workdir}")
        path = tarballs[0]
    return path


def extract_dist(tarball: Path, target: Path) -> int:
    """Extract the members under `package/dist/` into `target` (prefix stripped); how many files."""
    count = 0
    with tarfile.open(tarball, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith("package/dist/") or member.name == "package/dist/":
                continue
            member.name = member.name[len("package/dist/"):]
            members.append(member)
            count += member.isfile()
        tar.extractall(target, members=members, filter="data")
    if not (target / "index.html").is_file():
        raise InstallError(f"{tarball.name} has no package/dist/index.html")
    return count


def _rewrite(path: Path, edit: Callable[[str], str]) -> None:
    text = path.read_text(encoding="utf-8")
    new = edit(text)
    if new != text:
        path.write_text(new, encoding="utf-8")


def relocate(dist: Path) -> None:
    """Rewrite the public path `/` of the build to `/viewer/`."""
    def index(s: str) -> str:
        s = re.sub(r'(href|src|content)="/(?!/)', rf'\1="{PREFIX}', s)
        return s.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{PREFIX}"')

    def js(s: str) -> str:
        return (s.replace(WEBPACK_ROOT, f'__webpack_require__.p = "{PREFIX}";')
                .replace("'/dicom-microscopy-viewer/", f"'{PREFIX}dicom-microscopy-viewer/")
                .replace('"/dicom-microscopy-viewer/', f'"{PREFIX}dicom-microscopy-viewer/'))

    _rewrite(dist / "index.html", index)
    for path in dist.rglob("*.js"):
        if path.is_file():
            _rewrite(path, js)
    for path in dist.rglob("*.css"):
        if path.is_file():
            _rewrite(path, lambda s: s.replace("url(/", f"url({PREFIX}"))
    for name in ("manifest.json", "assets/yandex-browser-manifest.json", "assets/browserconfig.xml"):
        if (dist / name).is_file():  # icons: cosmetic
            _rewrite(dist / name, lambda s: s.replace('"/assets/', f'"{PREFIX}assets/'))
    for name in UNUSED:
        (dist / name).unlink(missing_ok=True)
    (dist / "app-config.js").write_text(APP_CONFIG, encoding="utf-8")


def patch(dist: Path, patches: tuple[Patch, ...] = PATCHES) -> None:
    """Apply `patches` to the build's JavaScript; InstallError when one does not match exactly once."""
    bundles = {p: p.read_text(encoding="utf-8") for p in sorted(dist.rglob("*.js")) if p.is_file()}
    for fix in patches:
        hits = [(p, text.count(fix.old)) for p, text in bundles.items() if fix.old in text]
        if len(hits) != 1 or hits[0][1] != 1:
            where = ", ".join(f"{p.name} ×{n}" for p, n in hits) or "nowhere"
            raise InstallError(f"OHIF patch '{fix.why}' must match once, found {where}")
        path = hits[0][0]
        bundles[path] = bundles[path].replace(fix.old, fix.new)
        path.write_text(bundles[path], encoding="utf-8")


def verify(dist: Path) -> None:
    """Fail if anything still points at the root instead of `/viewer/`."""
    html = (dist / "index.html").read_text(encoding="utf-8")
    roots = (m.group(0) for m in re.finditer(r'="/(?!/)[^"]*"', html))
    left = [r for r in roots if not r.startswith(f'="{PREFIX}')]
    if left:
        raise InstallError(f"index.html still has root paths: {left[:5]}")
    if 'window.PUBLIC_URL="/"' in html:
        raise InstallError('index.html still sets window.PUBLIC_URL="/"')
    stale = [p.name for p in dist.rglob("*.js")
             if p.is_file() and WEBPACK_ROOT in p.read_text(encoding="utf-8")]
    if stale:
        raise InstallError(f"webpack public path still '/' in: {stale[:10]}")
    if "/dicomweb" not in (dist / "app-config.js").read_text(encoding="utf-8"):
        raise InstallError("app-config.js does not point at /dicomweb")


def install(dest: Path, force: bool = False) -> bool:
    """Install into `dest`; False when it was already installed (nothing done)."""
    if not force and installed(dest):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ohif-", dir=dest.parent) as td:
        work = Path(td)
        tarball = npm_pack(work)
        staged = work / "viewer"
        staged.mkdir()
        files = extract_dist(tarball, staged)
        relocate(staged)
        patch(staged)
        verify(staged)
        (staged / MARKER).write_text(INSTALL_ID + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)  # same file system (the temp dir is beside dest): atomic
    print(f"install_viewer: OHIF {VERSION} ({files} files) installed in {dest}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help=f"install dir ({DEFAULT_DEST})")
    parser.add_argument("--force", action="store_true", help="reinstall even if present")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        done = install(args.dest.resolve(), force=args.force)
    except (InstallError, OSError, tarfile.TarError) as exc:
        print(f"install_viewer: error: {exc}", file=sys.stderr, flush=True)
        return 1
    if done:
        print(f"install_viewer: done in {time.monotonic() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
