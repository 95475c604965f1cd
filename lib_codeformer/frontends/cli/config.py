"""The restore command's flags, and the typed run configuration read from them.

The flags of every declared option (``options.shown_in(CLI)``) are made from
its declaration; the values are checked by the option's own rule, so the
command line accepts exactly what the Python API and the HTTP route accept
and says so in the same words, with its flag in front:
``--fidelity: fidelity must be a number in [0, 1] (got 1.5)``. What only the
command line has (where files go, threads, the Ray cluster) is declared here.

``read_config`` checks everything before any work (one usage error naming
every problem) and returns a ``RunConfig``: the local run, the video run and
the Ray run read that, never the argparse namespace.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import options as option_specs

if TYPE_CHECKING:
    from ...video.encoding import EncodingOptions
    from ...video.tracking import TrackingParameters

CLI_OPTIONS = option_specs.shown_in(option_specs.CLI)
# Threads reading and writing image files beside the network.
DEFAULT_JOBS = 2


class UsageError(ValueError):
    """The command cannot run as given (exit status 2); the message says what to change."""


@dataclass(frozen=True)
class RestorerSettings:
    """What the ``FaceRestorer`` of a run is made with."""

    weights: str | None = None
    detector: str = option_specs.DEFAULT_DETECTOR
    device: str | None = None
    batch_size: int | None = None
    precision: str = option_specs.default("precision")
    fast_conv: bool = True
    face_upscaler: str | None = None  # lanczos or a model file: enlarges faces larger than the 512 px crop


@dataclass(frozen=True)
class VideoSettings:
    """How videos are written and how steadily their faces are followed."""

    encoding: EncodingOptions
    tracking: TrackingParameters
    video_format: str | None = None


@dataclass(frozen=True)
class RaySettings:
    """Where and how a run goes on a Ray cluster."""

    address: str  # "auto", HOST:PORT or ray://HOST:10001
    actors: int | None = None
    cpus_per_actor: int | None = None
    files_per_batch: int | None = None


@dataclass(frozen=True)
class RunConfig:
    """One ``restore`` command, checked: what to read, where to write, how to restore."""

    inputs: tuple[str, ...]
    output: str
    options: dict[str, Any]  # the restore options (``FaceRestorer.restore``'s keywords), each checked
    restorer: RestorerSettings
    video: VideoSettings
    ray: RaySettings | None = None
    max_pixels: int = option_specs.DEFAULT_MAX_PIXELS
    upscale: float = 1.0  # each image enlarged this many times before its faces are restored
    upscaler: str | None = None  # what enlarges whole images: lanczos (None) or a model file
    recursive: bool = False
    skip_existing: bool = False
    overwrite: bool = False
    jobs: int = DEFAULT_JOBS
    quiet: bool = False


def add_option_flags(parser: argparse.ArgumentParser, scope: str, title: str | None = None) -> None:
    """The flags of the declared options of ``scope`` (their values are read as text and checked by ``read_config``)."""
    group = parser.add_argument_group(title) if title else parser
    for option in CLI_OPTIONS:
        if option.scope != scope:
            continue
        flags = [option.cli_flag, *([option.short_flag] if option.short_flag else [])]
        text = _help(option)
        if option.type is bool:
            switch = "store_false" if option.default is True else "store_true"
            group.add_argument(*flags, dest=option.key, action=switch, default=option.default, help=text)
            continue
        metavar = option.metavar or ("{" + ",".join(option.choices) + "}" if option.choices else None)
        group.add_argument(*flags, dest=option.key, default=None, metavar=metavar, help=text)


def _help(option: option_specs.Option) -> str:
    if option.type is bool and option.default:
        text = f"turn off '{option.label}' (on by default): {option.help}"
    elif option.type is bool:
        text = option.help
    else:
        shown = option.default if option.default is not None else option.control_value or option.none_means
        text = f"{option.help} Values: {option.requirement(as_text=True)}; default: {shown}."
    return text.replace("%", "%%")


def option_values(args: argparse.Namespace, scope: str, problems: list[str]) -> dict[str, Any]:
    """The values of ``scope``'s declared options, each checked by its rule; a problem, flag first, for each bad one."""
    values = {}
    for option in CLI_OPTIONS:
        if option.scope != scope:
            continue
        given = getattr(args, option.key)  # None: the flag was not given
        try:
            if given is None:
                values[option.key] = option.default
            else:
                values[option.key] = option.parse(given) if option.type is bool else option.parse_text(given)
        except option_specs.OptionError as error:
            problems += [f"{option.cli_flag}: {message}" for _, message in error.problems]
    if scope == option_specs.RESTORE:
        combined = option_specs.combination_problems(values)
        problems += [f"{option_specs.BY_KEY[key].cli_flag}: {message}" for key, message in combined]
    return values


