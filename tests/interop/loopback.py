"""A loopback HTTP server (127.0.0.1, a free port) over a folder, for download tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class LoopbackServer:
    """Serves the files of `root`; records each GET path; `/truncated.bin` lies about its size."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/truncated.bin":
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b"only a part")
                    return
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, name: str) -> str:
        """The URL of `root/name`."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/{name}"


@contextlib.contextmanager
def serve(root: Path) -> Iterator[LoopbackServer]:
    """Run a LoopbackServer over `root` for the duration of the block."""
    root.mkdir(parents=True, exist_ok=True)
    server = LoopbackServer(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
