"""The command line's video pieces, driven the way ``python -m lib_codeformer restore`` will call them."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from video_clips import decoded, write_clip

from lib_codeformer.frontends import cli
from lib_codeformer.frontends.cli.config import read_config
from lib_codeformer.options import DEFAULT_DETECT_EVERY
from lib_codeformer.storage.atomic import is_temporary
from lib_codeformer.video.containers import VIDEO_SUFFIXES, is_video_file
from lib_codeformer.video.smoothing import UNSMOOTHED

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], restorer) -> int:
    """The real command line (``python -m lib_codeformer restore``) with ``restorer`` as the restorer it makes."""
    from lib_codeformer import restorer as restorer_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(restorer_module, "FaceRestorer", lambda *args, **kwargs: restorer)
        return cli.main(["restore", *argv])


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def media(tmp_path, face_frames, plain_frames) -> Path:
    """in/a.mp4 (face, sound), in/sub/b.mkv, in/moving.gif (animated), in/still.gif, in/photo.png, in/broken.mp4."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    frames = face_frames(4)
    write_clip(root / "a.mp4", frames, audio="aac")
    write_clip(root / "sub" / "b.mkv", plain_frames(3), codec="ffv1")
    images = [Image.fromarray(frame) for frame in frames[:3]]
    images[0].save(root / "moving.gif", save_all=True, append_images=images[1:], duration=40, loop=0)
    images[0].save(root / "still.gif")
    images[0].save(root / "photo.png")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    return root


def test_folders_of_videos_one_failure_reported_the_rest_written(media, tmp_path, identity_restorer, capsys):
    before = digests(media)
    status = run([str(media), "--recursive", "--output", str(tmp_path / "out"), "--quiet"], identity_restorer)
    captured = capsys.readouterr()
    assert status == 1
    assert "failed: " in captured.err and "broken.mp4" in captured.err
    assert "3 videos written (" in captured.out and "1 failed" in captured.out
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["a.mp4", "moving.gif", "photo.png", "sub/b.mkv"]  # the PNG is an image, restored as one
    assert "still.gif" in captured.err and "256 colours" in captured.err  # a still GIF is an image it cannot hold
    assert digests(media) == before  # inputs untouched


def test_video_format_and_progress_summary(media, tmp_path, identity_restorer, capsys):
    status = run([str(media / "a.mp4"), "--output", str(tmp_path / "out"), "--video-format", "mkv"], identity_restorer)
    captured = capsys.readouterr()
    assert status == 0
    assert decoded(tmp_path / "out" / "a.mkv")[2]["audio"] == ["aac"]
    assert "a.mp4: 4 frames, " in captured.err and "frames/s" in captured.err  # the per-file summary line
    assert "frame" in captured.err  # the progress bar


def test_bad_video_options_are_usage_errors(media, tmp_path, identity_restorer, capsys):
    argv = [str(media), "--output", str(tmp_path / "out"), "--frames", "9:3", "--video-crf", "99", "--detect-every", "0"]
    assert run(argv, identity_restorer) == 2
    message = capsys.readouterr().err
    assert "--frames" in message and "--video-crf" in message and "--detect-every" in message
    assert not (tmp_path / "out").exists()


def test_frames_option_and_no_steady():
    parser = cli.build_parser()
    arguments = ["restore", "in", "--output", "out"]
    settings = read_config(parser.parse_args([*arguments, "--frames", "10:", "--no-steady", "--no-audio"])).video
    assert settings.encoding.frames == (10, None) and not settings.encoding.audio
    assert settings.tracking.smoothing == UNSMOOTHED and settings.tracking.temporal is None
    assert not settings.tracking.follow_motion and settings.tracking.detect_every == 1
    default = read_config(parser.parse_args(arguments)).video
    assert default.tracking.detect_every == DEFAULT_DETECT_EVERY and default.tracking.temporal is not None


def test_which_files_are_videos(media):
    assert is_video_file(media / "a.mp4") and is_video_file(media / "moving.gif")
    assert not is_video_file(media / "still.gif") and not is_video_file(media / "photo.png")
    assert {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".webp"} <= VIDEO_SUFFIXES


def test_a_video_run_killed_mid_write_leaves_a_temporary_the_next_run_removes(tmp_path, face_frames, small_weights_file, capsys):
    """SIGKILL gives no chance to clean up: the partial output keeps the project's temporary name, so the next run
    into that folder recognises it (its writer is dead) and removes it."""
    (tmp_path / "in").mkdir()
    source = write_clip(tmp_path / "in" / "long.mkv", face_frames(60), codec="ffv1")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lib_codeformer", "restore", str(source), "--output", str(out), "--quiet"]
    command += ["--video-codec", "ffv1"]  # written frame by frame (x264 holds frames back for its look-ahead)
    command += ["--weights", str(small_weights_file), "--detector", "yunet"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (out.is_dir() and any(is_temporary(path) and path.stat().st_size for path in out.iterdir())):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the video run never started writing"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)  # mid-write: frames are in the temporary file, the run is not done
    finally:
        process.kill()
        process.wait(60)
    leftovers = [path for path in out.iterdir() if is_temporary(path)]
    assert leftovers and leftovers[0].stat().st_size > 0
    assert not (out / "long.mkv").exists()  # nothing half-written under the real name
    photo = tmp_path / "next" / "photo.png"
    photo.parent.mkdir()
    Image.fromarray(face_frames(1)[0]).save(photo)
    weights = ["--weights", str(small_weights_file), "--detector", "yunet", "--quiet"]
    status = cli.main(["restore", str(photo), "--output", str(out), *weights])
    assert status == 0
    assert f"removed {leftovers[0]}, left by an interrupted run" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == ["photo.png"]


def test_a_face_upscaler_enlarges_the_large_faces_of_a_video(tmp_path, astronaut, small_weights_file, capsys):
    from lib_codeformer.testing.steadiness import SteadyClip

    frames = list(SteadyClip(astronaut, width=1200, height=1200, frames=3, scale=3.6, second_shot=False))
    clip = write_clip(tmp_path / "big.mp4", frames)
    out = tmp_path / "out"
    weights = ["--weights", str(small_weights_file), "--detector", "yunet"]
    assert cli.main(["restore", str(clip), "-o", str(out), "--face-upscaler", "lanczos", *weights]) == 0
    assert "note: 3 faces enlarged with lanczos" in capsys.readouterr().err
    restored, _, _ = decoded(out / "big.mp4")
    assert [frame.shape for frame in restored] == [(1200, 1200, 3)] * 3
    assert cli.main(["restore", str(clip), "-o", str(tmp_path / "plain"), *weights]) == 0
    assert "enlarged" not in capsys.readouterr().err  # without the flag: stretched from the crop, as before
