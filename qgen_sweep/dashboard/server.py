"""The dashboard's local web server: the page, its assets, and two read-only JSON endpoints.

    GET /                      the page (static/index.html)
    GET /static/<name>         its script, style sheet and the vendored chart library
    GET /api/version           {"version": ...}: changes when a row lands (the page polls it)
    GET /api/state             progress, running trials, Table 1, paired table, gap, measures,
                               trials (data.DashboardData.state)
    GET /api/curves?ids=a,b    per-epoch losses of up to 12 trials

Everything it serves ships inside the package (no CDN: the page works offline). It binds to
127.0.0.1 unless told otherwise, answers GET (and HEAD) only, serves only the files listed in
static/, and never writes to the results directory.
"""

from __future__ import annotations

import json
import mimetypes
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from qgen_sweep.dashboard.data import DashboardData
from qgen_sweep.errors import QGenError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# Only this origin's scripts, styles and API (the charts set inline styles on their SVG).
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}


def static_files() -> dict[str, Path]:
    """URL path -> file of every asset the page may load (package data under static/)."""
    root = Path(str(resources.files("qgen_sweep.dashboard") / "static"))
    files = {"/": root / "index.html", "/favicon.ico": root / "favicon.svg"}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "index.html":
            files["/static/" + path.relative_to(root).as_posix()] = path
    return files


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        url = urlsplit(self.path)
        try:
            if url.path in self.server.files:
                self._file(self.server.files[url.path])
            elif url.path == "/api/version":
                self._json({"version": self.server.data.version()})
            elif url.path == "/api/state":
                self._json(self.server.data.state())
            elif url.path == "/api/curves":
                ids = [t for t in parse_qs(url.query).get("ids", [""])[0].split(",") if t]
                self._json(self.server.data.curves(ids))
            else:
                self._json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)
        except QGenError as error:  # bad input, or the store cannot be read right now
            self._json({"error": str(error)}, HTTPStatus.BAD_REQUEST
                       if error.exit_code == 2 else HTTPStatus.SERVICE_UNAVAILABLE)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _file(self, path: Path) -> None:
        body = path.read_bytes()
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
        self._send(body, kind, cache="max-age=3600" if "/vendor/" in str(path) else "no-cache")

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(data, default=str, allow_nan=False).encode()
        self._send(body, "application/json", status=status, cache="no-store")

    def _send(self, body: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK,
              cache: str = "no-cache") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.verbose:
            super().log_message(format, *args)


class DashboardServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer with the dashboard's data and files."""

    daemon_threads = True

    def __init__(self, data: DashboardData, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 verbose: bool = False) -> None:
        self.data, self.verbose = data, verbose
        self.files = static_files()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def start(results_dir: Path | str, host: str = DEFAULT_HOST, port: int = 0) -> DashboardServer:
    """A running server in a background thread (for tests and notebooks); `shutdown()` stops."""
    server = DashboardServer(DashboardData(results_dir), host, port)
    threading.Thread(target=server.serve_forever, name="qgen-dashboard", daemon=True).start()
    return server
