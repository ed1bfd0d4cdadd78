"""What the commands share: a rich console, tables, JSON output, a progress bar, option values."""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from contextlib import contextmanager

import click

import terra

from ..errors import TerraError

__all__ = ["TRUST_HELP", "clean", "console", "fmt_size", "fmt_time", "print_json", "progress",
           "rows_for", "table", "trusting", "value_cell", "when"]


# -- printing --------------------------------------------------------------------------


def console(stderr: bool = False):
    """A rich console on stdout (or stderr); pipes get a wide one instead of 80 columns."""
    from rich.console import Console

    # Pipes and test runners get a wide console: rich would wrap tables at 80 columns.
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, highlight=False, width=None if tty else 200, soft_wrap=not tty)


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


def print_json(data) -> None:
    """Print ``data`` as indented JSON; artifacts, bytes, times and numpy values made plain."""
    click.echo(json.dumps(data, default=_jsonable, indent=2))


def clean(v):
    """Plain JSON types (NaN -> None) for json.dumps, which would write NaN."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


@contextmanager
def progress():
    """A progress callback drawing a rich bar on a terminal; None otherwise."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        tasks: dict[str, int] = {}

        def callback(phase: str, done: int, total):
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield callback


def fmt_time(t) -> str:
    """Epoch seconds (or a pandas Timestamp) as local ``YYYY-MM-DD HH:MM:SS``; blank for none."""
    if t is None or t != t:
        return ""
    if hasattr(t, "tz_convert"):
        t = t.timestamp()
    return _dt.datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")


def fmt_size(n) -> str:
    """A byte count for people (``1.5 MB``)."""
    from .._format import human_size

    return human_size(n or 0)


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
        bits.append(fmt_size(s["nbytes"]))
    return " ".join(bits)


def value_cell(v) -> tuple[str, str, str]:
    """(value or id, description, producing run) for a table row."""
    if isinstance(v, terra.Artifact):
        return v.id[:12], _describe(v), "" if v.run_id is None else str(v.run_id)
    text = repr(v)
    return (text if len(text) <= 80 else text[:77] + "..."), type(v).__name__, ""


def rows_for(mapping: dict):
    """Table rows (name, value or id, type, from run) for a run's inputs."""
    return [(name, *value_cell(v)) for name, v in mapping.items()]


def table(title: str | None, columns, rows):
    """A borderless rich table whose cells fold rather than truncate."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    return t


# -- option values ---------------------------------------------------------------------


def when(text: str | None, flag: str):
    """A time option: ISO date/time or an age like ``2d`` (meaning that long ago).

    Raises:
        click.BadParameter: naming ``flag`` (exit code 2).
    """
    if text is None:
        return None
    from ..retention import parse_time

    try:  # ISO text parsed here: the library's fallback imports pandas
        return parse_time(_dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        pass
    try:
        return parse_time(text)
    except TerraError as e:
        raise click.BadParameter(str(e), param_hint=flag) from None


TRUST_HELP = "Unpickle values even if they were not written by you (pickles can run any code)."


def trusting(trust: bool):
    """``--trust``: unpickle values not signed by this user, for this command only."""
    from ..config import overriding

    return overriding(allow_foreign_pickles=True) if trust else overriding()
