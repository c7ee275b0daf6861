"""Speech engines behind one interface, and the chain that falls back between them."""

from .base import Engine, EngineError, Transcript, UnsupportedLanguage, Word
from .chain import Outcome, SpeechChain

__all__ = ["Engine", "EngineError", "Outcome", "SpeechChain", "Transcript",
           "UnsupportedLanguage", "Word"]
