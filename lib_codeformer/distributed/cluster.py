"""Ray itself: importing it with advice, connecting, sizing the actor pool, and sharing the models once.

The driver resolves every model file once (downloading it if it must) and puts
the weights into Ray's object store; actors read them from there, so no worker
downloads anything and a broken weights file is one clear error on the driver,
not one per actor.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import MissingDependency, WeightsError
from ..network.weights import WeightsSource, load_codeformer
from ..storage.model_files import CODEFORMER, WeightsAdvice, default_cache_dir, locate_weights, manual_hint

INSTALL_ADVICE = "pip install 'sd-webui-codeformer[ray]' (Ray with Ray Data; pyarrow comes with it)"
# Threads per CPU actor when not given: the network's convolutions scale well to a few cores, and each actor
# holds its own copy of the models, so one actor per core would cost memory for little speed.
DEFAULT_CPUS_PER_ACTOR = 4
CONNECT_TIMEOUT = 10  # seconds for the cluster's port to answer


class ClusterUnreachable(ValueError):
    """No Ray cluster answered at the address given; the message says which address was tried."""


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or MissingDependency saying which extra to install."""
    try:
        import ray
        import ray.data  # Ray without its data extra cannot run the pipeline
    except ImportError as error:
        raise MissingDependency(f"Ray is not installed here ({error}); install the [ray] extra: {INSTALL_ADVICE}") from None
    return ray


def connect(address: str) -> bool:
    """Connect this process to the cluster at ``address`` ("auto", "HOST:PORT" or "ray://HOST:PORT").

    Returns whether this call connected (so the caller disconnects when done);
    an existing connection is used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    try:
        _check_listening(address)
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, TimeoutError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ClusterUnreachable(
            f"could not connect to a Ray cluster at {address!r} ({reason}); start one with `ray start --head` "
            "and pass its address (--ray HOST:6379, or --ray auto on one of its nodes, or --ray ray://HOST:10001)"
        ) from None
    return True


def _check_listening(address: str) -> None:
    """OSError at once when nothing listens at HOST:PORT (Ray itself would retry for minutes); "auto" is
    looked up by Ray, which fails fast."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("the address is not HOST:PORT")
    with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
        pass


@dataclass(frozen=True)
class ActorPlan:
    """How many restoring actors, and what each one holds."""

    actors: int
    cpus: int
    gpus: int
    device: str  # what each actor's FaceRestorer runs on: "cpu", or "cuda" (Ray gives each actor its own GPU)

    def map_batches_args(self, calls: int | None = None) -> dict[str, Any]:
        """``Dataset.map_batches`` arguments for this pool.

        ``calls`` known (the command line, whose input needs no tasks): a
        fixed pool, no larger than the calls would use. Unknown (a user's
        pipeline, whose reading tasks need CPUs too): a pool that starts with
        one actor and grows as Ray Data finds room, since a full-size pool
        would hold every CPU and leave the reading waiting for ever.
        """
        ray = require_ray()
        # One call per actor at a time: Ray Data's default queues up to 4 on an actor, so the first actor to finish
        # starting took every call of a short run while the others idled (measured: 8 files on 2 actors ran on one).
        if calls is None:
            pool = ray.data.ActorPoolStrategy(min_size=1, max_size=self.actors, max_tasks_in_flight_per_actor=1)
        else:
            pool = ray.data.ActorPoolStrategy(size=max(1, min(self.actors, calls)), max_tasks_in_flight_per_actor=1)
        return {"compute": pool, "num_cpus": self.cpus, "num_gpus": self.gpus}


