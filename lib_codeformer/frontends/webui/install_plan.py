"""What install.py installs: only what is missing, pinned, and never a second copy of what the host has.

The WebUI owns torch, numpy, OpenCV, gradio and friends; an extension that
upgrades one of them breaks the host (OpenCV >= 4.12 needs numpy 2, which
breaks hosts on numpy 1.26). So:

- every install runs with a constraints file pinning each host-owned package
  that is present to its installed version;
- what is installed is pinned to the version tested here;
- facexlib is installed without its declared dependencies (its
  ``opencv-python`` would be a second OpenCV beside a host's
  ``opencv-python-headless``: two distributions writing one ``cv2`` folder),
  and the ones it really imports that are missing are added, pinned, by hand;
  without torchvision (which a host should have) it is left out: RetinaFace
  and the parsing mask need it, YuNet does not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata

# (distribution, pinned requirement): what the extension itself needs.
REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("yuface", "yuface==2023.5.1"),
    ("safetensors", "safetensors==0.4.2"),
)
FACEXLIB = "facexlib==0.3.0"
# What facexlib imports at import time (its tracking module comes with the package), by host numpy (numba and
# scipy releases each support a range of numpy versions). filterpy is installed without its dependencies too:
# it declares matplotlib, which it imports only to plot.
FACEXLIB_IMPORTS = {
    "numpy1": (("numba", "numba==0.59.1"), ("scipy", "scipy==1.11.4"), ("tqdm", "tqdm==4.66.5")),
    "numpy2": (("numba", "numba==0.61.2"), ("scipy", "scipy==1.14.1"), ("tqdm", "tqdm==4.66.5")),
}
FILTERPY = ("filterpy", "filterpy==1.4.5")
OPENCV_DISTRIBUTIONS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
HOST_OWNED = (
    "torch",
    "torchvision",
    "numpy",
    *OPENCV_DISTRIBUTIONS,
    "gradio",
    "pillow",
    "pillow-simd",
    "protobuf",
    "scipy",
    "numba",
    "safetensors",
)


@dataclass(frozen=True)
class PipInstall:
    """One pip run: these requirements, with or without their declared dependencies."""

    requirements: tuple[str, ...]
    no_deps: bool = False


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plan(is_installed: Callable[[str], bool], version_of: Callable[[str], str | None] = installed_version) -> list[PipInstall]:
    """The pip runs that install what is missing (none when everything is there)."""
    runs = []
    own = [requirement for name, requirement in REQUIREMENTS if not is_installed(name)]
    if own:
        runs.append(PipInstall(tuple(own)))
    if not is_installed("facexlib") and is_installed("torchvision"):
        numpy = version_of("numpy") or "2"
        imports = FACEXLIB_IMPORTS["numpy1" if numpy.startswith("1.") else "numpy2"]
        without_dependencies = [FACEXLIB] + ([FILTERPY[1]] if not is_installed(FILTERPY[0]) else [])
        runs.append(PipInstall(tuple(without_dependencies), no_deps=True))
        needed = tuple(requirement for name, requirement in imports if not is_installed(name))
        if needed:
            runs.append(PipInstall(needed))
    return runs


def host_pins(version_of: Callable[[str], str | None] = installed_version, owned: Iterable[str] = HOST_OWNED) -> list[str]:
    """``name==version`` for every host-owned package that is installed."""
    pins = []
    for name in owned:
        version = version_of(name)
        if version:
            pins.append(f"{name}=={version}")
    return pins


def pip_arguments(run: PipInstall, constraints_file: str) -> str:
    """The argument string for the host's ``run_pip`` (it prefixes ``python -m pip``)."""
    quoted = " ".join(f'"{requirement}"' for requirement in run.requirements)
    no_deps = "--no-deps " if run.no_deps else ""
    return f'install --prefer-binary {no_deps}-c "{constraints_file}" {quoted}'


def skip_requested(argv: list[str], launch_args: object | None) -> bool:
    return "--skip-install" in argv or bool(getattr(launch_args, "skip_install", False))
