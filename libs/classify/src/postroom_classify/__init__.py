"""Mail classification: one label of LABELS per mail, from its text and structure."""

from .features import LABELS, MailFeatures, features_from_eml, features_from_message
from .model import Classification, Classifier, load_default

__all__ = ["LABELS", "Classification", "Classifier", "MailFeatures", "features_from_eml",
           "features_from_message", "load_default"]
