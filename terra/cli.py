"""The ``terra`` command: thin wrappers that parse, call one library function, and print.

Exit codes (also in ``terra --help``):

    0  success
    1  a check found problems (fsck), a conflict or refusal (rm of a used run,
       a tag that names another run, a busy store), or another terra error
    2  usage: an unknown option, a bad value for an option (click's code)
    3  not found: no such run, tag, task or object, or an ambiguous id prefix

Errors print one line to stderr, never a traceback (``TERRA_DEBUG=1`` shows
one for unexpected errors). Commands that list or report take ``--json``;
times in JSON are ISO 8601 with their zone. ``terra ls``/``show``/``log``
read the store without importing pandas.
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
from ._format import flatten
from .errors import NotFound, TerraError
from .listing import iso_time

__all__ = ["cli", "main"]


# -- plumbing --------------------------------------------------------------------------


def _console(stderr: bool = False):
    from rich.console import Console

    # Pipes and test runners get a wide console: rich would wrap tables at 80 columns.
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, highlight=False, width=None if tty else 200, soft_wrap=not tty)


EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _fail(message: str, code: int) -> None:
    click.echo(f"terra: error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns terra's errors into one line on stderr and an exit code."""

    def invoke(self, ctx):
        # `terra CMD --help` must work without a store: note it before the group's callback runs.
        ctx.meta["terra.help"] = any(a in ("-h", "--help") for a in ctx.args)
        try:
            return super().invoke(ctx)
        except NotFound as e:  # includes AmbiguousPrefix
            _fail(str(e), EXIT_NOT_FOUND)
        except TerraError as e:
            _fail(str(e), EXIT_PROBLEMS)
        except BrokenPipeError:  # `terra ls | head`
            sys.stderr.close()
            sys.exit(EXIT_PROBLEMS)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
            if os.environ.get("TERRA_DEBUG"):
                raise
            _fail(f"unexpected {type(e).__name__}: {e} (TERRA_DEBUG=1 shows the traceback)", EXIT_PROBLEMS)


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


def _when(text: str | None, flag: str):
    """A time option: ISO date/time or an age like ``2d`` (meaning that long ago).

    Raises:
        click.BadParameter: naming ``flag`` (exit code 2).
    """
    if text is None:
        return None
    from .retention import parse_time

    try:  # ISO text parsed here: the library's fallback imports pandas
        return parse_time(_dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        pass
    try:
        return parse_time(text)
    except TerraError as e:
        raise click.BadParameter(str(e), param_hint=flag) from None


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


_EPILOG = """\b
Exit codes: 0 ok; 1 problems found (fsck), a conflict or another error;
2 usage (bad option or value); 3 not found (run, tag, task or object).
"""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EPILOG)
@click.option("--store", "store_path", metavar="PATH", type=click.Path(file_okay=False),
              help="Storage directory (default: TERRA_STORAGE_DIR, TERRA_CONFIG_PATH, or ~/.terra).")
@click.version_option(terra.__version__, prog_name="terra")
@click.pass_context
def cli(ctx, store_path):
    """Find, trace and clean up terra runs and artifacts."""
    if store_path:
        terra.configure(storage_dir=store_path)
    path = terra.get_config().store_path
    needed = ctx.invoked_subcommand not in _NO_STORE_NEEDED and not ctx.meta.get("terra.help")
    if needed and not os.path.isdir(os.path.join(path, "objects.lmdb")):
        raise NotFound(f"no terra store at {path} (use --store PATH or set TERRA_STORAGE_DIR)")


# -- finding things --------------------------------------------------------------------


