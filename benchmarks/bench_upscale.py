"""What enlarging costs: face upscaling on a 2048 px portrait, whole-image --upscale 2 on a group photo, video frames.

Rows, each timed against the same work without enlarging, in this one run
(median of ``--repeats``): the 2048 px portrait (the astronaut 4x; its face's
crop covers about 700 px there) restored with no face upscaler, with Lanczos,
and with a 4x ESRGAN-family network (spandrel's RRDBNet at its released size,
23 blocks of 64 filters, random weights: its cost does not depend on the
values); the 1280 x 886 group photo (insightface's t1.jpg via ``pip download``,
or ``--group-photo``) restored as it is and enlarged 2x with Lanczos first;
and a short clip of 2048 px frames through the video pipeline with and
without Lanczos for its faces (the frame rate stays what it is).
CodeFormer runs on the seed-1234 synthetic weights, faces found by YuNet.

    python benchmarks/bench_upscale.py [--repeats 3] [--group-photo t1.jpg] [--no-esrgan]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine_line, median_time  # noqa: E402

from lib_codeformer import FaceRestorer, load_codeformer  # noqa: E402
from lib_codeformer.network.synthetic import synthetic_state_dict  # noqa: E402
from lib_codeformer.upscaling import Lanczos, load_upscaler, upscale_image  # noqa: E402


def esrgan_upscaler(folder: Path):
    """A released-size 4x ESRGAN (RRDBNet, 23 blocks, 64 filters) with random weights, from a real .pth file."""
    from spandrel.architectures import ESRGAN as family

    architecture = getattr(family, "ESRGAN", None) or family.RRDBNet
    torch.manual_seed(0)
    path = folder / "4x_esrgan_random.pth"
    torch.save(architecture(num_filters=64, num_blocks=23, scale=4).state_dict(), path)
    return load_upscaler(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-photo", type=Path, help="a group photo (default: insightface's t1.jpg via pip download)")
    parser.add_argument("--no-esrgan", action="store_true", help="leave out the 4x ESRGAN row (minutes on a CPU)")
    parser.add_argument("--frames", type=int, default=6, help="frames of the 2048 px clip")
    args = parser.parse_args()
    import bench_pipeline
    from skimage import data

    from lib_codeformer.testing.steadiness import SteadyClip
    from lib_codeformer.video.pipeline import restore_array_frames

    astronaut = data.astronaut()
    portrait = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    network = load_codeformer(synthetic_state_dict(1234))
    restorer = FaceRestorer(network, detector="yunet", device="cpu")
    print(machine_line())
    print("\n| work | without enlarging s | with it s | extra s | ratio |")
    print("|---|---|---|---|---|")
    restorer.restore(portrait)  # warm-up: models loaded, kernels built
    plain = median_time(lambda: restorer.restore(portrait, face_upscaler=None), args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        upscalers = [("Lanczos", Lanczos())]
        if not args.no_esrgan:
            try:
                upscalers.append(("4x ESRGAN (RRDBNet 23x64)", esrgan_upscaler(Path(folder))))
            except ImportError:
                print("spandrel is not installed (pip install -e '.[upscale]'): the ESRGAN row is left out")
        for name, upscaler in upscalers:
            result = restorer.restore(portrait, face_upscaler=upscaler)
            assert result.faces[0].upscaled, "the portrait's face must be enlarged"
            repeats = args.repeats if name == "Lanczos" else 1
            timed = median_time(lambda upscaler=upscaler: restorer.restore(portrait, face_upscaler=upscaler), repeats)
            print(f"| 2048 px portrait, face enlarged {result.faces[0].upscaled:.2f}x with {name} | {plain:.2f} | "
                  f"{timed:.2f} | {timed - plain:+.2f} | {timed / plain:.2f} |", flush=True)
        group = args.group_photo or bench_pipeline.fetch_group_photo(Path(folder))
        photo = None if group is None else np.ascontiguousarray(cv2.imread(str(group), cv2.IMREAD_COLOR)[:, :, ::-1])
    if photo is not None:
        alone = median_time(lambda: restorer.restore(photo), args.repeats)
        both = median_time(lambda: restorer.restore(upscale_image(photo, Lanczos(), 2.0)), args.repeats)
        faces = restorer.restore(photo).restored_count
        print(f"| group photo {photo.shape[1]} x {photo.shape[0]} ({faces} faces), --upscale 2 (Lanczos) | {alone:.2f} | "
              f"{both:.2f} | {both - alone:+.2f} | {both / alone:.2f} |", flush=True)
    else:
        print("the group photo could not be had (pip download insightface failed): its row is left out")
    clip = list(SteadyClip(astronaut, width=2048, height=2048, frames=args.frames, scale=4.0, second_shot=False))

    def run_clip(upscaler) -> None:
        restorer.face_upscaler = upscaler
        for _ in restore_array_frames(restorer, clip):
            pass
        restorer.face_upscaler = None

    without = median_time(lambda: run_clip(None), 1)
    with_lanczos = median_time(lambda: run_clip(Lanczos()), 1)
    print(f"| {len(clip)} frames of 2048 px video, faces enlarged with Lanczos, s per frame | {without / len(clip):.2f} | "
          f"{with_lanczos / len(clip):.2f} | {(with_lanczos - without) / len(clip):+.2f} | {with_lanczos / without:.2f} |")


if __name__ == "__main__":
    main()
