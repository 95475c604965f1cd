"""PyAV is imported only for videos, by one function (the package's layering is tests/test_layering.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "lib_codeformer"


def imported_modules(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for each import in a file; relative imports resolved against the package."""
    tree = ast.parse(path.read_text())
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.col_offset == 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            found += [(f"{module}.{alias.name}" if not node.module else module, node.col_offset == 0) for alias in node.names]
    return found


def test_only_import_av_imports_pyav():
    """``video.containers.import_av`` is the one place (it says what to install where PyAV is missing)."""
    for path in PACKAGE.rglob("*.py"):
        modules = {module for module, _ in imported_modules(path)}
        assert ("av" in modules) == (path.relative_to(PACKAGE).as_posix() == "video/containers.py"), path


def test_importing_the_package_and_its_video_part_does_not_import_pyav():
    code = (
        "import sys, lib_codeformer.restorer, lib_codeformer.video.pipeline, lib_codeformer.frontends.cli.video, "
        "lib_codeformer.video.transcode; assert 'av' not in sys.modules, 'av imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
