"""A real Ray cluster on this machine, on 127.0.0.1 only: a head node and a worker node (two raylets, 1 CPU each).

Ray's own ``cluster_utils.Cluster`` starts the nodes as child processes of
the test process and stops them by their process ids (``cluster_helpers``);
a node is killed the same way (its raylet, by pid). Ray would otherwise register its nodes under
the machine's network address even when asked for 127.0.0.1;
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes it keep the loopback address, so
no byte leaves 127.0.0.1. Set before Ray is imported (Ray reads it then).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cluster_helpers import ROOT, RUN_TIMEOUT
from PIL import Image, PngImagePlugin

_RAY_TMP = tempfile.mkdtemp(prefix="cfray-")  # short: Ray's socket paths live under it
atexit.register(shutil.rmtree, _RAY_TMP, ignore_errors=True)
os.makedirs(os.path.join(_RAY_TMP, "ray"), exist_ok=True)
os.environ.update(
    {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TMPDIR": _RAY_TMP,
        # The workers import this checkout, whatever is installed in site-packages.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # The S3 clients (the test's and every node's) talk to the moto server on 127.0.0.1 only: fake credentials,
        # a fixed region, and never the cloud metadata service.
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)


@pytest.fixture(scope="session")
def archive(tmp_path_factory, astronaut) -> Path:
    """A few dozen small photos: faces (the astronaut, Grace Hopper) in several formats, 16-bit, an EXIF-rotated
    JPEG, text metadata; images without faces; subfolders; and one corrupt file."""
    root = tmp_path_factory.mktemp("archive")
    (root / "people").mkdir()
    (root / "scenes" / "deep").mkdir(parents=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "an astronaut, Steps: 20")
    Image.fromarray(astronaut).save(root / "people" / "astronaut.png", pnginfo=info)
    _save_rotated_jpeg(astronaut, root / "people" / "rotated.jpg")
    cv2 = pytest.importorskip("cv2")
    cv2.imwrite(str(root / "people" / "deep.png"), cv2.cvtColor(astronaut.astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    Image.open(_grace_hopper()).save(root / "people" / "hopper.webp", quality=90)
    generator = np.random.default_rng(5)
    for index in range(24):
        size = (48 + 8 * (index % 5), 64 + 4 * (index % 3))
        pixels = (generator.random((*size, 3)) * 64 + np.linspace(0, 190, size[1])[None, :, None]).astype(np.uint8)
        folder = root / "scenes" / ("deep" if index % 3 == 0 else "")
        suffix = (".png", ".jpg", ".bmp", ".tif", ".webp")[index % 5]
        Image.fromarray(pixels).save(folder / f"scene{index:02d}{suffix}")
    (root / "scenes" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    return root


def _save_rotated_jpeg(pixels: np.ndarray, path: Path) -> None:
    """Stored turned a quarter, with EXIF orientation 6: viewers (and the restorer) see it upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(pixels, 1).copy()).save(path, quality=92, exif=exif.tobytes())


def _grace_hopper() -> Path:
    cbook = pytest.importorskip("matplotlib.cbook")
    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@pytest.fixture(scope="session")
def local_reference(archive, tmp_path_factory, small_weights_file) -> tuple[Path, subprocess.CompletedProcess]:
    """What the local command line writes for the archive, with the actors' thread count (1: each node has 1 CPU;
    PyTorch's CPU convolutions sum in an order that depends on the thread count)."""
    out = tmp_path_factory.mktemp("local") / "out"
    command = [sys.executable, "-m", "lib_codeformer", "restore", str(archive), "-r", "--output", str(out)]
    command += ["--weights", str(small_weights_file), "--detector", "yunet", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env, check=False)
    assert completed.returncode == 1, completed.stderr  # the corrupt file
    return out, completed
