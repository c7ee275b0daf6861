"""``postroom transcribe FILE.wav…``: run the default speech engine on recordings.

One JSON line per file: ``file``, ``text``, ``confidence``, ``engine``, ``duration_s``,
``rtf`` (and ``error`` when a file could not be read or transcribed). The engine is the one
the transcriber would use: ``TRANSCRIBE_ENGINE`` (default ``offline``) and the ``GOOGLE_*``
variables, with the same fallback.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer


async def _run(files: list[Path], language: str) -> int:
    from postroom_speech.audio import AudioError, decode
    from postroom_speech.factory import chain_from_environment

    chain = chain_from_environment()
    failures = 0
    for path in files:
        line: dict[str, object] = {"file": str(path)}
        try:
            audio = decode(path.read_bytes())
        except (OSError, AudioError) as exc:
            failures += 1
            line.update(text=None, confidence=None, engine=None, duration_s=None, rtf=None,
                        error=str(exc))
            typer.echo(json.dumps(line, ensure_ascii=False))
            continue
        started = time.perf_counter()
        outcome = await chain.transcribe(audio, language=language)
        seconds = time.perf_counter() - started
        t = outcome.transcript
        line.update(
            text=t.text if t else None,
            confidence=round(t.confidence, 3) if t and t.confidence is not None else None,
            engine=t.engine if t else None, duration_s=round(audio.duration, 2),
            rtf=round(seconds / audio.duration, 3) if audio.duration else None)
        if outcome.fallback:
            line["fallback"] = True
        if t is None:
            failures += 1
            line["error"] = outcome.error
        typer.echo(json.dumps(line, ensure_ascii=False))
    return 1 if failures else 0


def transcribe(
    files: Annotated[list[Path], typer.Argument(help="WAV files (µ-law, A-law, PCM, GSM, "
                                                "ADPCM).", exists=True, dir_okay=False)],
    language: Annotated[str, typer.Option("--language", "-l",
                                          help="BCP-47 language of the audio.")] = "en-US",
) -> None:
    """Transcribe recordings with the default engine; one JSON line per file."""
    raise typer.Exit(asyncio.run(_run(files, language)))
