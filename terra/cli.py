"""The ``terra`` command: thin wrappers that parse, call one library function, and print.

Exit codes: 0 success; 1 a terra error (refused removal, busy store...) or
problems found by ``fsck``; 2 a bad reference (unknown run, tag or id,
ambiguous prefix) or bad usage. Errors print one line to stderr, never a
traceback. Listing commands take ``--json`` for scripts; long operations
show a progress bar when stderr is a terminal.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
from contextlib import contextmanager

import click

import terra

from . import runs as R
from .errors import NotFound, TerraError

__all__ = ["cli", "main"]


# -- plumbing --------------------------------------------------------------------------


def _console(stderr: bool = False):
    from rich.console import Console

    # Pipes and test runners get a wide console: rich would wrap tables at 80 columns.
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, highlight=False, width=None if tty else 200, soft_wrap=not tty)


def _fail(message: str, code: int) -> None:
    click.echo(f"terra: error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns terra's errors into one line on stderr and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NotFound as e:  # includes AmbiguousPrefix
            _fail(str(e), 2)
        except TerraError as e:
            _fail(str(e), 1)
        except BrokenPipeError:  # `terra ls | head`
            sys.stderr.close()
            sys.exit(1)


def _jsonable(v):
    if isinstance(v, terra.Artifact):
        return {"artifact": v.id, "run_id": v.run_id}
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "isoformat"):
        try:
            return None if v != v else v.isoformat()  # NaT != NaT
        except (TypeError, ValueError):
            return v.isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)


def _print_json(data) -> None:
    click.echo(json.dumps(data, default=_jsonable, indent=2))


def _clean(v):
    """Plain JSON types (NaN -> None) for json.dumps, which would write NaN."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


@contextmanager
def _progress():
    """A progress callback drawing a rich bar on a terminal; None otherwise."""
    console = _console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def callback(phase: str, done: int, total):
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield callback


def _when(text: str | None):
    """A time option: ISO date/time or an age like ``2d`` (meaning that long ago)."""
    if text is None:
        return None
    from .retention import parse_time

    return parse_time(text)


def _fmt_time(t) -> str:
    if t is None or t != t:
        return ""
    if hasattr(t, "tz_convert"):
        t = t.timestamp()
    return _dt.datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_size(n) -> str:
    from ._format import human_size as _size

    return _size(n or 0)


def _describe(art) -> str:
    try:
        s = art.summary
    except Exception as e:  # noqa: BLE001 - shown, not raised
        return f"<unreadable: {type(e).__name__}: {e}>"
    bits = [str(s.get("type", "?"))]
    if s.get("shape") is not None:
        bits.append("x".join(map(str, s["shape"])))
    elif s.get("len") is not None:
        bits.append(f"len {s['len']}")
    if s.get("dtype"):
        bits.append(str(s["dtype"]))
    if s.get("nbytes") is not None:
        bits.append(_fmt_size(s["nbytes"]))
    return " ".join(bits)


def _value_cell(v) -> tuple[str, str, str]:
    """(value or id, description, producing run) for a table row."""
    if isinstance(v, terra.Artifact):
        return v.id[:12], _describe(v), "" if v.run_id is None else str(v.run_id)
    text = repr(v)
    return (text if len(text) <= 80 else text[:77] + "..."), type(v).__name__, ""


