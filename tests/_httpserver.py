"""A real HTTP server on 127.0.0.1 serving test-owned bytes, with Range support that can be
turned off and connections that can be cut after N bytes (to test resuming)."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading


class ServerState:
    """What the server serves and what it was asked; tests change it between requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)  # URL path -> body
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.support_range = True
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before hanging up, first time only
        self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState  # set on the per-server subclass

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        st = self.state
        rng = self.headers.get("Range")
        path = self.path.split("?", 1)[0]
        with st.lock:
            st.requests.append((path, rng))
            drop = st.drop_after.pop(path, None)
        body = st.files.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        status = 200
        if rng and st.support_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if m:
                start = int(m.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        if st.support_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if drop is not None:
            # simulate a dropped connection: send part of the body, then hang up
            self.wfile.write(chunk[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


@contextlib.contextmanager
def serve(files: dict[str, bytes]):
    """Yields (base URL, ServerState) for a server running in a background thread."""
    state = ServerState(files)
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
