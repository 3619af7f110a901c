"""Drive headless Chromium over the DevTools protocol (no extra packages: `websocket-client` is enough)."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from comfy_host import free_port


class Browser:
    """One headless Chromium page."""

    def __init__(self) -> None:
        import websocket

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        assert chromium, "the browser tests need Chromium: `bash dev.sh test` installs it"
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.process = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--remote-debugging-port={self.port}",
                f"--user-data-dir={self.profile}",
                "--window-size=1600,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        target = self._page_target()
        self.ws = websocket.create_connection(
            target["webSocketDebuggerUrl"], timeout=120, suppress_origin=True
        )
        self.ids = itertools.count(1)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _page_target(self, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=5) as r:
                    pages = [t for t in json.loads(r.read()) if t["type"] == "page"]
                if pages:
                    return pages[0]
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError("Chromium did not start")

    def call(self, method: str, **params: Any) -> dict:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120) -> Any:
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"timed out waiting for: {expression}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)
            shutil.rmtree(self.profile, ignore_errors=True)


# gradio (3.41 and 4.x) form helpers: elements are addressed by their elem_id
JS_SET = """
(function(id, value) {
  const el = document.querySelector('#' + id + ' textarea, #' + id + ' input');
  el.value = value;
  el.dispatchEvent(new Event('input', {bubbles: true}));
  el.dispatchEvent(new Event('change', {bubbles: true}));
  el.dispatchEvent(new Event('blur', {bubbles: true}));
  return el.value;
})
"""


def gradio_set(browser: Browser, elem_id: str, value: object) -> None:
    """Type `value` into a gradio textbox / number field."""
    assert browser.evaluate(f"{JS_SET}({json.dumps(elem_id)}, {json.dumps(str(value))})") == str(value)


def gradio_click(browser: Browser, elem_id: str) -> None:
    browser.evaluate(
        f"(document.querySelector('button#{elem_id}') || document.querySelector('#{elem_id} button')).click()"
    )


def gradio_text(elem_id: str) -> str:
    """A JS expression: the text of a gradio textbox."""
    return f"((document.querySelector('#{elem_id} textarea') || {{}}).value || '')"


def webui_load_dataset(browser: Browser, url: str, folder: Path, timeout: float = 180) -> str:
    """Open the WebUI at `url`, type `folder` into the tab's dataset field, press Load; the status line."""
    browser.call("Page.navigate", url=url)
    browser.wait_for("!!document.querySelector('#lora_scripts_dataset')", timeout=timeout)
    gradio_set(browser, "lora_scripts_dataset", folder)
    gradio_click(browser, "lora_scripts_load")
    status = gradio_text("lora_scripts_dataset_status")
    return browser.wait_for(f"{status}.includes('images') && {status}")