def _flatten(value, path: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flatten(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [kv for i, v in enumerate(value) for kv in _flatten(v, f"{path}[{i}]")]
    return [(path or "(output)", value)]


def _table(title: str | None, columns, rows):
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


_NO_STORE_NEEDED = frozenset({"notify", "clone"})

# -- the group -------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_path", metavar="PATH", type=click.Path(file_okay=False),
              help="Storage directory (default: TERRA_STORAGE_DIR, TERRA_CONFIG_PATH, or ~/.terra).")
@click.version_option(terra.__version__, prog_name="terra")
@click.pass_context
def cli(ctx, store_path):
    """Find, trace and clean up terra runs and artifacts."""
    if store_path:
        terra.configure(storage_dir=store_path)
    path = terra.get_config().store_path
    if ctx.invoked_subcommand not in _NO_STORE_NEEDED and not os.path.isdir(os.path.join(path, "objects.lmdb")):
        raise NotFound(f"no terra store at {path} (use --store PATH or set TERRA_STORAGE_DIR)")


# -- finding things --------------------------------------------------------------------


@cli.command("ls")
@click.option("--task", help="Task name, qualified name or module:qualname.")
@click.option("--status", type=click.Choice(R.STATUSES), help="Only runs with this status.")
@click.option("--since", help="Started at or after: ISO date/time, or an age such as 2d, 12h.")
@click.option("--until", help="Started at or before: ISO date/time, or an age.")
@click.option("-n", "--limit", type=int, help="Show at most this many (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls_cmd(task, status, since, until, limit, as_json):
    """List runs, newest first."""
    df = terra.get_runs(task=task, status=status, since=_when(since), until=_when(until), limit=limit)
    if as_json:
        _print_json([_clean(r) for r in df.to_dict("records")])
        return
    rows = [(r.run_id, r.task, r.status, _fmt_time(r.start_time),
             "" if r.duration is None or r.duration != r.duration else f"{r.duration:.2f}s",
             ",".join(map(str, r.parents))) for r in df.itertuples()]
    _console().print(_table(None, ["run", "task", "status", "started", "duration", "inputs from"], rows))


@cli.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(run, as_json):
    """Show a run's record: task, status, times, environment, inputs, outputs, lineage."""
    from .retention import resolve_run, tags

    rid = resolve_run(run)
    meta = terra.get_meta(rid)
    from .session import current_store

    with current_store().refs() as txn:
        consumers = sorted({int.from_bytes(k[15:23], "big") for k, _ in txn.scan(b"edge/p/" + R.rid8(rid))})
    meta["consumers"] = consumers
    meta["tags"] = sorted(n for n, r in tags().items() if r == rid)
    if as_json:
        _print_json(_clean(meta))
        return
    skip = {"code", "versions", "git", "error", "cache_key", "fingerprint", "run_id", "holds", "expires"}
    rows = [("run", rid)]
    for k in ("task", "identity", "status", "start_time", "end_time", "host", "user", "pid"):
        if meta.get(k) is not None:
            v = meta[k]
            rows.append((k, _fmt_time(v) if k.endswith("_time") else v))
    if meta.get("start_time") and meta.get("end_time"):
        rows.append(("duration", f"{meta['end_time'] - meta['start_time']:.3f}s"))
    git = meta.get("git") or {}
    if git.get("commit"):
        rows.append(("git", f"{git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}"))
    if meta.get("versions"):
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items()))))
    rows.append(("inputs from", ", ".join(map(str, meta.get("parents") or [])) or "-"))
    rows.append(("used by", ", ".join(map(str, consumers)) or "-"))
    if meta["tags"]:
        rows.append(("tags", ", ".join(meta["tags"])))
    if meta.get("cache_key"):
        rows.append(("cache key", bytes(meta["cache_key"]).hex()))
    for k, v in sorted(meta.items()):
        if k not in skip and k not in {r[0] for r in rows} and k not in ("parents", "consumers", "has_run_dir",
                                                                            "identity", "module", "fn", "tags"):
            rows.append((k, v))
    console = _console()
    console.print(_table(None, ["field", "value"], rows))
    err = meta.get("error")
    if err:
        console.print(f"\nerror: {err.get('type')}: {err.get('message')}")
        if err.get("traceback"):
            console.print(err["traceback"].rstrip(), markup=False)


def _rows_for(mapping: dict):
    return [(name, *_value_cell(v)) for name, v in mapping.items()]


@cli.command("log")
@click.argument("run")
def log_cmd(run):
    """Print a run's captured stdout, stderr and logging."""
    from .retention import resolve_run

    click.echo(terra.get_log(resolve_run(run)), nl=False)


@cli.command("inp")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inp_cmd(run, as_json):
    """List a run's inputs (values, or artifact ids with the run that produced them)."""
    from .retention import resolve_run

    inputs = terra.inp(resolve_run(run))
    if as_json:
        _print_json(_clean(inputs))
        return
    _console().print(_table(None, ["input", "value / id", "type", "from run"], _rows_for(inputs)))


