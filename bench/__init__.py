"""The performance benchmark: lora-scripts against other trainers on identical work (`python -m bench.run`)."""
