"""The model: TF-IDF over words and character n-grams of subject and body, plus the mail's
structure as tokens (headers, attachment types, DMARC, route), into a multinomial logistic
regression whose probabilities are the scores. Trained by ``postroom classifier train``,
shipped in this package (``model/classifier.joblib``), loaded at start; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
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
