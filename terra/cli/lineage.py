"""Tracing runs: ``terra lineage`` and ``terra why``."""

from __future__ import annotations

import click

import terra

from ..errors import NotFound
from ..listing import iso_time
from ._common import print_json

__all__ = ["COMMANDS"]


@click.command("lineage")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["tree", "dot", "mermaid", "json"]), default="tree",
              show_default=True)
@click.option("--downstream", is_flag=True, help="Follow what was derived from REF instead of its sources.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (same as --format json).")
def lineage_cmd(ref, fmt, downstream, as_json):
    """Trace where a run or artifact came from (or, with --downstream, what came of it).

    REF is a run id, a tag, or an artifact id / unique prefix.
    """
    dag = terra.provenance(ref, downstream=downstream)
    if fmt == "json" or as_json:
        data = dag.to_dict()
        for run in data.get("runs", []):
            run["start_time"] = iso_time(run.get("start_time"))
        print_json(data)
    else:
        click.echo({"tree": dag.to_text, "dot": dag.to_dot, "mermaid": dag.to_mermaid}[fmt]())


@click.command("why")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def why_cmd(ref, as_json):
    """Explain how a run differs from the closest earlier run of its task.

    REF is a run id, a tag, or a task name (its latest run).
    """
    import dataclasses

    result = terra.why(_run_or_task(ref))
    if as_json:
        print_json({**dataclasses.asdict(result), "reason": result.reason})
    else:
        click.echo(str(result))


def _run_or_task(ref: str) -> int:
    """A run id or tag, else the latest run of the task named ``ref``."""
    from ..listing import iter_rows
    from ..retention import resolve_run
    from ..session import current_store

    try:
        return resolve_run(ref)
    except NotFound:
        if ref.strip().isdigit():
            raise
        for row in iter_rows(current_store(), task=ref):
            return row.run_id
        raise NotFound(f"no run, tag or task {ref!r}") from None


COMMANDS = (lineage_cmd, why_cmd)
