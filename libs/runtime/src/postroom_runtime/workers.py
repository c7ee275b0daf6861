"""Worker processes for CPU-bound calls (parsing a mail, a PDF, a spreadsheet).

A call runs in another process, so it uses another core instead of holding the service's GIL
(the event loop, the store and NATS go on meanwhile), and a call that runs away can be
stopped: when the awaiting task is cancelled (the consumer's time limit, shutdown) the worker
running it is killed and a fresh one takes its place. A thread cannot be stopped.

``fn`` must be importable by the worker (a module-level function) and its arguments and result
picklable. A worker is ``python worker_main.py`` (beside this file), started lazily, serving one
call at a time over its stdin and stdout (length-prefixed pickles); it imports only what the
calls it gets need, and exits when its stdin closes (the service stopped or died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_HEADER = 8  # length prefix of every frame, big-endian (as worker_main.py)
WORKER_MAIN = Path(__file__).with_name("worker_main.py")


class WorkerDied(RuntimeError):
    """The worker process ended before it answered (killed, out of memory, crashed)."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> _Worker:
        # run by path, not as a module of this package: the worker imports nothing it does
        # not need (the functions it is sent bring their own imports); -P: without this
        # folder on sys.path, where http.py would hide the standard library's http
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", str(WORKER_MAIN),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        return cls(process)

    async def call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        data = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            stdin.write(len(data).to_bytes(_HEADER, "big") + data)
            await stdin.drain()
            size = int.from_bytes(await stdout.readexactly(_HEADER), "big")
            ok, value = pickle.loads(await stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WorkerDied(
                f"worker process ended (exit code {self.process.returncode})") from exc
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()

    async def wait(self) -> None:
        """Until the process has ended and its pipes are closed."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.process.wait(), 10)


class ProcessPool:
    """``size`` worker processes; ``await pool.run(fn, *args)`` runs ``fn(*args)`` in one."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a process pool needs at least one worker")
        self.size = size
        self._idle: list[_Worker] = []
        self._ending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(size)
        self.killed = 0  # workers killed because their call was cancelled or they died

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            worker = self._idle.pop() if self._idle else await _Worker.start()
            try:
                result = await worker.call(fn, args)
            except BaseException as exc:
                if isinstance(exc, Exception) and not isinstance(exc, WorkerDied):
                    self._idle.append(worker)  # fn raised: the worker is fine
                    raise
                # cancelled (a time limit, shutdown) or the worker died: never reuse it
                self.killed += 1
                self._end(worker)
                raise
            self._idle.append(worker)
            return result

    def _end(self, worker: _Worker) -> None:
        worker.kill()
        task = asyncio.get_running_loop().create_task(worker.wait())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def aclose(self) -> None:
        """Stop every worker (a call still running is cut off) and wait until they ended."""
        for worker in self._idle:
            self._end(worker)
        self._idle.clear()
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)
