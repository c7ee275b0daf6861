"""``python -m postroom_contracts generate|check``."""

from __future__ import annotations

import sys

from .catalogue import SCHEMA_DIR, check, generate


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "check"
    if command == "generate":
        for path in generate():
            print(f"wrote {path.relative_to(SCHEMA_DIR.parent)}")
        return 0
    if command == "check":
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    print("usage: python -m postroom_contracts generate|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
