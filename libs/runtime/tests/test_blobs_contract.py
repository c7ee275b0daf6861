"""One abstract blob-store suite, run on the filesystem, on NATS Object Store alone and on NATS
with small blobs in a KV bucket (two tiers)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import KeyNotFoundError, ObjectNotFoundError

from postroom_contracts import BlobRef
from postroom_runtime import BlobCorrupt, BlobNotFound, FilesystemBlobStore, NatsBlobStore
from postroom_runtime.blobs import BlobStore

# the small-blob threshold of the two-tier NATS store under test (smaller than the services'
# 512 KiB to keep the suite quick); every store runs the sizes around it
THRESHOLD = 64 * 1024


class BlobStoreContract:
    @pytest.fixture
    async def blobs(self) -> AsyncIterator[BlobStore]:
        raise NotImplementedError
        yield

    def bucket_for(self, blobs: BlobStore, size: int) -> str:
        """The bucket a blob of ``size`` bytes is stored in (its ``BlobRef.bucket``)."""
        return blobs.bucket

    async def test_round_trip_with_claim_check(self, blobs: BlobStore) -> None:
        data = b"%PDF-1.7 purchase order"
        ref = await blobs.put(data, "application/pdf")
        assert ref.sha256 == hashlib.sha256(data).hexdigest()
        assert ref.key == f"sha256/{ref.sha256}" and ref.size == len(data)
        assert ref.bucket == self.bucket_for(blobs, len(data))
        assert ref.content_type == "application/pdf"
        assert await blobs.get(ref) == data

    @pytest.mark.parametrize("size", [1000, THRESHOLD, THRESHOLD + 1],
                             ids=["small", "at-threshold", "above-threshold"])
    async def test_sizes_around_the_small_blob_threshold(
        self, blobs: BlobStore, size: int
    ) -> None:
        data = os.urandom(size)
        ref = await blobs.put(data, check_exists=False)
        assert ref.size == size and ref.bucket == self.bucket_for(blobs, size)
        assert await blobs.exists(ref.sha256)
        assert await blobs.get(ref) == data
        again = await blobs.put(data)  # the same bytes again: the same reference
        assert again == ref and await blobs.get(again) == data

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
        for size in (12, 2 * THRESHOLD):
            bucket = self.bucket_for(blobs, size)
            with pytest.raises(BlobNotFound):
                await blobs.get(BlobRef(bucket=bucket, key=f"sha256/{sha}", size=size, sha256=sha))

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
    """Object Store only (``small_max_bytes=0``, the runtime's default)."""

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


class TestNatsBlobStoreWithSmallBlobs(BlobStoreContract):
    """Blobs up to THRESHOLD in the KV bucket ``<bucket>-small``, larger ones in the Object
    Store."""

    def bucket_for(self, blobs: BlobStore, size: int) -> str:
        return "postroom-blobs-small" if size <= THRESHOLD else "postroom-blobs"

    @pytest.fixture
    async def blobs(self, nats_url: str) -> AsyncIterator[BlobStore]:
        nc = await nats.connect(nats_url)
        yield NatsBlobStore(nc.jetstream(), "postroom-blobs", small_max_bytes=THRESHOLD)
        await nc.close()

    async def test_each_size_lands_in_its_own_tier(self, nats_url: str) -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        store = NatsBlobStore(js, "postroom-blobs", small_max_bytes=THRESHOLD)
        small = await store.put(os.urandom(THRESHOLD))
        large = await store.put(os.urandom(THRESHOLD + 1))
        kv = await js.key_value("postroom-blobs-small")
        obs = await js.object_store("postroom-blobs")
        assert (await kv.get(small.key)).value == await store.get(small)
        with pytest.raises(ObjectNotFoundError):
            await obs.get_info(small.key)
        assert (await obs.get(large.key)).data == await store.get(large)
        with pytest.raises(KeyNotFoundError):
            await kv.get(large.key)
        await nc.close()

    async def test_a_reader_without_the_small_tier_reads_both(self, nats_url: str) -> None:
        nc = await nats.connect(nats_url)
        writer = NatsBlobStore(nc.jetstream(), "postroom-blobs", small_max_bytes=THRESHOLD)
        reader = NatsBlobStore(nc.jetstream(), "postroom-blobs")  # e.g. another service
        for data in (b"small mail", os.urandom(THRESHOLD + 1)):
            ref = await writer.put(data)
            assert await reader.get(ref) == data and await reader.exists(ref.sha256)
        await nc.close()

    async def test_a_reader_finds_nothing_before_any_small_blob_was_written(
        self, nats_url: str
    ) -> None:
        nc = await nats.connect(nats_url)
        reader = NatsBlobStore(nc.jetstream(), "fresh")
        sha = hashlib.sha256(b"x").hexdigest()
        with pytest.raises(BlobNotFound):
            await reader.get(BlobRef(bucket="fresh-small", key=f"sha256/{sha}", size=1, sha256=sha))
        assert not await reader.exists(sha)
        await nc.close()

    async def test_the_threshold_is_capped_at_the_server_max_payload(self, nats_url: str) -> None:
        nc = await nats.connect(nats_url)
        store = NatsBlobStore(nc.jetstream(), "capped", small_max_bytes=64 * 1024 * 1024)
        data = os.urandom(nc.max_payload + 1)
        ref = await store.put(data)
        assert ref.bucket == "capped" and await store.get(ref) == data
        assert (await store.put(b"tiny")).bucket == "capped-small"
        await nc.close()

    async def test_small_blobs_survive_a_server_restart(self, nats_server) -> None:  # type: ignore[no-untyped-def]
        nc = await nats.connect(nats_server.url)
        ref = await NatsBlobStore(nc.jetstream(), "b", small_max_bytes=THRESHOLD).put(b"durable")
        assert ref.bucket == "b-small"
        await nc.close()
        nats_server.stop()
        nats_server.start()
        nc = await nats.connect(nats_server.url)
        assert await NatsBlobStore(nc.jetstream(), "b").get(ref) == b"durable"
        await nc.close()
