"""Blob storage for claim checks: raw MIME, attachments, audio.

Objects are content-addressed (``sha256/<hex>``): storing the same bytes twice keeps one blob,
and a reader verifies what it gets. NATS Object Store is the default (nothing else to run);
a local filesystem is the option for a single host or a mounted volume.

On NATS a store can keep small blobs (up to ``small_max_bytes``, at most the server's
``max_payload``) in a KV bucket ``<bucket>-small`` instead: one publish and its ack, where an
Object Store put costs three round trips (a name lookup, the chunk, the metadata). The
``BlobRef`` says where a blob is (``bucket`` is the KV bucket's name for a small one), so every
reader finds both kinds whatever its own threshold.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyDeletedError,
    KeyNotFoundError,
    NotFoundError,
    ObjectNotFoundError,
)

from postroom_contracts import BlobRef


class BlobError(Exception):
    pass


class BlobNotFound(BlobError):
    pass


class BlobCorrupt(BlobError):
    pass


def blob_key(sha256_hex: str) -> str:
    return f"sha256/{sha256_hex}"


def small_bucket_name(bucket: str) -> str:
    """The KV bucket that holds the small blobs of ``bucket`` on NATS."""
    return f"{bucket}-small"


class BlobStore(Protocol):
    bucket: str

    async def put(
        self, data: bytes, content_type: str | None = None, *, check_exists: bool = True
    ) -> BlobRef:
        """Store ``data`` (once: content-addressed). ``check_exists=False`` skips the lookup
        for a caller that knows the blob is new; storing existing bytes again is harmless."""
        ...

    async def get(self, ref: BlobRef) -> bytes: ...

    async def exists(self, sha256_hex: str) -> bool: ...

    async def ping(self) -> None: ...


def _verify(ref: BlobRef, data: bytes) -> bytes:
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BlobCorrupt(f"blob {ref.key} does not match its reference")
    return data


class NatsBlobStore:
    """Blobs in a NATS JetStream Object Store bucket; with ``small_max_bytes`` > 0, blobs up to
    that size (capped at the server's ``max_payload``) in the KV bucket ``<bucket>-small``.

    Both are file-backed JetStream streams with the same replicas: a put returns after the
    server acknowledged (and, with ``sync_interval: always``, fsynced) the data either way.
    """

    def __init__(
        self, js: JetStreamContext, bucket: str, replicas: int = 1, small_max_bytes: int = 0
    ) -> None:
        self.js = js
        self.bucket = bucket
        self.small_bucket = small_bucket_name(bucket)
        self.replicas = replicas
        self.small_max_bytes = small_max_bytes
        self._store = None
        self._kv = None

    async def _obs(self):  # type: ignore[no-untyped-def]
        if self._store is None:
            try:
                self._store = await self.js.object_store(self.bucket)
            except (BucketNotFoundError, NotFoundError):
                self._store = await self.js.create_object_store(
                    self.bucket,
                    config=ObjectStoreConfig(
                        bucket=self.bucket,
                        storage=StorageType.FILE,
                        replicas=self.replicas,
                        description="Postroom blobs (content-addressed)",
                    ),
                )
        return self._store

    async def _small(self):  # type: ignore[no-untyped-def]
        """The KV bucket of small blobs; created by a store that writes small blobs, else None
        while it does not exist (a reader then has nothing to find there)."""
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(self.small_bucket)
            except (BucketNotFoundError, NotFoundError):
                if not self.small_max_bytes:
                    return None
                self._kv = await self.js.create_key_value(
                    KeyValueConfig(
                        bucket=self.small_bucket,
                        history=1,
                        storage=StorageType.FILE,
                        replicas=self.replicas,
                        description=f"Postroom small blobs of {self.bucket} (content-addressed)",
                    )
                )
        return self._kv

    def is_small(self, size: int) -> bool:
        """Whether a blob of ``size`` bytes goes to the KV bucket."""
        if not self.small_max_bytes or size > self.small_max_bytes:
            return False
        max_payload = getattr(getattr(self.js, "_nc", None), "max_payload", None)
        return not isinstance(max_payload, int) or size <= max_payload

    async def exists(self, sha256_hex: str) -> bool:
        key = blob_key(sha256_hex)
        if self.small_max_bytes:  # where this store writes first
            return await self._small_exists(key) or await self._obs_exists(key)
        return await self._obs_exists(key) or await self._small_exists(key)

    async def _small_exists(self, key: str) -> bool:
        kv = await self._small()
        if kv is None:
            return False
        try:
            await kv.get(key)
        except (KeyNotFoundError, KeyDeletedError, NotFoundError):
            return False
        return True

    async def put(
        self, data: bytes, content_type: str | None = None, *, check_exists: bool = True
    ) -> BlobRef:
        digest = hashlib.sha256(data).hexdigest()
        small = self.is_small(len(data))
        ref = BlobRef(bucket=self.small_bucket if small else self.bucket, key=blob_key(digest),
                      size=len(data), sha256=digest, content_type=content_type)
        if small:
            # one publish, acknowledged when stored: cheaper than the lookup it would save
            kv = await self._small()
            await kv.put(ref.key, data)
        # (nats-py's ObjectStore.put looks the name up itself: skipping our check saves a round
        # trip; an existing object is then rewritten with the same bytes)
        elif not check_exists or not await self._obs_exists(ref.key):
            obs = await self._obs()
            await obs.put(ref.key, data)
        return ref

    async def _obs_exists(self, key: str) -> bool:
        obs = await self._obs()
        try:
            info = await obs.get_info(key)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return not info.deleted

    async def get(self, ref: BlobRef) -> bytes:
        if ref.bucket == self.small_bucket:
            kv = await self._small()
            if kv is None:
                raise BlobNotFound(ref.key)
            try:
                entry = await kv.get(ref.key)
            except (KeyNotFoundError, KeyDeletedError, NotFoundError) as exc:
                raise BlobNotFound(ref.key) from exc
            return _verify(ref, entry.value or b"")
        obs = await self._obs()
        try:
            result = await obs.get(ref.key)
        except (ObjectNotFoundError, NotFoundError) as exc:
            raise BlobNotFound(ref.key) from exc
        return _verify(ref, result.data or b"")

    async def ping(self) -> None:
        await self._obs()
        if self.small_max_bytes:
            await self._small()


class FilesystemBlobStore:
    """Blobs as files under ``root/<bucket>/sha256/ab/<hex>``, written atomically and fsynced."""

    def __init__(self, root: Path, bucket: str) -> None:
        self.root = Path(root)
        self.bucket = bucket

    def _path(self, sha256_hex: str) -> Path:
        return self.root / self.bucket / "sha256" / sha256_hex[:2] / sha256_hex

    async def exists(self, sha256_hex: str) -> bool:
        return await asyncio.to_thread(self._path(sha256_hex).is_file)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def put(
        self, data: bytes, content_type: str | None = None, *, check_exists: bool = True
    ) -> BlobRef:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not check_exists or not await self.exists(digest):
            await asyncio.to_thread(self._write, path, data)
        return BlobRef(bucket=self.bucket, key=blob_key(digest), size=len(data), sha256=digest,
                       content_type=content_type)

    async def get(self, ref: BlobRef) -> bytes:
        path = self._path(ref.sha256)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise BlobNotFound(ref.key) from exc
        return _verify(ref, data)

    async def ping(self) -> None:
        root = self.root / self.bucket
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        if not os.access(root, os.W_OK):
            raise BlobError(f"blob folder {root} is not writable")
