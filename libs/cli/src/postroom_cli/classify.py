"""``postroom classify FILE.eml…`` and ``postroom classifier train|evaluate``.

The model is postroom-classify's (the one the classifier service loads): ``classify`` prints
one JSON line per file (``file``, ``label``, ``confidence``, ``scores``, ``model_version``;
``error`` when a file could not be read); ``train`` fits it on the corpus the project makes
(``scripts/make_classifier_corpus.py``) and writes the model file; ``evaluate`` prints
per-label precision, recall and F1 and the confusion matrix on the held-out set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

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


@app.command()
def train(
    corpus: Annotated[Path | None, typer.Option(
        help="Training set (JSONL); default: services/classifier/corpus/train.jsonl")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Model file to write; default: the one shipped in postroom-classify")] = None,
    heldout: Annotated[Path | None, typer.Option(
        help="Held-out set to report on after training; default: heldout.jsonl beside "
        "the training set")] = None,
) -> None:
    """Fit the model on the training set and write it (with a new version string)."""
    from postroom_classify.model import DEFAULT_MODEL, evaluate, format_report
    from postroom_classify.model import train as fit

    corpus = corpus or _corpus_dir() / "train.jsonl"
    output = output or DEFAULT_MODEL
    classifier = fit(corpus)
    classifier.save(output)
    typer.echo(f"model {classifier.version} written to {output} "
               f"({output.stat().st_size / 1e6:.2f} MB)")
    heldout = heldout or corpus.parent / "heldout.jsonl"
    if heldout.exists():
        typer.echo(format_report(evaluate(classifier, heldout)))


@app.command("evaluate")
def evaluate_command(
    heldout: Annotated[Path | None, typer.Option(
        help="Held-out set (JSONL); default: services/classifier/corpus/heldout.jsonl")] = None,
    model: Annotated[Path | None, typer.Option(
        help="Model file; default: the shipped one")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The figures as JSON")] = False,
) -> None:
    """Per-label precision, recall, F1 and the confusion matrix on the held-out set."""
    from postroom_classify import Classifier, load_default
    from postroom_classify.model import evaluate, format_report

    classifier = Classifier.load(model) if model else load_default()
    report = evaluate(classifier, heldout or _corpus_dir() / "heldout.jsonl")
    typer.echo(json.dumps(report) if as_json else format_report(report))
