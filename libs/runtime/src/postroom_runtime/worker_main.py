"""The worker process of ``postroom_runtime.workers``: ``python worker_main.py``.

Run by path, so that importing it does not import the ``postroom_runtime`` package: a worker
loads only the modules of the functions it is sent. It reads length-prefixed pickled
``(fn, args)`` frames from stdin and writes ``(ok, result or exception)`` frames to its own
copy of stdout, one call at a time, until stdin closes.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import Any, BinaryIO

_HEADER = 8  # length prefix of every frame, big-endian


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The worker's loop: a call per frame, its result (or exception) back, until EOF."""
    while True:
        header = requests.read(_HEADER)
        if len(header) < _HEADER:
            return  # the service closed our stdin (or died): nothing more to do
        fn, args = pickle.loads(requests.read(int.from_bytes(header, "big")))
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:  # handed to the caller, which raises it
            reply = (False, exc)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable result or exception
            data = pickle.dumps((False, RuntimeError(
                f"{type(reply[1]).__name__}: {reply[1]} (and not picklable: {exc})")))
        replies.write(len(data).to_bytes(_HEADER, "big") + data)
        replies.flush()


def _main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the service decides when its
    # workers stop (an interrupted call must not look like a failed one)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the replies get their own descriptor; anything a library prints goes to stderr
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, replies)


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the service decides when its
    # workers stop (an interrupted call must not look like a failed one)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the replies get their own descriptor; anything a library prints goes to stderr
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
