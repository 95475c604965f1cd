#!/usr/bin/env bash
# The package as users install it: a wheel built from this checkout, installed (not editable) into a clean
# virtual environment, run from a folder outside the checkout. Checks that the `codeformer` command works,
# that the compiled kernel's source came with the wheel and is used by a real restore, and `python -m`.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$work"/dist/*.whl
cd "$work"  # nothing of the checkout on the path from here
export CODEFORMER_CACHE="$work/cache"
"$work/venv/bin/codeformer" --help >/dev/null
"$work/venv/bin/codeformer" --version | grep -q "codeformer $(grep -m1 '^version' "$root/pyproject.toml" | cut -d'"' -f2)"
"$work/venv/bin/python" -m lib_codeformer restore --help >/dev/null
"$work/venv/bin/python" - "$root/tests/data/input_face.png" <<'PY'
import pathlib, sys, sysconfig
from safetensors.torch import save_file
import lib_codeformer
from lib_codeformer.acceleration import kernel_build
from lib_codeformer.network.synthetic import synthetic_state_dict

installed = pathlib.Path(sysconfig.get_paths()["purelib"])
assert installed in pathlib.Path(lib_codeformer.__file__).parents, lib_codeformer.__file__
assert kernel_build.SOURCE.is_file() and installed in kernel_build.SOURCE.parents, kernel_build.SOURCE
save_file(synthetic_state_dict(1234), "weights.safetensors")
(pathlib.Path("photos")).mkdir()
(pathlib.Path("photos") / "face.png").write_bytes(pathlib.Path(sys.argv[1]).read_bytes())
PY
"$work/venv/bin/codeformer" restore photos --output restored --weights weights.safetensors --detector yunet --quiet
test -s restored/face.png
# The kernel was built from the installed source and passed its self-test during that restore.
"$work/venv/bin/python" - <<'PY'
import json, os, pathlib
verdicts = list(pathlib.Path(os.environ["CODEFORMER_CACHE"], "kernels").glob("*/verdict.json"))
assert verdicts and all(json.loads(path.read_text())["verdict"] == "good" for path in verdicts), verdicts
from lib_codeformer.acceleration import winograd
assert winograd.available()
print("installed package: codeformer command, python -m, compiled kernel from the wheel: all good")
PY
