"""``codeformer restore INPUT... --output DEST --ray [ADDRESS]``: the local command's run, on a cluster.

The driver plans as the local command does, with the same shared rules
(``storage.images.iter_inputs`` for names, ``batch`` for clashes and for what
is skipped or refused), then hands the files to a pool of actors through Ray
Data and prints the same failure report, summary line and exit status.

After a node dies, Ray starts its actors again elsewhere and runs their
unfinished calls again; a file that the first attempt had already written is
recognised by its bytes and not written twice (``workers.RestoreFiles``), and
temporary files that a killed worker left are removed when the run ends.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from pathlib import Path, PurePath
from typing import Any

from ...batch import Job, OutputClash, admit, check_no_clashes, summary_line
from ...distributed.api import DEFAULT_FILES_PER_BATCH
from ...distributed.cluster import ActorPlan, SharedModels, connect, plan_actors, require_ray, share_models
from ...distributed.locations import ArrowTree, Stores, bucket_of, is_uri, key_of, open_bucket, uri_of
from ...distributed.workers import RestoreFiles, WorkerSettings
from ...errors import MissingDependency, SetupError
from ...storage.atomic import remove_owned, remove_stale
from ...storage.images import iter_inputs
from ...storage.model_files import COMMAND_LINE_ADVICE
from ...video.containers import VIDEO_ONLY_SUFFIXES
from .config import RaySettings, RunConfig, UsageError

INTERRUPTED = 130
# Blocks of work handed to Ray Data: one actor call each up to this many (a retried call redoes little), then
# several calls per block, so that an archive of millions of files does not make millions of objects.
MAX_BLOCKS = 10_000


def restore_on_ray(config: RunConfig, cluster: RaySettings) -> int:
    """Run the restore command on the Ray ``cluster``; the exit status (UsageError for status 2)."""
    videos = [path for path in config.inputs if PurePath(path).suffix.lower() in VIDEO_ONLY_SUFFIXES]
    if videos:
        raise UsageError(f"{videos[0]}: videos are restored on this machine, not on a Ray cluster; drop --ray")
    missing = [path for path in config.inputs if not is_uri(path) and not Path(path).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    try:
        require_ray()
    except MissingDependency as error:
        raise UsageError(str(error)) from None
    buckets: dict[str, Any] = {}
    destination = _Destination(config.output, buckets)
    jobs = _list_inputs(list(config.inputs), config.recursive, destination, buckets)
    try:
        check_no_clashes(jobs, destination.display)
    except OutputClash as error:
        raise UsageError(str(error)) from None
    try:
        connected = connect(cluster.address)
    except ValueError as error:  # no cluster there: the message names the address tried
        raise UsageError(str(error)) from None
    run = _ClusterRun(config, cluster, destination, Stores(buckets))
    options = config.options
    try:
        try:
            plan = plan_actors(config.restorer.device, cluster.actors, cluster.cpus_per_actor)
        except ValueError as error:  # a pool the cluster cannot hold, a device it has not
            raise UsageError(str(error)) from None
        for leftover in destination.remove_stale():
            print(f"removed {leftover}, left by an interrupted run", file=sys.stderr)
        work = run.plan(jobs)
        if work:
            settings = config.restorer
            models = share_models(settings.weights, detector=settings.detector, mask=options["mask"], advice=COMMAND_LINE_ADVICE)
            run.execute(work, plan, models, options)
    except KeyboardInterrupt:
        run.summary()
        print("interrupted; finished images are kept, --skip-existing resumes", file=sys.stderr)
        return INTERRUPTED
    except SetupError as error:  # from an actor: missing weights or packages there
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if connected:
            require_ray().shutdown()  # this run's actors end with it: no writer of ours is left
        for leftover in destination.remove_owned():
            print(f"removed {leftover}, left by a worker that stopped mid-write", file=sys.stderr)
    run.summary()
    return 1 if run.counts["failed"] else 0


class _Destination:
    """The output root: a local folder that every node writes at the same path, or an object-store prefix."""

    def __init__(self, given: str, buckets: dict[str, Any]) -> None:
        self.bucket = bucket_of(given) if is_uri(given) else None
        if self.bucket is None:
            self.root: PurePath = Path(given).resolve()
            self.display = str(self.root)
            return
        if self.bucket not in buckets:
            buckets[self.bucket] = _opened(given)
        self.tree = ArrowTree(buckets[self.bucket])
        self.root = key_of(given)
        self.display = uri_of(self.bucket, self.root)

    def target(self, relative: PurePath) -> PurePath:
        """Where a result goes, as the refusal rule compares paths (local ones resolved, symlinks included)."""
        if self.bucket is None:
            return (Path(self.root) / relative).resolve()
        return self.root / relative

    def location(self, target: PurePath) -> str:
        return str(target) if self.bucket is None else uri_of(self.bucket, target)

    def existing(self) -> set[PurePath] | None:
        """Every result already there, listed once (an object store answers one listing faster than a
        request per key); None for a local folder, whose files are looked at one by one as locally."""
        if self.bucket is None:
            return None
        return set(self.tree.files(self.root, recursive=True))

    def remove_stale(self) -> list[Path]:
        return remove_stale(Path(self.root)) if self.bucket is None else []

    def remove_owned(self) -> list[Path]:
        return remove_owned(Path(self.root), os.getpid()) if self.bucket is None else []


def _opened(uri: str) -> Any:
    try:
        return open_bucket(uri)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _list_inputs(inputs: list[str], recursive: bool, destination: _Destination, buckets: dict[str, Any]) -> list[Job]:
    """The jobs in the order given, named by the local command's rules; UsageError for objects that do not exist
    (the command line has checked local inputs)."""
    jobs, missing = [], []
    for given in inputs:
        if not is_uri(given):
            exclude = Path(destination.root) if destination.bucket is None else None
            jobs += [Job(source, relative) for source, relative in iter_inputs([given], recursive, exclude=exclude)]
            continue
        bucket = bucket_of(given)
        if bucket not in buckets:
            buckets[bucket] = _opened(given)
        tree = ArrowTree(buckets[bucket])
        if not tree.exists(key_of(given)):
            missing.append(given)
            continue
        exclude = destination.root if destination.bucket == bucket else None
        found = iter_inputs([key_of(given)], recursive, exclude=exclude, tree=tree)
        jobs += [Job(uri_of(bucket, key), relative) for key, relative in found]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    return jobs


class _ClusterRun:
    """One restore command's work on the cluster, and the counts it reports."""

    def __init__(self, config: RunConfig, cluster: RaySettings, destination: _Destination, stores: Stores) -> None:
        self.config, self.cluster, self.destination, self.stores = config, cluster, destination, stores
        self.counts = {"images": 0, "faces": 0, "skipped": 0, "failed": 0}
        self.nodes: Counter[str] = Counter()

    def plan(self, jobs: list[Job]) -> list[dict[str, str]]:
        """The files to restore: each as shown in reports, where every node reads it (local paths made absolute,
        since workers run elsewhere), and its target. What is skipped or refused is counted and reported here."""
        destination = self.destination
        existing = destination.existing()
        inputs = {self._comparable(job.source) for job in jobs} - {None}
        work = []
        for job in jobs:
            target = destination.target(job.relative)
            exists = Path(target).exists() if existing is None else target in existing
            if admit(
                self,
                job.source,
                target,
                output_root=destination.root,
                inputs=inputs,
                exists=exists,
                skip_existing=self.config.skip_existing,
                overwrite=self.config.overwrite,
            ):
                read = str(job.source) if is_uri(str(job.source)) else os.path.abspath(job.source)
                work.append({"source": str(job.source), "read": read, "target": destination.location(target)})
        return work

    def _comparable(self, source: Any) -> PurePath | None:
        """An input as the destination's paths compare with it (None: on another storage, it cannot be hit)."""
        if self.destination.bucket is None:
            return None if is_uri(str(source)) else Path(source).resolve()
        return key_of(source) if is_uri(str(source)) and bucket_of(source) == self.destination.bucket else None

    def execute(self, work: list[dict[str, str]], plan: ActorPlan, models: SharedModels, options: dict[str, Any]) -> None:
        """Restore ``work`` on the actor pool; count and report each file as its result arrives."""
        ray = require_ray()
        config, restorer = self.config, self.config.restorer
        ray.data.DataContext.get_current().enable_progress_bars = not config.quiet
        per_batch = self.cluster.files_per_batch or DEFAULT_FILES_PER_BATCH
        settings = WorkerSettings(
            restorer.detector,
            plan.device,
            plan.cpus,
            restorer.batch_size,
            restorer.precision,
            restorer.fast_conv,
            config.max_pixels,
            options,
        )
        calls = math.ceil(len(work) / per_batch)
        rows = ray.data.from_items(work, override_num_blocks=min(calls, MAX_BLOCKS))
        results = rows.map_batches(
            RestoreFiles,
            fn_constructor_args=(models, settings, self.stores, config.overwrite, os.getpid()),
            batch_size=per_batch,
            batch_format="pyarrow",
            **plan.map_batches_args(calls),
        )
        try:
            for row in results.iter_rows():
                self._count(row)
        except Exception as error:
            raise _setup_error_in(error) or error from None
        spread = " + ".join(str(count) for _, count in self.nodes.most_common())
        done = sum(self.nodes.values())
        print(f"ray: {done} images on {len(self.nodes)} nodes ({spread}), {plan.actors} actors", file=sys.stderr)

    def _count(self, row: dict[str, Any]) -> None:
        self.nodes[row["node"]] += 1
        if row["status"] == "written":
            self.counts["images"] += 1
            self.counts["faces"] += row["faces"]
        else:
            self.failed(row["message"])

    def failed(self, message: str) -> None:
        self.counts["failed"] += 1
        print(f"failed: {message}", file=sys.stderr)

    def summary(self) -> None:
        print(summary_line(self.counts, self.destination.display))


def _setup_error_in(error: BaseException) -> SetupError | None:
    """The SetupError an actor raised, from inside Ray's wrappers (which keep it as a cause)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, SetupError):
            return error
        seen.add(id(error))
        error = getattr(error, "cause", None) or error.__cause__
    return None
