"""The ComfyUI nodes: load CodeFormer, restore faces on an IMAGE batch, restore faces on video frames steadily.

Their inputs are the declared options shown in ComfyUI (``options.OPTIONS``):
the same names, defaults, ranges and help as in the WebUI and on the command
line, so ComfyUI's own validation refuses an out-of-range value before the
node runs, and the node checks every value by the same rule again (an API
prompt may send anything). ComfyUI's host is reached only through ``host``.

Images are taken as ComfyUI holds them (B, H, W, C float in 0..1), restored
at 16 bits per channel (no 8-bit rounding on the way), and every pixel that
no face covers is returned exactly as it came in. A batch without faces
comes back unchanged. Errors stop the node with a message that says what to
do (ComfyUI shows it), never a traceback from deep inside.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ... import options as option_specs
from ...version import __version__
from . import host

logger = logging.getLogger("codeformer")

CATEGORY = "image/restoration/CodeFormer"
MODEL_TYPE = "CODEFORMER_MODEL"
# The loader's choice that is always listed, so that a saved workflow validates wherever it is loaded: the
# official codeformer.pth from the model folders, downloaded (sha256-verified) into the first where none has it.
OFFICIAL_CHOICE = "codeformer.pth"
# Images restored in one restore_many call: their faces share network batches; memory holds this many copies.
IMAGES_PER_CALL = 8
# GPU memory one face in a network batch needs (measured peak with the released network, fp32, with room to spare).
BYTES_PER_FACE = 1200 * 2**20
NETWORK_BYTES = 500 * 2**20
UPSCALE_INPUT = (
    "UPSCALE_MODEL",
    {
        "tooltip": "Optional, from Load Upscale Model (ESRGAN, Real-ESRGAN, SwinIR, DAT...): faces larger on the image "
        "than CodeFormer's 512 px are enlarged by it to their size there before they are pasted back, so they keep "
        "their detail; smaller faces cost nothing."
    },
)
RESTORE_OPTIONS = [option for option in option_specs.shown_in(option_specs.COMFYUI) if option.scope == option_specs.RESTORE]
VIDEO_OPTIONS = [option for option in option_specs.shown_in(option_specs.COMFYUI) if option.scope == option_specs.VIDEO]


class CodeFormerNodeError(RuntimeError):
    """What went wrong and what to do, for ComfyUI to show on the node."""


def comfy_input(option: option_specs.Option) -> tuple[Any, dict[str, Any]]:
    """An option as a ComfyUI input: its type, default, range (refused by ComfyUI's validation) and tooltip."""
    settings: dict[str, Any] = {"default": option.control_default, "tooltip": option.help}
    if option.type is bool:
        return "BOOLEAN", settings
    if option.choices:
        return list(option.choices), settings  # the list form: validated by every ComfyUI version
    kind = "INT" if option.type is int else "FLOAT"
    settings.update(min=option.control_minimum, max=option.maximum)
    if option.step is not None:
        settings["step"] = option.step
    return kind, settings


def restore_inputs(image_name: str, tooltip: str, node_options: Sequence[option_specs.Option]) -> dict[str, Any]:
    """A restore node's inputs: the model, the IMAGE batch, its declared options; the optional upscaler."""
    required: dict[str, Any] = {
        "codeformer": (MODEL_TYPE, {"tooltip": "From Load CodeFormer."}),
        image_name: ("IMAGE", {"tooltip": tooltip}),
    }
    required.update({option.key: comfy_input(option) for option in node_options})
    return {"required": required, "optional": {"upscale_model": UPSCALE_INPUT}}


@dataclass
class CodeFormerModel:
    """The loaded network and its restorer, shared by every node and run that uses the same file."""

    path: str
    restorer: Any  # FaceRestorer
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def on_device(self, upscale_model: Any = None) -> Iterator[Any]:
        """The restorer on ComfyUI's device for one run (other models offloaded first), offloaded after; with an
        UPSCALE_MODEL (ComfyUI's "Load Upscale Model"), large faces are enlarged by it on the same device."""
        from ...restorer import checked_device

        target = host.device()
        try:
            checked_device(target)
        except ValueError:
            logger.warning("CodeFormer: ComfyUI's device %s is not one it runs on (cpu, cuda, mps); using the CPU", target)
            target = "cpu"
        with self.lock:
            restorer = self.restorer
            free = host.free_bytes(target) if target.startswith("cuda") else None
            if free is not None:
                restorer.batch_size = int(max(1, min(16, free // BYTES_PER_FACE)))
            host.make_room(NETWORK_BYTES + restorer.batch_size * BYTES_PER_FACE, target)
            restorer.to(target)
            restorer.face_upscaler = face_upscaler_of(upscale_model, target)
            try:
                yield restorer
            finally:
                restorer.face_upscaler = None
                if not target.startswith("cpu"):
                    restorer.to(host.offload_device())
                    if upscale_model is not None:
                        upscale_model.to(host.offload_device())
                    host.empty_cache()


def face_upscaler_of(upscale_model: Any, device: str) -> Any:
    """ComfyUI's UPSCALE_MODEL (a spandrel ImageModelDescriptor) as the restorer's face upscaler, on ``device``."""
    if upscale_model is None:
        return None
    from ...upscaling.models import ModelUpscaler

    if not callable(upscale_model) or not hasattr(upscale_model, "scale"):
        got = type(upscale_model).__name__
        raise CodeFormerNodeError(f"CodeFormer: upscale_model must come from Load Upscale Model (got {got})")
    return ModelUpscaler(upscale_model, device, name=f"UPSCALE_MODEL x{upscale_model.scale}")


_LOADED: dict[str, CodeFormerModel] = {}
_LOADING = threading.Lock()


def load_model(choice: str) -> CodeFormerModel:
    """The model for a loader choice, loaded once per file (read safely: no pickled code runs)."""
    from ...errors import SetupError
    from ...network.weights import load_codeformer
    from ...restorer import FaceRestorer
    from ...storage.model_files import WeightsAdvice, locate_weights

    advice = WeightsAdvice("the loader's model_name", "or choose another file in the loader")
    try:
        if choice == OFFICIAL_CHOICE:
            found = host.codeformer_path(choice)
            path = found or str(locate_weights(None, model_dirs=host.codeformer_folders(), advice=advice))
        else:
            found = host.codeformer_path(choice)
            if found is None:
                raise CodeFormerNodeError(
                    f"CodeFormer: {choice!r} is in none of the model folders ({', '.join(host.codeformer_folders())}); "
                    "refresh the page (R) to list what is there"
                )
            path = found
        with _LOADING:
            if path not in _LOADED:
                network = load_codeformer(path)
                restorer = FaceRestorer(
                    network,
                    device="cpu",
                    model_dirs=host.codeformer_folders(),
                    detector_model_dirs=host.detection_folders(),
                    weights_advice=advice,
                )
                _LOADED[path] = CodeFormerModel(path, restorer)
            return _LOADED[path]
    except (SetupError, ValueError) as error:  # missing weights, a file that is not CodeFormer's: named in the message
        raise CodeFormerNodeError(said(error)) from None


def checked_values(values: dict[str, Any], options: Sequence[option_specs.Option]) -> dict[str, Any]:
    """The node's option values by their options' rules (an API prompt skips the UI's ranges)."""
    try:
        return option_specs.check_values(values, allowed=[option.key for option in options])
    except option_specs.OptionError as error:
        raise CodeFormerNodeError(said(error)) from None


def checked_images(image: Any, what: str = "image") -> Any:
    """A ComfyUI IMAGE: (B, H, W, C) float with C 1, 3 or 4; a message naming the shape otherwise."""
    import torch

    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CodeFormerNodeError(
            f"CodeFormer: {what} must be a ComfyUI IMAGE, (batch, height, width, 3) values in 0..1; got {shape}"
        )
    if min(image.shape[:3]) < 1:
        raise CodeFormerNodeError(f"CodeFormer: {what} is empty ({tuple(image.shape)})")
    if not image.is_floating_point():
        raise CodeFormerNodeError(f"CodeFormer: {what} must hold floats in 0..1 (got {image.dtype})")
    return image


def to_pixels(frame: Any):
    """One (H, W, C) float frame as the restorer's 16-bit pixels (gray: H x W)."""
    import numpy as np

    array = frame.detach().to("cpu").float()  # float16 where ComfyUI runs --fp16-intermediates
    pixels = np.rint(array.clamp(0, 1).numpy() * 65535.0).astype(np.uint16)
    return pixels[:, :, 0] if pixels.shape[2] == 1 else pixels


def write_result(output: Any, index: int, restored: Any, boxes: Sequence[tuple[int, int, int, int]]) -> None:
    """The restored pixels into ``output[index]`` inside the changed boxes only: elsewhere the input stays exact."""
    import torch

    for x0, y0, x1, y1 in boxes:
        region = torch.from_numpy(restored[y0:y1, x0:x1].astype("float32") / 65535.0)
        if region.dim() == 2:
            region = region[:, :, None]
        output[index, y0:y1, x0:x1, :] = region.to(output.dtype)


def _coverage_mask(coverage: Any, height: int, width: int):
    import torch

    if coverage is None:
        return torch.zeros(height, width)
    return torch.from_numpy(coverage)


def _failure(error: BaseException) -> CodeFormerNodeError:
    """A clear message for the node; the full traceback goes to the console once."""
    from ...errors import SetupError

    if isinstance(error, (SetupError, ValueError)):
        return CodeFormerNodeError(said(error))
    logger.exception("CodeFormer failed")
    return CodeFormerNodeError(f"CodeFormer failed ({type(error).__name__}: {error}); the console has the details")


def said(error: BaseException) -> str:
    """An error's message as the node shows it: it says it is CodeFormer's, once."""
    message = str(error)
    return message if message.startswith("CodeFormer") else f"CodeFormer: {message}"


def counted(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"


def _describe(index: int, faces: list, detector: str) -> str:
    restored = sum(face.restored for face in faces)
    reasons = sorted({face.reason for face in faces if face.reason} | {face.note for face in faces if face.note})
    why = f" ({'; '.join(reasons)})" if reasons else ""
    enlarged = sum(face.enlarged for face in faces)
    larger = f", {enlarged} enlarged" if enlarged else ""
    return f"image {index + 1}: {counted(len(faces), 'face')} found, {restored} restored{larger}{why}, detector {detector}"


class FaceTally:
    """The progress bar in faces: the faces of the images restored so far, and an estimate for the rest."""

    def __init__(self, images: int, progress: Any) -> None:
        self.images, self.progress = images, progress
        self.faces_done = self.images_done = 0
        self._call_images = self._call_faces = 0

    def call(self, images: int) -> Any:
        """The ``progress(done, total)`` callback for one restore call over ``images`` images."""
        self._call_images, self._call_faces = images, 0

        def report(done: int, total: int) -> None:
            self._call_faces = total
            seen = self.faces_done + total
            per_image = seen / (self.images_done + images)
            remaining = self.images - self.images_done - images
            self.progress(self.faces_done + done, seen + round(per_image * remaining))

        return report

    def end_call(self) -> None:
        self.faces_done += self._call_faces
        self.images_done += self._call_images


class LoadCodeFormer:
    """Loads CodeFormer's weights from models/facerestore_models or models/codeformer (or downloads the official file)."""

    DESCRIPTION = (
        "Loads CodeFormer (.pth or .safetensors, read without running any code in it) from models/facerestore_models, "
        "models/codeformer or a folder extra_model_paths.yaml adds; the official file is downloaded and verified when "
        f"none is there. Detector and parser weights: models/facedetection. sd-webui-codeformer {__version__}."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("codeformer",)
    OUTPUT_TOOLTIPS = ("The loaded network, shared by every node that uses this file.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # the name ComfyUI calls
        files = [name for name in host.codeformer_files() if name != OFFICIAL_CHOICE]
        tooltip = (
            "A CodeFormer weights file; any file is checked to be CodeFormer's before it is used. codeformer.pth: "
            "the official file, downloaded (and verified) into models/facerestore_models where no folder has it."
        )
        return {"required": {"model_name": ([OFFICIAL_CHOICE, *files], {"tooltip": tooltip})}}

    def load(self, model_name: str) -> tuple[CodeFormerModel]:
        return (load_model(model_name),)


class RestoreFaces:
    """Restores every face (or the ones chosen) of each image of a batch."""

    DESCRIPTION = (
        "Finds the faces of each image, restores them with CodeFormer at the fidelity you set (0: best quality, "
        "1: most faithful) and pastes them back; pixels outside the faces are returned exactly as they came. "
        f"Also returns a MASK of where faces were pasted and a line per image of what was done. "
        f"sd-webui-codeformer {__version__}."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("image", "mask", "report")
    OUTPUT_TOOLTIPS = (
        "The images with their faces restored.",
        "How much of each pixel comes from a restored face (0..1).",
        "Per image: faces found and restored, and the detector that ran.",
    )
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # the name ComfyUI calls
        return restore_inputs("image", "The images whose faces to restore.", RESTORE_OPTIONS)

    def restore(
        self, codeformer: CodeFormerModel, image: Any, upscale_model: Any = None, **values: Any
    ) -> tuple[Any, Any, str]:
        import torch

        images = checked_images(image)
        settings = checked_values(values, RESTORE_OPTIONS)
        count, height, width = images.shape[:3]
        output = images.clone()
        masks = torch.zeros(count, height, width)
        lines: list[str] = []
        tally = FaceTally(count, host.Progress(count))
        try:
            with codeformer.on_device(upscale_model) as restorer:
                for start in range(0, count, IMAGES_PER_CALL):
                    frames = [to_pixels(images[index]) for index in range(start, min(count, start + IMAGES_PER_CALL))]
                    results = restorer.restore_many(
                        frames, progress=tally.call(len(frames)), should_stop=host.interrupted, coverage=True, **settings
                    )
                    for offset, result in enumerate(results):
                        write_result(output, start + offset, result.image, result.changed)
                        masks[start + offset] = _coverage_mask(result.coverage, height, width)
                        lines.append(_describe(start + offset, result.faces, result.detector))
                    tally.end_call()
                    host.raise_if_interrupted()
        except CodeFormerNodeError:
            raise
        except BaseException as error:
            if host.is_interrupt(error) or not isinstance(error, Exception):
                raise
            raise _failure(error) from None
        host.raise_if_interrupted()
        return output, masks, "\n".join(lines)


class RestoreVideoFrames:
    """Restores the faces of consecutive frames steadily: each face followed over the frames, its look held."""

    DESCRIPTION = (
        "Takes the IMAGE batch as the consecutive frames of a clip (from a video loader) and restores every face, "
        "followed from frame to frame (detection every N frames, optical flow between) with its alignment and look "
        "held steady, so faces do not flicker as they do when each frame is restored alone. Same face options as "
        f"Restore faces. sd-webui-codeformer {__version__}."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("frames", "mask", "report")
    OUTPUT_TOOLTIPS = (
        "The frames with their faces restored, in order.",
        "How much of each pixel comes from a restored face (0..1).",
        "Faces followed and restored over the clip.",
    )
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # the name ComfyUI calls
        tooltip = "Consecutive frames of one clip (a video loader's IMAGE batch)."
        return restore_inputs("frames", tooltip, [*RESTORE_OPTIONS, *VIDEO_OPTIONS])

    def restore(
        self, codeformer: CodeFormerModel, frames: Any, upscale_model: Any = None, **values: Any
    ) -> tuple[Any, Any, str]:
        import torch

        from ...video.pipeline import restore_array_frames
        from ...video.tracking import tracking_parameters

        images = checked_images(frames, "frames")
        video_keys = {option.key for option in VIDEO_OPTIONS}
        settings = checked_values({k: v for k, v in values.items() if k not in video_keys}, RESTORE_OPTIONS)
        video = checked_values({k: v for k, v in values.items() if k in video_keys}, VIDEO_OPTIONS)
        video = {**option_specs.defaults(video_keys), **video}
        tracking = tracking_parameters(video["detect_every"], steady=video["steady"])
        count, height, width = images.shape[:3]
        output = images.clone()
        masks = torch.zeros(count, height, width)
        progress = host.Progress(count)
        restored = tracks = 0
        try:
            with codeformer.on_device(upscale_model) as restorer:
                pixels = (to_pixels(images[index]) for index in range(count))
                stream = restore_array_frames(
                    restorer, pixels, tracking=tracking, should_stop=host.interrupted, coverage=True, **settings
                )
                seen: set[int] = set()
                with contextlib.closing(stream):  # its threads stop with the node, whatever ends it
                    for done, frame in enumerate(stream, start=1):
                        if frame.restored is not None:
                            write_result(output, frame.index, frame.restored, frame.changed)
                            masks[frame.index] = _coverage_mask(frame.coverage, height, width)
                        restored += frame.restored_count
                        seen.update(face.track_id for face in frame.faces)
                        progress(done, count)
                tracks = len(seen)
        except CodeFormerNodeError:
            raise
        except BaseException as error:
            if host.is_interrupt(error) or not isinstance(error, Exception):
                raise
            if type(error).__name__ == "VideoInterrupted":
                host.raise_if_interrupted()
            raise _failure(error) from None
        host.raise_if_interrupted()
        report = f"{counted(count, 'frame')}: {counted(restored, 'face')} restored over the clip, "
        report += f"{counted(tracks, 'face')} followed"
        return output, masks, report


NODE_CLASS_MAPPINGS = {
    "CodeFormerLoader": LoadCodeFormer,
    "CodeFormerRestoreFaces": RestoreFaces,
    "CodeFormerRestoreVideoFrames": RestoreVideoFrames,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CodeFormerLoader": "Load CodeFormer",
    "CodeFormerRestoreFaces": "Restore Faces (CodeFormer)",
    "CodeFormerRestoreVideoFrames": "Restore Faces in Video Frames (CodeFormer)",
}
