"""The model: TF-IDF over words and character n-grams of subject and body, plus the mail's
structure as tokens (headers, attachment types, DMARC, route), into a multinomial logistic
regression whose probabilities are the scores. Trained by ``postroom classifier train``,
shipped in this package (``model/classifier.joblib``), loaded at start; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from .features import LABELS, MailFeatures, structure_tokens, text_of

MODEL_DIR = Path(__file__).parent / "model"
DEFAULT_MODEL = MODEL_DIR / "classifier.joblib"


def _texts(mails: list[MailFeatures]) -> list[str]:
    return [text_of(m) for m in mails]


def _structures(mails: list[MailFeatures]) -> list[str]:
    return [structure_tokens(m) for m in mails]


def build_pipeline(seed: int = 7) -> Pipeline:
    words = make_pipeline(FunctionTransformer(_texts), TfidfVectorizer(
        lowercase=True, ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=40000))
    chars = make_pipeline(FunctionTransformer(_texts), TfidfVectorizer(
        lowercase=True, analyzer="char_wb", ngram_range=(3, 5), min_df=3, sublinear_tf=True,
        max_features=60000))
    structure = make_pipeline(FunctionTransformer(_structures), CountVectorizer(
        token_pattern=r"s_\w+", binary=True, lowercase=False))
    features = FeatureUnion([("words", words), ("chars", chars), ("structure", structure)],
                            transformer_weights={"words": 1.0, "chars": 1.0, "structure": 1.5})
    return Pipeline([("features", features),
                     ("model", LogisticRegression(C=20.0, max_iter=2000, random_state=seed))])


@dataclass
class Classification:
    label: str
    confidence: float
    scores: dict[str, float]
    model_version: str
    seconds: float


class Classifier:
    def __init__(self, pipeline: Pipeline, version: str) -> None:
        self.pipeline = pipeline
        self.version = version
        self.classes = [str(c) for c in pipeline.classes_]

    def classify(self, mail: MailFeatures) -> Classification:
        started = time.perf_counter()
        probs = self.pipeline.predict_proba([mail])[0]
        scores = {label: 0.0 for label in LABELS}
        for cls, p in zip(self.classes, probs, strict=True):
            scores[cls] = round(float(p), 6)
        best = max(scores, key=lambda k: scores[k])
        return Classification(best, scores[best], scores, self.version,
                              time.perf_counter() - started)

    def predict(self, mails: list[MailFeatures]) -> list[str]:
        return [str(p) for p in self.pipeline.predict(mails)]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"pipeline": self.pipeline, "version": self.version}, path, compress=3)

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL) -> Classifier:
        data = joblib.load(path)
        return cls(data["pipeline"], data["version"])

    def to_bytes(self) -> bytes:
        """The model file's bytes (what :meth:`save` writes), for the classifier's store."""
        buffer = io.BytesIO()
        joblib.dump({"pipeline": self.pipeline, "version": self.version}, buffer, compress=3)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Classifier:
        loaded = joblib.load(io.BytesIO(data))
        return cls(loaded["pipeline"], loaded["version"])


@lru_cache(maxsize=1)
def load_default() -> Classifier:
    return Classifier.load(DEFAULT_MODEL)


def read_corpus(path: Path) -> tuple[list[MailFeatures], list[str]]:
    mails, labels = [], []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                mails.append(MailFeatures.from_json(row))
                labels.append(row["label"])
    return mails, labels


def train(train_path: Path, *, seed: int = 7) -> Classifier:
    mails, labels = read_corpus(train_path)
    pipeline = build_pipeline(seed)
    pipeline.fit(mails, labels)
    digest = hashlib.sha256(train_path.read_bytes()).hexdigest()[:10]
    return Classifier(pipeline, f"logreg-tfidf-{time.strftime('%Y%m%d')}-{digest}")


# A correction counts this many times a corpus mail at first. The corpus has 360 mails per
# label, written to be typical; a correction is one real mail a person looked at, and the
# point of making it is that this mail (and mails like it) get the right label next time.
CORRECTION_WEIGHT = 20.0
# ... and if a corrected mail still gets another label, its weight is multiplied by this and
# the model fitted again, at most CORRECTION_ROUNDS times (a few seconds each).
CORRECTION_BOOST = 4.0
CORRECTION_ROUNDS = 4


@dataclass
class Correction:
    """A person's label for one mail, with the model input the mail gave."""

    mail: MailFeatures
    label: str


