"""``postroom-mailbox-sync``: run the service until SIGINT/SIGTERM."""

from __future__ import annotations

from postroom_runtime import run

from .app import build_runtime


def main() -> int:
    return run(build_runtime)


if __name__ == "__main__":
    raise SystemExit(main())
