"""The WebUI's folders; the test launcher sets WEBUI_STANDIN_ROOT."""

import os

script_path = os.environ.get("WEBUI_STANDIN_ROOT", os.getcwd())
data_path = script_path
models_path = os.path.join(data_path, "models")
