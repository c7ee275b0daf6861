"""One abstract blob-store suite, run on NATS Object Store and on the filesystem."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from postroom_contracts import BlobRef
from postroom_runtime import BlobCorrupt, BlobNotFound, FilesystemBlobStore, NatsBlobStore
from postroom_runtime.blobs import BlobStore


class BlobStoreContract:
    @pytest.fixture
    async def blobs(self) -> AsyncIterator[BlobStore]:
        raise NotImplementedError
        yield

    async def test_round_trip_with_claim_check(self, blobs: BlobStore) -> None:
        data = b"%PDF-1.7 purchase order"
        ref = await blobs.put(data, "application/pdf")
        assert ref.sha256 == hashlib.sha256(data).hexdigest()
        assert ref.key == f"sha256/{ref.sha256}" and ref.size == len(data)
        assert ref.bucket == blobs.bucket and ref.content_type == "application/pdf"
        assert await blobs.get(ref) == data

    async def test_same_bytes_are_one_blob(self, blobs: BlobStore) -> None:
        first = await blobs.put(b"same")
        second = await blobs.put(b"same")
        assert first.key == second.key
        assert await blobs.exists(first.sha256)
        assert not await blobs.exists("0" * 64)

    async def test_large_blob_beyond_nats_max_payload(self, blobs: BlobStore) -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)
        ref = await blobs.put(data)
        assert await blobs.get(ref) == data

    async def test_empty_blob(self, blobs: BlobStore) -> None:
        ref = await blobs.put(b"")
        assert await blobs.get(ref) == b""

    async def test_missing_blob_is_not_found(self, blobs: BlobStore) -> None:
        sha = hashlib.sha256(b"never stored").hexdigest()
        with pytest.raises(BlobNotFound):
            await blobs.get(BlobRef(bucket=blobs.bucket, key=f"sha256/{sha}", size=12, sha256=sha))

    async def test_reader_detects_a_reference_that_does_not_match(self, blobs: BlobStore) -> None:
        ref = await blobs.put(b"original")
        wrong = BlobRef(bucket=ref.bucket, key=ref.key, size=ref.size + 1, sha256=ref.sha256)
        with pytest.raises(BlobCorrupt):
            await blobs.get(wrong)

    async def test_ping(self, blobs: BlobStore) -> None:
        await blobs.ping()


class TestFilesystemBlobStore(BlobStoreContract):
    @pytest.fixture
    async def blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        yield FilesystemBlobStore(tmp_path / "blobs", "postroom-blobs")

    async def test_tampered_file_is_detected(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path, "b")
        ref = await store.put(b"payload")
        path = tmp_path / "b" / "sha256" / ref.sha256[:2] / ref.sha256
        path.write_bytes(b"PAYLOAD")
        with pytest.raises(BlobCorrupt):
            await store.get(ref)


class TestNatsBlobStore(BlobStoreContract):
    @pytest.fixture
    async def blobs(self, nats_url: str) -> AsyncIterator[BlobStore]:
        nc = await nats.connect(nats_url)
        yield NatsBlobStore(nc.jetstream(), "postroom-blobs")
        await nc.close()

    async def test_blobs_survive_a_server_restart(self, nats_server) -> None:  # type: ignore[no-untyped-def]
        nc = await nats.connect(nats_server.url)
        ref = await NatsBlobStore(nc.jetstream(), "b").put(b"durable")
        await nc.close()
        nats_server.stop()
        nats_server.start()
        nc = await nats.connect(nats_server.url)
        assert await NatsBlobStore(nc.jetstream(), "b").get(ref) == b"durable"
        await nc.close()
