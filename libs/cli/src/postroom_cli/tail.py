"""``postroom tail``: print events as JSON lines, live (core NATS) or from the stream's start."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Annotated, Any

import typer
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from .common import CliError, describe, echo_line, globals_of, jetstream, nats_connection, run_async

EVENT_TYPE_HEADER = "Postroom-Event-Type"


# --- subject wildcards ---------------------------------------------------------------------------


def valid_subject(subject: str) -> bool:
    tokens = subject.split(".")
    if not subject or any(not t or any(c.isspace() for c in t) for t in tokens):
        return False
    return ">" not in tokens[:-1]


def overlaps(a: str, b: str) -> bool:
    """Could one subject match both filters?"""
    ta, tb = a.split("."), b.split(".")
    for x, y in zip(ta, tb, strict=False):
        if x == ">" or y == ">":
            return True
        if x != y and x != "*" and y != "*":
            return False
    return len(ta) == len(tb)


def is_subset(a: str, b: str) -> bool:
    """Does filter ``b`` match every subject filter ``a`` matches?"""
    ta, tb = a.split("."), b.split(".")
    for i, y in enumerate(tb):
        if y == ">":
            return len(ta) > i
        if i >= len(ta):
            return False
        x = ta[i]
        if x == ">":
            return False
        if y != "*" and x != y:
            return False
    return len(ta) == len(tb)


def matches(subject: str, pattern: str) -> bool:
    return is_subset(subject, pattern)


def consumer_filters(subject: str, stream_subjects: list[str]) -> list[str]:
    """The filters of an ordered consumer reading ``subject`` from a stream that stores
    ``stream_subjects``: the user's filter where it fits inside a stream subject, else the stream
    subjects it overlaps (the client drops what does not match)."""
    filters: list[str] = []
    for stream_subject in stream_subjects:
        if is_subset(subject, stream_subject):
            return [subject]
        if overlaps(subject, stream_subject):
            filters.append(stream_subject)
    return filters


# --- output --------------------------------------------------------------------------------------


def event_line(msg: Msg, *, with_stream: bool) -> str:
    headers = msg.headers or {}
    data = msg.data or b""
    record: dict[str, Any] = {"subject": msg.subject, "event_type": headers.get(EVENT_TYPE_HEADER)}
    if with_stream:
        meta = msg.metadata
        record["stream"] = meta.stream
        record["seq"] = meta.sequence.stream
    try:
        record["payload"] = json.loads(data) if data else None
    except ValueError:
        try:
            record["payload"] = data.decode()
        except UnicodeDecodeError:
            record["payload_b64"] = base64.b64encode(data).decode()
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


async def _tail(url: str, subject: str, count: int | None, from_start: bool) -> None:
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        await queue.put(msg)

    if from_start:
        async with jetstream(url) as js:
            subscribed = []
            for info in await js.streams_info():
                filters = consumer_filters(subject, list(info.config.subjects or []))
                if not filters:
                    continue
                config = ConsumerConfig(filter_subjects=filters) if len(filters) > 1 else None
                try:
                    await js.subscribe(
                        filters[0],
                        stream=info.config.name,
                        cb=on_msg,
                        ordered_consumer=True,
                        deliver_policy=DeliverPolicy.ALL,
                        config=config,
                    )
                except Exception as exc:
                    raise CliError(
                        f"cannot read stream {info.config.name}: {describe(exc)}"
                    ) from None
                subscribed.append(info.config.name)
            if not subscribed:
                raise CliError(f"no stream stores {subject} (see `nats stream ls`)")
            how = f"from the start of {', '.join(subscribed)}"
            await _print(queue, subject, url, how, count, with_stream=True)
    else:
        async with nats_connection(url) as nc:
            await nc.subscribe(subject, cb=on_msg)
            await nc.flush()
            await _print(queue, subject, url, "live", count, with_stream=False)


async def _print(
    queue: asyncio.Queue[Msg], subject: str, url: str, how: str, count: int | None,
    *, with_stream: bool,
) -> None:
    typer.echo(f"tail: {subject} on {url}, {how}; Ctrl-C to stop", err=True)
    seen = 0
    while count is None or seen < count:
        msg = await queue.get()
        if with_stream and not matches(msg.subject, subject):
            continue
        echo_line(event_line(msg, with_stream=with_stream))
        seen += 1


def tail(
    ctx: typer.Context,
    subject: Annotated[
        str, typer.Argument(help="Subject filter, e.g. postroom.document.stored.*")
    ] = "postroom.>",
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after N events.")
    ] = None,
    from_start: Annotated[
        bool,
        typer.Option(
            "--from-start",
            help="Read the stream from its first message (ordered JetStream consumer), "
            "then follow; without it only events published from now on are shown.",
        ),
    ] = False,
) -> None:
    """Print each event as one JSON line: subject, event type (header) and payload."""
    if not valid_subject(subject):
        raise typer.BadParameter(f"not a NATS subject filter: {subject!r}", param_hint="SUBJECT")
    try:
        run_async(_tail(globals_of(ctx).nats_url, subject, count, from_start))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
