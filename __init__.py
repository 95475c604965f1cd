"""ComfyUI loads this file when the repository is cloned into ``ComfyUI/custom_nodes/`` (or installed by
ComfyUI-Manager or the Comfy Registry): the CodeFormer node pack.

It imports nothing heavy (the nodes import torch and the network when they
first run) and nothing of ComfyUI beyond ``folder_paths`` (through
``lib_codeformer.frontends.comfyui.host``); where ComfyUI is absent (pytest,
a WebUI, ``pip install``) it imports cleanly and registers nothing. The
WebUI extension in the same repository does not use this file.
"""

if "__path__" in globals():  # loaded as a package, as ComfyUI loads custom_nodes/<folder>
    from .lib_codeformer.frontends.comfyui import host as _host
    from .lib_codeformer.frontends.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    _host.register_model_folders()
else:
    # Imported as a lone file, which has no package for the imports above: pytest imports it so when the clone's
    # folder name is no Python name (``tmp.k0qM0gNJrr``). There is nothing to register.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
