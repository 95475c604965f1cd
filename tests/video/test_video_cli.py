"""The command line's video pieces, driven the way ``python -m lib_codeformer restore`` will call them."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pytest
from PIL import Image
from video_clips import decoded, write_clip

from lib_codeformer.video import cli as video_cli
from lib_codeformer.video.smoothing import UNSMOOTHED


def run(argv: list[str], restorer) -> int:
    """A test-only driver: what the main command line does with video inputs (exit status 0, 1 or 2)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("--output", required=True)
    parser.add_argument("--recursive", action="store_true")
    parser.add_argument("--fidelity", type=float, default=0.5)
    parser.add_argument("--quiet", action="store_true")
    video_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = video_cli.settings_from_args(args)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    output = Path(args.output)
    work = [
        (source, output / video_cli.video_target(relative, settings))
        for source, relative in video_cli.iter_media_inputs(args.inputs, args.recursive)
        if video_cli.is_video_file(source)
    ]
    counts = video_cli.restore_videos(restorer, work, settings, {"fidelity": args.fidelity}, quiet=args.quiet)
    print(video_cli.summary_line(counts))
    return 1 if counts.failed else 0


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
    assert written == ["a.mp4", "moving.gif", "sub/b.mkv"]  # the still GIF and the PNG are images, not videos
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
    message = capsys.readouterr().out
    assert "--frames" in message and "--video-crf" in message and "--detect-every" in message
    assert not (tmp_path / "out").exists()


def test_frames_option_and_no_steady():
    parser = argparse.ArgumentParser()
    video_cli.add_arguments(parser)
    settings = video_cli.settings_from_args(parser.parse_args(["--frames", "10:", "--no-steady", "--no-audio"]))
    assert settings.encoding.frames == (10, None) and not settings.encoding.audio
    assert settings.tracking.smoothing == UNSMOOTHED and settings.tracking.temporal is None
    assert not settings.tracking.follow_motion and settings.tracking.detect_every == 1
    default = video_cli.settings_from_args(parser.parse_args([]))
    assert default.tracking.detect_every == video_cli.DEFAULT_DETECT_EVERY and default.tracking.temporal is not None


def test_which_files_are_videos(media):
    assert video_cli.is_video_file(media / "a.mp4") and video_cli.is_video_file(media / "moving.gif")
    assert not video_cli.is_video_file(media / "still.gif") and not video_cli.is_video_file(media / "photo.png")
    assert {".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".webp"} <= video_cli.VIDEO_SUFFIXES
