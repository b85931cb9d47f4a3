"""A loopback HTTP file server with Range support, for the fetch tests.

Serves the files under a root folder (URL path = relative path), answers ``Range: bytes=N-`` with
206 and ``Content-Range``, and records every GET (path, Range header). Knobs for the tests:
``drop_after[path] = n`` closes the connection after n body bytes on the next request of that path
(a transient failure); ``fail_with[path] = [503, ...]`` answers the next GETs with those statuses;
``delay_s`` sleeps between 64 KiB chunks (so a download can be killed midway).
Binds 127.0.0.1 on a free port; use as a context manager.
"""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer:
    def __init__(self, root: Path, delay_s: float = 0.0):
        self.root = Path(root)
        self.delay_s = delay_s
        self.drop_after: dict[str, int] = {}
        self.fail_with: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                if body:
                    server.requests.append((path, rng))
                f = server.root / path
                if body and server.fail_with.get(path):
                    self.send_response(server.fail_with[path].pop(0))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if not f.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = f.read_bytes()
                start = 0
                if rng:
                    m = re.fullmatch(r"bytes=(\d+)-", rng)
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                drop = server.drop_after.pop(path, None) if body else None
                pos = start
                while pos < len(data):
                    end = min(pos + 65536, len(data))
                    if drop is not None and end - start >= drop:
                        self.wfile.write(data[pos : start + drop])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(data[pos:end])
                    pos = end
                    if server.delay_s:
                        time.sleep(server.delay_s)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gets(self, path: str) -> list[str | None]:
        """The Range header of every GET of ``path`` (None: no range)."""
        return [r for p, r in self.requests if p == path]

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
