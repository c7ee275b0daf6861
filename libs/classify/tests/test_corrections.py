"""Training with corrections: a corrected mail gets the corrected label from the next model
(even a label far from what its text says), and model versions in a store are unique and
ordered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from postroom_classify import load_default, registry
from postroom_classify.model import Correction, read_corpus, retrain, train_with_corrections

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "services" / "classifier" / "corpus"


@pytest.fixture(scope="module")
def heldout() -> tuple[list, list]:
    return read_corpus(CORPUS / "heldout.jsonl")


def test_one_correction_flips_that_very_mail(heldout: tuple[list, list]) -> None:
    mails, labels = heldout
    shipped = load_default()
    # three mails the shipped model gets right, each corrected to another label
    picks = []
    for target in ("order", "intro", "meeting"):
        i = next(i for i, (m, label) in enumerate(zip(mails, labels, strict=True))
                 if label not in (target, "voicemail") and i not in [p[0] for p in picks]
                 and shipped.predict([m])[0] == label)
        picks.append((i, target))
    corrections = [Correction(mails[i], target) for i, target in picks]
    trained = train_with_corrections(CORPUS / "train.jsonl", corrections)
    assert trained.unlearned == [] and trained.corrections == 3
    assert trained.classifier.predict([c.mail for c in corrections]) == ["order", "intro",
                                                                       "meeting"]
    # the digest (and so the version) names the corrections too
    plain = train_with_corrections(CORPUS / "train.jsonl", [])
    assert plain.digest != trained.digest
    assert plain.classifier.version != trained.classifier.version


def test_versions_in_the_store_are_unique_and_ordered(tmp_path: Path) -> None:
    async def run() -> list[str]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/c.db")
        async with engine.begin() as conn:
            await conn.run_sync(registry.metadata.create_all)
        mails, _ = read_corpus(CORPUS / "heldout.jsonl")
        trained, report, count = retrain(CORPUS / "train.jsonl",
                                         [Correction(mails[0], "spam")], None)
        assert report is None and count == 2880
        versions = [await registry.record_model(engine, trained, training_mails=count,
                                                metrics=None, trained_by="test")
                    for _ in range(3)]
        async with engine.connect() as conn:
            from sqlalchemy.ext.asyncio import AsyncSession

            async with AsyncSession(conn) as session:
                latest = await registry.latest_model(session)
                data = await registry.load_model(session, versions[-1])
        await engine.dispose()
        assert latest is not None and latest.version == versions[-1] and latest.seq == 3
        assert registry.classifier_of(data).version == versions[-1]
        return versions

    versions = asyncio.run(run())
    assert len(set(versions)) == 3 and versions == sorted(versions)
    assert [v.split("-")[3] for v in versions] == ["00001", "00002", "00003"]