@cli.command("out")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def out_cmd(run, as_json):
    """List a run's outputs (leaves of the returned structure)."""
    from .retention import resolve_run

    outputs = dict(_flatten(terra.out(resolve_run(run))))
    if as_json:
        _print_json(_clean(outputs))
        return
    rows = [(name, *_value_cell(v)[:2]) for name, v in outputs.items()]
    _console().print(_table(None, ["output", "value / id", "type"], rows))


@cli.command("cat")
@click.argument("id_")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the value to FILE.")
def cat_cmd(id_, output):
    """Summarize the value stored under an id or unique prefix; -o writes it to a file.

    \b
    -o picks the format from the value and the file's suffix:
      bytes -> raw bytes; str -> UTF-8 text
      numpy array -> .npy (np.save), or text for .csv/.txt
      pandas DataFrame/Series -> Parquet, or CSV for .csv, JSON for .json
      .json -> JSON for plain values; .pkl/.pickle -> pickle for anything
      anything else -> pickle
    """
    art = terra.get_artifact(id_)
    console = _console()
    summary = dict(art.summary)
    rows = [("id", art.id)] + ([("produced by run", art.run_id)] if art.run_id is not None else [])
    rows += [(k, v) for k, v in summary.items()]
    console.print(_table(None, ["field", "value"], rows))
    if output:
        fmt = _write_value(art.load(), output)
        click.echo(f"wrote {output} ({fmt})")
        return
    if (summary.get("nbytes") or 0) <= 1 << 20:
        from rich.pretty import Pretty

        console.print(Pretty(art.load(), max_length=20, max_string=400, max_depth=4))


def _write_value(value, path: str) -> str:
    """Write ``value`` to ``path`` in the format ``terra cat -o`` documents; returns the format's name."""
    import pickle

    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".pkl", ".pickle"):
        with open(path, "wb") as f:
            pickle.dump(value, f, protocol=5)
        return "pickle"
    if isinstance(value, (bytes, bytearray, memoryview)):
        with open(path, "wb") as f:
            f.write(bytes(value))
        return "raw bytes"
    if isinstance(value, str):
        with open(path, "w", encoding="utf-8") as f:
            f.write(value)
        return "text"
    mod = type(value).__module__.split(".")[0]
    if mod == "numpy" and hasattr(value, "shape"):
        import numpy as np

        if suffix in (".csv", ".txt"):
            np.savetxt(path, np.atleast_1d(value), delimiter="," if suffix == ".csv" else " ", fmt="%s")
            return "text"
        with open(path, "wb") as f:  # a file object: np.save would append .npy to the name
            np.save(f, value, allow_pickle=False)
        return "npy"
    if mod == "pandas" and hasattr(value, "to_csv"):
        if suffix == ".csv":
            value.to_csv(path)
            return "csv"
        if suffix == ".json":
            value.to_json(path)
            return "json"
        frame = value.to_frame() if hasattr(value, "to_frame") else value
        frame.to_parquet(path)
        return "parquet"
    if suffix == ".json":
        try:
            text = json.dumps(value, indent=2)
        except (TypeError, ValueError):
            pass
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return "json"
    with open(path, "wb") as f:
        pickle.dump(value, f, protocol=5)
    return "pickle"


# -- lineage -------------------------------------------------------------------------


@cli.command("lineage")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["tree", "dot", "mermaid", "json"]), default="tree",
              show_default=True)
@click.option("--downstream", is_flag=True, help="Follow what was derived from REF instead of its sources.")
def lineage_cmd(ref, fmt, downstream):
    """Trace where a run or artifact came from (or, with --downstream, what came of it).

    REF is a run id, a tag, or an artifact id / unique prefix.
    """
    dag = terra.provenance(ref, downstream=downstream)
    if fmt == "json":
        _print_json(dag.to_dict())
    else:
        click.echo({"tree": dag.to_text, "dot": dag.to_dot, "mermaid": dag.to_mermaid}[fmt]())


@cli.command("why")
@click.argument("run")
def why_cmd(run):
    """Explain how a run differs from the closest earlier run of its task."""
    click.echo(str(terra.why(run)))


# -- removing and pinning -----------------------------------------------------------


