"""Run by the WebUI before start-up: install what the extension needs and is missing.

Only ``yuface`` (the built-in face detector) and, where absent,
``safetensors`` and ``facexlib`` (with what facexlib imports, never a second
OpenCV); never a new torch, numpy, OpenCV or gradio (see
``lib_codeformer/frontends/webui/install_plan.py``). A fast no-op when all is
present; honours ``--skip-install``. Where there is no WebUI (ComfyUI-Manager
runs every node pack's install.py; ComfyUI installs ``requirements.txt``
itself) it does nothing.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lib_codeformer.frontends.webui import install_plan


def main() -> None:
    try:
        import launch  # the WebUI's installer module; absent under ComfyUI-Manager and everywhere else
    except ImportError:
        return
    if install_plan.skip_requested(sys.argv, getattr(launch, "args", None)):
        return
    runs = install_plan.plan(launch.is_installed)
    if not runs:
        return
    with tempfile.NamedTemporaryFile("w", suffix="-codeformer-constraints.txt", delete=False) as constraints:
        constraints.write("\n".join(install_plan.host_pins()) + "\n")
    try:
        for run in runs:
            launch.run_pip(
                install_plan.pip_arguments(run, constraints.name),
                f"CodeFormer extension requirements: {', '.join(run.requirements)}",
            )
    finally:
        os.unlink(constraints.name)


main()
