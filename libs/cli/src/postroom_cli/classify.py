"""``postroom classify FILE.eml…`` and ``postroom classifier train|evaluate``.

The model is postroom-classify's (the one the classifier service loads): ``classify`` prints
one JSON line per file (``file``, ``label``, ``confidence``, ``scores``, ``model_version``;
``error`` when a file could not be read); ``train`` fits it on the corpus the project makes
(``scripts/make_classifier_corpus.py``) plus the corrections in the classifier's store and
records the result there as a new model version (which the running service picks up), or,
with ``--corpus-only`` (or no store), writes the model file; ``evaluate`` prints per-label
precision, recall and F1 and the confusion matrix on the held-out set.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import fail
from .stack import DEFAULT_DATA_DIR

app = typer.Typer(help="Train and evaluate the mail classifier's model.",
                  no_args_is_help=True)


def _corpus_dir() -> Path:
    # the repository's services/classifier/corpus when run from a checkout
    here = Path.cwd()
    for base in (here, *here.parents):
        candidate = base / "services" / "classifier" / "corpus"
        if candidate.is_dir():
            return candidate
    return here / "services" / "classifier" / "corpus"


def classify(
    files: Annotated[list[Path], typer.Argument(help="Mails as .eml files")],
    model: Annotated[Path | None, typer.Option(
        help="A model file from `postroom classifier train`; default: the shipped one")] = None,
) -> None:
    """Classify mails with the shipped model: one JSON line per file."""
    from postroom_classify import Classifier, features_from_eml, load_default

    classifier = Classifier.load(model) if model else load_default()
    failures = 0
    for path in files:
        try:
            mail = features_from_eml(path.read_bytes())
        except OSError as exc:
            failures += 1
            typer.echo(json.dumps({"file": str(path), "label": None, "confidence": None,
                                   "scores": None, "error": str(exc)}))
            continue
        r = classifier.classify(mail)
        typer.echo(json.dumps({"file": str(path), "label": r.label,
                               "confidence": round(r.confidence, 4),
                               "scores": {k: round(v, 4) for k, v in r.scores.items()},
                               "model_version": r.model_version}, ensure_ascii=False))
    if failures:
        raise typer.Exit(1)


def default_store() -> str | None:
    """The embedded stack's classifier store (``postroom up`` in this directory), if any."""
    path = (DEFAULT_DATA_DIR / "classifier.db").resolve()
    return f"sqlite+aiosqlite:///{path}" if path.exists() else None


async def _read_corrections(url: str) -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from postroom_classify import registry
    from postroom_runtime.store import Store

    store = Store(url)
    try:
        async with store.sessions() as session:
            return await registry.load_corrections(session)
    except SQLAlchemyError as exc:
        raise SystemExit(f"error: cannot read corrections from {url}: {exc.__class__.__name__}"
                         f" ({str(exc).splitlines()[0]}); has the classifier run on this "
                         "store (it creates the tables)?") from None
    finally:
        await store.close()


async def _record(url: str, trained: Any, mails: int, report: Any) -> str:
    from postroom_classify import registry
    from postroom_runtime.store import Store

    store = Store(url)
    try:
        return await registry.record_model(
            store.engine, trained, training_mails=mails, metrics=report,
            trained_by=f"postroom classifier train ({getpass.getuser()}@"
                       f"{socket.gethostname()})")
    finally:
        await store.close()


async def _newest_model(url: str) -> bytes | None:
    from sqlalchemy.exc import SQLAlchemyError

    from postroom_classify import registry
    from postroom_runtime.store import Store

    db = Store(url)
    try:
        async with db.sessions() as session:
            latest = await registry.latest_model(session)
            return None if latest is None else await registry.load_model(session,
                                                                          latest.version)
    except SQLAlchemyError as exc:
        raise SystemExit(f"error: cannot read model versions from {url}: "
                         f"{str(exc).splitlines()[0]}") from None
    finally:
        await db.close()


@app.command()
def train(
    corpus: Annotated[Path | None, typer.Option(
        help="Training set (JSONL); default: services/classifier/corpus/train.jsonl")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Model file to write; default: the one shipped in postroom-classify when "
        "training on the corpus only, none when the version goes to the store")] = None,
    heldout: Annotated[Path | None, typer.Option(
        help="Held-out set to report on after training; default: heldout.jsonl beside "
        "the training set")] = None,
    corrections_from: Annotated[str | None, typer.Option(
        "--corrections-from", envvar="CLASSIFIER_DATABASE_URL",
        help="The classifier's store (DATABASE_URL, e.g. postgresql+asyncpg://...): learn "
        "its corrections and record the model there as a new version; default: the "
        "embedded stack's (.postroom/classifier.db) when it exists")] = None,
    corpus_only: Annotated[bool, typer.Option(
        "--corpus-only", help="Train on the corpus alone and write the model file (the "
        "shipped model); no store")] = False,
) -> None:
    """Fit the model on the training set (and the corrections) and record it as a new
    version in the classifier's store, or write it to a file."""
    from postroom_classify.model import DEFAULT_MODEL, format_report, retrain

    corpus = corpus or _corpus_dir() / "train.jsonl"
    if not corpus.exists():
        fail(f"no training set at {corpus} (scripts/make_classifier_corpus.py makes it)")
    heldout = heldout or corpus.parent / "heldout.jsonl"
    url = None if corpus_only else (corrections_from or default_store())
    corrections = []
    if url is not None:
        stored = asyncio.run(_read_corrections(url))
        corrections = stored.corrections
        typer.echo(f"{len(corrections)} corrections from {url}"
                   + (f" ({stored.without_features} without model input, skipped)"
                      if stored.without_features else ""))
    trained, report, mails = retrain(corpus, corrections, heldout)
    if trained.unlearned:
        typer.echo(f"warning: {len(trained.unlearned)} corrected mails still get another "
                   f"label after {trained.rounds} fits", err=True)
    if url is not None:
        version = asyncio.run(_record(url, trained, mails, report))
        typer.echo(f"model {version} recorded in {url} ({trained.seconds:.1f} s, "
                   f"{mails} corpus mails + {trained.corrections} corrections); the "
                   "classifier takes it within CLASSIFIER_MODEL_POLL_SECONDS")
    if output is not None or url is None:
        output = output or DEFAULT_MODEL
        trained.classifier.save(output)
        typer.echo(f"model {trained.classifier.version} written to {output} "
                   f"({output.stat().st_size / 1e6:.2f} MB)")
    if report is not None:
        typer.echo(format_report(report))


@app.command("evaluate")
def evaluate_command(
    heldout: Annotated[Path | None, typer.Option(
        help="Held-out set (JSONL); default: services/classifier/corpus/heldout.jsonl")] = None,
    model: Annotated[Path | None, typer.Option(
        help="Model file; default: the shipped one")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Evaluate the newest model version in this classifier store "
        "(DATABASE_URL) instead, the one the service uses")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The figures as JSON")] = False,
) -> None:
    """Per-label precision, recall, F1 and the confusion matrix on the held-out set."""
    from postroom_classify import Classifier, load_default
    from postroom_classify.model import evaluate, format_report

    if store is not None:
        data = asyncio.run(_newest_model(store))
        if data is None:
            fail(f"no model version in {store} (`postroom classifier train` records one)")
        classifier = Classifier.from_bytes(data)
    else:
        classifier = Classifier.load(model) if model else load_default()
    report = evaluate(classifier, heldout or _corpus_dir() / "heldout.jsonl")
    typer.echo(json.dumps(report) if as_json else format_report(report))
