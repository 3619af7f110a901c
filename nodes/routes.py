"""HTTP route of the caption editor: saves one edited caption back to a metadata.csv the nodes wrote."""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web
from server import PromptServer

from .paths import inside, work_root

logger = logging.getLogger(__name__)


@PromptServer.instance.routes.post("/lora_scripts/caption")
async def save_caption(request: web.Request) -> web.Response:
    from ..lorascripts.data.captions import read_metadata, write_metadata

    body = await request.json()
    path = Path(str(body.get("metadata_path", "")))
    if path.name != "metadata.csv" or not inside(path, work_root()) or not path.is_file():
        return web.json_response({"error": "only captions written by Auto Caption can be edited"}, status=403)
    rows = read_metadata(path)
    file = str(body.get("file", ""))
    if file not in rows:
        return web.json_response({"error": f"{file} is not in {path.name}"}, status=404)
    rows[file] = str(body.get("caption", "")).replace("\r", " ").replace("\n", " ").strip()
    write_metadata(path, rows)
    return web.json_response({"ok": True, "file": file, "caption": rows[file]})