def read_config(args: argparse.Namespace) -> RunConfig:
    """Every flag checked (UsageError naming each problem; WeightsError for a weights file that is not there)."""
    problems: list[str] = []
    options = option_values(args, option_specs.RESTORE, problems)
    restorer_values = option_values(args, option_specs.RESTORER, problems)
    video_values = option_values(args, option_specs.VIDEO, problems)
    for flag, value in (("--jobs", args.jobs), *_ray_counts(args)):
        if value is not None and value < 1:
            problems.append(f"{flag} must be at least 1 (got {value})")
    for key in ("face_upscaler", "upscaler"):
        given = restorer_values.get(key)
        if given is not None and given.lower() != "lanczos" and not Path(given).is_file():
            problems.append(f"{option_specs.BY_KEY[key].cli_flag}: {given} is no file (give lanczos or a model file)")
    if args.ray is not None and (restorer_values.get("face_upscaler") or restorer_values.get("upscale", 1.0) > 1):
        problems.append("--face-upscaler and --upscale run on this machine, not on a Ray cluster (yet): drop --ray or them")
    if problems:
        raise UsageError("; ".join(problems))
    if restorer_values["weights"] is not None:
        _check_weights_file(restorer_values["weights"])
    restorer = RestorerSettings(
        weights=restorer_values["weights"],
        detector=options.pop("detector") or option_specs.DEFAULT_DETECTOR,
        device=None if restorer_values["device"] == "auto" else restorer_values["device"],
        batch_size=restorer_values["batch_size"],
        precision=restorer_values["precision"],
        fast_conv=restorer_values["fast_conv"],
        face_upscaler=restorer_values["face_upscaler"],
    )
    return RunConfig(
        inputs=tuple(args.inputs),
        output=args.output,
        options=options,
        restorer=restorer,
        video=video_settings(video_values, restorer_values["max_pixels"]),
        ray=None if args.ray is None else RaySettings(args.ray, *(count for _, count in _ray_counts(args))),
        max_pixels=restorer_values["max_pixels"],
        upscale=restorer_values["upscale"],
        upscaler=restorer_values["upscaler"],
        recursive=args.recursive,
        skip_existing=args.skip_existing,
        overwrite=args.overwrite,
        jobs=args.jobs,
        quiet=args.quiet,
    )


def with_flags(message: str) -> str:
    """A library message with the command line's flag named where it names an option ("the frames option")."""
    for option in CLI_OPTIONS:
        message = message.replace(f"the {option.key} option", option.cli_flag)
    return message


def _ray_counts(args: argparse.Namespace) -> Sequence[tuple[str, int | None]]:
    return (
        ("--ray-actors", args.ray_actors),
        ("--ray-cpus-per-actor", args.ray_cpus_per_actor),
        ("--ray-files-per-batch", args.ray_files_per_batch),
    )


def _check_weights_file(path: str) -> None:
    """A weights file given by path must be there before any work starts (WeightsError saying where to put it)."""
    from ...storage.model_files import COMMAND_LINE_ADVICE, locate_weights

    locate_weights(path, download=False, advice=COMMAND_LINE_ADVICE)


def video_settings(values: dict[str, Any], max_pixels: int | None) -> VideoSettings:
    """The video settings from the checked video options."""
    from ...video.encoding import EncodingOptions
    from ...video.tracking import tracking_parameters

    video_format = values["video_format"]
    encoding = EncodingOptions(
        codec=values["video_codec"],
        crf=values["video_crf"],
        container=f".{video_format}" if video_format else None,
        audio=values["audio"],
        frames=values["frames"],
        max_pixels=max_pixels,
    )
    tracking = tracking_parameters(values["detect_every"], steady=values["steady"])
    return VideoSettings(encoding, tracking, video_format)
