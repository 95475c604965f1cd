"""Restoring faces on a Ray cluster with Ray Data: a photo archive or a data set, on many machines.

Same decisions and same bytes as the local command line (``batch`` holds
what both share); Ray schedules, retries and reports progress, nothing here
does. Ray is an optional extra (``pip install 'sd-webui-codeformer[ray]'``)
and only this package imports it, when used: ``import
lib_codeformer.distributed`` works without it, and using it then says what
to install. Nothing below the front ends imports this package.

- ``restore_images``: face restoration as a step of your own Ray Data
  pipeline (a Dataset of image bytes in, of restored bytes out).
- the command line's ``--ray`` (``frontends/cli/ray.py``) drives the same workers.
"""

from __future__ import annotations

from .api import restore_images

__all__ = ["restore_images"]
