"""What install.py installs: only what is missing, never moving a package the host owns.

The WebUI owns torch, numpy, OpenCV, gradio and friends; an extension that
upgrades one of them breaks the host (OpenCV >= 4.12 needs numpy 2, which
breaks hosts on numpy 1.26). So every install runs with a constraints file
that pins each host-owned package already present to its installed version:
pip then picks versions of our requirements (and of their dependencies) that
fit the host, or fails without changing anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import metadata

# (distribution name, requirement)
REQUIREMENTS: tuple[tuple[str, str], ...] = (
    ("yuface", "yuface>=2023.5"),
    ("safetensors", "safetensors>=0.4"),
    ("facexlib", "facexlib>=0.3"),
)
HOST_OWNED = (
    "torch",
    "torchvision",
    "numpy",
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
    "gradio",
    "pillow",
    "protobuf",
    "scipy",
    "safetensors",
)


def missing(is_installed: Callable[[str], bool]) -> list[str]:
    """Requirements whose distribution is not installed."""
    return [requirement for name, requirement in REQUIREMENTS if not is_installed(name)]


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def host_pins(version_of: Callable[[str], str | None] = installed_version, owned: Iterable[str] = HOST_OWNED) -> list[str]:
    """``name==version`` for every host-owned package that is installed."""
    pins = []
    for name in owned:
        version = version_of(name)
        if version:
            pins.append(f"{name}=={version}")
    return pins


def pip_arguments(requirements: list[str], constraints_file: str) -> str:
    """The argument string for the host's ``run_pip`` (it prefixes ``python -m pip``)."""
    quoted = " ".join(f'"{requirement}"' for requirement in requirements)
    return f'install --prefer-binary -c "{constraints_file}" {quoted}'


def skip_requested(argv: list[str], launch_args: object | None) -> bool:
    return "--skip-install" in argv or bool(getattr(launch_args, "skip_install", False))
