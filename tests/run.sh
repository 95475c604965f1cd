#!/usr/bin/env bash
# The project's checks and tests, as the README's test command runs them.
#   1. .venv (made by the README's install step) gets the test tools, the Forge-like host set
#      (gradio 4.40, pydantic 2) and Ray with its test tools: ruff, then every test (tests/distributed
#      starts a two-node Ray cluster and an S3 server of its own, on 127.0.0.1).
#   2. .venv-a1111 gets the AUTOMATIC1111-like host set (gradio 3.41.2, fastapi 0.94, pydantic 1,
#      numpy < 2): the WebUI contract tests again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install -q -e ".[test,host-forge,ray-test]"
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"

[ -x .venv-a1111/bin/python ] || python3 -m venv .venv-a1111
.venv-a1111/bin/pip install -q -e ".[test,host-a1111]"
.venv-a1111/bin/python -m pytest tests/test_webui.py tests/test_install.py "$@"
