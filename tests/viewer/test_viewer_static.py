"""`mount_viewer` on a fake build: files, MIME types, SPA fallback, redirect, caching, confinement."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from functions.dicomweb import viewer
from functions.dicomweb.viewer import default_viewer_dir, mount_viewer

INDEX = b'<!doctype html><script src="/viewer/app-config.js"></script>'


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "viewer"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "app-config.js").write_text("window.config = {};")
    (root / "app.bundle.0f6159c501addfe9.js").write_text("/* app */")
    (root / "0ddf166f7a343eda.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / "app.bundle.css").write_text("body{}")
    (root / "manifest.json").write_text("{}")
    (root / "assets" / "favicon-16x16.png").write_bytes(b"\x89PNG")
    (tmp_path / "secret.txt").write_text("outside")
    return root


@pytest.fixture
def client(dist: Path) -> TestClient:
    app = FastAPI()
    assert mount_viewer(app, dist) is True
    return TestClient(app)


def test_not_installed_mounts_nothing(tmp_path: Path) -> None:
    app = FastAPI()
    assert mount_viewer(app, tmp_path / "missing") is False
    assert TestClient(app).get("/viewer/").status_code == 404


def test_default_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PACS_VIEWER_DIR", str(tmp_path))
    assert default_viewer_dir() == tmp_path
    monkeypatch.delenv("PACS_VIEWER_DIR")
    assert default_viewer_dir() == viewer.REPO / ".build" / "viewer"
    assert (viewer.REPO / "functions" / "dicomweb" / "viewer.py").is_file()


def test_redirect_keeps_query(client: TestClient) -> None:
    r = client.get("/viewer?x=1", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/viewer/?x=1"


@pytest.mark.parametrize(("path", "media", "cache"), [
    ("/viewer/", "text/html", "no-cache"),
    ("/viewer/index.html", "text/html", "no-cache"),
    ("/viewer/app-config.js", "text/javascript", "no-cache"),
    ("/viewer/app.bundle.0f6159c501addfe9.js", "text/javascript", "immutable"),
    ("/viewer/0ddf166f7a343eda.wasm", "application/wasm", "immutable"),
    ("/viewer/app.bundle.css", "text/css", "max-age=3600"),
    ("/viewer/manifest.json", "application/json", "no-cache"),
    ("/viewer/assets/favicon-16x16.png", "image/png", "max-age=3600"),
])
def test_files(client: TestClient, path: str, media: str, cache: str) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media)
    assert cache in r.headers["cache-control"]


@pytest.mark.parametrize("path", ["/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/local", "/viewer/a/b/c"])
def test_spa_fallback(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.content == INDEX
    assert r.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("path", ["/viewer/missing.bundle.js", "/viewer/x.wasm", "/viewer/assets/none.png"])
def test_missing_asset_is_404(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_head(client: TestClient) -> None:
    r = client.head("/viewer/app-config.js")
    assert r.status_code == 200 and r.content == b""


@pytest.mark.parametrize("path", ["/viewer/../secret.txt", "/viewer/%2e%2e/secret.txt", "/viewer/assets/../../secret.txt"])
def test_confined_to_dist(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert b"outside" not in r.content
