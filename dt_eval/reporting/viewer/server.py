"""A local server for the viewer page: `/` is the page, `/audio/N` the N-th audio file the runs'
records name (nothing else on disk is reachable: the URL holds an index, never a path). It listens
on 127.0.0.1 only and answers only requests addressed to it by that name (a DNS-rebinding page
cannot read it)."""

from __future__ import annotations

import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dt_eval.reporting.viewer.page import Page, audio_mime

HOST = "127.0.0.1"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class ViewServer:
    def __init__(self, page: Page, port: int = 0) -> None:
        body = page.html.encode("utf-8")
        audio = list(page.audio)

        class Handler(BaseHTTPRequestHandler):
            server_version = "dt-eval-view"
            sys_version = ""

            def log_message(self, format: str, *args: object) -> None:  # quiet: no access log
                pass

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                port = self.server.server_address[1]
                if self.headers.get("Host") not in (f"{HOST}:{port}", f"localhost:{port}"):
                    return self._plain(HTTPStatus.FORBIDDEN, "wrong Host", head)
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    return self._send(HTTPStatus.OK, "text/html; charset=utf-8", body, head)
                m = re.fullmatch(r"/audio/(\d{1,9})", path)
                if m and int(m.group(1)) < len(audio) and audio[int(m.group(1))].is_file():
                    return self._file(audio[int(m.group(1))], head)
                self._plain(HTTPStatus.NOT_FOUND, "not found", head)

            def _file(self, file: Path, head: bool) -> None:
                data = file.read_bytes()
                m = _RANGE.match(self.headers.get("Range") or "")
                if not m or not (m.group(1) or m.group(2)):
                    return self._send(HTTPStatus.OK, audio_mime(file), data, head)
                size = len(data)
                if m.group(1):
                    start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else size - 1
                else:  # "bytes=-N": the last N bytes
                    start, end = max(0, size - int(m.group(2))), size - 1
                end = min(end, size - 1)
                if start > end:
                    self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._send(HTTPStatus.PARTIAL_CONTENT, audio_mime(file), data[start:end + 1], head,
                           {"Content-Range": f"bytes {start}-{end}/{size}"})

            def _plain(self, status: HTTPStatus, text: str, head: bool) -> None:
                self._send(status, "text/plain; charset=utf-8", text.encode(), head)

            def _send(self, status: HTTPStatus, ctype: str, data: bytes, head: bool,
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Accept-Ranges", "bytes")
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(data)

        self.httpd = ThreadingHTTPServer((HOST, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/"

    def start(self) -> ViewServer:
        """Serve from a background thread (tests); `serve_forever` blocks instead (the CLI)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="dt-eval-view", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ViewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
