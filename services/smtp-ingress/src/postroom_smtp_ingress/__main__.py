"""``postroom-smtp-ingress``: SMTP in, raw MIME to the blob store, ``mail.received`` out."""

from __future__ import annotations

import sys

from postroom_runtime import load_settings, run

from .app import build_runtime
from .config import IngressSettings


def main() -> int:
    return run(lambda: build_runtime(load_settings(IngressSettings)))


if __name__ == "__main__":
    sys.exit(main())
