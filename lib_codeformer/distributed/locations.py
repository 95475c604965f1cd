"""Where inputs and results are: local folders every node reads at the same path, or object storage.

A location is a string: a local path, or a URI (``s3://bucket/key``,
``gs://bucket/key``) opened with pyarrow's file systems. The driver opens each
bucket once; ``Stores`` carries those file systems to the actors (pyarrow
pickles the endpoint and options, never the credentials: each node finds its
own, from its environment or its role, as the AWS and Google clients do). An
S3-compatible server's address is read on the driver (``AWS_ENDPOINT_URL``)
and travels with the file system.

Writes are whole or nothing, as on the local command line: a local result
goes through a temporary file and a rename (``storage.atomic``); an object
is uploaded in one request (or a multipart upload) and exists only once the
upload completes, so no reader ever sees half of one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..storage.atomic import atomic_write_bytes

# Object stores pyarrow opens whose uploads are atomic (an object appears whole when its upload completes).
OBJECT_STORES = ("s3", "gs", "gcs")


def is_uri(location: str) -> bool:
    return "://" in location


def bucket_of(uri: str) -> str:
    """``scheme://bucket``: what one file system object serves."""
    scheme, _, rest = uri.partition("://")
    return f"{scheme.lower()}://{rest.split('/', 1)[0]}"


def key_of(uri: str) -> PurePosixPath:
    """The path pyarrow's object-store file systems take: ``bucket/key``."""
    return PurePosixPath(uri.partition("://")[2].strip("/"))


def uri_of(bucket: str, key: PurePosixPath) -> str:
    return f"{bucket.partition('://')[0]}://{key.as_posix()}"


def open_bucket(uri: str) -> Any:
    """pyarrow's file system for ``uri``'s bucket; ValueError saying what is wrong (an unsupported scheme,
    a bucket that cannot be reached)."""
    import pyarrow
    from pyarrow import fs

    scheme = uri.partition("://")[0].lower()
    if scheme not in OBJECT_STORES:
        raise ValueError(
            f"{uri}: {scheme}:// is not supported; use a local folder that every node reads at the same path, "
            "s3://bucket/prefix (AWS or S3-compatible: set AWS_ENDPOINT_URL) or gs://bucket/prefix"
        )
    endpoint = _s3_endpoint() if scheme == "s3" else None
    try:
        if endpoint:
            return fs.S3FileSystem(endpoint_override=endpoint, scheme=urlsplit(endpoint).scheme or "https")
        filesystem, _ = fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowException, OSError, ValueError) as error:
        raise ValueError(f"{uri} cannot be opened ({error})") from None
    return filesystem


def _s3_endpoint() -> str | None:
    """An S3-compatible server's address as the AWS tools take it from the environment. Given to the file system
    explicitly, it travels with it to every node (which then needs only its credentials)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class ArrowTree:
    """An object store's keys as ``storage.images.iter_inputs`` lists them (its ``FileTree``)."""

    def __init__(self, filesystem: Any) -> None:
        self.filesystem = filesystem

    def path(self, given: str) -> PurePosixPath:
        return PurePosixPath(given)

    def is_dir(self, path: PurePosixPath) -> bool:
        from pyarrow import fs

        return self.filesystem.get_file_info(path.as_posix()).type == fs.FileType.Directory

    def exists(self, path: PurePosixPath) -> bool:
        from pyarrow import fs

        return self.filesystem.get_file_info(path.as_posix()).type != fs.FileType.NotFound

    def files(self, folder: PurePosixPath, recursive: bool) -> Iterator[PurePosixPath]:
        from pyarrow import fs

        selector = fs.FileSelector(folder.as_posix(), recursive=recursive, allow_not_found=True)
        for info in self.filesystem.get_file_info(selector):
            if info.type == fs.FileType.File:
                yield PurePosixPath(info.path)

    def resolve(self, path: PurePosixPath) -> PurePosixPath:
        return path


class Stores:
    """Reads and writes locations (local paths and URIs) on any node; built on the driver, pickled to actors."""

    def __init__(self, buckets: dict[str, Any]) -> None:
        self.buckets = buckets  # "scheme://bucket" -> its pyarrow file system

    def read(self, location: str) -> bytes:
        if not is_uri(location):
            return Path(location).read_bytes()
        with self._filesystem(location).open_input_stream(key_of(location).as_posix()) as stream:
            return stream.read()

    def exists(self, location: str) -> bool:
        if not is_uri(location):
            return Path(location).exists()
        return ArrowTree(self._filesystem(location)).exists(key_of(location))

    def write(self, location: str, data: bytes, owner: int) -> None:
        """Write whole or not at all; a local temporary file is named for ``owner`` (the run's driver)."""
        if not is_uri(location):
            atomic_write_bytes(Path(location), data, owner)
            return
        stream = self._filesystem(location).open_output_stream(key_of(location).as_posix())
        stream.write(data)
        stream.close()  # completes the upload: only now does the object exist

    def _filesystem(self, location: str) -> Any:
        return self.buckets[bucket_of(location)]
