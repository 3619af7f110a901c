"""A self-contained HTML review page of a dataset: thumbnail, caption and flags per image."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from ..fileio import atomic_write_text
from .findings import DatasetReport
from .images import load_image

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
img{max-width:160px;max-height:160px}.flag{display:inline-block;border-radius:4px;padding:1px 6px;margin:1px;font-size:90%}
.error{background:#fdd;color:#900}.warning{background:#ffe9b3;color:#7a5200}.ok{color:#2a7a2a}
"""
# counts the thumbnails that actually decoded, so a reviewer (or a headless-browser test) sees broken pages
SCRIPT = """
window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img.thumb')];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const s = document.getElementById('status');
  s.textContent = ok + ' of ' + imgs.length + ' thumbnails shown';
  s.dataset.loaded = ok;
});
"""


def _thumbnail(path: Path) -> str | None:
    try:
        image = load_image(path)
    except Exception:  # noqa: BLE001 - an unreadable file is shown as such, never breaks the report
        return None
    image.thumbnail((160, 160), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def render_html(report: DatasetReport) -> str:
    rows = []
    for info in report.images:
        thumb = _thumbnail(info.path)
        cell = (
            f'<img class="thumb" src="{thumb}" alt="{html.escape(info.file)}">'
            if thumb
            else "<em>unreadable</em>"
        )
        flags = report.flags_for(info.file)
        badges = (
            "".join(
                f'<span class="flag {f.severity}" data-code="{f.code}">{html.escape(f.message)}</span>'
                for f in flags
            )
            or '<span class="ok">ok</span>'
        )
        caption = html.escape(info.caption) if info.caption is not None else "<em>no caption</em>"
        size = f"{info.size[0]}x{info.size[1]}" if info.size else ""
        rows.append(
            f'<tr data-file="{html.escape(info.file)}"><td>{cell}</td><td>{html.escape(info.file)}<br>{size}</td>'
            f"<td>{caption}</td><td>{badges}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Dataset review</title>"
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
        f"<h1>Dataset review: {html.escape(str(report.root))}</h1>"
        f"<p>{len(report.images)} images, {len(report.errors)} errors, {len(report.warnings)} warnings. "
        "<span id='status'></span></p>"
        "<table><tr><th>image</th><th>file</th><th>caption</th><th>flags</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )


def write_html_report(report: DatasetReport, path: Path) -> Path:
    """Write the review page atomically and return its path."""
    return atomic_write_text(path, render_html(report))
