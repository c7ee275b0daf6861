#!/usr/bin/env python3
"""Word error rate and real-time factor of the speech engines on the voicemail set.

The set is libs/speech/tests/fixtures/voicemail (scripts/make_voicemail_fixtures.py: 36
sentences of 10-25 words with names, numbers and times, 8 voices, 8 kHz µ-law, A-law and
GSM). Each engine is run on every file; WER is scored over all reference words with the
normaliser of postroom_speech.wer (spoken and written numbers alike). Side by side, in the
same run: the offline engine as the service runs it (segmented on silence) and the same model
given each recording whole (the baseline), and Google when GOOGLE_APPLICATION_CREDENTIALS or
GOOGLE_SPEECH_ENDPOINT is set. Real-time factor = processing time / audio duration, one
ONNX Runtime thread; pin to one core for the figure of docs/benchmarks.md:

    taskset -c 0 uv run --frozen --no-sync python scripts/bench_transcribe.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from postroom_speech.audio import Audio, decode
from postroom_speech.engines.google import GoogleEngine
from postroom_speech.engines.moonshine import MoonshineEngine, MoonshineModel
from postroom_speech.wer import normalise, word_error_rate

FIXTURES = Path(__file__).resolve().parents[1] / "libs/speech/tests/fixtures/voicemail"


async def run_engine(engine, items, language: str
                     ) -> tuple[list[str], float, float, float]:
    """Hypotheses, wall seconds, CPU seconds of this process, audio seconds."""
    hyps, processing, cpu, duration = [], 0.0, 0.0, 0.0
    for item in items:
        audio = item["audio"]
        started, cpu_started = time.perf_counter(), time.process_time()
        transcript = await engine.transcribe(audio, language=language, timeout=600)
        processing += time.perf_counter() - started
        cpu += time.process_time() - cpu_started
        duration += audio.duration
        hyps.append(transcript.text)
    return hyps, processing, cpu, duration


async def loop_lag() -> int:
    """The service runs inference in a thread (ONNX Runtime releases the GIL): how long does
    the event loop (heartbeats, NATS, HTTP) wait meanwhile, on the same core?"""
    engine = MoonshineEngine()
    engine.model_impl.load()
    audio = decode((FIXTURES / "test_long_gsm.wav").read_bytes())
    lags: list[float] = []
    done = False

    async def tick() -> None:
        while not done:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - started - 0.01)

    ticker = asyncio.create_task(tick())
    for _ in range(3):
        await engine.transcribe(audio, language="en-US", timeout=300)
    done = True
    await ticker
    lags.sort()
    print(f"{len(lags)} ticks; loop lag p50 {1000 * lags[len(lags) // 2]:.1f} ms, "
          f"p99 {1000 * lags[int(len(lags) * 0.99)]:.1f} ms, max {1000 * lags[-1]:.1f} ms; "
          f"affinity {sorted(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}")
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--show", action="store_true", help="print every hypothesis")
    parser.add_argument("--only", help="run only the engines whose name contains this")
    parser.add_argument("--loop-lag", action="store_true",
                        help="only measure how late a 10 ms timer fires on the event loop "
                        "while the offline engine transcribes in its thread")
    args = parser.parse_args()
    if args.loop_lag:
        return await loop_lag()
    refs = json.loads((FIXTURES / "references.json").read_text())["sentences"]
    items = [dict(r, audio=decode((FIXTURES / r["file"]).read_bytes())) for r in refs]
    # long messages: six sentences in a row, a second of line noise between them (~40 s)
    rng = np.random.default_rng(1)
    long_items, long_refs = [], []
    for start in range(0, len(items), 6):
        group = items[start:start + 6]
        gap = rng.normal(0, 0.003, 8000).astype(np.float32)
        pieces = [p for i in group for p in (i["audio"].samples, gap)]
        long_items.append({"audio": Audio(np.concatenate(pieces), 8000)})
        long_refs.append(" ".join(i["text"] for i in group))
    model = MoonshineModel(threads=1)
    model.load()
    engines = {
        "moonshine-base-en, segmented (service)": MoonshineEngine(model, segment=True),
        "moonshine-base-en, whole recording (baseline)": MoonshineEngine(model, segment=False),
    }
    google = GoogleEngine(insecure=os.environ.get("GOOGLE_SPEECH_INSECURE") == "true")
    if google.configured:
        engines["google"] = google
    if args.only:
        engines = {k: v for k, v in engines.items() if args.only in k}
    words = sum(len(normalise(r["text"]).split()) for r in refs)
    seconds = sum(i["audio"].duration for i in items)
    print(f"{len(items)} recordings, {seconds:.0f} s of audio, {words} reference words; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"+ {len(long_items)} long messages; "
          f"affinity {sorted(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}")
    for name, engine in engines.items():
        rtfs, cpu_rtfs = [], []
        for _ in range(args.runs):
            hyps, processing, cpu, duration = await run_engine(engine, items, "en-US")
            long_hyps, long_processing, long_cpu, long_duration = await run_engine(
                engine, long_items, "en-US")
            rtfs.append((processing + long_processing) / (duration + long_duration))
            cpu_rtfs.append((cpu + long_cpu) / (duration + long_duration))
        wer = word_error_rate([r["text"] for r in refs], hyps)
        long_wer = word_error_rate(long_refs, long_hyps)
        by_voice: dict[str, tuple[list[str], list[str]]] = {}
        for r, h in zip(refs, hyps, strict=True):
            by_voice.setdefault(r["voice"], ([], []))
            by_voice[r["voice"]][0].append(r["text"])
            by_voice[r["voice"]][1].append(h)
        voices = ", ".join(f"{v} {100 * word_error_rate(*p):.0f}%"
                           for v, p in sorted(by_voice.items()))
        print(f"\n{name}\n  WER {100 * wer:.1f} % (sentences), {100 * long_wer:.1f} % "
              f"({len(long_items)} messages of ~40 s)\n"
              f"  RTF (CPU seconds / audio seconds) mean {statistics.mean(cpu_rtfs):.3f} "
              f"(min {min(cpu_rtfs):.3f}, max {max(cpu_rtfs):.3f}); wall-clock RTF mean "
              f"{statistics.mean(rtfs):.3f} (min {min(rtfs):.3f}, max {max(rtfs):.3f}); "
              f"{args.runs} runs; load now {os.getloadavg()[0]:.2f}\n"
              f"  by voice: {voices}")
        if args.show:
            for r, h in zip(refs, hyps, strict=True):
                print(f"  REF {normalise(r['text'])}\n  HYP {normalise(h)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
