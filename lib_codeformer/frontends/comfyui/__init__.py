"""The ComfyUI node pack (the repository's root ``__init__.py`` is what ComfyUI loads).

- ``host``: the one module that touches ComfyUI (model folders, device and memory, Cancel, progress);
- ``nodes``: Load CodeFormer, Restore Faces, Restore Faces in Video Frames.
"""
