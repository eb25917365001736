"""The shared training loop and checkpoints."""
