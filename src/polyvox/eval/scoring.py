"""Scoring the answers of a zero-shot evaluation: per-language metrics of each task, seen / unseen / all macro
averages with 95 % bootstrap intervals over items, agreement with the oracle's answers, and paired differences
between systems."""

from __future__ import annotations

import difflib
import logging
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from polyvox.eval.metrics import (
    accuracy,
    bootstrap_corpus_difference,
    bootstrap_corpus_macro,
    cer,
    chrf,
    corpus_bleu,
    item_statistics,
    normalize_text,
    wer,
)
from polyvox.eval.retrieval import macro_averages
from polyvox.eval.tasks import EvalItem, base_task, task_scoring

log = logging.getLogger(__name__)


# -- scoring -----------------------------------------------------------------------------------------


def parse_label(answer: str, shown: list[str]) -> tuple[int | None, bool]:
    """Index of the shown label an answer names, and whether the fuzzy fallback was needed.

    A label counts as named when its normalised form occurs in the normalised answer as whole words; the
    earliest occurrence wins (the longer label at a tie, e.g. "volume mute toggle" over "volume mute").
    Otherwise the label with the highest `difflib` ratio to the answer is taken. An empty answer names none.
    """
    text = normalize_text(answer)
    if not text:
        return None, False
    padded = f" {text} "
    hits = [(padded.find(f" {normalize_text(s)} "), -len(normalize_text(s)), i) for i, s in enumerate(shown)]
    hits = [h for h in hits if h[0] >= 0]
    if hits:
        return min(hits)[2], False
    ratios = [difflib.SequenceMatcher(None, text, normalize_text(s)).ratio() for s in shown]
    return int(np.argmax(ratios)), True


def _score_asr(items: list[EvalItem], answers: list[str]) -> dict[str, float]:
    refs = [it.reference for it in items]
    return {"WER": wer(refs, answers), "CER": cer(refs, answers)}


def _score_translation(items: list[EvalItem], answers: list[str]) -> dict[str, float]:
    refs = [it.reference for it in items]
    return {"BLEU": corpus_bleu(answers, refs), "chrF": chrf(answers, refs)}


def _score_intent(items: list[EvalItem], answers: list[str]) -> dict[str, float]:
    """Accuracy of the parsed labels; ``parsed``: share naming a label outright; ``fuzzy``: count matched by
    similarity only (empty answers are neither, and wrong)."""
    parsed = [parse_label(a, it.shown) for it, a in zip(items, answers)]
    pred = [it.labels[i] if i is not None else None for it, (i, _) in zip(items, parsed)]
    fuzzy = sum(f for _, f in parsed)
    return {"accuracy": accuracy(pred, [it.reference for it in items]),
            "parsed": sum(i is not None and not f for i, f in parsed) / len(items), "fuzzy": fuzzy}


def _score_heldout(items: list[EvalItem], answers: list[str]) -> dict[str, float]:
    refs = [it.reference for it in items]
    return {"chrF": chrf(answers, refs), "BLEU": corpus_bleu(answers, refs)}


SCORERS: dict[str, Callable[[list[EvalItem], list[str]], dict[str, float]]] = {
    "asr": _score_asr, "translation": _score_translation, "intent": _score_intent, "heldout": _score_heldout,
    "continuation": lambda items, answers: {},  # agreement only, added by `score_answers`
}


def _headline_statistics(task: str, items: list[EvalItem], answers: list[str]) -> np.ndarray:
    """Per-item statistics of the task's headline metric (`item_statistics`), for bootstrap intervals."""
    if task == "intent":
        picked = [parse_label(a, it.shown)[0] for it, a in zip(items, answers)]
        pred = [it.labels[i] if i is not None else None for it, i in zip(items, picked)]
        return item_statistics("accuracy", pred, [it.reference for it in items])
    return item_statistics(task_scoring(task).headline, answers, [it.reference for it in items])


def _intervals(rows: dict[str, dict], stats: dict[str, tuple[str, dict[str, np.ndarray]]]
               ) -> dict[str, dict[str, list[float]]]:
    """95 % bootstrap intervals over items of macro averages: group (seen / unseen / all) -> name -> [lo, hi].
    `stats`: name -> (its corpus metric, language -> per-item statistics)."""
    out: dict[str, dict[str, list[float]]] = {}
    for group, keep in (("seen", True), ("unseen", False), ("all", None)):
        langs = [lang for lang, r in rows.items() if keep is None or r["seen"] == keep]
        if langs:
            out[group] = {name: list(bootstrap_corpus_macro({lg: per[lg] for lg in langs}, metric)[1:])
                          for name, (metric, per) in stats.items()}
    return out


