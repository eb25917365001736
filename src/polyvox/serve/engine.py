"""What the server computes: a dual encoder with its speech encoder, the text index it searches, and
optionally a speech LLM. Every method takes and returns a batch, for `Batcher`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from polyvox.index import IndexedText, TextIndex, embed_items, embed_speech, model_fingerprint
from polyvox.models.asr import Transcriber
from polyvox.models.dual_encoder import DualEncoder
from polyvox.models.speech_llm import SpeechLLM
from polyvox.models.units import encoder_for_units

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeechQuery:
    wav: np.ndarray  # (T,) 16 kHz mono
    lang: str | None  # None: detected from the speech
    lang_probability: float | None = None  # of a detected language


@dataclass(frozen=True)
class TextQuery:
    text: str
    lang: str


@dataclass(frozen=True)
class SearchRequest:
    query: SpeechQuery | TextQuery
    k: int
    margin: int = 0  # > 0: re-rank by ratio margin over this many neighbours
    langs: frozenset[str] | None = None  # only hits in these languages


@dataclass(frozen=True)
class GenerateQuery:
    wav: np.ndarray
    prompt: str | tuple[str, str]  # an instruction, or an xP3 (prefix, postfix) pair


class SearchEngine:
    """Loads the models once; the index must have been built with `model`.

    Args:
        model: a trained dual-encoder folder; None: the one the index records.
        index: an index folder (`polyvox index build`).
        speech_llm: a BLSP or mit checkpoint folder for `generate`, or None.
        max_new_tokens: the generation bound for every answer.
    """

    def __init__(self, model: str | Path | None, index: str | Path, speech_llm: str | Path | None = None,
                 max_new_tokens: int = 64):
        self.index = TextIndex.load(index)
        model = self.index.model_dir(model)
        self.fingerprint = model_fingerprint(model)
        self.index.check_model(self.fingerprint)
        self.dual = DualEncoder.load(model).eval()
        self._encoder = self._lid = None  # the speech encoder, and Whisper for language detection: loaded when needed
        self.llm = None
        self.max_new_tokens = max_new_tokens
        if speech_llm is not None:
            self.llm = SpeechLLM.load(speech_llm)
        log.info("serving %d texts (%s index), model %s, speech LLM %s", len(self.index), self.index.kind,
                 self.fingerprint[:12], speech_llm)

    @property
    def hears(self) -> bool:
        """Whether speech queries can be embedded (the checkpoint has a unit tokenizer)."""
        return self.dual.unit_tokenizer is not None

    @property
    def speech_encoder(self):
        if self._encoder is None:
            self._encoder = encoder_for_units(self.dual.unit_tokenizer)
        return self._encoder

    def with_languages(self, queries: list[SpeechQuery | TextQuery]) -> list[SpeechQuery | TextQuery]:
        """The queries with the language of speech queries that have none detected by Whisper (the speech
        encoder the unit tokenizer was fitted on, with its decoder)."""
        unknown = [i for i, q in enumerate(queries) if q.lang is None]
        if not unknown:
            return queries
        if self._lid is None:
            self._lid = Transcriber(self.dual.unit_tokenizer.spec.encoder)
        found = self._lid.detect_language([queries[i].wav for i in unknown])
        queries = list(queries)
        for i, (lang, p) in zip(unknown, found):
            queries[i] = replace(queries[i], lang=lang, lang_probability=p)
        return queries

    def embed(self, queries: list[SpeechQuery | TextQuery]) -> list[tuple[SpeechQuery | TextQuery, np.ndarray]]:
        """Each query (its language detected where it had none) and its (D,) embedding; speech and text
        queries may be mixed in one batch."""
        queries = self.with_languages(queries)
        out = np.zeros((len(queries), self.dual.embed_dim), dtype=np.float32)  # (B, D)
        speech = [i for i, q in enumerate(queries) if isinstance(q, SpeechQuery)]
        text = [i for i, q in enumerate(queries) if isinstance(q, TextQuery)]
        if speech:
            out[speech] = embed_speech(self.dual, [queries[i].wav for i in speech],
                                       [queries[i].lang for i in speech], self.speech_encoder)
        if text:
            items = [IndexedText(str(i), queries[i].text, queries[i].lang) for i in text]
            out[text] = embed_items(self.dual, items, batch_size=len(items), progress=False)
        return list(zip(queries, out))

    def search(self, requests: list[SearchRequest]) -> list[tuple[SpeechQuery | TextQuery, list]]:
        """Each request's query (language detected where needed) and hits: one embedding batch, then one
        index search for all plain requests with the same language filter."""
        queries, vecs = zip(*self.embed([r.query for r in requests]))
        vecs = np.stack(vecs)  # (B, D)
        out: list[list] = [[] for _ in requests]
        plain: dict[frozenset[str] | None, list[int]] = {}
        for i, r in enumerate(requests):
            if r.margin > 0:
                out[i] = self.index.search_margin(vecs[i : i + 1], r.k, r.margin, langs=r.langs)[0]
            else:
                plain.setdefault(r.langs, []).append(i)
        for langs, rows in plain.items():
            hits = self.index.search(vecs[rows], max(requests[i].k for i in rows), langs)
            for i, h in zip(rows, hits):
                out[i] = h[: requests[i].k]
        return list(zip(queries, out))

    def generate(self, queries: list[GenerateQuery]) -> list[str]:
        return self.llm.generate([q.wav for q in queries], [q.prompt for q in queries],
                                 max_new_tokens=self.max_new_tokens)
