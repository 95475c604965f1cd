"""Ray is an optional extra: nothing but ``--ray`` imports it, and what goes wrong without it or a cluster is said."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cluster_helpers import ROOT
from PIL import Image

from lib_codeformer.frontends import cli


def test_the_command_line_and_the_webui_never_import_ray(tmp_path, astronaut, small_weights_file):
    """A local restore and the WebUI extension's start-up (on the fake AUTOMATIC1111) leave Ray unimported,
    whether or not it is installed."""
    Image.fromarray(astronaut[:64, :64]).save(tmp_path / "small.png")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from pathlib import Path
        from fake_webui import FakeHost
        from lib_codeformer.frontends import cli, http_api
        assert cli.main(["restore", {str(tmp_path / "small.png")!r}, "--output", {str(tmp_path / "out")!r},
                         "--weights", {str(small_weights_file)!r}, "--detector", "yunet", "--quiet"]) == 0
        host = FakeHost("a1111", Path({str(tmp_path / "models")!r}))
        host.install()
        host.load_script()
        host.run_ui_settings()
        print(sorted(name for name in sys.modules if name.split(".")[0] == "ray"))
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().splitlines()[-1] == "[]"


def test_object_storage_without_ray_is_a_usage_error(tmp_path, capsys):
    status = cli.main(["restore", "s3://photos/archive", "--output", str(tmp_path / "out")])
    assert status == 2
    assert "s3://photos/archive: object storage is read and written on a Ray cluster (--ray)" in capsys.readouterr().err


def test_without_ray_installed_the_error_names_the_extra(tmp_path, astronaut, monkeypatch, capsys):
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    status = cli.main(["restore", str(tmp_path / "a.png"), "--output", str(tmp_path / "out"), "--ray"])
    assert status == 2
    assert "install the [ray] extra: pip install 'sd-webui-codeformer[ray]'" in capsys.readouterr().err


def test_an_unreachable_cluster_says_which_address_was_tried(tmp_path, astronaut, capsys):
    pytest.importorskip("ray")
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    with socket_without_listener() as address:
        status = cli.main(["restore", str(tmp_path / "a.png"), "--output", str(tmp_path / "out"), "--ray", address])
    assert status == 2
    assert f"could not connect to a Ray cluster at '{address}'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@contextmanager
def socket_without_listener() -> Iterator[str]:
    """A 127.0.0.1 port that nothing listens on (bound, never listening, for the block's duration)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{holder.getsockname()[1]}"


def test_ray_only_options_are_checked(tmp_path, astronaut, capsys):
    pytest.importorskip("ray")
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    status = cli.main(["restore", str(tmp_path / "a.png"), "--output", str(tmp_path / "o"), "--ray", "--ray-actors", "0"])
    assert status == 2
    assert "--ray-actors must be at least 1 (got 0)" in capsys.readouterr().err


def test_a_video_named_with_ray_is_a_usage_error(tmp_path, capsys):
    """Videos are restored on this machine only: a named video is refused before any cluster is contacted."""
    (tmp_path / "clip.mp4").write_bytes(b"not opened")
    status = cli.main(["restore", str(tmp_path / "clip.mp4"), "--output", str(tmp_path / "o"), "--ray"])
    assert status == 2
    assert "clip.mp4: videos are restored on this machine, not on a Ray cluster; drop --ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
