"""``terra cat``: summarize a stored value, or write it to a file in its natural format."""

from __future__ import annotations

import json
import os

import click

import terra

from ..errors import PickleRefused, TerraError
from ._common import TRUST_HELP, clean, console, print_json, table

__all__ = ["COMMANDS"]


@click.command("cat")
@click.argument("id_", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the value to FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--trust", is_flag=True, help=TRUST_HELP)
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
    from ..config import overriding

    # An inspection command: looking must not run code, so no pickle loads without --trust.
    with overriding(allow_foreign_pickles=True) if trust else overriding(allow_pickle=False):
        _cat(id_, output, as_json)


def _cat(id_, output, as_json):
    art = terra.get_artifact(id_)
    summary = dict(art.summary)
    if as_json and not output:
        print_json(clean({"id": art.id, "run_id": art.run_id, **summary}))
        return
    out = console()
    rows = [("id", art.id)] + ([("produced by run", art.run_id)] if art.run_id is not None else [])
    rows += [(k, v) for k, v in summary.items()]
    out.print(table(None, ["field", "value"], rows))
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
            out.print("(a pickle: not loaded, since unpickling can run any code; use --trust to load it)")
            return
        out.print(Pretty(value, max_length=20, max_string=400, max_depth=4))


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
        from ..serialize import figure_png

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
            text = json.dumps(clean(value.tolist()), default=str)
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


COMMANDS = (cat_cmd,)