@dataclass
class Trained:
    classifier: Classifier
    digest: str  # SHA-256 of the training data (corpus bytes and corrections), hex
    corrections: int  # corrections learned from
    rounds: int  # fits needed until every correction got its label
    unlearned: list[int]  # indexes of corrections still labelled otherwise after the last
    seconds: float


def training_digest(train_path: Path, corrections: list[Correction]) -> str:
    h = hashlib.sha256(train_path.read_bytes())
    for c in corrections:
        h.update(json.dumps([c.label, c.mail.to_json()], sort_keys=True,
                            ensure_ascii=False).encode())
    return h.hexdigest()


def train_with_corrections(train_path: Path, corrections: list[Correction], *,
                           version: str | None = None, seed: int = 7) -> Trained:
    """Fit on the corpus plus the corrections, weighted so that each corrected mail gets the
    label the person gave: fit, check every corrected mail, boost the weight of the ones that
    still get another label, fit again (bounded). The vectorisers see the corrections like any
    mail; only the regression weighs them."""
    started = time.perf_counter()
    mails, labels = read_corpus(train_path)
    weights = [1.0] * len(mails)
    extra = [CORRECTION_WEIGHT] * len(corrections)
    pipeline = build_pipeline(seed)
    rounds = 0
    wrong: list[int] = []
    while True:
        rounds += 1
        pipeline.fit([*mails, *(c.mail for c in corrections)],
                     [*labels, *(c.label for c in corrections)],
                     model__sample_weight=np.array(weights + extra))
        if not corrections:
            break
        predicted = pipeline.predict([c.mail for c in corrections])
        wrong = [i for i, (p, c) in enumerate(zip(predicted, corrections, strict=True))
                 if str(p) != c.label]
        if not wrong or rounds > CORRECTION_ROUNDS:
            break
        for i in wrong:
            extra[i] *= CORRECTION_BOOST
    digest = training_digest(train_path, corrections)
    name = version or f"logreg-tfidf-{time.strftime('%Y%m%d')}-{digest[:10]}"
    return Trained(Classifier(pipeline, name), digest, len(corrections), rounds, wrong,
                   time.perf_counter() - started)


def retrain(train_path: Path, corrections: list[Correction],
            heldout_path: Path | None = None) -> tuple[Trained, dict[str, Any] | None, int]:
    """Training as ``postroom classifier train`` and the service's retraining run it (a
    module-level function: the service runs it in a worker process): the fitted model, its
    held-out figures (when the held-out set is there) and the number of corpus mails."""
    trained = train_with_corrections(train_path, corrections)
    report = None
    if heldout_path is not None and heldout_path.exists():
        report = evaluate(trained.classifier, heldout_path)
    with train_path.open(encoding="utf-8") as f:
        mails = sum(1 for line in f if line.strip())
    return trained, report, mails


def evaluate(classifier: Classifier, heldout_path: Path) -> dict[str, Any]:
    """Per-label precision, recall, F1, support; macro F1; the confusion matrix
    (rows: true label, columns: predicted label, in LABELS order)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    mails, truth = read_corpus(heldout_path)
    predicted = classifier.predict(mails)
    p, r, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=list(LABELS), zero_division=0)
    matrix = confusion_matrix(truth, predicted, labels=list(LABELS))
    return {
        "model_version": classifier.version,
        "mails": len(truth),
        "accuracy": float(np.mean([a == b for a, b in zip(truth, predicted, strict=True)])),
        "macro_f1": float(np.mean(f1)),
        "labels": {label: {"precision": float(p[i]), "recall": float(r[i]),
                           "f1": float(f1[i]), "support": int(support[i])}
                   for i, label in enumerate(LABELS)},
        "confusion": matrix.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"model {report['model_version']}  held-out mails {report['mails']}  "
             f"accuracy {report['accuracy']:.3f}  macro-F1 {report['macro_f1']:.3f}", "",
             f"{'label':<10} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}"]
    for label, m in report["labels"].items():
        lines.append(f"{label:<10} {m['precision']:>9.3f} {m['recall']:>7.3f} "
                     f"{m['f1']:>6.3f} {m['support']:>8d}")
    lines += ["", "confusion (rows true, columns predicted)",
              " " * 10 + " ".join(f"{label[:6]:>6}" for label in LABELS)]
    for label, row in zip(LABELS, report["confusion"], strict=True):
        lines.append(f"{label:<10}" + " ".join(f"{v:>6d}" for v in row))
    return "\n".join(lines)
