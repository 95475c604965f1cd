"""Locating and downloading weights, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from lib_codeformer import CODEFORMER, DownloadError, ModelFile, WeightsError, locate_weights
from lib_codeformer.storage.model_files import download_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB of synthetic "weights"
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        if self.path == "/slow.pth":
            time.sleep(1.0)  # long enough for a second process to arrive while the first downloads
        if self.path == "/missing.pth":
            self.send_error(404, "Not Found")
            return
        body = PAYLOAD
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/truncated.pth":
            self.wfile.write(body[: len(body) // 3])  # then the connection closes early
            return
        if self.path == "/tampered.pth":
            body = bytes(reversed(body))
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def model_at(url: str) -> ModelFile:
    return ModelFile(filename="codeformer.pth", url=url, sha256=PAYLOAD_SHA256, size=len(PAYLOAD), aliases=CODEFORMER.aliases)


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` apart from the (empty) lock file that serialises downloads."""
    return [p.name for p in folder.iterdir() if not (p.name.endswith(".lock") and p.stat().st_size == 0)]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/codeformer.pth"


def test_without_a_file_the_official_one_is_downloaded_and_checked(tmp_path, monkeypatch):
    """What locate_weights fetches when nothing is on disk, and what it holds the file to."""
    import urllib.error
    import urllib.request

    monkeypatch.delenv("CODEFORMER_WEIGHTS", raising=False)
    requested = []

    def offline(request, timeout=None):
        requested.append(request.full_url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as raised:
        locate_weights(cache_dir=tmp_path, progress=False)
    assert requested == ["https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth"]
    assert "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7" in str(raised.value)  # said for a manual download
    assert CODEFORMER.size == 376_637_898  # what a download is cut off at and checked against


def test_a_server_sending_more_than_the_file_is_cut_off(server, tmp_path):
    """Downloads had no byte cap: a server could fill the disk. Reading stops at the expected size."""
    smaller = ModelFile(filename="codeformer.pth", url=f"{server}/good.pth", sha256=None, size=len(PAYLOAD) // 2)
    with pytest.raises(DownloadError, match="more than the expected"):
        download_file(smaller, tmp_path, progress=False, timeout=10)
    assert leftovers(tmp_path) == []


def test_a_file_failing_its_check_is_not_kept(server, tmp_path):
    def refuse(path):
        assert path.read_bytes() == PAYLOAD  # the whole download is checked before it is kept
        raise WeightsError("its tensors are not RetinaFace mobile0.25's")

    checked = ModelFile(filename="codeformer.pth", url=f"{server}/good.pth", sha256=None, size=len(PAYLOAD), verify=refuse)
    with pytest.raises(DownloadError, match="not the expected file"):
        download_file(checked, tmp_path, progress=False, timeout=10)
    assert leftovers(tmp_path) == []


def test_download_verifies_and_renames_into_place(server, tmp_path):
    path = locate_weights(
        model_dirs=[tmp_path / "Codeformer"], cache_dir=tmp_path / "cache", model=model_at(f"{server}/good.pth"), progress=False
    )
    assert path == tmp_path / "Codeformer" / "codeformer.pth"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == [".codeformer.pth.lock", "codeformer.pth"]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("/tampered.pth", "sha256 is"),
        ("/truncated.pth", "Could not download|stopped after"),
        ("/missing.pth", "HTTP 404"),
    ],
)
def test_failed_download_leaves_nothing_and_says_where_to_put_the_file(server, tmp_path, route, expected):
    target = tmp_path / "models"
    with pytest.raises(DownloadError, match=expected) as raised:
        download_file(model_at(f"{server}{route}"), target, progress=False, timeout=10)
    assert leftovers(target) == []
    assert str(target / "codeformer.pth") in str(raised.value)


def test_connection_refused(tmp_path):
    with pytest.raises(DownloadError, match=r"Could not download.*refused") as raised:
        download_file(model_at(closed_port_url()), tmp_path, progress=False, timeout=5)
    assert leftovers(tmp_path) == []
    assert "by hand" in str(raised.value)


def test_present_file_is_used_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("CODEFORMER_WEIGHTS", raising=False)
    webui_models = tmp_path / "models" / "Codeformer"
    webui_models.mkdir(parents=True)
    (webui_models / "codeformer-v0.1.0.pth").write_bytes(b"weights")  # AUTOMATIC1111's name for the same file
    unreachable = model_at(closed_port_url())
    found = locate_weights(model_dirs=[webui_models], cache_dir=tmp_path / "cache", model=unreachable)
    assert found == webui_models / "codeformer-v0.1.0.pth"
    assert not (tmp_path / "cache").exists()


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv("CODEFORMER_WEIGHTS", raising=False)
    unreachable = model_at(closed_port_url())
    explicit, from_env, in_models, in_cache = (tmp_path / name for name in ("explicit.pth", "env.pth", "models", "cache"))
    explicit.write_bytes(b"1")
    from_env.write_bytes(b"2")
    for folder in (in_models, in_cache):
        folder.mkdir()
        (folder / "codeformer.pth").write_bytes(b"3")

    def locate(explicit_path=None):
        return locate_weights(explicit_path, model_dirs=[in_models], cache_dir=in_cache, model=unreachable)

    monkeypatch.setenv("CODEFORMER_WEIGHTS", str(from_env))
    assert locate(explicit) == explicit
    assert locate() == from_env
    monkeypatch.delenv("CODEFORMER_WEIGHTS")
    assert locate() == in_models / "codeformer.pth"
    (in_models / "codeformer.pth").unlink()
    assert locate() == in_cache / "codeformer.pth"


def test_missing_explicit_path_is_an_error_not_a_download(tmp_path, server):
    _Handler.requests.clear()
    with pytest.raises(WeightsError, match="does not exist"):
        locate_weights(tmp_path / "nope.pth", model=model_at(f"{server}/good.pth"))
    assert _Handler.requests == []


def test_no_download_when_disabled(tmp_path, monkeypatch):
    monkeypatch.delenv("CODEFORMER_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match=r"not found.*by hand"):
        locate_weights(cache_dir=tmp_path, download=False, model=model_at(closed_port_url()))


def test_cache_folder_follows_environment(tmp_path, monkeypatch):
    from lib_codeformer.storage.model_files import default_cache_dir

    monkeypatch.setenv("CODEFORMER_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CODEFORMER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == Path(tmp_path / "xdg" / "codeformer")


def _locate_in_subprocess(url: str, folder: str, queue) -> None:
    queue.put(str(locate_weights(model_dirs=[folder], cache_dir=folder, model=model_at(url), progress=False)))


def test_two_processes_download_once(server, tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.delenv("CODEFORMER_WEIGHTS", raising=False)
    _Handler.requests.clear()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_locate_in_subprocess, args=(f"{server}/slow.pth", str(tmp_path), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert {queue.get(timeout=5), queue.get(timeout=5)} == {str(tmp_path / "codeformer.pth")}
    assert _Handler.requests == ["/slow.pth"]
    assert (tmp_path / "codeformer.pth").read_bytes() == PAYLOAD


def test_a_crashed_download_is_cleaned_up_by_the_next(server, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    for stale in (tmp_path / f".codeformer.pth.codeformer-{int(dead)}-k3j2.part", tmp_path / ".codeformer.pth.k3j2.part"):
        stale.write_bytes(PAYLOAD[:1000])  # what a killed process leaves (the second: as version 0.1.0 named it)
    download_file(model_at(f"{server}/good.pth"), tmp_path, progress=False)
    assert leftovers(tmp_path) == ["codeformer.pth"]
