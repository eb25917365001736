"""Pure metric functions: retrieval recall, BLEU and chrF, WER and CER, accuracy."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence

import numpy as np


def best_ranks(scores: np.ndarray, gold: Sequence[int | Sequence[int]]) -> np.ndarray:
    """(Q,) 0-based rank of each query's best gold candidate: the number of wrong candidates scored at least
    as high (ties count against the query, so a collapsed model ranks everything last)."""
    scores = np.asarray(scores)
    if scores.ndim != 2 or len(gold) != scores.shape[0]:
        raise ValueError(f"scores must be (Q, C) with Q = len(gold); got {scores.shape} and {len(gold)} gold entries")
    ranks = np.empty(len(gold), dtype=np.int64)
    for q, g in enumerate(gold):
        g = np.atleast_1d(np.asarray(g, dtype=np.int64))
        if len(g) == 0:
            raise ValueError(f"query {q} has no gold candidate")
        wrong = np.ones(scores.shape[1], dtype=bool)
        wrong[g] = False
        ranks[q] = int((scores[q, wrong] >= scores[q, g].max()).sum())
    return ranks


def recall_at_k(scores: np.ndarray, gold: Sequence[int | Sequence[int]], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Fraction of queries with a correct candidate among the k best-scored.

    Args:
        scores: (Q, C) similarity of each query to each candidate (higher is better).
        gold: per query, the index of its correct candidate, or several (all count as correct).
        ks: cut-offs.

    Returns:
        ``{"R@1": …, "R@5": …}``. Ties count against the query, so a collapsed model scores zero.
    """
    return recall_from_ranks(best_ranks(scores, gold), ks)


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``{"R@k": …}`` from the 0-based best-gold ranks of `best_ranks`."""
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


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


def normalize_text(text: str) -> str:
    """Language-agnostic normalisation for scoring: NFKC, casefold, punctuation and symbols to spaces.

    Characters of Unicode categories ``P*`` (punctuation) and ``S*`` (symbols) become spaces, then runs of
    whitespace collapse to one space and the ends are stripped. Letters, marks and digits of every script
    are kept, so ``"Hello, World!"`` and ``"hello world"`` compare equal in any language.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join(text.split())


def _scored_pairs(refs: Sequence[str], hyps: Sequence[str]) -> tuple[list[str], list[str]]:
    """Normalised (reference, hypothesis) pairs, leaving out references that normalise to nothing."""
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses")
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(refs, hyps)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("no reference with any word left after normalisation")
    return [r for r, _ in pairs], [h for _, h in pairs]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate on normalised text: (S + D + I) / reference words, over all pairs.

    An empty hypothesis counts as deleting every reference word (WER 1 for that pair). References that
    normalise to nothing (punctuation only) are left out, as they have no words to recognise.
    """
    import jiwer

    r, h = _scored_pairs(refs, hyps)
    return float(jiwer.wer(r, h))


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus character error rate on normalised text: (S + D + I) / reference characters, over all pairs.

    Characters include the single spaces left between words by `normalize_text` (jiwer's convention), so
    a wrong word split costs one edit. It is the meaningful rate for scripts written without spaces.
    """
    import jiwer

    r, h = _scored_pairs(refs, hyps)
    return float(jiwer.cer(r, h))


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2) on a 0–100 scale, one reference each."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} references")
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def accuracy(pred: Sequence[object], gold: Sequence[object]) -> float:
    """Fraction of predictions equal to their gold value."""
    if len(pred) != len(gold):
        raise ValueError(f"got {len(pred)} predictions but {len(gold)} gold values")
    if not gold:
        raise ValueError("accuracy of an empty set is undefined")
    return sum(p == g for p, g in zip(pred, gold)) / len(gold)


