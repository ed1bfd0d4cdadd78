"""``terra ui``: a read-only local web app over a store (runs, run pages, artifacts, lineage, compare).

The standard library's ``ThreadingHTTPServer`` serves server-rendered pages
(:mod:`terra.ui.pages`); nothing is built with Node and nothing is written.
It listens on 127.0.0.1 unless a host is given explicitly, and answers only
requests addressed to the host it listens on (a page elsewhere cannot reach
it through a rebinding DNS name). Values are previewed only when no stored
code would run to decode them.
"""

from __future__ import annotations

import re
import sys
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ..errors import NotFound, TerraError

__all__ = ["UIServer", "make_server"]

_ROUTES = [
    (re.compile(r"^/$"), "runs"),
    (re.compile(r"^/run/(?P<ref>[^/]+)$"), "run"),
    (re.compile(r"^/artifact/(?P<ref>[0-9a-fA-F]{4,32})$"), "artifact"),
    (re.compile(r"^/artifact/(?P<ref>[0-9a-fA-F]{4,32})/download$"), "download"),
    (re.compile(r"^/artifact/(?P<ref>[0-9a-fA-F]{4,32})/png$"), "png"),
    (re.compile(r"^/lineage/(?P<ref>[^/]+)$"), "lineage"),
    (re.compile(r"^/compare$"), "compare"),
]


class UIServer(ThreadingHTTPServer):
    """The HTTP server of ``terra ui``; ``url`` is where it listens."""

    daemon_threads = True

    def __init__(self, store, host: str, port: int):
        self.store = store
        super().__init__((host, port), _Handler)
        host_name, port_no = self.server_address[:2]
        shown = f"[{host_name}]" if ":" in host_name else host_name
        self.url = f"http://{shown}:{port_no}/"
        # Requests must name the address we listen on (or localhost): defeats DNS rebinding.
        self.allowed_hosts = {f"{shown}:{port_no}", f"localhost:{port_no}", f"127.0.0.1:{port_no}"}
        self.any_host = host not in ("127.0.0.1", "localhost", "::1")


def make_server(store=None, host: str = "127.0.0.1", port: int = 0) -> UIServer:
    """A server over ``store`` (default: the configured one); port 0 picks a free port.

    Call ``serve_forever()`` on it (or run it in a thread) and read ``url``.
    """
    if store is None:
        from ..session import current_store

        store = current_store()
    return UIServer(store, host, port)


class _Handler(BaseHTTPRequestHandler):
    server: UIServer
    server_version = "terra-ui"

    def log_message(self, fmt, *args):  # quiet: one line per error only
        pass

    def do_HEAD(self):
        self._handle(head=True)

    def do_GET(self):
        self._handle(head=False)

    def _refuse(self):
        self._send(405, "text/plain; charset=utf-8", b"terra ui is read-only\n", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _handle(self, head: bool) -> None:
        from . import pages

        host = self.headers.get("Host", "")
        if not self.server.any_host and host not in self.server.allowed_hosts:
            self._send(421, "text/plain; charset=utf-8", b"unexpected Host header\n", head=head)
            return
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        store = self.server.store
        try:
            for pattern, name in _ROUTES:
                m = pattern.match(url.path)
                if m:
                    break
            else:
                raise NotFound(f"no page at {url.path}")
            ref = m.groupdict().get("ref")
            if name == "download":
                data, media, filename = pages.artifact_bytes(store, ref)
                self._send(200, media, data, head=head,
                           extra={"Content-Disposition": f'attachment; filename="{filename}"'})
                return
            if name == "png":
                self._send(200, "image/png", pages.figure_bytes(store, ref), head=head)
                return
            body = {
                "runs": lambda: pages.runs_page(store, q),
                "run": lambda: pages.run_page(store, ref, q),
                "artifact": lambda: pages.artifact_page(store, ref),
                "lineage": lambda: pages.lineage_page(store, ref, q),
                "compare": lambda: pages.compare_page(store, q),
            }[name]()
            self._send(200, "text/html; charset=utf-8", body.encode(), head=head)
        except NotFound as ex:
            self._send(404, "text/html; charset=utf-8", pages.not_found_page(str(ex)).encode(), head=head)
        except TerraError as ex:
            status = 400 if isinstance(ex, pages.BadRequest) else 500
            self._send(status, "text/html; charset=utf-8",
                       pages.page("error", f"<h1>Cannot show this</h1><p class=bad>{pages.e(str(ex))}</p>").encode(),
                       head=head)
        except Exception as ex:  # noqa: BLE001 - one failing page must not stop the server
            traceback.print_exc(file=sys.stderr)
            self._send(500, "text/html; charset=utf-8",
                       pages.page("error", f"<h1>Internal error</h1><p class=bad>{pages.e(type(ex).__name__)}: "
                                           f"{pages.e(str(ex))}</p>").encode(), head=head)

    def _send(self, status: int, media: str, data: bytes, head: bool = False, extra: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", media)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; img-src 'self'")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
