"""What the vision-language captioners are asked: one instruction per preset (torch-free, for the command
line and the host forms' choice lists)."""

from __future__ import annotations

SYSTEM_PROMPT = "You are a helpful image captioner."
_DIRECT = " Start directly with the description, never with phrases such as 'The image shows'."
PRESETS = {
    "long": "Write a long descriptive caption for this image in a formal tone." + _DIRECT,
    "short": "Write a one-sentence caption for this image." + _DIRECT,
    "style": "Describe the visual style of this image: medium, technique, colour palette, lighting and "
    "composition, and name what it shows in a few words." + _DIRECT,
    "character": "Describe the character in this image: build, face, hair, eyes, clothing, pose and "
    "expression. Do not describe the background." + _DIRECT,
    "tags": "Write a list of Booru-like tags for this image, comma-separated, most important first. "
    "Write nothing but the tags.",
}
