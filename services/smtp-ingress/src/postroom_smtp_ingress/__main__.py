"""``postroom-smtp-ingress``: SMTP in, raw MIME to the blob store, ``mail.received`` out."""

from __future__ import annotations

import asyncio
import os
import sys

from postroom_runtime import load_settings, run

from .app import build_runtime
from .config import IngressSettings


def use_uvloop() -> bool:
    """Run on uvloop where available (``SMTP_UVLOOP=false`` turns it off): the SMTP protocol,
    NATS client and HTTP server all share one event loop, and uvloop roughly halves its cost."""
    if os.environ.get("SMTP_UVLOOP", "true").lower() in ("0", "false", "no", "off"):
        return False
    try:
        import uvloop
    except ImportError:  # not available on this platform
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def main() -> int:
    use_uvloop()
    return run(lambda: build_runtime(load_settings(IngressSettings)))


if __name__ == "__main__":
    sys.exit(main())
