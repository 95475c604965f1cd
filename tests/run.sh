#!/usr/bin/env bash
# The project's checks and tests, as the README's test command runs them: the whole suite three times, each time
# on the package set of a host (inside a WebUI the network runs on the host's torch), the compiled kernel's tests
# again under AddressSanitizer, and the package as users install it.
#   1. .venv (made by the README's install step): the newest torch and numpy 2, as the command line and SD.Next
#      run (SD.Next's gradio 3.43.2, installed as SD.Next installs it), and Ray with its test tools; ruff, then
#      every test (tests/distributed starts a two-node Ray cluster and an S3 server of its own, on 127.0.0.1; in
#      the host environments, which have no Ray, those tests skip); then the kernel's tests under AddressSanitizer.
#   2. .venv-forge: Forge f2.0.1's set (torch 2.3.1, torchvision 0.18.1, gradio 4.40, pydantic 2, numpy 1.26).
#   3. .venv-a1111: AUTOMATIC1111 1.10's set, the floor (torch 2.1.2, torchvision 0.16.2, numpy 1.26.2,
#      gradio 3.41.2, fastapi 0.94, pydantic 1, Pillow 9.5).
#   4. tests/installed_package.sh: a wheel in a clean environment.
# Each environment holds a CUDA build of torch (~6 GB), so at most two exist at once: .venv-forge is installed in
# the background while the first suite runs (downloads beside computation), .venv-a1111 after Forge's suite. With
# CODEFORMER_DISCARD_HOST_ENVIRONMENTS=1 (as in CI, where disk is short) each host environment is removed once its
# suite has run, so at most .venv and one other exist (16 GB at the peak, measured in CI's set-up); without it
# they are kept for the next run.
# Extra arguments are passed to every pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
logs="$(mktemp -d)"

host_environment() {  # name, extra: create it where missing and install the project with the host's set
    [ -x "$1/bin/python" ] || python3 -m venv "$1"
    "$1/bin/pip" install -q -e ".[test,video,$2]"
}
host_suite() {  # name: the whole suite in that environment, which is then discarded where asked
    "$1/bin/python" -m pytest "${pytest_arguments[@]}"
    if [ "${CODEFORMER_DISCARD_HOST_ENVIRONMENTS:-0}" = 1 ]; then
        rm -rf "$1"
    fi
}
pytest_arguments=("$@")

set -m  # the background install gets a process group of its own, so that a failing first run can stop it
host_environment .venv-forge host-forge >"$logs/install.log" 2>&1 &
installing=$!
set +m
trap 'kill -- -"$installing" 2>/dev/null || true' EXIT

.venv/bin/pip install -q -e ".[test,video,ray-test]"
# SD.Next pins gradio 3.43.2 and installs it without its declared dependencies (which would take numpy below 2).
.venv/bin/pip install -q --no-deps "gradio==3.43.2" "gradio-client==0.5.0"
.venv/bin/pip install -q aiofiles ffmpy pydub uvicorn semantic-version altair python-multipart "websockets<12" \
    "huggingface-hub<1" orjson importlib-resources jinja2 pandas markupsafe
.venv/bin/ruff check .
.venv/bin/python -m lib_codeformer.options --check  # the generated tooltips and option tables are current
.venv/bin/python -m pytest "$@"

# The compiled convolution kernel under AddressSanitizer: an out-of-bounds read or write fails the run.
if command -v gcc >/dev/null 2>&1; then
    CODEFORMER_KERNEL_FLAGS="-O1 -g -march=native -fsanitize=address -fno-omit-frame-pointer" \
    LD_PRELOAD="$(gcc -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0 \
        .venv/bin/python -m pytest tests/acceleration/test_winograd.py tests/acceleration/test_pointwise.py "$@"
fi

if ! wait "$installing"; then
    cat "$logs/install.log"
    echo "installing the Forge environment failed (log above)" >&2
    exit 1
fi
host_suite .venv-forge
host_environment .venv-a1111 host-a1111
host_suite .venv-a1111
bash tests/installed_package.sh
