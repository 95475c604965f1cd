"""The wheel and the sdist carry every file the package needs at run time, and the command they install exists."""

from __future__ import annotations

import configparser
import importlib
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder), str(ROOT)]
    subprocess.run(command, check=True, timeout=600)
    sdist = [sys.executable, "-c", "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])"]
    sdist.append(str(folder))
    subprocess.run(sdist, check=True, timeout=600, cwd=ROOT, capture_output=True)
    return folder


def package_files() -> set[str]:
    """Every file of the package that git tracks (what a user of a clone has), as paths from the checkout."""
    listed = subprocess.run(["git", "ls-files", "lib_codeformer"], cwd=ROOT, capture_output=True, text=True, check=True)
    return {line for line in listed.stdout.splitlines() if "__pycache__" not in line}


def test_the_wheel_holds_every_file_of_the_package(built):
    (wheel,) = built.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        held = set(archive.namelist())
    assert package_files() - held == set()  # the kernel's C source included: without it the fast path is lost
    assert "lib_codeformer/acceleration/csrc/winograd.c" in held


def test_the_sdist_holds_every_file_of_the_package(built):
    (sdist,) = built.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        held = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert package_files() - held == set()


def test_the_installed_command_points_at_a_function(built):
    (wheel,) = built.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        points = next(name for name in archive.namelist() if name.endswith("entry_points.txt"))
        parser = configparser.ConfigParser()
        parser.read_string(archive.read(points).decode())
    module, function = parser["console_scripts"]["codeformer"].split(":")
    assert callable(getattr(importlib.import_module(module), function))
