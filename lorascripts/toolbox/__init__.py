"""After training: inspect, self-test, resize, merge, extract and convert LoRA files (`python -m lorascripts lora`)."""
