"""Host-independent pieces the ComfyUI nodes and the WebUI tab share: child-process training jobs, presets,
fingerprints for reuse, and the WebUI prompt-tag syntax."""
