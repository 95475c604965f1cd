"""install.py's decisions, through the fake host's launch module."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from fake_webui import ROOT, FakeHost
from lib_codeformer.frontends.webui import install_plan

ALL = {"yuface", "safetensors", "facexlib", "torchvision"}


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


def test_installs_only_what_is_missing_pinned_with_the_host_pinned(host):
    host.installed = {"safetensors", "facexlib", "torchvision"}
    run_install()
    assert len(host.pip_calls) == 1
    command = host.pip_calls[0]
    assert '"yuface==2023.5.1"' in command and "facexlib" not in command and "safetensors" not in command
    assert "opencv" not in command and "onnxruntime" not in command  # SD.Next's run_pip refuses those
    pins = host.constraints[0].split()
    assert f"numpy=={install_plan.installed_version('numpy')}" in pins
    assert f"torch=={install_plan.installed_version('torch')}" in pins
    assert not any(pin.startswith("yuface") for pin in pins)


@pytest.mark.parametrize("numpy", ["1.26.2", "2.1.2"])
def test_a_host_with_only_headless_opencv_gets_no_second_opencv(numpy):
    """SD.Next has opencv-contrib-python-headless only; facexlib declares opencv-python (both write cv2/)."""
    present = {"torch", "torchvision", "numpy", "opencv-contrib-python-headless", "scipy", "pillow", "safetensors"}
    versions = {"numpy": numpy, "torch": "2.9.1", "opencv-contrib-python-headless": "4.11.0.86", "scipy": "1.14.1"}
    runs = install_plan.plan(present.__contains__, versions.get)
    every = [requirement for run in runs for requirement in run.requirements]
    assert every and all("==" in requirement for requirement in every)  # what is installed is pinned
    assert not any(requirement.startswith("opencv") for requirement in every)
    facexlib = next(run for run in runs if "facexlib==0.3.0" in run.requirements)
    assert facexlib.no_deps and "filterpy==1.4.5" in facexlib.requirements  # their declared deps are not followed
    assert not any(requirement.startswith("scipy") for requirement in every)  # the host's is kept
    numba = next(requirement for requirement in every if requirement.startswith("numba"))
    assert numba == ("numba==0.59.1" if numpy.startswith("1.") else "numba==0.61.2")  # one that fits the host's numpy
    arguments = install_plan.pip_arguments(facexlib, "c.txt")
    assert arguments.startswith("install --prefer-binary --no-deps") and '"facexlib==0.3.0"' in arguments


def test_without_torchvision_facexlib_is_left_out():
    runs = install_plan.plan({"torch", "numpy", "yuface", "safetensors"}.__contains__, {"numpy": "1.26.2"}.get)
    assert runs == []


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
