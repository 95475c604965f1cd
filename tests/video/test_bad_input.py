"""Bad input: each case a clear error for that file, no output left behind, the input untouched."""

from __future__ import annotations

import errno
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from video_clips import av, write_clip

from lib_codeformer.errors import MissingDependency
from lib_codeformer.video import decoding, restore_video, transcode
from lib_codeformer.video.encoding import EncodingOptions
from lib_codeformer.video.errors import VideoFileError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fails_cleanly(restorer, source: Path, match: str, **kwargs) -> None:
    """Restoring ``source`` raises VideoFileError matching ``match``; nothing is written; the input is unchanged."""
    before = digest(source)
    out = source.parent / "out"
    with pytest.raises(VideoFileError, match=match) as raised:
        restore_video(restorer, source, out / f"result{source.suffix}", **kwargs)
    assert source.name in str(raised.value)  # the message names the file
    assert not out.exists() or list(out.iterdir()) == []  # no result, no temporary file
    assert digest(source) == before


@pytest.fixture
def good_mp4(tmp_path, plain_frames) -> Path:
    return write_clip(tmp_path / "good.mp4", plain_frames(20), audio="aac")


def test_random_bytes(tmp_path, identity_restorer):
    source = tmp_path / "noise.mp4"
    source.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    fails_cleanly(identity_restorer, source, "not a readable video")


def test_truncated_mp4(good_mp4, identity_restorer):
    truncated = good_mp4.with_name("cut.mp4")
    truncated.write_bytes(good_mp4.read_bytes()[: good_mp4.stat().st_size // 2])
    fails_cleanly(identity_restorer, truncated, "damaged, truncated")


def test_truncated_matroska(tmp_path, plain_frames, identity_restorer):
    whole = write_clip(tmp_path / "whole.mkv", plain_frames(30), codec="ffv1")
    truncated = tmp_path / "cut.mkv"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    fails_cleanly(identity_restorer, truncated, "truncated")


def test_no_video_stream(tmp_path, identity_restorer):
    source = tmp_path / "sound.mp4"
    with av.open(str(source), "w") as out:
        sound = out.add_stream("aac", rate=48000)
        for start in range(0, 48000, 1024):
            piece = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            piece.sample_rate, piece.pts = 48000, start
            out.mux(sound.encode(piece))
        out.mux(sound.encode(None))
    fails_cleanly(identity_restorer, source, "no video stream")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_zero_frames(tmp_path, identity_restorer, suffix):
    source = tmp_path / f"empty{suffix}"
    with av.open(str(source), "w") as out:
        video = out.add_stream("ffv1" if suffix == ".mkv" else "libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    # MP4 leaves a stream without samples out altogether; Matroska keeps it, empty
    fails_cleanly(identity_restorer, source, "no video stream" if suffix == ".mp4" else "no video frames")


def test_a_codec_that_cannot_be_decoded(tmp_path, plain_frames, identity_restorer):
    avi = write_clip(tmp_path / "h264.avi", plain_frames(3))
    unknown = tmp_path / "unknown.avi"
    unknown.write_bytes(avi.read_bytes().replace(b"H264", b"QQQQ").replace(b"h264", b"qqqq"))  # a codec tag no one knows
    fails_cleanly(identity_restorer, unknown, "cannot be decoded")


def test_odd_sized_frames_are_not_bad_input(tmp_path, plain_frames, identity_restorer):
    source = write_clip(tmp_path / "odd.mkv", plain_frames(2, width=33, height=17), codec="ffv1")
    assert restore_video(identity_restorer, source, tmp_path / "odd.mp4").frames == 2


def test_frames_over_the_pixel_limit_are_refused_before_decoding(good_mp4, identity_restorer, monkeypatch):
    monkeypatch.setattr(decoding, "frames_and_audio", lambda *args: pytest.fail("decoded although over the limit"))
    fails_cleanly(identity_restorer, good_mp4, "over the limit of 5000", encoding=EncodingOptions(max_pixels=5000))


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, path: Path, room: int) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self.room = room

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def write(self, data) -> int:
        if self.file.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()
        super().close()


def test_an_output_folder_that_fills_up(good_mp4, identity_restorer, monkeypatch):
    monkeypatch.setattr(transcode, "open_for_writing", lambda path: FullDisk(path, room=4000))
    fails_cleanly(identity_restorer, good_mp4, "No space left on device")


def test_without_pyav_the_error_says_what_to_install(good_mp4, identity_restorer, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MissingDependency, match="pip install av"):
        restore_video(identity_restorer, good_mp4, good_mp4.with_name("out.mp4"))
    assert not good_mp4.with_name("out.mp4").exists()


def test_aligned_option_is_refused_for_videos(good_mp4, identity_restorer):
    with pytest.raises(ValueError, match="aligned"):
        restore_video(identity_restorer, good_mp4, good_mp4.with_name("out.mp4"), aligned=True)


def test_the_input_is_never_the_output(good_mp4, identity_restorer):
    before = digest(good_mp4)
    with pytest.raises(VideoFileError, match="replace the input"):
        restore_video(identity_restorer, good_mp4, good_mp4)
    assert digest(good_mp4) == before
