"""Data layer: manifests, languages, corpus sources, TTS and splits."""