@cli.command("rm")
@click.argument("runs", nargs=-1)
@click.option("--task", help="Select runs of this task.")
@click.option("--keep-last", type=click.IntRange(min=0), help="Spare the N newest runs of each task.")
@click.option("--failed", is_flag=True, help="Select failed and interrupted runs.")
@click.option("--older-than", help="Select runs started before a date, or older than an age (30d).")
@click.option("--force", is_flag=True, help="Remove runs that others consumed, and tagged runs.")
@click.option("--cascade", is_flag=True, help="Also remove every run downstream of the removed ones.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed.")
def rm_cmd(runs, task, keep_last, failed, older_than, force, cascade, dry_run):
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
                                 older_than=older_than)
        if not runs:
            click.echo("no runs match")
            return
    click.echo(str(terra.rm(list(runs), force=force, cascade=cascade, dry_run=dry_run)))


@cli.command("tag")
@click.argument("run")
@click.argument("name")
@click.option("--force", is_flag=True, help="Move the tag if it names another run.")
def tag_cmd(run, name, force):
    """Pin RUN under NAME (pinned runs survive retention and rm without --force)."""
    rid = terra.tag(run, name, force=force)
    click.echo(f"tagged run {rid} as {name}")


@cli.command("untag")
@click.argument("name")
def untag_cmd(name):
    """Remove tag NAME (the run stays)."""
    rid = terra.untag(name)
    click.echo(f"removed tag {name} (run {rid})")


@cli.command("tags")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tags_cmd(as_json):
    """List tags."""
    from .retention import tags

    t = tags()
    if as_json:
        _print_json(t)
        return
    _console().print(_table(None, ["tag", "run"], sorted(t.items())))


# -- maintenance ---------------------------------------------------------------------


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--grace", default="1h", show_default=True,
              help="Keep objects written more recently than this (30s, 15m, 1h, 2d).")
@click.option("--compact", "do_compact", is_flag=True,
              help="Then rewrite the store file so the space returns to the disk.")
def gc_cmd(dry_run, grace, do_compact):
    """Delete objects no run, tag, cache entry or run in progress reaches."""
    from .retention import parse_duration

    grace_s = parse_duration(grace)
    with _progress() as cb:
        stats = terra.gc(grace_period=grace_s, dry_run=dry_run, progress=cb)
    click.echo(str(stats))
    if do_compact and not dry_run:
        with _progress() as cb:
            click.echo(str(terra.compact(progress=cb)))


@cli.command("fsck")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--repair", is_flag=True, help="Rebuild damaged indexes from the run records (never deletes "
              "a record or object); reports each change.")
def fsck_cmd(as_json, repair):
    """Verify every object, reference and index; exit 1 if anything is damaged."""
    import dataclasses

    with _progress() as cb:
        report = terra.fsck(progress=cb, repair=repair)
    if as_json:
        _print_json({**dataclasses.asdict(report), "ok": report.ok})
    else:
        click.echo(str(report))
    if not report.ok:
        sys.exit(1)


@cli.command("du")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def du_cmd(as_json):
    """Stored size by task, and how much deduplication saves."""
    import dataclasses

    with _progress() as cb:
        u = terra.du(progress=cb)
    if as_json:
        _print_json({**dataclasses.asdict(u), "dedup_ratio": u.dedup_ratio, "garbage_bytes": u.garbage_bytes})
        return
    rows = [(t.task, t.runs, t.objects, _fmt_size(t.bytes)) for t in u.tasks]
    console = _console()
    console.print(_table(None, ["task", "runs", "objects", "size"], rows))
    console.print(f"\nstored: {u.objects} objects, {_fmt_size(u.bytes)}"
                  + (f" (file {_fmt_size(u.file_bytes)})" if u.file_bytes is not None else ""))
    console.print(f"reachable from runs: {u.reachable_objects} objects, {_fmt_size(u.reachable_bytes)}; "
                  f"unreachable: {_fmt_size(u.garbage_bytes)}")
    console.print(f"dedup ratio: {u.dedup_ratio:.2f}x ({_fmt_size(u.logical_bytes)} if every run "
                  "stored its own copy)")


@cli.group("notify")
def notify_group():
    """Slack notifications."""


@notify_group.command("test")
def notify_test_cmd():
    """Send a test message to the configured Slack channel; report success or Slack's error."""
    from .notify import send_test

    click.echo(send_test())


from .remote.cli import register as _register_remote  # noqa: E402 - remote, push, pull, clone

_register_remote(cli)


def main(argv=None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="terra")


if __name__ == "__main__":
    main()
