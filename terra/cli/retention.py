"""Removing and pinning runs: ``terra rm``, ``tag``, ``untag`` and ``tags``."""

from __future__ import annotations

import click

import terra

from ..errors import NotFound, TerraError
from ._common import console, print_json, table, when

__all__ = ["COMMANDS"]


@click.command("rm")
@click.argument("runs", nargs=-1)
@click.option("--task", help="Select runs of this task.")
@click.option("--keep-last", type=click.IntRange(min=0), help="Spare the N newest runs of each task.")
@click.option("--failed", is_flag=True, help="Select failed and interrupted runs.")
@click.option("--older-than", help="Select runs started before a date, or older than an age (30d).")
@click.option("--force", is_flag=True, help="Remove runs that others consumed, and tagged runs.")
@click.option("--cascade", is_flag=True, help="Also remove every run downstream of the removed ones.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rm_cmd(runs, task, keep_last, failed, older_than, force, cascade, dry_run, as_json):
    """Remove runs (by id or tag, or by selection); `terra gc` then reclaims their objects.

    Selections (--task, --keep-last, --failed, --older-than) combine; they
    never pick tagged runs or runs in progress.
    """
    selecting = task is not None or keep_last is not None or failed or older_than is not None
    if runs and selecting:
        raise click.UsageError("give run ids or selection options, not both")
    if not runs and not selecting:
        raise click.UsageError("give run ids, or select runs with --task/--keep-last/--failed/--older-than")
    if selecting:
        runs = terra.select_runs(task=task, keep_last=keep_last, failed=failed,
                                 older_than=when(older_than, "--older-than"))
        if not runs:
            if as_json:
                print_json({"removed": [], "cascaded": [], "detached": {}, "tags_removed": [], "dry_run": dry_run})
            else:
                click.echo("no runs match")
            return
    from ..retention import RemovalRefused

    try:
        result = terra.rm(list(runs), force=force, cascade=cascade, dry_run=dry_run)
    except RemovalRefused as e:
        raise TerraError(_as_flags(str(e))) from None
    if as_json:
        import dataclasses

        print_json(dataclasses.asdict(result))
    else:
        click.echo(str(result))


@click.command("tag")
@click.argument("run")
@click.argument("name")
@click.option("--force", is_flag=True, help="Move the tag if it names another run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tag_cmd(run, name, force, as_json):
    """Pin RUN under NAME (pinned runs survive retention and rm without --force)."""
    try:
        rid = terra.tag(run, name, force=force)
    except NotFound:
        raise
    except TerraError as e:
        raise TerraError(_as_flags(str(e))) from None
    if as_json:
        print_json({"tag": name, "run_id": rid})
    else:
        click.echo(f"tagged run {rid} as {name}")


@click.command("untag")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def untag_cmd(name, as_json):
    """Remove tag NAME (the run stays)."""
    rid = terra.untag(name)
    if as_json:
        print_json({"tag": name, "run_id": rid})
    else:
        click.echo(f"removed tag {name} (run {rid})")


@click.command("tags")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tags_cmd(as_json):
    """List tags."""
    from ..retention import tags

    t = tags()
    if as_json:
        print_json(t)
        return
    console().print(table(None, ["tag", "run"], sorted(t.items())))


def _as_flags(message: str) -> str:
    """The library's advice ("use force", "or cascade") in the command's words (--force, --cascade)."""
    import re

    return re.sub(r"\b(use|or) (force|cascade)\b", r"\1 --\2", message)


COMMANDS = (rm_cmd, tag_cmd, untag_cmd, tags_cmd)
