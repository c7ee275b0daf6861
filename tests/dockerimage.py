"""The one service Dockerfile (deploy/docker/Dockerfile) read without a Docker engine.

``instructions`` splits it into (INSTRUCTION, arguments); ``image`` works out, for one
service's build args, what the final stage gives the image as BuildKit would: its ENV, EXPOSE,
USER, HEALTHCHECK and ENTRYPOINT, with ``${ARG}``s expanded (ARG scoping: a global ARG's
default reaches a stage only through an ``ARG NAME`` inside it; ENV wins over an ARG).
tests/test_deploy.py and tests/test_service_registry.py both check the image through it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERFILE_REL = DOCKERFILE.relative_to(ROOT).as_posix()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        out.append((keyword.upper(), args.strip()))
        buffer = ""
    if buffer:
        raise ValueError("dangling line continuation")
    return out


def stages(parsed: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in parsed:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def expand(word: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` as the Dockerfile frontend expands them; an unknown name is
    left as written (``$PATH`` comes from the base image)."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, word)


def _arg(args: str) -> tuple[str, str | None]:
    name, eq, default = args.partition("=")
    return name, (shlex.split(default)[0] if default.strip() else "") if eq else None


def global_args(parsed: list[tuple[str, str]], build_args: dict[str, str]) -> dict[str, str]:
    """The ARGs before the first FROM: their defaults, or the build args that set them."""
    out: dict[str, str] = {}
    for keyword, args in parsed:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, default = _arg(args)
            out[name] = build_args.get(name, expand(default or "", out))
    return out


def stage_variables(stage: list[tuple[str, str]], upto: int, parsed: list[tuple[str, str]],
                    build_args: dict[str, str]) -> dict[str, str]:
    """The ARG and ENV values in scope before ``stage[upto]`` (the base image's ENV aside)."""
    outer = global_args(parsed, build_args)
    declared: dict[str, str] = {}
    env: dict[str, str] = {}
    for keyword, args in stage[1:upto]:
        scope = {**declared, **env}
        if keyword == "ARG":
            name, default = _arg(args)
            declared[name] = build_args.get(
                name, expand(default, scope) if default is not None else outer.get(name, ""))
        elif keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = expand(value, scope)
    return {**declared, **env}


@dataclass
class Image:
    """What the final stage records in the image config for one set of build args."""

    env: dict[str, str] = field(default_factory=dict)
    exposed: set[int] = field(default_factory=set)
    user: str = ""
    healthcheck: str = ""
    entrypoint: list[str] = field(default_factory=list)
    base: str = ""


def image(build_args: dict[str, str], text: str | None = None) -> Image:
    parsed = instructions(DOCKERFILE.read_text() if text is None else text)
    final = stages(parsed)[-1]
    result = Image(base=expand(final[0][1].split()[0], global_args(parsed, build_args)))
    for i, (keyword, args) in enumerate(final):
        if keyword not in ("ENV", "EXPOSE", "USER", "HEALTHCHECK", "ENTRYPOINT"):
            continue
        scope = stage_variables(final, i, parsed, build_args)
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                result.env[key] = expand(value, scope)
        elif keyword == "EXPOSE":
            # words split after expansion: an empty ARG adds no port, "a b" adds two
            result.exposed |= {int(p.split("/")[0]) for p in expand(args, scope).split()}
        elif keyword == "USER":
            result.user = expand(args, scope)
        elif keyword == "HEALTHCHECK":
            result.healthcheck = args  # exec form: nothing is expanded
        else:
            result.entrypoint = json.loads(args)  # exec form: nothing is expanded
    return result


def compose_build_args(service: dict[str, Any]) -> dict[str, str] | None:
    """A compose service's build args when it is built from the one Dockerfile, else None."""
    build = service.get("build") or {}
    if build.get("dockerfile") != DOCKERFILE_REL:
        return None
    return {str(k): str(v) for k, v in (build.get("args") or {}).items()}
