"""Classifier benchmark: held-out quality and latency per mail, against a keyword baseline.

Both in one run, on the held-out set (services/classifier/corpus/heldout.jsonl):
- ``model``: the shipped postroom-classify model, one mail at a time (as the service calls it);
- ``keywords``: a keyword and header rule list (what the model replaces), same mails;
- ``model from MIME``: each mail rebuilt as MIME bytes, parsed (features_from_eml) then
  classified, as ``postroom classify`` does.
Prints macro-F1, mails/s, p50/p95/p99 latency per mail.

    uv run --frozen --no-sync python scripts/bench_classify.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from sklearn.metrics import f1_score

from postroom_classify import LABELS, MailFeatures, features_from_eml, load_default
from postroom_classify.model import read_corpus

HELDOUT = Path(__file__).resolve().parents[1] / "services/classifier/corpus/heldout.jsonl"

KEYWORDS = [
    ("voicemail", ("voicemail", "voice message", "message vocal", "sprachnachricht")),
    ("meeting", ("meeting", "réunion", "termin", "invitation", "einladung", "calendar")),
    ("order", ("order", "commande", "bestellung", "purchase")),
    ("promotion", ("sale", "discount", "% off", "soldes", "rabatt", "unsubscribe")),
    ("spam", ("won", "gagné", "gewonnen", "bank details", "lottery", "prize")),
    ("intro", ("introduce", "présenter", "vorstellen", "meet ")),
    ("support", ("problem", "problème", "help", "aide", "hilfe", "refund")),
]


def keywords(mail: MailFeatures) -> str:
    if any(a.startswith("audio/") for a in mail.attachments):
        return "voicemail"
    if "list-unsubscribe" in mail.headers:
        return "promotion"
    text = f"{mail.subject} {mail.body}".lower()
    for label, words in KEYWORDS:
        if any(w in text for w in words):
            return label
    return "unknown"


def as_mime(mail: MailFeatures) -> bytes:
    msg = EmailMessage()
    msg["From"] = "someone@example.org"
    msg["Subject"] = mail.subject.replace("\n", " ")
    for name, value in mail.headers.items():
        msg[name] = value
    msg["Authentication-Results"] = f"mx.example; dmarc={mail.dmarc}"
    msg.set_content(mail.body)
    for i, ctype in enumerate(mail.attachments):
        main, _, sub = ctype.partition("/")
        msg.add_attachment(b"x" * 256, maintype=main, subtype=sub, filename=f"a{i}")
    return bytes(msg)


def timed(fn: Callable[[object], str], items: list, repeat: int) -> tuple[list[str], list[float]]:
    out: list[str] = []
    times: list[float] = []
    for r in range(repeat):
        for item in items:
            t = time.perf_counter()
            label = fn(item)
            times.append(time.perf_counter() - t)
            if r == 0:
                out.append(label)
    return out, times


def row(name: str, truth: list[str], predicted: list[str], times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    q = statistics.quantiles(ms, n=100)
    f1 = f1_score(truth, predicted, labels=list(LABELS), average="macro", zero_division=0)
    return (f"{name:<18} {f1:>8.3f} {len(ms) / (sum(ms) / 1000):>9.0f} {q[49]:>8.3f} "
            f"{q[94]:>8.3f} {q[98]:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = load_default()
    mails, truth = read_corpus(HELDOUT)
    for m in mails[:50]:  # warm-up
        model.classify(m)
    mime = [as_mime(m) for m in mails]
    print(f"held-out mails: {len(mails)}, repeat {args.repeat}, model {model.version}")
    print(f"{'target':<18} {'macro-F1':>8} {'mails/s':>9} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8}")
    base, t_base = timed(keywords, mails, args.repeat)
    print(row("keywords", truth, base, t_base))
    pred, t_model = timed(lambda m: model.classify(m).label, mails, args.repeat)
    print(row("model", truth, pred, t_model))
    pred_mime, t_mime = timed(lambda b: model.classify(features_from_eml(b)).label, mime,
                              args.repeat)
    print(row("model from MIME", truth, pred_mime, t_mime))


if __name__ == "__main__":
    main()