@cli.command("ls")
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
    from .listing import list_runs

    rows, more = list_runs(task, status, _when(since, "--since"), _when(until, "--until"), tag,
                           limit=None if show_all else limit)
    if as_json:
        _print_json([r.to_json() for r in rows])
        return
    names: dict[str, set] = {}
    for r in rows:
        names.setdefault(r.task, set()).add(r.identity)
    table = [(r.run_id, (r.identity or r.task) if len(names.get(r.task, ())) > 1 else (r.task or "?"),
              r.status, _fmt_time(r.start_time), "" if r.duration is None else f"{r.duration:.2f}s",
              ",".join(r.tags), _kv(r.inputs), _kv(r.outputs), ",".join(map(str, r.parents)))
             for r in rows]
    console = _console()
    if rows:
        console.print(_table(None, ["run", "task", "status", "started", "duration", "tags", "inputs", "outputs",
                                    "inputs from"], table))
    else:
        console.print("no runs match" if (task or status or tag or since or until) else "no runs yet")
    if more:
        console.print(f"... {more} older run{'s' if more != 1 else ''} not shown (-n N or --all to see them)")


def _kv(d: dict, width: int = 60) -> str:
    text = " ".join(f"{k}={_short(v)}" for k, v in d.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@cli.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(run, as_json):
    """Show a run's record: task, status, times, environment, inputs, outputs, lineage."""
    from .retention import resolve_run
    from .listing import run_tags
    from .session import current_store

    store = current_store()
    rid = resolve_run(run)
    meta = _raw_meta(rid)
    with store.refs() as txn:
        consumers = sorted({int.from_bytes(k[15:23], "big") for k, _ in txn.scan(b"edge/p/" + R.rid8(rid))})
    meta["consumers"] = consumers
    meta["tags"] = sorted(run_tags(store).get(rid, []))
    inputs = terra.inp(rid)
    outputs = dict(flatten(terra.out(rid))) if meta.get("status") == "success" else {}
    if as_json:
        for k in ("start_time", "end_time", "expires"):
            if k in meta:
                meta[k] = iso_time(meta[k])
        _print_json(_clean({**meta, "inputs": inputs, "outputs": outputs}))
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
    if inputs:
        console.print(_table("inputs", ["input", "value / id", "type", "from run"], _rows_for(inputs)))
    if outputs:
        console.print(_table("outputs", ["output", "value / id", "type"],
                             [(n, *_value_cell(v)[:2]) for n, v in outputs.items()]))
    err = meta.get("error")
    if err:
        console.print(f"\nerror: {err.get('type')}: {err.get('message')}")
        if err.get("traceback"):
            console.print(err["traceback"].rstrip(), markup=False)


def _raw_meta(rid: int) -> dict:
    """A run's record without its trees: epoch-second times, for formatting here."""
    return {k: v for k, v in terra.get_run(rid).items() if k not in ("inputs", "output", "log", "run_dir_tree")}


def _rows_for(mapping: dict):
    return [(name, *_value_cell(v)) for name, v in mapping.items()]


@cli.command("log")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the run id and its log.")
def log_cmd(run, as_json):
    """Print a run's captured stdout, stderr and logging."""
    from .retention import resolve_run

    rid = resolve_run(run)
    text = terra.get_log(rid)
    if as_json:
        _print_json({"run_id": rid, "log": text})
    else:
        click.echo(text, nl=False)


_TRUST_HELP = "Unpickle values even if they were not written by you (pickles can run any code)."


def _trust(trust: bool):
    """``--trust``: unpickle values not signed by this user, for this command only."""
    from .config import overriding

    return overriding(allow_foreign_pickles=True) if trust else overriding()


@cli.command("inp")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--trust", is_flag=True, help=_TRUST_HELP)
def inp_cmd(run, as_json, trust):
    """List a run's inputs (values, or artifact ids with the run that produced them)."""
    from .retention import resolve_run

    with _trust(trust):
        inputs = terra.inp(resolve_run(run))
    if as_json:
        _print_json(_clean(inputs))
        return
    _console().print(_table(None, ["input", "value / id", "type", "from run"], _rows_for(inputs)))


@cli.command("out")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--trust", is_flag=True, help=_TRUST_HELP)
def out_cmd(run, as_json, trust):
    """List a run's outputs (leaves of the returned structure)."""
    from .retention import resolve_run

    with _trust(trust):
        outputs = dict(flatten(terra.out(resolve_run(run))))
    if as_json:
        _print_json(_clean(outputs))
        return
    rows = [(name, *_value_cell(v)[:2]) for name, v in outputs.items()]
    _console().print(_table(None, ["output", "value / id", "type"], rows))


@cli.command("cat")
@click.argument("id_", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the value to FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--trust", is_flag=True, help=_TRUST_HELP)
def cat_cmd(id_, output, as_json, trust):
    """Summarize the value stored under an id or unique prefix; -o writes it to a file.

    A pickled value is never unpickled (which can run any code) unless
    --trust is given.

    \b
    -o writes the value's natural format, chosen by FILE's suffix:
      numpy array        .npy, .csv/.txt (1-D or 2-D), .json
      pandas frame       .parquet, .csv, .json
      matplotlib figure  .png
      str                .txt (or any other text suffix), .json
      bytes              any suffix but .json (raw bytes)
      dict/list/number   .json
      anything           .pkl/.pickle (a pickle, asked for by name)
    Any other pairing is refused with the suffixes that would work.
    """
    from .config import overriding

    # An inspection command: looking must not run code, so no pickle loads without --trust.
    with overriding(allow_foreign_pickles=True) if trust else overriding(allow_pickle=False):
        _cat(id_, output, as_json)


def _cat(id_, output, as_json):
    from .errors import PickleRefused

    art = terra.get_artifact(id_)
    summary = dict(art.summary)
    if as_json and not output:
        _print_json(_clean({"id": art.id, "run_id": art.run_id, **summary}))
        return
    console = _console()
    rows = [("id", art.id)] + ([("produced by run", art.run_id)] if art.run_id is not None else [])
    rows += [(k, v) for k, v in summary.items()]
    console.print(_table(None, ["field", "value"], rows))
    if output:
        try:
            fmt = _write_artifact(art, str(summary.get("type", "?")), output)
        except PickleRefused as e:
            raise PickleRefused(f"{e}: terra cat unpickles only with --trust") from None
        click.echo(f"wrote {output} ({fmt})")
        return
    if (summary.get("nbytes") or 0) <= 1 << 20:
        from rich.pretty import Pretty

        try:
            value = art.load()
        except PickleRefused:
            console.print("(a pickle: not loaded, since unpickling can run any code; use --trust to load it)")
            return
        console.print(Pretty(value, max_length=20, max_string=400, max_depth=4))


_TEXT = (".txt", ".md", ".log", ".csv", ".tsv", ".html", ".xml", ".yaml", ".yml", ".py", ".rst", "")
_FORMATS = {  # kind -> {suffix: format name}
    "ndarray": {".npy": "npy", ".csv": "csv", ".txt": "text", ".json": "json"},
    "frame": {".parquet": "parquet", ".csv": "csv", ".json": "json"},
    "figure": {".png": "png"},
    "str": {**{s: "text" for s in _TEXT}, ".json": "json"},
    "json": {".json": "json"},
}


def _kind(type_name: str) -> str | None:
    if type_name.endswith("Figure"):
        return "figure"
    if type_name == "numpy.ndarray":
        return "ndarray"
    if type_name in ("pandas.DataFrame", "pandas.Series", "pandas.core.frame.DataFrame",
                     "pandas.core.series.Series"):
        return "frame"
    if type_name == "str":
        return "str"
    if type_name in ("bytes", "bytearray"):
        return "bytes"
    if type_name in ("dict", "list", "tuple", "int", "float", "bool", "NoneType", "None"):
        return "json"
    return None


def _write_artifact(art, type_name: str, path: str) -> str:
    """Write ``art``'s value to ``path`` in the format its type and the suffix call for.

    Raises:
        TerraError: the value cannot be written in that format, or the file cannot be written.
    """
    suffix = os.path.splitext(path)[1].lower()
    kind = _kind(type_name)
    if suffix in (".pkl", ".pickle"):
        fmt = "pickle"
    elif kind == "bytes":
        if suffix == ".json":
            raise TerraError(f"{art.id[:12]} is bytes, which JSON cannot hold: choose another suffix "
                             "(the bytes are written as they are)")
        fmt = "raw bytes"
    elif kind is not None and suffix in _FORMATS[kind]:
        fmt = _FORMATS[kind][suffix]
    else:
        ok = sorted(s for s in _FORMATS.get(kind, {}) if s) + [".pkl"]
        raise TerraError(f"cannot write {art.id[:12]} ({type_name}) as {suffix or 'a file without suffix'}: "
                         f"use -o with one of {', '.join(ok)}")
    if kind == "figure" and fmt == "png":
        from .serialize import figure_png

        data = figure_png(art.store, art.__terra_ref__)
        return _atomic_write(path, lambda f: f.write(data), fmt)
    value = art.load()
    if fmt == "pickle":
        import pickle

        return _atomic_write(path, lambda f: pickle.dump(value, f, protocol=5), fmt)
    if fmt == "raw bytes":
        return _atomic_write(path, lambda f: f.write(bytes(value)), fmt)
    if kind == "str":
        text = json.dumps(value) if fmt == "json" else value
        return _atomic_write(path, lambda f: f.write(text.encode("utf-8")), fmt)
    if kind == "ndarray":
        import numpy as np

        if fmt == "npy":
            return _atomic_write(path, lambda f: np.save(f, value, allow_pickle=False), fmt)
        if fmt == "json":
            if value.dtype.kind not in "biufcUSM?":
                raise TerraError(f"cannot write {art.id[:12]} (an array of {value.dtype}) as JSON; use -o x.npy")
            text = json.dumps(_clean(value.tolist()), default=str)
            return _atomic_write(path, lambda f: f.write(text.encode()), fmt)
        if value.ndim > 2:
            raise TerraError(f"cannot write {art.id[:12]} (a {value.ndim}-D array) as text; use -o x.npy")
        sep = "," if suffix == ".csv" else " "
        return _atomic_write(path, lambda f: np.savetxt(f, np.atleast_1d(value), delimiter=sep, fmt="%s"), fmt)
    if kind == "frame":
        frame = value.to_frame() if hasattr(value, "to_frame") else value
        writers = {"parquet": lambda f: frame.to_parquet(f), "csv": lambda f: f.write(value.to_csv().encode()),
                   "json": lambda f: f.write(value.to_json().encode())}
        return _atomic_write(path, writers[fmt], fmt)
    try:  # kind == "json"
        text = json.dumps(value, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TerraError(f"cannot write {art.id[:12]} as JSON ({e}); use -o x.pkl for a pickle") from None
    return _atomic_write(path, lambda f: f.write(text.encode()), fmt)


def _atomic_write(path: str, write, fmt: str) -> str:
    """Write through a temporary file renamed into place; OSErrors become one clear message."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        if not os.path.isdir(directory):
            raise TerraError(f"cannot write {path}: directory {directory} does not exist")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".terra-cat-")
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it private; give it a new file's usual mode
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise TerraError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return fmt


# -- the web UI ------------------------------------------------------------------------


@cli.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default="a free port",
              help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the store to the network.")
def ui_cmd(port, host):
    """Browse runs, artifacts, lineage and comparisons in a local, read-only web app.

    Prints the URL and serves until interrupted (Ctrl-C); opens no browser.
    """
    from .session import current_store
    from .ui import make_server

    try:
        server = make_server(current_store(), host=host, port=port)
    except OSError as e:
        raise TerraError(f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port)") from None
    click.echo(f"terra ui: serving {terra.get_config().store_path} at {server.url}  (Ctrl-C to stop)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach it can read this store", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# -- lineage -------------------------------------------------------------------------


@cli.command("lineage")
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
        _print_json(data)
    else:
        click.echo({"tree": dag.to_text, "dot": dag.to_dot, "mermaid": dag.to_mermaid}[fmt]())


@cli.command("why")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def why_cmd(ref, as_json):
    """Explain how a run differs from the closest earlier run of its task.

    REF is a run id, a tag, or a task name (its latest run).
    """
    import dataclasses

    result = terra.why(_run_or_task(ref))
    if as_json:
        _print_json({**dataclasses.asdict(result), "reason": result.reason})
    else:
        click.echo(str(result))


def _run_or_task(ref: str) -> int:
    """A run id or tag, else the latest run of the task named ``ref``."""
    from .listing import iter_rows
    from .retention import resolve_run
    from .session import current_store

    try:
        return resolve_run(ref)
    except NotFound:
        if ref.strip().isdigit():
            raise
        for row in iter_rows(current_store(), task=ref):
            return row.run_id
        raise NotFound(f"no run, tag or task {ref!r}") from None


# -- removing and pinning -----------------------------------------------------------


@cli.command("rm")
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
                                 older_than=_when(older_than, "--older-than"))
        if not runs:
            if as_json:
                _print_json({"removed": [], "cascaded": [], "detached": {}, "tags_removed": [], "dry_run": dry_run})
            else:
                click.echo("no runs match")
            return
    from .retention import RemovalRefused

    try:
        result = terra.rm(list(runs), force=force, cascade=cascade, dry_run=dry_run)
    except RemovalRefused as e:
        raise TerraError(_as_flags(str(e))) from None
    if as_json:
        import dataclasses

        _print_json(dataclasses.asdict(result))
    else:
        click.echo(str(result))


@cli.command("tag")
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
        _print_json({"tag": name, "run_id": rid})
    else:
        click.echo(f"tagged run {rid} as {name}")


@cli.command("untag")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def untag_cmd(name, as_json):
    """Remove tag NAME (the run stays)."""
    rid = terra.untag(name)
    if as_json:
        _print_json({"tag": name, "run_id": rid})
    else:
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


def _as_flags(message: str) -> str:
    """The library's advice ("use force", "or cascade") in the command's words (--force, --cascade)."""
    import re

    return re.sub(r"\b(use|or) (force|cascade)\b", r"\1 --\2", message)


# -- maintenance ---------------------------------------------------------------------


@cli.command("gc")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--grace", default="1h", show_default=True,
              help="Keep objects written outside runs more recently than this (30s, 15m, 1h, 2d; "
                   "at least 1m). Runs in progress are protected whatever the grace.")
@click.option("--compact", "do_compact", is_flag=True,
              help="Then rewrite the store file so the space returns to the disk.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gc_cmd(dry_run, grace, do_compact, as_json):
    """Delete objects no run, tag, cache entry or run in progress reaches."""
    import dataclasses

    from .gc import MIN_GRACE
    from .retention import parse_duration

    try:
        grace_s = parse_duration(grace)
    except TerraError as e:
        raise click.BadParameter(str(e), param_hint="--grace") from None
    if grace_s < MIN_GRACE:
        click.echo(f"terra: --grace {grace} is below the safe minimum of {MIN_GRACE:g}s (objects written "
                   f"outside a run have only their age to protect them); using {MIN_GRACE:g}s", err=True)
        grace_s = MIN_GRACE
    with _progress() as cb:
        stats = terra.gc(grace_period=grace_s, dry_run=dry_run, progress=cb)
    compacted = None
    if do_compact and not dry_run:
        with _progress() as cb:
            compacted = terra.compact(progress=cb)
    if as_json:
        _print_json({"gc": dataclasses.asdict(stats),
                     "compact": dataclasses.asdict(compacted) if compacted is not None else None})
        return
    click.echo(str(stats))
    if compacted is not None:
        click.echo(str(compacted))


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
