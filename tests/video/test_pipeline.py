"""The pipeline's stages: shared network batches across frames, stages in threads, errors carried out, order kept."""

from __future__ import annotations

import threading

import pytest
import torch

from lib_codeformer import FaceRestorer
from lib_codeformer.video import pipeline


class RecordingNetwork(torch.nn.Module):
    """Returns its input; records each batch's size and the thread it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[tuple[int, str]] = []

    def forward(self, x, w=0.0, adain=False, **_):
        self.batches.append((x.shape[0], threading.current_thread().name))
        return x.clone(), None, None


def test_faces_of_several_frames_share_network_batches_in_a_thread_of_their_own(face_frames):
    network = RecordingNetwork()
    restorer = FaceRestorer(network, detector="yunet", device="cpu", batch_size=4, fast_conv=False)
    decoded_in = []

    def frames():
        for index, image in enumerate(face_frames(8, second_shot=False)):
            decoded_in.append(threading.current_thread().name)
            yield pipeline.ClipFrame(index, image)

    results = list(pipeline.restore_frames(restorer, frames()))
    assert [frame.restored_count for frame in results] == [1] * 8
    assert [size for size, _ in network.batches] == [4, 4]  # one face per frame, four frames per network call
    network_threads = {name for _, name in network.batches}
    assert network_threads == {"codeformer-video-restore"}
    assert set(decoded_in) == {"codeformer-video-decode"}
    assert threading.current_thread().name not in network_threads | set(decoded_in)


def test_an_error_in_a_stage_comes_out_and_stops_the_others(plain_frames, identity_restorer):
    def frames():
        yield pipeline.ClipFrame(0, plain_frames(1)[0])
        raise OSError("the disk went away")

    with pytest.raises(OSError, match="disk went away"):
        list(pipeline.restore_frames(identity_restorer, frames()))
    assert not [t for t in threading.enumerate() if t.name.startswith("codeformer-video")]


def test_items_that_are_not_frames_keep_their_place(plain_frames, identity_restorer):
    image = plain_frames(1)[0]
    items = [pipeline.ClipFrame(0, image), "sound 1", "sound 2", pipeline.ClipFrame(1, image), "sound 3"]
    out = list(pipeline.restore_frames(identity_restorer, iter(items)))
    assert [item if isinstance(item, str) else item.index for item in out] == [0, "sound 1", "sound 2", 1, "sound 3"]
    assert all(item.restored is None for item in out if isinstance(item, pipeline.ClipFrame))  # no face: as decoded


def test_options_are_checked_before_anything_runs(identity_restorer):
    with pytest.raises(ValueError, match="fidelity"):
        list(pipeline.restore_frames(identity_restorer, iter([]), fidelity=3))


def test_by_default_faces_are_detected_on_every_third_frame(face_frames, identity_restorer):
    frames = (pipeline.ClipFrame(i, image) for i, image in enumerate(face_frames(7, second_shot=False)))
    detected = [frame.detected for frame in pipeline.restore_frames(identity_restorer, frames)]
    assert detected == [True, False, False, True, False, False, True]
