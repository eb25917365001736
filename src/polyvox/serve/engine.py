"""What the server computes: a dual encoder with its speech encoder, the text index it searches, and
optionally a speech LLM. Every method takes and returns a batch, for `Batcher`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechQuery:
    wav: np.ndarray  # (T,) 16 kHz mono
    lang: str


@dataclass(frozen=True)
class TextQuery:
    text: str
    lang: str


@dataclass(frozen=True)
class SearchRequest:
    query: SpeechQuery | TextQuery
    k: int
    margin: int = 0  # > 0: re-rank by ratio margin over this many neighbours


@dataclass(frozen=True)
class GenerateQuery:
    wav: np.ndarray
    prompt: str | tuple[str, str]  # an instruction, or an xP3 (prefix, postfix) pair


class SearchEngine:
    """Loads the models once; the index must have been built with `model`.

    Args:
        model: a trained dual-encoder folder.
        index: an index folder (`polyvox index build`).
        speech_llm: a BLSP or mit checkpoint folder for `generate`, or None.
        max_new_tokens: the generation bound for every answer.
    """

    def __init__(self, model: str | Path, index: str | Path, speech_llm: str | Path | None = None,
                 max_new_tokens: int = 64):
        from polyvox.index import TextIndex, model_fingerprint
        from polyvox.models.dual_encoder import DualEncoder
        from polyvox.recipes.retrieval import encoder_for_units

        self.index = TextIndex.load(index)
        self.fingerprint = model_fingerprint(model)
        self.index.check_model(self.fingerprint)
        self.dual = DualEncoder.load(model).eval()
        tok = self.dual.unit_tokenizer
        self.speech_encoder = encoder_for_units(tok) if tok is not None else None
        self.llm = self.prompt_style = None
        self.max_new_tokens = max_new_tokens
        if speech_llm is not None:
            from polyvox.models.export import read_meta
            from polyvox.models.speech_llm import SpeechLLM

            self.prompt_style = read_meta(speech_llm, "speech-LLM").get("prompt_style", "instruction")
            self.llm = SpeechLLM.load(speech_llm)
        log.info("serving %d texts (%s index), model %s, speech LLM %s", len(self.index), self.index.kind,
                 self.fingerprint[:12], speech_llm)

    @property
    def hears(self) -> bool:
        """Whether speech queries can be embedded (the checkpoint has a unit tokenizer)."""
        return self.speech_encoder is not None

    def embed(self, queries: list[SpeechQuery | TextQuery]) -> np.ndarray:
        """(B, D) embeddings; speech and text queries may be mixed in one batch."""
        import torch

        from polyvox.index import embed_speech

        out = np.zeros((len(queries), self.dual.cfg.proj_dim), dtype=np.float32)
        speech = [i for i, q in enumerate(queries) if isinstance(q, SpeechQuery)]
        text = [i for i, q in enumerate(queries) if isinstance(q, TextQuery)]
        if speech:
            out[speech] = embed_speech(self.dual, [queries[i].wav for i in speech],
                                       [queries[i].lang for i in speech], self.speech_encoder)
        if text:
            with torch.no_grad():
                out[text] = self.dual.encode_text([queries[i].text for i in text],
                                                  [queries[i].lang for i in text]).float().numpy()
        return out

    def search(self, requests: list[SearchRequest]) -> list[list]:
        """The hits of each request: one embedding batch, then one index search for all plain requests."""
        vecs = self.embed([r.query for r in requests])  # (B, D)
        out: list[list] = [[] for _ in requests]
        plain = [i for i, r in enumerate(requests) if r.margin == 0]
        if plain:
            hits = self.index.search(vecs[plain], max(requests[i].k for i in plain))
            for i, h in zip(plain, hits):
                out[i] = h[: requests[i].k]
        for i, r in enumerate(requests):
            if r.margin > 0:
                out[i] = self.index.search_margin(vecs[i : i + 1], r.k, r.margin)[0]
        return out

    def generate(self, queries: list[GenerateQuery]) -> list[str]:
        return self.llm.generate([q.wav for q in queries], [q.prompt for q in queries],
                                 max_new_tokens=self.max_new_tokens)
