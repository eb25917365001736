"""Pure metric functions (numpy in, floats out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def recall_at_k(scores: np.ndarray, gold: Sequence[int | Sequence[int]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Fraction of queries with a correct candidate among the k best-scored.

    Args:
        scores: (Q, C) similarity of each query to each candidate (higher is better).
        gold: per query, the index of its correct candidate, or several (all count as correct).
        ks: cut-offs.

    Returns:
        ``{"R@1": …, "R@5": …}``. Ties count against the query, so a collapsed model scores zero.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or len(gold) != scores.shape[0]:
        raise ValueError(f"scores must be (Q, C) with Q = len(gold); got {scores.shape} and {len(gold)} gold entries")
    # rank of the best gold candidate = number of wrong candidates scored at least as high
    best_rank = np.empty(len(gold), dtype=np.int64)
    for q, g in enumerate(gold):
        g = np.atleast_1d(np.asarray(g, dtype=np.int64))
        if len(g) == 0:
            raise ValueError(f"query {q} has no gold candidate")
        wrong = np.ones(scores.shape[1], dtype=bool)
        wrong[g] = False
        best_rank[q] = int((scores[q, wrong] >= scores[q, g].max()).sum())
    return {f"R@{k}": float((best_rank < k).mean()) for k in ks}


def chance_recall(num_candidates: int, k: int = 1, num_gold: int = 1) -> float:
    """Expected R@k of a random ranking with `num_gold` correct among `num_candidates`."""
    if k >= num_candidates:
        return 1.0
    p_miss = 1.0
    for i in range(num_gold):
        p_miss *= (num_candidates - k - i) / (num_candidates - i)
    return 1.0 - max(0.0, p_miss)


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu defaults) of hypotheses against one reference each."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)
