"""Classifier benchmark: held-out quality and latency per mail, against a keyword baseline.

Both in one run, on the held-out set (services/classifier/corpus/heldout.jsonl):
- ``model``: the shipped postroom-classify model, one mail at a time (as the service calls it);
- ``keywords``: a keyword and header rule list (what the model replaces), same mails;
- ``model from MIME``: each mail rebuilt as MIME bytes, parsed (features_from_eml) then
  classified, as ``postroom classify`` does.
Prints macro-F1, mails/s, p50/p95/p99 latency per mail.

``--train`` also times training (the corpus alone, and with 20 corrections: what
``postroom classifier train`` and the service's retraining run); ``--spamd`` starts Debian's
spamd on a free port (as the tests do) and times one check per held-out mail as MIME, the
way the classifier asks it (aiospamc, one connection per check).

    uv run --frozen --no-sync python scripts/bench_classify.py [--repeat 3] [--train] [--spamd]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from sklearn.metrics import f1_score

from postroom_classify import LABELS, MailFeatures, features_from_eml, load_default
from postroom_classify.model import Correction, read_corpus, retrain

CORPUS = Path(__file__).resolve().parents[1] / "services/classifier/corpus"
HELDOUT = CORPUS / "heldout.jsonl"

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


def bench_training(mails: list[MailFeatures], truth: list[str]) -> None:
    for n in (0, 20):
        # corrections: held-out mails relabelled to the next label (the hardest case)
        corrections = [Correction(mails[i * 41], LABELS[(LABELS.index(truth[i * 41]) + 1)
                                                        % len(LABELS)]) for i in range(n)]
        trained, _report, count = retrain(CORPUS / "train.jsonl", corrections, None)
        print(f"training: {count} corpus mails + {n} corrections: {trained.seconds:.1f} s, "
              f"{trained.rounds} fit(s), corrections still wrong: {len(trained.unlearned)}")


def bench_spamd(mime: list[bytes]) -> None:
    from postroom_classifier.spam import Spamd, SpamdAddress

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="bench-spamd-"))
    (folder / "site").mkdir()
    (folder / "home").mkdir()
    for pre in Path("/etc/spamassassin").glob("*.pre"):
        shutil.copy(pre, folder / "site" / pre.name)
    for path, mode in ((folder, 0o755), (folder / "site", 0o755), (folder / "home", 0o777)):
        os.chmod(path, mode)
    argv = ["/usr/sbin/spamd", "--listen", f"127.0.0.1:{port}", "--max-children", "1",
            "--local", "-x", "--siteconfigpath", str(folder / "site"), "--helper-home-dir",
            str(folder / "home"), "--syslog", "stderr"]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spamd = Spamd(SpamdAddress("127.0.0.1", port), timeout=30)

    async def run() -> None:
        from aiospamc import ping

        while True:
            try:
                await ping(host="127.0.0.1", port=port)
                break
            except Exception:
                await asyncio.sleep(0.1)
        print(f"spamd answers PING {time.perf_counter() - started:.1f} s after start")
        await spamd.check(mime[0])  # the child's first check loads more
        times, scores = [], []
        for data in mime[:200]:
            verdict = await spamd.check(data)
            times.append(verdict.seconds * 1000)
            scores.append(verdict.score)
        q = statistics.quantiles(sorted(times), n=100)
        print(f"spamd: {len(times)} checks, p50 {q[49]:.0f} ms, p95 {q[94]:.0f} ms, "
              f"p99 {q[98]:.0f} ms; scores {min(scores):.1f} .. {max(scores):.1f}")

    try:
        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="time training too")
    parser.add_argument("--spamd", action="store_true", help="time spamd checks too")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
          f"{os.cpu_count()} cores")
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
    if args.train:
        bench_training(mails, truth)
    if args.spamd:
        bench_spamd(mime)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
