"""Looking after the store: ``terra gc``, ``fsck`` and ``du``."""

from __future__ import annotations

import dataclasses
import sys

import click

import terra

from ..errors import TerraError
from ._common import console, fmt_size, print_json, progress, table

__all__ = ["COMMANDS"]


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--grace", default="1h", show_default=True,
              help="Keep objects written outside runs more recently than this (30s, 15m, 1h, 2d; "
                   "at least 1m). Runs in progress are protected whatever the grace.")
@click.option("--compact", "do_compact", is_flag=True,
              help="Then rewrite the store file so the space returns to the disk.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gc_cmd(dry_run, grace, do_compact, as_json):
    """Delete objects no run, tag, cache entry or run in progress reaches."""
    from ..gc import MIN_GRACE
    from ..retention import parse_duration

    try:
        grace_s = parse_duration(grace)
    except TerraError as e:
        raise click.BadParameter(str(e), param_hint="--grace") from None
    if grace_s < MIN_GRACE:
        click.echo(f"terra: --grace {grace} is below the safe minimum of {MIN_GRACE:g}s (objects written "
                   f"outside a run have only their age to protect them); using {MIN_GRACE:g}s", err=True)
        grace_s = MIN_GRACE
    with progress() as cb:
        stats = terra.gc(grace_period=grace_s, dry_run=dry_run, progress=cb)
    compacted = None
    if do_compact and not dry_run:
        with progress() as cb:
            compacted = terra.compact(progress=cb)
    if as_json:
        print_json({"gc": dataclasses.asdict(stats),
                    "compact": dataclasses.asdict(compacted) if compacted is not None else None})
        return
    click.echo(str(stats))
    if compacted is not None:
        click.echo(str(compacted))


@click.command("fsck")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--repair", is_flag=True, help="Rebuild damaged indexes from the run records (never deletes "
              "a record or object); reports each change.")
@click.option("--offline", is_flag=True, help="Do not ask remotes whether they still hold the objects a "
              "records-only pull left there; trust the store's records of its pulls.")
def fsck_cmd(as_json, repair, offline):
    """Verify every object, reference and index; exit 1 if anything is damaged."""
    with progress() as cb:
        report = terra.fsck(progress=cb, repair=repair, check_remotes=not offline)
    if as_json:
        print_json({**dataclasses.asdict(report), "ok": report.ok})
    else:
        click.echo(str(report))
    if not report.ok:
        sys.exit(1)


@click.command("du")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def du_cmd(as_json):
    """Stored size by task, and how much deduplication saves."""
    with progress() as cb:
        u = terra.du(progress=cb)
    if as_json:
        print_json({**dataclasses.asdict(u), "dedup_ratio": u.dedup_ratio, "garbage_bytes": u.garbage_bytes})
        return
    rows = [(t.task, t.runs, t.objects, fmt_size(t.bytes)) for t in u.tasks]
    out = console()
    out.print(table(None, ["task", "runs", "objects", "size"], rows))
    out.print(f"\nstored: {u.objects} objects, {fmt_size(u.bytes)}"
              + (f" (file {fmt_size(u.file_bytes)})" if u.file_bytes is not None else ""))
    out.print(f"reachable from runs: {u.reachable_objects} objects, {fmt_size(u.reachable_bytes)}; "
              f"unreachable: {fmt_size(u.garbage_bytes)}")
    out.print(f"dedup ratio: {u.dedup_ratio:.2f}x ({fmt_size(u.logical_bytes)} if every run "
              "stored its own copy)")


COMMANDS = (gc_cmd, fsck_cmd, du_cmd)