def plan_actors(device: str | None, actors: int | None, cpus_per_actor: int | None) -> ActorPlan:
    """One actor per GPU where the cluster has GPUs (unless ``device`` is "cpu"), else CPU actors of
    ``cpus_per_actor`` cores each (default: 4, or the smallest node's count), as many as the nodes hold.

    ValueError when the request cannot be placed on this cluster, saying what it has.
    """
    ray = require_ray()
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus = int(sum(resources.get("GPU", 0) for resources in nodes))
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"with --ray, --device is cpu or cuda (Ray gives each actor its own GPU); got {device!r}")
    if device == "cuda" and gpus < 1:
        raise ValueError("--device cuda: the Ray cluster has no GPUs")
    if device != "cpu" and gpus >= 1:
        return ActorPlan(_placeable(actors, gpus, "GPU"), cpus_per_actor or 1, 1, "cuda")
    node_cpus = [int(resources.get("CPU", 0)) for resources in nodes if resources.get("CPU", 0) >= 1]
    if not node_cpus:
        raise ValueError("the Ray cluster has no CPUs free for actors (ray status shows its resources)")
    per_actor = cpus_per_actor or min(DEFAULT_CPUS_PER_ACTOR, min(node_cpus))
    if per_actor > max(node_cpus):
        raise ValueError(f"--ray-cpus-per-actor {per_actor} is more than any node has (the largest has {max(node_cpus)})")
    capacity = sum(cpus // per_actor for cpus in node_cpus)
    return ActorPlan(_placeable(actors, capacity, f"{per_actor}-CPU"), per_actor, 0, "cpu")


def _placeable(actors: int | None, capacity: int, kind: str) -> int:
    """``actors`` (default: as many as fit), or ValueError if the cluster cannot hold them all at once:
    Ray Data waits for a whole fixed pool before starting, and would wait for ever."""
    if actors is not None and actors > capacity:
        raise ValueError(f"--ray-actors {actors}: the Ray cluster holds {capacity} {kind} actors at once")
    return actors or max(1, capacity)


@dataclass(frozen=True)
class SharedModels:
    """The models every actor loads, put into Ray's object store once by the driver."""

    weights: Any  # ObjectRef of the CodeFormer state dict, {name: float32 numpy array}
    files: dict[str, Any] = field(default_factory=dict)  # file name -> ObjectRef of its bytes (detector, ParseNet)


def share_models(weights: WeightsSource | None, *, detector: str, mask: str, advice: WeightsAdvice) -> SharedModels:
    """Resolve and check the weights here, once, and put them where every actor reads them."""
    ray = require_ray()
    network = _load_checked(weights, advice)
    arrays = {name: tensor.numpy() for name, tensor in network.state_dict().items()}
    files = {name: ray.put(path.read_bytes()) for name, path in _model_files(detector, mask)}
    return SharedModels(ray.put(arrays), files)


def _load_checked(weights: WeightsSource | None, advice: WeightsAdvice):
    source = weights if isinstance(weights, Mapping) else locate_weights(weights, advice=advice)
    try:
        return load_codeformer(source)
    except WeightsError as error:
        raise WeightsError(f"{error} {manual_hint(CODEFORMER, default_cache_dir(), advice.alternative)}") from None


def _model_files(detector: str, mask: str) -> list[tuple[str, Path]]:
    """The detector's and ParseNet's files the run needs, found or downloaded here.

    A RetinaFace file that cannot be had is left out: the actors then fall
    back to YuNet and say so, as the local command does.
    """
    from ..faces.detection import RETINAFACE_MOBILE, RETINAFACE_RESNET50, model_file_path, retinaface_of
    from ..faces.parsing import PARSENET

    found = []
    wanted = retinaface_of(detector)
    if wanted is not None:
        model = RETINAFACE_RESNET50 if wanted == "retinaface_resnet50" else RETINAFACE_MOBILE
        try:
            found.append((model.filename, model_file_path(model, (), download=True)))
        except WeightsError as error:
            logging.getLogger(__name__).warning("%s; the actors will use YuNet", error)
    if mask == "parsing":
        found.append((PARSENET.filename, model_file_path(PARSENET, (), download=True)))
    return found
