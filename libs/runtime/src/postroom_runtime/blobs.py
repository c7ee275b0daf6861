"""Blob storage for claim checks: raw MIME, attachments, audio.

Objects are content-addressed (``sha256/<hex>``): storing the same bytes twice keeps one blob,
and a reader verifies what it gets. NATS Object Store is the default (nothing else to run);
a local filesystem is the option for a single host or a mounted volume.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from postroom_contracts import BlobRef


class BlobError(Exception):
    pass


class BlobNotFound(BlobError):
    pass


class BlobCorrupt(BlobError):
    pass


def blob_key(sha256_hex: str) -> str:
    return f"sha256/{sha256_hex}"


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
    """Blobs in a NATS JetStream Object Store bucket."""

    def __init__(self, js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
        self.js = js
        self.bucket = bucket
        self.replicas = replicas
        self._store = None

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

    async def exists(self, sha256_hex: str) -> bool:
        obs = await self._obs()
        try:
            info = await obs.get_info(blob_key(sha256_hex))
        except (ObjectNotFoundError, NotFoundError):
            return False
        return not info.deleted

    async def put(
        self, data: bytes, content_type: str | None = None, *, check_exists: bool = True
    ) -> BlobRef:
        digest = hashlib.sha256(data).hexdigest()
        ref = BlobRef(bucket=self.bucket, key=blob_key(digest), size=len(data), sha256=digest,
                      content_type=content_type)
        # (nats-py's ObjectStore.put looks the name up itself: skipping our check saves a round
        # trip; an existing object is then rewritten with the same bytes)
        if not check_exists or not await self.exists(digest):
            obs = await self._obs()
            await obs.put(ref.key, data)
        return ref

    async def get(self, ref: BlobRef) -> bytes:
        obs = await self._obs()
        try:
            result = await obs.get(ref.key)
        except (ObjectNotFoundError, NotFoundError) as exc:
            raise BlobNotFound(ref.key) from exc
        return _verify(ref, result.data or b"")

    async def ping(self) -> None:
        await self._obs()


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