def score_answers(task: str, items: list[EvalItem], answers: dict[str, str], seen: set[str],
                  examples: int, oracle: dict[str, str] | None = None) -> dict:
    """Per-language scores, seen / unseen / all averages with 95 % bootstrap intervals of the headline metric,
    and a few (reference, answer) examples; with the `oracle` system's answers, also ``agreement``: the chrF
    of these answers against the oracle's."""
    by_lang: dict[str, list[EvalItem]] = defaultdict(list)
    for it in items:
        if it.id in answers:
            by_lang[it.lang].append(it)
    rows, shown = {}, {}
    headline = task_scoring(task).headline
    stats: dict[str, tuple[str, dict[str, np.ndarray]]] = {
        headline: (headline, {}), **({"agreement": ("chrF", {})} if oracle else {})}
    for lang in sorted(by_lang):
        its = by_lang[lang]
        outs = [answers[it.id] for it in its]
        rows[lang] = {"n": len(its), "seen": lang in seen, **SCORERS[base_task(task)](its, outs)}
        if headline != "agreement":
            stats[headline][1][lang] = _headline_statistics(task, its, outs)
        if oracle:
            said = [oracle.get(it.id, "") for it in its]
            rows[lang]["agreement"] = chrf(outs, said)
            stats["agreement"][1][lang] = item_statistics("chrF", outs, said)
        shown[lang] = [[it.reference, a] for it, a in zip(its[:examples], outs)]
    return {"languages": rows, "averages": macro_averages(rows), "intervals": _intervals(rows, stats),
            "examples": shown}


def paired_differences(task: str, items: list[EvalItem], answers: dict[str, dict[str, str]], pairs: list[tuple[str, str]],
                 seen: set[str], oracle: dict[str, str] | None) -> dict:
    """Paired differences of the headline metric, system minus baseline on the items both answered, per group
    (seen / unseen / all), with 95 % intervals from `bootstrap_corpus_difference`; ``better`` names the side
    the interval favours (None when it contains 0)."""
    spec = task_scoring(task)
    metric = "chrF" if spec.headline == "agreement" else spec.headline
    out: dict[str, dict] = {}
    for a, b in pairs:
        both = [it for it in items if it.id in answers.get(a, {}) and it.id in answers.get(b, {})]
        if not both or (spec.headline == "agreement" and not oracle):
            continue
        stats: dict[str, dict[str, list[np.ndarray]]] = {a: defaultdict(list), b: defaultdict(list)}
        by_lang: dict[str, list[EvalItem]] = defaultdict(list)
        for it in both:
            by_lang[it.lang].append(it)
        for name in (a, b):
            for lang, its in by_lang.items():
                outs = [answers[name][it.id] for it in its]
                stats[name][lang] = (item_statistics("chrF", outs, [oracle.get(it.id, "") for it in its])
                                     if spec.headline == "agreement" else _headline_statistics(task, its, outs))
        row = {}
        for group, keep in (("seen", True), ("unseen", False), ("all", None)):
            langs = [lg for lg in sorted(by_lang) if keep is None or (lg in seen) == keep]
            if langs:
                mean, lo, hi = bootstrap_corpus_difference({lg: stats[a][lg] for lg in langs},
                                                           {lg: stats[b][lg] for lg in langs}, metric)
                up = a if spec.higher_is_better else b
                better = (up if lo > 0 else ({a, b} - {up}).pop() if hi < 0 else None)
                row[group] = {"metric": spec.headline, "mean": mean, "ci95": [lo, hi], "better": better}
        out[f"{a} - {b}"] = row
    return out


def task_languages(items: list[EvalItem], good: set[tuple[str, str]], task: str, seen: set[str]) -> dict:
    """Per-language facts shared by all systems: items scored, seen flag, chance (intent), example sentences in
    the prompt (ASR with ``eval.shots``)."""
    rows: dict[str, dict] = {}
    few_shot = any(it.shots for it in items)  # eval.shots: how many example sentences each language's prompt shows
    for it in items:
        if (task, it.id) in good:
            row = rows.setdefault(it.lang, {"n": 0, "seen": it.lang in seen})
            row["n"] += 1
            if few_shot:
                row["shots"] = it.shots
            if it.labels:
                row["chance"] = row.get("chance", 0.0) + 1 / len(it.labels)
    for row in rows.values():
        if "chance" in row:
            row["chance"] /= row["n"]
    return {lang: rows[lang] for lang in sorted(rows)}

