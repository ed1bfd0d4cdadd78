"""Optional services: the ``terra ui`` web app and ``terra notify`` (Slack)."""

from __future__ import annotations

import click

import terra

from ..errors import TerraError

__all__ = ["COMMANDS"]


@click.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default="a free port",
              help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback exposes the store to the network.")
def ui_cmd(port, host):
    """Browse runs, artifacts, lineage and comparisons in a local, read-only web app.

    Prints the URL and serves until interrupted (Ctrl-C); opens no browser.
    """
    from ..session import current_store
    from ..ui import make_server

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


@click.group("notify")
def notify_group():
    """Slack notifications."""


@notify_group.command("test")
def notify_test_cmd():
    """Send a test message to the configured Slack channel; report success or Slack's error."""
    from ..notify import send_test

    click.echo(send_test())


COMMANDS = (ui_cmd, notify_group)
