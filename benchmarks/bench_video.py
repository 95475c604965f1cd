"""Video: how steady the restored faces are, how the smoothing was chosen, and how fast it runs.

Three parts (all by default; pick with --flicker, --smoothing, --speed):

- ``--flicker``: the steadiness clip (``lib_codeformer.testing.steadiness``:
  the astronaut moved along a slow path with sub-pixel shake, sensor noise,
  a cut, a second face entering) restored by the full network on synthetic
  weights (``synthetic_state_dict(1234)``): flicker inside the faces and
  landmark error / lag / jitter for the input, frame-by-frame restoration
  (each frame detected and restored on its own, as the official video
  script does), ours with the landmark filter only, and ours (landmark
  filter and temporal filter of the aligned faces).
- ``--smoothing``: the landmark filter's parameters against jitter and lag
  (no network: tracking only, so every setting is cheap to measure), and
  the time detection takes per frame, which sets the default ``--detect-every``.
- ``--speed``: frames/s on a 720p clip with one face, end to end (decode,
  track, restore, encode) against AUTOMATIC1111 1.10's per-frame path
  (facexlib's helper around spandrel's CodeFormer, as
  ``bench_pipeline.py`` builds it, given the same detector's landmarks on
  every frame) on the same frames, the two alternating in rounds over parts of
  the clip so that both see the same load. Needs ``pip install -e ".[bench,video]"``.

    python benchmarks/bench_video.py [--frames 24] [--speed-seconds 10] [--reference-frames 12] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lib_codeformer import FaceRestorer, load_codeformer  # noqa: E402
from lib_codeformer.faces.detection import DEFAULT_CONFIDENCE, YuNetDetector, detect_faces  # noqa: E402
from lib_codeformer.network.synthetic import synthetic_state_dict  # noqa: E402
from lib_codeformer.options import DEFAULT_DETECT_EVERY  # noqa: E402
from lib_codeformer.testing import steadiness  # noqa: E402
from lib_codeformer.testing.steadiness import SteadyClip  # noqa: E402
from lib_codeformer.video import restore_video  # noqa: E402
from lib_codeformer.video.smoothing import SmoothingParameters  # noqa: E402
from lib_codeformer.video.tracking import TrackingParameters, tracking_parameters  # noqa: E402


def machine() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    names = [line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{model}, {vector}, {torch.get_num_threads()} threads, torch {torch.__version__}, CPU; load average {load}"


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def flicker_table(clip_frames: int, restorer: FaceRestorer) -> None:
    clip = SteadyClip(astronaut(), width=320, height=240, frames=clip_frames)
    print(f"\n## Flicker ({clip.frames} frames of {clip.width} x {clip.height}, cut at {clip.cut}; {machine()})\n")
    rows = [steadiness.measure_input(clip)]
    frame_by_frame, reference = steadiness.measure_frame_by_frame(restorer, clip)
    rows.append(frame_by_frame)
    landmarks_only = TrackingParameters(detect_every=DEFAULT_DETECT_EVERY, temporal=None)
    rows.append(steadiness.measure_steady(restorer, clip, reference, "ours, landmark filter only", landmarks_only))
    ours = TrackingParameters(detect_every=DEFAULT_DETECT_EVERY)
    rows.append(steadiness.measure_steady(restorer, clip, reference, "ours", ours))
    print("| | flicker | vs frame by frame | landmark error px | lag px | jitter px | faces | s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        marks = row.landmarks
        landmark = f"{marks.mean_error:.2f} | {marks.lag:+.2f} | {marks.jitter:.2f}" if marks else "- | - | -"
        print(
            f"| {row.name} | {row.flicker:.2f} | {row.flicker / frame_by_frame.flicker:.2f} | {landmark} "
            f"| {row.faces} | {row.seconds:.0f} |",
            flush=True,
        )


def smoothing_table(identity: FaceRestorer) -> None:
    clip = SteadyClip(astronaut(), width=320, height=240, frames=48)
    print(f"\n## Landmark filter ({clip.frames} frames, tracking only, YuNet; {machine()})\n")
    detected, _ = steadiness.track_only(identity, clip, tracking_parameters(1, steady=False))
    reference = steadiness.reference_landmarks(clip, detected)
    settings = {
        "none (each frame's detection)": tracking_parameters(1, steady=False),
        "moving average without motion (gain 0.3)": TrackingParameters(
            follow_motion=False, smoothing=SmoothingParameters(gain=0.3, gain_without_motion=0.3)
        ),
    }
    for gain in (1.0, 0.5, 0.3, 0.2, 0.1, 0.05):
        settings[f"flow-carried, gain {gain}"] = TrackingParameters(smoothing=SmoothingParameters(gain=gain))
    for every in (2, 3, 5, 8):
        settings[f"flow-carried, gain 0.2, detect every {every}"] = TrackingParameters(detect_every=every)
    for gain in (0.1, 0.3):
        settings[f"flow-carried, gain {gain}, detect every 3"] = TrackingParameters(
            detect_every=3, smoothing=SmoothingParameters(gain=gain)
        )
    print("| filter | landmark error px | lag px | jitter px | detections |")
    print("|---|---|---|---|---|")
    for name, tracking in settings.items():
        used, detections = steadiness.track_only(identity, clip, tracking)
        errors = steadiness.landmark_errors(clip, used, reference)
        print(f"| {name} | {errors.mean_error:.2f} | {errors.lag:+.2f} | {errors.jitter:.2f} | {detections} |", flush=True)


def detection_times() -> None:
    """Seconds per 720p frame for each detector, and for following faces by optical flow."""
    import cv2

    from lib_codeformer.network.synthetic import random_weights_like
    from lib_codeformer.video import motion

    clip = SteadyClip(astronaut(), width=1280, height=720, frames=6, scale=2.0, second_shot=False)
    frames = list(clip)
    yunet = YuNetDetector()
    times = {"YuNet (as --detector yunet runs it)": lambda f: detect_faces(yunet, f, DEFAULT_CONFIDENCE["yunet"])}
    try:
        from facexlib.detection.retinaface import RetinaFace

        retina = RetinaFace(network_name="resnet50", half=False, device="cpu")
        retina.load_state_dict(random_weights_like(retina, 1))
        retina.eval()

        def retinaface(frame: np.ndarray) -> None:
            small = cv2.resize(frame, (960, 540), interpolation=cv2.INTER_AREA)
            with torch.inference_mode():
                retina.detect_faces(np.ascontiguousarray(small[:, :, ::-1]), conf_threshold=0.97)

        times["RetinaFace ResNet-50 (the default detector, at 960 px)"] = retinaface
    except ImportError:
        pass
    landmarks = detect_faces(yunet, frames[0], DEFAULT_CONFIDENCE["yunet"])[0].landmarks
    grays = [motion.gray(frame) for frame in frames]
    times["optical flow, one face"] = lambda f: motion.face_motion(grays[0], grays[1], landmarks)
    print(f"\n## Detection per 720p frame ({machine()})\n")
    print("| step | s per frame |")
    print("|---|---|")
    for name, run in times.items():
        run(frames[0])
        spent = []
        for frame in frames[1:]:
            started = time.perf_counter()
            run(frame)
            spent.append(time.perf_counter() - started)
        print(f"| {name} | {statistics.median(spent):.3f} |", flush=True)


def speed_table(restorer: FaceRestorer, state_dict: dict, seconds: float, reference_frames: int, rounds: int) -> None:
    """Ours and AUTOMATIC1111's path in alternating rounds over parts of the clip, so that both see the same load."""
    import av
    from bench_pipeline import Automatic1111Path

    from lib_codeformer.video.encoding import EncodingOptions

    frame_count = round(25 * seconds)
    clip = SteadyClip(astronaut(), width=1280, height=720, frames=frame_count, scale=2.0, second_shot=False)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "clip.mp4"
        with av.open(str(source), "w") as out:
            video = out.add_stream("libx264", rate=25, options={"crf": "18"})
            video.width, video.height, video.pix_fmt = 1280, 720, "yuv420p"
            for frame in clip:
                out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")))
            out.mux(video.encode(None))
        print(f"\n## Speed ({frame_count} frames of 1280 x 720, one face, {rounds} rounds; {machine()})\n", flush=True)
        reference = Automatic1111Path(state_dict, Path(folder))
        yunet = YuNetDetector()
        print("| round | frames | ours s/frame (detections) | AUTOMATIC1111 s/frame (timed) | ours / AUTOMATIC1111 | load |")
        print("|---|---|---|---|---|---|")
        ratios, ours_total, ours_frames, theirs_all = [], 0.0, 0, []
        for number in range(rounds):
            first, last = number * frame_count // rounds, (number + 1) * frame_count // rounds
            started = time.perf_counter()
            part = EncodingOptions(frames=(first, last))
            result = restore_video(restorer, source, Path(folder) / f"ours{number}.mp4", encoding=part)
            ours = (time.perf_counter() - started) / result.frames
            ours_total, ours_frames = ours_total + ours * result.frames, ours_frames + result.frames
            spent = []
            for index in range(first, min(last, first + max(1, reference_frames // rounds))):
                frame = clip.frame(index)
                started = time.perf_counter()
                landmarks = [d.landmarks for d in detect_faces(yunet, frame, DEFAULT_CONFIDENCE["yunet"])]
                reference.restore(frame, landmarks, {"network": 0.0, "paste": 0.0})
                spent.append(time.perf_counter() - started)
            theirs = statistics.mean(spent)
            theirs_all += spent
            ratios.append(ours / theirs)
            load = os.getloadavg()[0]
            print(
                f"| {number + 1} | {first}-{last - 1} | {ours:.2f} ({result.detections}) | {theirs:.2f} ({len(spent)}) "
                f"| {ours / theirs:.2f} | {load:.1f} |",
                flush=True,
            )
    ours_mean, theirs_mean = ours_total / ours_frames, statistics.mean(theirs_all)
    print(
        f"| all | {ours_frames} | {ours_mean:.2f} ({1 / ours_mean:.3f} frames/s) "
        f"| {theirs_mean:.2f} ({1 / theirs_mean:.3f} frames/s) | {statistics.median(ratios):.2f} (median of rounds) | |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flicker", action="store_true")
    parser.add_argument("--smoothing", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--frames", type=int, default=24, help="frames of the flicker clip (half before the cut)")
    parser.add_argument("--speed-seconds", type=float, default=10.0, help="length of the 720p speed clip")
    parser.add_argument("--reference-frames", type=int, default=12, help="frames AUTOMATIC1111's path is timed on, in all")
    parser.add_argument("--rounds", type=int, default=4, help="alternate ours and AUTOMATIC1111's path this many times")
    args = parser.parse_args()
    everything = not (args.flicker or args.smoothing or args.speed)
    state_dict = synthetic_state_dict(1234)
    restorer = FaceRestorer(load_codeformer(state_dict), detector="yunet", device="cpu")
    if everything or args.smoothing:
        smoothing_table(FaceRestorer(torch.nn.Identity(), detector="yunet", device="cpu"))
        detection_times()
    if everything or args.flicker:
        flicker_table(args.frames, restorer)
    if everything or args.speed:
        speed_table(restorer, state_dict, args.speed_seconds, args.reference_frames, args.rounds)


if __name__ == "__main__":
    main()
