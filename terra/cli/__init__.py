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

The commands live in modules by concern: :mod:`.lookup` (ls, show, log, inp,
out), :mod:`.cat`, :mod:`.lineage` (lineage, why), :mod:`.retention` (rm, tag,
untag, tags), :mod:`.maintenance` (gc, fsck, du), :mod:`.services` (ui,
notify), :mod:`.remote` (remote, push, pull, clone). Each imports what is
heavy inside its function, so
``terra --help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

import terra

from ..errors import NotFound, TerraError
from .remote import register as _register_remote  # remote, push, pull, clone
from . import cat, lineage, lookup, maintenance, retention, services

__all__ = ["cli", "main"]

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


_NO_STORE_NEEDED = frozenset({"notify", "clone"})

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


for _command in (*lookup.COMMANDS, *cat.COMMANDS, *lineage.COMMANDS, *retention.COMMANDS, *maintenance.COMMANDS,
                 *services.COMMANDS):
    cli.add_command(_command)

_register_remote(cli)


def main(argv=None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="terra")
