"""Models: sources (offline presets), speech encoder, audio units, dual encoder."""
