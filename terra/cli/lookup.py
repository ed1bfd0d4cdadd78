"""Reading runs: ``terra ls``, ``show``, ``log``, ``inp`` and ``out``."""

from __future__ import annotations

import click

import terra

from .. import runs as R
from .._format import flatten
from ..listing import iso_time
from ._common import TRUST_HELP, clean, console, fmt_time, print_json, rows_for, table, trusting, value_cell, when

__all__ = ["COMMANDS"]


@click.command("ls")
@click.option("--task", help="Task name, qualified name or module:qualname.")
@click.option("--status", type=click.Choice(R.STATUSES + ("damaged",)), help="Only runs with this status.")
@click.option("--tag", help="Only the run this tag names.")
@click.option("--since", help="Started at or after: ISO date/time, or an age such as 2d, 12h.")
@click.option("--until", help="Started at or before: ISO date/time, or an age.")
@click.option("-n", "--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Show at most this many (newest first).")
@click.option("--all", "show_all", is_flag=True, help="Show every matching run (overrides -n).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_cmd(task, status, tag, since, until, limit, show_all, as_json):
    """List runs, newest first: task, status, start, duration, tags, scalar inputs and outputs."""
    from ..listing import list_runs

    rows, more = list_runs(task, status, when(since, "--since"), when(until, "--until"), tag,
                           limit=None if show_all else limit)
    if as_json:
        print_json([r.to_json() for r in rows])
        return
    names: dict[str, set] = {}
    for r in rows:
        names.setdefault(r.task, set()).add(r.identity)
    cells = [(r.run_id, (r.identity or r.task) if len(names.get(r.task, ())) > 1 else (r.task or "?"),
              r.status, fmt_time(r.start_time), "" if r.duration is None else f"{r.duration:.2f}s",
              ",".join(r.tags), _kv(r.inputs), _kv(r.outputs), ",".join(map(str, r.parents)))
             for r in rows]
    out = console()
    if rows:
        out.print(table(None, ["run", "task", "status", "started", "duration", "tags", "inputs", "outputs",
                               "inputs from"], cells))
    else:
        out.print("no runs match" if (task or status or tag or since or until) else "no runs yet")
    if more:
        out.print(f"... {more} older run{'s' if more != 1 else ''} not shown (-n N or --all to see them)")


def _kv(d: dict, width: int = 60) -> str:
    text = " ".join(f"{k}={_short(v)}" for k, v in d.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@click.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(run, as_json):
    """Show a run's record: task, status, times, environment, inputs, outputs, lineage."""
    from ..listing import consumers, run_tags
    from ..retention import resolve_run
    from ..session import current_store

    store = current_store()
    rid = resolve_run(run)
    meta = _raw_meta(rid)
    meta["consumers"] = used_by = consumers(store, rid)
    meta["tags"] = sorted(run_tags(store).get(rid, []))
    inputs = terra.inp(rid)
    outputs = dict(flatten(terra.out(rid))) if meta.get("status") == "success" else {}
    if as_json:
        for k in ("start_time", "end_time", "expires"):
            if k in meta:
                meta[k] = iso_time(meta[k])
        print_json(clean({**meta, "inputs": inputs, "outputs": outputs}))
        return
    out = console()
    out.print(table(None, ["field", "value"], _record_rows(rid, meta, used_by)))
    if inputs:
        out.print(table("inputs", ["input", "value / id", "type", "from run"], rows_for(inputs)))
    if outputs:
        out.print(table("outputs", ["output", "value / id", "type"],
                        [(n, *value_cell(v)[:2]) for n, v in outputs.items()]))
    err = meta.get("error")
    if err:
        out.print(f"\nerror: {err.get('type')}: {err.get('message')}")
        if err.get("traceback"):
            out.print(err["traceback"].rstrip(), markup=False)


def _record_rows(rid: int, meta: dict, used_by: list[int]) -> list[tuple]:
    """The (field, value) rows ``terra show`` prints for a run's record."""
    skip = {"code", "versions", "git", "error", "cache_key", "fingerprint", "run_id", "holds", "expires"}
    rows = [("run", rid)]
    for k in ("task", "identity", "status", "start_time", "end_time", "host", "user", "pid"):
        if meta.get(k) is not None:
            v = meta[k]
            rows.append((k, fmt_time(v) if k.endswith("_time") else v))
    if meta.get("start_time") and meta.get("end_time"):
        rows.append(("duration", f"{meta['end_time'] - meta['start_time']:.3f}s"))
    git = meta.get("git") or {}
    if git.get("commit"):
        rows.append(("git", f"{git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}"))
    if meta.get("versions"):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items()))))
    rows.append(("inputs from", ", ".join(map(str, meta.get("parents") or [])) or "-"))
    rows.append(("used by", ", ".join(map(str, used_by)) or "-"))
    if meta["tags"]:
        rows.append(("tags", ", ".join(meta["tags"])))
    if meta.get("cache_key"):
        rows.append(("cache key", bytes(meta["cache_key"]).hex()))
    for k, v in sorted(meta.items()):
        if k not in skip and k not in {r[0] for r in rows} and k not in ("parents", "consumers", "has_run_dir",
                                                                            "identity", "module", "fn", "tags"):
            rows.append((k, v))
    return rows


def _raw_meta(rid: int) -> dict:
    """A run's record without its trees: epoch-second times, for formatting here."""
    return {k: v for k, v in terra.get_run(rid).items() if k not in ("inputs", "output", "log", "run_dir_tree")}


@click.command("log")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the run id and its log.")
def log_cmd(run, as_json):
    """Print a run's captured stdout, stderr and logging."""
    from ..retention import resolve_run

    rid = resolve_run(run)
    text = terra.get_log(rid)
    if as_json:
        print_json({"run_id": rid, "log": text})
    else:
        click.echo(text, nl=False)


@click.command("inp")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--trust", is_flag=True, help=TRUST_HELP)
def inp_cmd(run, as_json, trust):
    """List a run's inputs (values, or artifact ids with the run that produced them)."""
    from ..retention import resolve_run

    with trusting(trust):
        inputs = terra.inp(resolve_run(run))
    if as_json:
        print_json(clean(inputs))
        return
    console().print(table(None, ["input", "value / id", "type", "from run"], rows_for(inputs)))


@click.command("out")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--trust", is_flag=True, help=TRUST_HELP)
def out_cmd(run, as_json, trust):
    """List a run's outputs (leaves of the returned structure)."""
    from ..retention import resolve_run

    with trusting(trust):
        outputs = dict(flatten(terra.out(resolve_run(run))))
    if as_json:
        print_json(clean(outputs))
        return
    rows = [(name, *value_cell(v)[:2]) for name, v in outputs.items()]
    console().print(table(None, ["output", "value / id", "type"], rows))


COMMANDS = (ls_cmd, show_cmd, log_cmd, inp_cmd, out_cmd)
