"""A stand-in for the Hugging Face Hub's file endpoint on 127.0.0.1, serving files the way the Hub does
(`HEAD`/`GET /<repo>/resolve/<revision>/<file>` with `ETag`, `X-Repo-Commit` and `Content-Length`), so that
huggingface_hub's real download code runs against it through `HF_ENDPOINT`."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "0" * 39 + "1"


class HubStandin:
    """Serves `files` ({repo: {name: bytes}}); `requests` records every path asked for."""

    def __init__(self, files: dict[str, dict[str, bytes]]) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet test output
                pass

            def _answer(self, body: bool) -> None:
                path = unquote(self.path.split("?")[0]).lstrip("/")
                standin.requests.append((self.command, path))
                repo, _, rest = path.partition("/resolve/")
                repo_files = standin.files.get(repo)
                name = rest.partition("/")[2]
                if repo_files is None or name not in repo_files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound" if repo_files else "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = repo_files[name]
                self.send_response(200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
