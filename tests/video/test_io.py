"""Decoding and encoding: what a restored video keeps (size, count, timestamps, rotation, colour, sound, tags)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_clips import av, decoded, rotation_of, write_clip

from lib_codeformer.video import pipeline, restore_video
from lib_codeformer.video.encoding import EncodingOptions
from lib_codeformer.video.errors import VideoFileError


def restore(restorer, source, destination, **kwargs):
    return restore_video(restorer, source, destination, **kwargs)


def test_mp4_keeps_size_frame_count_timestamps_sound_and_title(tmp_path, face_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mp4", face_frames(8), audio="aac", title="holiday")
    result = restore(identity_restorer, source, tmp_path / "out.mp4")
    images, times, info = decoded(tmp_path / "out.mp4")
    original_images, original_times, original = decoded(source)
    assert result.frames == len(images) == 8 and result.faces_restored >= 8
    assert (info["width"], info["height"]) == (original["width"], original["height"]) == (192, 160)
    assert times == original_times
    assert info["codec"] == "h264" and info["audio"] == ["aac"] and info["title"] == "holiday"
    assert result.notes == []
    with av.open(str(source)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        copied = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        written = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
    assert written == copied  # the sound is copied packet for packet, not re-encoded
    # the identity network pastes the face back where it was: the picture stays close to the input
    assert np.abs(np.stack(images).astype(int) - np.stack(original_images)).mean() < 4


def test_frames_without_faces_keep_their_decoded_pixels(tmp_path, plain_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mkv", plain_frames(6), codec="ffv1", pix_fmt="yuv420p")
    result = restore(identity_restorer, source, tmp_path / "out.mkv", encoding=EncodingOptions(codec="ffv1"))
    assert result.faces_restored == 0
    for before, after in zip(decoded(source)[0], decoded(tmp_path / "out.mkv")[0], strict=True):
        np.testing.assert_array_equal(before, after)


def test_variable_frame_rate_timestamps_are_kept(tmp_path, plain_frames, identity_restorer):
    times = [0, 40, 120, 160, 330, 370, 1000]
    source = write_clip(tmp_path / "in.mkv", plain_frames(7), codec="ffv1", times_ms=times)
    restore(identity_restorer, source, tmp_path / "out.mkv")
    _, written, info = decoded(tmp_path / "out.mkv")
    assert [round(t * info["time_base"] * 1000) for t in written] == times


def test_rotation_is_kept_and_faces_are_found_upright(tmp_path, face_frames, identity_restorer):
    upright = face_frames(4)
    stored = [np.ascontiguousarray(np.rot90(frame, -1)) for frame in upright]  # a phone's sideways frames
    source = write_clip(tmp_path / "in.mp4", stored, rotation=90)
    result = restore(identity_restorer, source, tmp_path / "out.mp4")
    assert result.faces_restored >= 4  # found only if the frames were turned upright first (YuNet wants upright faces)
    assert rotation_of(tmp_path / "out.mp4") == 90
    images, _, info = decoded(tmp_path / "out.mp4")
    assert (info["width"], info["height"]) == (160, 192)  # stored sideways, as the input
    assert np.abs(images[0].astype(int) - decoded(source)[0][0]).mean() < 4  # turned back before encoding


def test_odd_sizes_keep_every_pixel(tmp_path, plain_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mkv", plain_frames(3, width=95, height=63), codec="ffv1")
    result = restore(identity_restorer, source, tmp_path / "out.mp4")
    images, _, info = decoded(tmp_path / "out.mp4")
    assert (info["width"], info["height"]) == (95, 63) and info["codec"] == "h264"
    assert any("odd" in note for note in result.notes)
    original = decoded(source)[0]
    assert np.abs(images[0][:, -1].astype(int) - original[0][:, -1]).mean() < 3  # the last column is there
    assert np.abs(images[0][-1].astype(int) - original[0][-1]).mean() < 3  # and the last row


def test_full_colour_range_is_kept(tmp_path, plain_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mp4", plain_frames(3), pix_fmt="yuvj420p", color_range="full", crf=0)
    restore(identity_restorer, source, tmp_path / "out.mp4")
    images, _, info = decoded(tmp_path / "out.mp4")
    assert info["color_range"] == int(av.video.reformatter.ColorRange.JPEG)
    original = decoded(source)[0]
    assert np.abs(images[1].astype(int) - original[1]).mean() < 2  # read and written in full range: no level shift


def test_frame_range_keeps_a_part_with_its_sound(tmp_path, face_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mp4", face_frames(10), audio="aac")
    result = restore(identity_restorer, source, tmp_path / "part.mp4", encoding=EncodingOptions(frames=(3, 7)))
    images, times, _ = decoded(tmp_path / "part.mp4")
    assert result.frames == len(images) == 4
    assert times[0] == 0
    with av.open(str(tmp_path / "part.mp4")) as container:
        sound = container.streams.audio[0]
        seconds = sum(p.duration or 0 for p in container.demux(sound)) * sound.time_base
    assert 0.12 <= float(seconds) <= 0.25  # about 4 frames of 40 ms, to the packet (21 ms)


def test_webm_cannot_hold_aac_so_it_is_reencoded_with_a_note(tmp_path, plain_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mp4", plain_frames(4), audio="aac")
    result = restore(identity_restorer, source, tmp_path / "out.webm")
    _, _, info = decoded(tmp_path / "out.webm")
    assert info["codec"] == "vp9" and info["audio"] == ["opus"]
    assert any("re-encoded to libopus" in note for note in result.notes)


def test_no_audio_leaves_the_sound_out(tmp_path, plain_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mp4", plain_frames(3), audio="aac")
    restore(identity_restorer, source, tmp_path / "out.mp4", encoding=EncodingOptions(audio=False))
    assert decoded(tmp_path / "out.mp4")[2]["audio"] == []


def animation(path: Path, frames: list[np.ndarray], durations: list[int]) -> Path:
    first, *rest = (Image.fromarray(frame) for frame in frames)
    first.save(path, save_all=True, append_images=rest, duration=durations, loop=0)
    return path


def durations_of(path: Path) -> list[int]:
    with Image.open(path) as image:
        found = []
        for index in range(image.n_frames):
            image.seek(index)
            found.append(image.info.get("duration"))
        return found


def test_animated_gif_is_a_video_not_a_first_frame(tmp_path, face_frames, identity_restorer):
    frames = face_frames(4)
    source = animation(tmp_path / "in.gif", frames, [40, 80, 40, 60])
    result = restore(identity_restorer, source, tmp_path / "out.gif")
    assert result.frames == 4 and result.faces_restored >= 4
    with Image.open(tmp_path / "out.gif") as written:
        assert written.n_frames == 4 and written.size == (192, 160)
    assert durations_of(tmp_path / "out.gif")[:3] == [40, 80, 40]


def test_animated_webp_is_a_video(tmp_path, face_frames, identity_restorer):
    source = animation(tmp_path / "in.webp", face_frames(3), [40, 40, 40])
    result = restore(identity_restorer, source, tmp_path / "out.webp")
    assert result.frames == 3 and result.faces_restored >= 3
    with Image.open(tmp_path / "out.webp") as written:
        assert written.n_frames == 3 and written.size == (192, 160)


def test_file_objects_in_and_out(tmp_path, plain_frames, identity_restorer):
    data = write_clip(tmp_path / "in.mkv", plain_frames(3), codec="ffv1").read_bytes()
    written = io.BytesIO()
    result = restore(identity_restorer, io.BytesIO(data), written, encoding=EncodingOptions(container=".mkv"))
    assert result.frames == 3 and result.destination is None
    written.seek(0)
    with av.open(written) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3


def test_progress_per_frame_and_stopping_leaves_nothing(tmp_path, face_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mp4", face_frames(6))
    seen = []
    restore(identity_restorer, source, tmp_path / "out.mp4", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 6) for i in range(1, 7)]
    with pytest.raises(pipeline.VideoInterrupted):
        restore(identity_restorer, source, tmp_path / "stopped.mp4", should_stop=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_memory_holds_a_bounded_number_of_frames(plain_frames, identity_restorer):
    """Frames are decoded only a bounded number ahead of the encoder, however long the clip."""
    template = plain_frames(1, width=32, height=32)[0]
    pulled = []

    def frames():
        for index in range(150):
            pulled.append(index)
            yield pipeline.ClipFrame(index, template)

    ahead = 0
    for consumed, item in enumerate(pipeline.restore_frames(identity_restorer, frames()), start=1):
        assert item.index == consumed - 1  # in order
        ahead = max(ahead, len(pulled) - consumed)
    bound = 3 * (pipeline.QUEUE_SIZE + 2) + pipeline.MAX_FRAMES_PER_CHUNK
    assert 0 < ahead <= bound


def test_fallback_codecs_when_asked(tmp_path, face_frames, identity_restorer):
    source = write_clip(tmp_path / "in.mp4", face_frames(3))
    for codec, name, suffix in (("mpeg4", "mpeg4", ".mp4"), ("ffv1", "ffv1", ".mkv")):
        out = tmp_path / f"out-{codec}{suffix}"
        restore(identity_restorer, source, out, encoding=EncodingOptions(codec=codec))
        images, _, info = decoded(out)
        assert info["codec"] == name and len(images) == 3
        assert np.abs(images[1].astype(int) - decoded(source)[0][1]).mean() < 4  # visually lossless or lossless
    with pytest.raises(VideoFileError, match="no such video encoder"):
        restore(identity_restorer, source, tmp_path / "x.mp4", encoding=EncodingOptions(codec="no-such-codec"))
