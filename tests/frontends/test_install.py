"""install.py's decisions, through the fake host's launch module."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from fake_webui import ROOT, FakeHost
from lib_codeformer.frontends.webui import install_plan

ALL = {"yuface", "safetensors", "facexlib"}


@pytest.fixture
def host(tmp_path, monkeypatch):
    host = FakeHost("a1111", tmp_path)
    host.install()
    monkeypatch.setattr(sys, "argv", ["install.py"])
    constraints = []
    original = host.modules["launch"].run_pip

    def run_pip(command, desc=None, live=False):
        path = command.split('-c "')[1].split('"')[0]
        constraints.append(Path(path).read_text())
        original(command, desc)

    host.modules["launch"].run_pip = run_pip
    host.constraints = constraints
    yield host
    host.uninstall()


def run_install():
    runpy.run_path(str(ROOT / "install.py"), run_name="__main__")


def test_nothing_to_do_when_everything_is_installed(host):
    host.installed = set(ALL)
    run_install()
    assert host.pip_calls == []


def test_installs_only_what_is_missing_with_the_host_pinned(host):
    host.installed = {"safetensors", "facexlib"}
    run_install()
    assert len(host.pip_calls) == 1
    command = host.pip_calls[0]
    assert '"yuface>=2023.5"' in command and "facexlib" not in command and "safetensors" not in command
    assert "opencv" not in command and "onnxruntime" not in command  # SD.Next's run_pip refuses those
    pins = host.constraints[0].split()
    assert f"numpy=={install_plan.installed_version('numpy')}" in pins
    assert f"torch=={install_plan.installed_version('torch')}" in pins
    assert not any(pin.startswith("yuface") for pin in pins)


def test_skip_install(host, monkeypatch):
    host.installed = set()
    monkeypatch.setattr(sys, "argv", ["install.py", "--skip-install"])
    run_install()
    assert host.pip_calls == []
    monkeypatch.setattr(sys, "argv", ["install.py"])
    host.modules["launch"].args.skip_install = True
    run_install()
    assert host.pip_calls == []


def test_pins_cover_only_installed_host_packages():
    versions = {"numpy": "1.26.2", "torch": "2.1.2", "gradio": None}
    assert install_plan.host_pins(versions.get, ["numpy", "torch", "gradio"]) == ["numpy==1.26.2", "torch==2.1.2"]
