"""``postroom`` / ``python -m postroom_cli``."""

from __future__ import annotations

from .cli import app


def main() -> None:
    app(prog_name="postroom")


if __name__ == "__main__":
    main()
