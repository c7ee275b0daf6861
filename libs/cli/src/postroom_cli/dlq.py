"""``postroom dlq``: list and replay dead letters (stream ``POSTROOM_DLQ``)."""

from __future__ import annotations

from typing import Annotated

import typer
from nats.js.errors import NotFoundError

from postroom_runtime.deadletters import StoredLetter, list_dead_letters, replay_dead_letter

from .common import describe, echo_json, fail, globals_of, jetstream, run_async, table

app = typer.Typer(help="List and replay dead letters.", no_args_is_help=True)

ConsumerOption = Annotated[
    str | None,
    typer.Option("--consumer", "-c", help="Only dead letters of this consumer."),
]


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    consumer: ConsumerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List dead letters: sequence, consumer, original subject, deliveries, error."""

    async def go() -> list[StoredLetter]:
        async with jetstream(globals_of(ctx).nats_url) as js:
            return await list_dead_letters(js, consumer)

    letters = run_async(go())
    if as_json:
        echo_json([{"seq": s.sequence, **s.letter.model_dump(mode="json")} for s in letters])
        return
    if not letters:
        typer.echo("no dead letters" + (f" for consumer {consumer}" if consumer else ""))
        return
    typer.echo(
        table(
            ["seq", "consumer", "subject", "deliveries", "failed at", "mail key", "error"],
            [
                [
                    s.sequence,
                    s.letter.consumer,
                    s.letter.original_subject,
                    s.letter.deliveries,
                    s.letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
                    s.letter.mail_key,
                    s.letter.error,
                ]
                for s in letters
            ],
        )
    )


@app.command("replay")
def replay_cmd(
    ctx: typer.Context,
    seq: Annotated[
        list[int] | None, typer.Argument(help="Sequence numbers (from `postroom dlq list`).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter (of --consumer, if given).")
    ] = False,
    consumer: ConsumerOption = None,
) -> None:
    """Publish dead letters to their original subject again and remove them from the DLQ."""
    if bool(seq) == all_:
        fail("give sequence numbers or --all (not both)")
    if seq and consumer:
        fail("--consumer only narrows --all")

    async def go() -> tuple[int, list[str]]:
        replayed = 0
        problems: list[str] = []
        async with jetstream(globals_of(ctx).nats_url) as js:
            sequences = (
                list(seq or [])
                if not all_
                else [s.sequence for s in await list_dead_letters(js, consumer)]
            )
            for number in sequences:
                try:
                    letter = await replay_dead_letter(js, number)
                except NotFoundError:
                    problems.append(f"#{number}: no such dead letter")
                    continue
                except Exception as exc:
                    problems.append(f"#{number}: {describe(exc)}")
                    continue
                replayed += 1
                typer.echo(f"replayed #{number} ({letter.consumer}) -> {letter.original_subject}")
        return replayed, problems

    replayed, problems = run_async(go())
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if replayed == 0 and not problems:
        typer.echo("nothing to replay")
    if problems:
        raise typer.Exit(1)
