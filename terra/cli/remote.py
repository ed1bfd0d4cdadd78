"""The ``terra remote``, ``push``, ``pull`` and ``clone`` commands (the code is in :mod:`terra.remote`)."""

from __future__ import annotations

import json

import click

from ._common import progress

__all__ = ["register"]


def _run(fn, as_json: bool, **kw):
    with progress() as cb:
        result = fn(progress=cb, **kw)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.summary())
    return result


def _split(store, args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """``[REMOTE] [RUNS...]``: the first word is the remote when it names one (or is a URL)."""
    from ..remote.config import remotes

    if args and ("://" in args[0] or args[0] in remotes(store)):
        return args[0], list(args[1:])
    return None, list(args)


@click.group("remote")
def remote_group():
    """Configure remotes: object storage where runs are shared (kept in the store, never credentials)."""


@remote_group.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--default", "default", is_flag=True, help="Make it the default remote.")
def remote_add(name, url, default):
    """Add remote NAME at URL (s3://bucket/prefix, gs://, az://, file:///path, memory://)."""
    from ..remote.config import add_remote

    add_remote(name, url, default=default)


@remote_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def remote_list(as_json):
    """Configured remotes; the default is starred."""
    from ..remote.config import default_remote, remotes

    rs, default = remotes(), default_remote()
    if as_json:
        click.echo(json.dumps([{"name": n, "url": u, "default": n == default} for n, u in rs.items()], indent=2))
        return
    for n, u in rs.items():
        click.echo(f"{'*' if n == default else ' '} {n}\t{u}")


@remote_group.command("remove")
@click.argument("name")
def remote_remove(name):
    """Forget remote NAME (nothing on the remote changes)."""
    from ..remote.config import remove_remote

    remove_remote(name)


@click.command("push")
@click.argument("args", nargs=-1)
@click.option("--tag", help="Push the run this tag names, and the tag.")
@click.option("--all", "all_", is_flag=True, help="Push every finished run.")
@click.option("--force", is_flag=True, help="Move the remote tag even if it names a run not pulled here.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def push_cmd(args, tag, all_, force, as_json):
    """Upload runs, their ancestry and artifacts: terra push [REMOTE] [RUNS... | --tag T | --all]."""
    from ..session import current_store
    from ..remote.push import push

    remote, runs = _split(current_store(), args)
    _run(push, as_json, runs=runs or None, remote=remote, tag=tag, all=all_, force=force)


@click.command("pull")
@click.argument("args", nargs=-1)
@click.option("--tag", help="Pull the run this remote tag names (and set the tag here).")
@click.option("--all", "all_", is_flag=True, help="Pull every run of the remote.")
@click.option("--records-only", is_flag=True, help="Leave bulk data on the remote; loads fetch it on demand.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def pull_cmd(args, tag, all_, records_only, as_json):
    """Fetch runs with their ancestry: terra pull [REMOTE] [RECORD-IDS... | --tag T | --all]."""
    from ..session import current_store
    from ..remote.pull import pull

    remote, runs = _split(current_store(), args)
    _run(pull, as_json, runs=runs or None, remote=remote, tag=tag, all=all_, records_only=records_only)


@click.command("clone")
@click.argument("url")
@click.argument("path", required=False)
@click.option("--records-only", is_flag=True, help="Leave bulk data on the remote; loads fetch it on demand.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def clone_cmd(url, path, records_only, as_json):
    """Make a new store (PATH, default the configured one) holding every run of URL."""
    import terra

    from ..remote import clone

    _run(clone, as_json, url=url, path=path or terra.get_config().store_path, records_only=records_only)


def register(cli: click.Group) -> None:
    """Add the remote commands to the ``terra`` group."""
    for cmd in (remote_group, push_cmd, pull_cmd, clone_cmd):
        cli.add_command(cmd)
