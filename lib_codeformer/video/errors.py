"""What goes wrong with a video file, in words for the user."""

from __future__ import annotations


class VideoFileError(ValueError):
    """A video that cannot be read or written; the message names the file and says what to do."""


def ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's own words for a failure, without its function names."""
    text = getattr(error, "strerror", None) or str(error)
    return text.replace("avcodec_send_packet()", "").strip(" :'") or type(error).__name__
