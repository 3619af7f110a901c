"""What image and text training share: the run loop, events, checkpoints, optimizers, precision."""
