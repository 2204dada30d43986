"""The server's address opens the viewer: `/` redirects to `/viewer/` when the viewer is installed."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from functions.dicomweb.viewer import mount_viewer


def test_root_redirects_to_the_viewer(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<html>OHIF</html>")
    app = FastAPI()
    assert mount_viewer(app, tmp_path)
    with TestClient(app) as client:
        for method in ("GET", "HEAD"):
            rsp = client.request(method, "/", follow_redirects=False)
            assert rsp.status_code == 307 and rsp.headers["location"] == "/viewer/"
        assert client.get("/").text == "<html>OHIF</html>"


def test_no_redirect_to_a_viewer_that_is_not_installed(tmp_path: Path) -> None:
    app = FastAPI()
    assert not mount_viewer(app, tmp_path)
    with TestClient(app) as client:
        assert client.get("/", follow_redirects=False).status_code == 404
