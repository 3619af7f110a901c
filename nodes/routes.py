"""HTTP route of the caption editor: saves one edited caption back to a metadata.csv the nodes wrote.

It is reachable by anyone who can reach the server, so it checks everything: a JSON object of strings, a
small body, a metadata.csv under <output>/lora-scripts/captions/ (symlinks resolved), a file listed in it.
It answers with the saved caption only, never with file contents.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aiohttp import web
from server import PromptServer

from ..lorascripts.errors import LoraScriptsError
from ..lorascripts.host.safety import inside
from .paths import work_root

logger = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
MAX_CAPTION = 8 * 1024


def _refuse(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, str] | web.Response:
    """The request's JSON object with string values, or the error response to send."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _refuse(413, f"the request is larger than {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        return _refuse(413, f"the request is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _refuse(400, "the request must be a JSON object")
    fields = ("metadata_path", "file", "caption")
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in fields):
        return _refuse(400, "send a JSON object with the strings metadata_path, file and caption")
    if any("\0" in body[k] for k in fields) or len(body["caption"]) > MAX_CAPTION:
        return _refuse(400, f"captions are text of at most {MAX_CAPTION} characters")
    return {k: body[k] for k in fields}


@PromptServer.instance.routes.post("/lora_scripts/caption")
async def save_caption(request: web.Request) -> web.Response:
    from ..lorascripts.data.captions import read_metadata, write_metadata

    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    path = Path(body["metadata_path"])
    allowed = work_root() / "captions"
    if (
        not path.is_absolute()
        or path.name != "metadata.csv"
        or not inside(path, allowed)
        or not path.is_file()
    ):
        return _refuse(403, "only captions written by Auto Caption can be edited")
    try:
        rows = read_metadata(path)
        file = body["file"]
        if file not in rows:
            return _refuse(404, f"{file[:200]} is not in {path.name}")
        rows[file] = body["caption"].replace("\r", " ").replace("\n", " ").strip()
        write_metadata(path, rows)
    except LoraScriptsError as exc:
        return _refuse(400, str(exc))
    return web.json_response({"ok": True, "file": file, "caption": rows[file]})
