"""A plain static file server for the example page, as a developer would use with a real project.

``python static_server.py --port P --root examples/web --config FILE`` serves ``root`` read-only (GET and
HEAD) and ``/config.js`` from ``FILE`` (re-read on every request, so a test can point the page at another
server between page loads). Nothing in it knows about the functions: the page reaches them cross-origin.
"""

from __future__ import annotations

import argparse
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
    ".json": "application/json",
}


class Handler(SimpleHTTPRequestHandler):
    extensions_map = TYPES
    config: Path

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def send_head(self) -> Any:
        if self.path.split("?", 1)[0] == "/config.js":
            body = self.config.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", TYPES[".js"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)
            return None
        return super().send_head()

    def do_POST(self) -> None:
        self.send_error(405)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    handler = type("ConfiguredHandler", (Handler,), {"config": args.config})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), functools.partial(handler, directory=str(args.root)))
    print(f"static server on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