def bootstrap_macro(hits: dict[str, Sequence[float]], n: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """Macro mean over groups (languages) of per-item scores, with a percentile bootstrap interval.

    Items are resampled with replacement within each group, so every language keeps its weight.

    Args:
        hits: group -> per-item scores (e.g. 1.0 where a query's top hit is right, else 0.0).
        n: bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the interval.

    Returns:
        (macro mean, lower bound, upper bound).
    """
    groups = [np.asarray(v, dtype=np.float64) for v in hits.values() if len(v)]
    return _bootstrap(groups, lambda x: x.mean(-1), n, seed, level)


def _bootstrap(groups: list[np.ndarray], score: Callable[[np.ndarray], np.ndarray], n: int, seed: int,
               level: float) -> tuple[float, float, float]:
    """Macro mean of `score` over groups and its percentile interval, resampling each group's items (axis 0)
    `n` times; `score` maps items (..., N[, K]) to one value per leading index."""
    if not groups:
        raise ValueError("bootstrap of an empty set is undefined")
    rng = np.random.default_rng(seed)
    boot = np.zeros(n)
    for g in groups:  # (n,) resampled scores of this group, summed over groups
        boot += score(g[rng.integers(0, len(g), (n, len(g)))])
    boot /= len(groups)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return float(np.mean([score(g) for g in groups])), float(lo), float(hi)


def paired_difference(system: Sequence[dict[str, Sequence[float]]], baseline: Sequence[dict[str, Sequence[float]]],
                      n: int = 1000, seed: int = 0) -> dict:
    """System minus baseline on the same items: per item, the mean over training seeds of the two runs'
    difference; then the macro mean over groups with a bootstrap interval over items (`bootstrap_macro`).

    Args:
        system, baseline: one entry per seed (paired by position): group -> per-item scores, same items in order.

    Returns:
        ``mean``, ``ci95``, ``seeds`` (each seed's own macro difference) and ``holds`` (the interval is above 0).
    """
    if not system or len(system) != len(baseline):
        raise ValueError(f"need the same number of seeds on both sides, got {len(system)} and {len(baseline)}")
    diffs = [{g: np.subtract(a[g], b[g], dtype=np.float64) for g in a} for a, b in zip(system, baseline, strict=True)]
    mean, lo, hi = bootstrap_macro({g: np.mean([d[g] for d in diffs], axis=0) for g in diffs[0]}, n=n, seed=seed)
    per_seed = [float(np.mean([d[g].mean() for g in d])) for d in diffs]
    return {"mean": mean, "ci95": [lo, hi], "seeds": per_seed, "holds": lo > 0}


CORPUS_METRICS = ("CER", "chrF", "accuracy")
"""Corpus-level metrics that `item_statistics` splits into summable per-item statistics."""


def item_statistics(metric: str, hypotheses: Sequence, references: Sequence) -> np.ndarray:
    """Per-item statistics whose column sums give the corpus metric (`score_from_statistics`), so a bootstrap
    can resample items and still score a corpus: ``CER`` (edits, reference characters; references that
    normalise to nothing are left out, as in `cer`), ``chrF`` (sacrebleu's character and word n-gram counts)
    and ``accuracy`` (correct, 1).

    Returns:
        (N, K) array, one row per scored item.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses but {len(references)} references")
    if metric == "CER":
        import jiwer

        rows = []
        for r, h in zip(*_scored_pairs(references, hypotheses)):
            o = jiwer.process_characters([r], [h]) if h else None
            rows.append([o.substitutions + o.deletions + o.insertions, o.substitutions + o.deletions + o.hits]
                        if o else [len(r), len(r)])
        return np.array(rows, dtype=np.float64)
    if metric == "chrF":
        from sacrebleu.metrics import CHRF

        # sacrebleu's own paired-bootstrap test resamples these per-sentence statistics the same way
        return np.array(CHRF()._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.float64)
    if metric == "accuracy":
        return np.array([[float(h == r), 1.0] for h, r in zip(hypotheses, references)])
    raise ValueError(f"unknown corpus metric {metric!r}; known: {', '.join(CORPUS_METRICS)}")


def score_from_statistics(metric: str, totals: np.ndarray) -> float:
    """The corpus metric from summed `item_statistics` (CER and accuracy as fractions, chrF 0–100)."""
    if metric == "chrF":
        from sacrebleu.metrics import CHRF

        return float(CHRF()._compute_score_from_stats(totals.tolist()).score)
    if metric in ("CER", "accuracy"):
        return float(totals[0] / totals[1]) if totals[1] else float("nan")
    raise ValueError(f"unknown corpus metric {metric!r}; known: {', '.join(CORPUS_METRICS)}")


def bootstrap_corpus_macro(stats: dict[str, np.ndarray], metric: str, n: int = 1000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float, float]:
    """Macro mean over groups (languages) of a corpus metric, with a percentile bootstrap interval: items are
    resampled within each group and the metric recomputed from their summed `item_statistics`.

    Returns:
        (macro mean, lower bound, upper bound).
    """
    def score(items: np.ndarray) -> np.ndarray:  # (..., N, K) -> (...)
        totals = items.sum(-2)
        flat = totals.reshape(-1, totals.shape[-1])
        return np.array([score_from_statistics(metric, t) for t in flat]).reshape(totals.shape[:-1])

    groups = [np.asarray(s, dtype=np.float64) for s in stats.values() if len(s)]
    return _bootstrap(groups, score, n, seed, level)


def bootstrap_corpus_difference(system: dict[str, np.ndarray], baseline: dict[str, np.ndarray], metric: str,
                                n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Paired bootstrap of a macro-averaged corpus metric: system minus baseline on the same items.

    Both take group -> (N, K) `item_statistics`, rows of one group being the same items in the same order. Each
    resample draws one set of item indices per group and scores both systems on it, so what the two share (hard
    items, a language's difficulty) cancels, and the interval is that of the difference itself.

    Returns:
        (macro difference, lower bound, upper bound).
    """
    if system.keys() != baseline.keys() or any(len(system[g]) != len(baseline[g]) for g in system):
        raise ValueError("a paired difference needs the same groups and items on both sides")
    k = next((np.shape(s)[-1] for s in system.values() if len(s)), 0)

    def score(items: np.ndarray) -> np.ndarray:  # (..., N, 2K): the system's statistics, then the baseline's
        totals = items.sum(-2)
        flat = totals.reshape(-1, totals.shape[-1])
        return np.array([score_from_statistics(metric, t[:k]) - score_from_statistics(metric, t[k:])
                         for t in flat]).reshape(totals.shape[:-1])

    groups = [np.concatenate([np.asarray(system[g], dtype=np.float64), np.asarray(baseline[g], dtype=np.float64)],
                             axis=-1) for g in system if len(system[g])]
    return _bootstrap(groups, score, n, seed, level)
