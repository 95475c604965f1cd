"""The package's shape: imports go one way (front ends at the top), no circles, the leaves stay light."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib_codeformer"

# Lower layers never import higher ones; a layer may import its own modules.
LAYERS = (
    ("errors", "options", "compat", "exports", "version", "storage"),
    ("network",),
    ("acceleration",),
    ("faces",),
    ("upscaling",),
    ("restorer",),
    ("video", "batch", "distributed"),  # clients of the restorer
    ("frontends", "testing"),
)
# Imported at WebUI start-up or by the command line's parser: must not pull in torch (seconds) or the network.
LIGHT = (
    "errors",
    "options",
    "exports",
    "version",
    "frontends.cli.config",
    "storage.images",
    "storage.atomic",
    "storage.model_files",
    "frontends.webui.install_plan",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every lib_codeformer module ``path`` imports: at the top, inside functions, for type checking (all count)."""
    return imports_in(path.read_text(), module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, name: str, *, is_package: bool = False) -> set[str]:
    """The lib_codeformer modules that module ``name``'s ``source`` imports, wherever in it."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.startswith("lib_codeformer"):
                target = node.module.removeprefix("lib_codeformer").lstrip(".")
            else:
                continue
            submodules = {f"{target}.{alias.name}".strip(".") for alias in node.names} & MODULES
            # ``from package import submodule`` depends on the submodule; ``from module import name`` on the module.
            found.update(submodules if len(submodules) == len(node.names) else {target, *submodules})
        elif isinstance(node, ast.Import):
            ours = [alias.name for alias in node.names if alias.name.startswith("lib_codeformer.")]
            found.update(name.removeprefix("lib_codeformer.") for name in ours)
    return {target for target in found if target in MODULES and target not in (name, "")}


def third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def layer_of(module: str) -> int | None:
    for rank, names in enumerate(LAYERS):
        if any(module == name or module.startswith(f"{name}.") for name in names):
            return rank
    return None


GRAPH = {
    module_name(path): imports_of(path)
    for path in PACKAGE.rglob("*.py")
    if module_name(path) not in ("", "__main__")  # the package's lazy exports and ``python -m`` sit above everything
}


def test_imports_inside_functions_and_for_type_checking_count():
    """A lazy import (inside a function) or a type-checking one is an import all the same."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..video import pipeline\n"
        "def later():\n    from .batch import admit\n    import lib_codeformer.frontends.cli\n"
    )
    assert imports_in(source, "restorer") == {"video.pipeline", "batch", "frontends.cli"}


def test_the_restorer_imports_nothing_of_video():
    assert not any(target.startswith("video") for target in GRAPH["restorer"])


def test_every_module_has_a_layer():
    assert [module for module in GRAPH if layer_of(module) is None] == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_go_down(module):
    upward = [target for target in GRAPH[module] if layer_of(target) > layer_of(module)]
    assert upward == [], f"{module} imports {upward}, which sit above it"


def test_no_import_circle():
    def reachable(start: str) -> set[str]:
        seen, stack = set(), list(GRAPH.get(start, ()))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(GRAPH.get(current, ()))
        return seen

    circles = sorted(module for module in GRAPH if module in reachable(module))
    assert circles == [], f"these modules import themselves through others: {circles}"


@pytest.mark.parametrize("module", LIGHT)
def test_leaves_import_neither_torch_nor_the_network(module):
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    assert not {"torch", "torchvision"} & third_party_imports(path)
    assert not any(target.startswith(("network", "acceleration", "faces", "restorer")) for target in GRAPH[module])
