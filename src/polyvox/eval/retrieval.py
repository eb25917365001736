"""Speech -> text retrieval evaluation, per language, seen vs unseen, and cross-lingual to a pivot language."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch

from polyvox.data.manifest import Utterance
from polyvox.eval.metrics import best_ranks, chance_recall, corpus_bleu, recall_from_ranks
from polyvox.progress import Progress
from polyvox.sysmem import trim_heap

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_all(encode, items: list, langs: list[str], batch_size: int = 64, desc: str = "embedding") -> np.ndarray:
    """Embed items in length-sorted batches with `encode(items, langs)`; returns (N, E) in input order."""
    order = sorted(range(len(items)), key=lambda i: len(items[i]))
    out: list[np.ndarray | None] = [None] * len(items)
    for s in Progress(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[s : s + batch_size]
        vecs = encode([items[i] for i in idx], [langs[i] for i in idx]).float().cpu().numpy()
        for i, v in zip(idx, vecs):
            out[i] = v
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


def _candidates(texts: list[str]) -> tuple[list[str], list[int]]:
    """Unique candidate texts (first-seen order) and each query's gold index into them."""
    index: dict[str, int] = {}
    for t in texts:
        index.setdefault(t, len(index))
    return list(index), [index[t] for t in texts]


def evaluate_retrieval(model, utts: list[Utterance], units: dict[str, list[int]], seen: set[str],
                       pivot: str = "en_us", ks: tuple[int, ...] = (1, 5, 10), batch_size: int = 64) -> dict:
    """Evaluate a dual encoder on test utterances.

    Per language: speech -> transcript R@k against all distinct transcripts of that language; and, where
    utterances carry a `pivot` translation, speech -> pivot-translation R@1 and the BLEU of the retrieved
    translations. Macro averages over seen and unseen languages. ``hits`` keeps, per language, whether each
    query's top hit was right (``R@1``, ``xling_R@1``), for bootstrap intervals over queries.

    Args:
        model: a `DualEncoder` (anything with `encode_speech` and `encode_text`).
        utts: test utterances; those without units (bad audio) are skipped.
        units: utterance id -> unit ids.
        seen: languages that were in the training data.
    """
    model.eval()
    by_lang: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        if u.id in units:
            by_lang[u.lang].append(u)
    per_lang, hits = {}, {}
    for lang in sorted(by_lang):
        us = by_lang[lang]
        speech = embed_all(model.encode_speech, [units[u.id] for u in us], [lang] * len(us), batch_size, f"speech {lang}")
        cands, gold = _candidates([u.text for u in us])
        text = embed_all(model.encode_text, cands, [lang] * len(cands), batch_size, f"text {lang}")
        ranks = best_ranks(speech @ text.T, gold)
        row = {"n": len(us), "candidates": len(cands), "seen": lang in seen,
               **recall_from_ranks(ranks, ks), "chance_R@1": chance_recall(len(cands))}
        hits[lang] = {"R@1": (ranks == 0).astype(int).tolist()}
        pairs = [(i, u.translations[pivot]) for i, u in enumerate(us) if lang != pivot and pivot in u.translations]
        if pairs:
            x_cands, x_gold = _candidates([t for _, t in pairs])
            x_text = embed_all(model.encode_text, x_cands, [pivot] * len(x_cands), batch_size, f"text {pivot}")
            scores = speech[[i for i, _ in pairs]] @ x_text.T
            x_ranks = best_ranks(scores, x_gold)
            row["xling_R@1"] = recall_from_ranks(x_ranks, (1,))["R@1"]
            row["xling_BLEU"] = corpus_bleu([x_cands[j] for j in scores.argmax(1)], [t for _, t in pairs])
            row["xling_candidates"] = len(x_cands)
            hits[lang]["xling_R@1"] = (x_ranks == 0).astype(int).tolist()
        per_lang[lang] = row
        trim_heap()  # batches of every length: hand their freed heap back before the next language
        log.info("%s: %s", lang, "  ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)))
    return {"languages": per_lang, "averages": macro_averages(per_lang), "hits": hits}


def macro_averages(per_lang: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Unweighted means of every numeric metric over seen, unseen and all languages."""
    out = {}
    for group, keep in (("seen", True), ("unseen", False), ("all", None)):
        rows = [r for r in per_lang.values() if keep is None or r["seen"] == keep]
        if not rows:
            continue
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, float)})
        out[group] = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
        out[group]["languages"] = len(rows)
    return out
