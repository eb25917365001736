"""Zero-shot evaluation of a speech LLM by prompting: every system answers the same items (`polyvox.eval.tasks`:
ASR, speech translation, intent classification, held-out instruction templates …), each clip loaded once per
batch, every answer kept in an answer cache, then scored per language (`polyvox.eval.scoring`) with macro averages
over seen, unseen and all languages. Systems (`polyvox.eval.systems`) are anything with
``answer(items, wavs) -> list[str]``: the speech LLM itself, the same LLM behind a Whisper front-end (the cascade
baseline), the LLM reading the gold transcript (the oracle), or fakes in tests.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from polyvox.audio import AudioError, load_audio
from polyvox.eval.retrieval import macro_averages
from polyvox.eval.scoring import paired_differences, score_answers, task_languages
from polyvox.eval.systems import AnswerCache, System, ask
from polyvox.eval.tasks import EvalItem, TaskScoring, base_task, check_tasks, task_scoring
from polyvox.progress import Progress

log = logging.getLogger(__name__)


# -- running -----------------------------------------------------------------------------------------


def _batches(tasks: dict[str, list[EvalItem]], batch_size: int) -> list[tuple[str, list[EvalItem]]]:
    """(task, items) batches, each from one language."""
    out = []
    for task, items in tasks.items():
        by_lang: dict[str, list[EvalItem]] = defaultdict(list)
        for it in items:
            by_lang[it.lang].append(it)
        for lang in sorted(by_lang):
            its = by_lang[lang]
            out += [(task, its[s : s + batch_size]) for s in range(0, len(its), batch_size)]
    return out


def _load_batch(task: str, items: list[EvalItem], root: Path | None,
                bad: list[dict]) -> tuple[list[EvalItem], list[np.ndarray]]:
    """The items whose audio loads, and their clips; the others go to `bad` with their error."""
    good, wavs = [], []
    for it in items:
        path = Path(it.audio) if root is None else Path(root) / it.audio
        try:
            wavs.append(load_audio(path, where=it.id))
            good.append(it)
        except AudioError as e:
            log.warning("%s: skipping %s", task, e)
            bad.append({"task": task, "id": it.id, "error": str(e)})
    return good, wavs


def evaluate_generation(systems: dict[str, System], tasks: dict[str, list[EvalItem]],
                        root: str | Path | None = None, seen_langs: set[str] | frozenset[str] = frozenset(),
                        batch_size: int = 16, examples: int = 3, agree_with: str = "oracle",
                        cache: str | Path | None = None, compare: list[tuple[str, str]] = ()) -> dict:
    """Run every system on every task and score the answers per language.

    Audio is loaded once per batch (one language of one task) and given to every system; a clip that
    cannot be loaded is reported in ``result["bad_lines"]`` and left out for all systems.

    Args:
        systems: name -> system (see `System`); a system with a ``transcripts`` dict (the cascade) also gets
            its front-end's ASR scored, as ``"<name> front-end"`` in the asr task; one with ``tasks`` (base task
            names) is asked only those.
        tasks: task name -> items (see `build_tasks`).
        root: folder that relative item audio paths are relative to (None: the working directory).
        seen_langs: languages seen in training, for the seen / unseen averages.
        batch_size: clips per batch.
        examples: (reference, answer) pairs kept per system, task and language.
        agree_with: the system (when present, e.g. `OracleTextSystem`) whose answers every system is also
            compared with: the ``agreement`` metric, chrF against its answer to the same item.
        cache: a JSONL file of answers (see `AnswerCache`) read and appended to: a killed evaluation resumes, and
            systems that do not depend on the model under test are asked once across evaluations (None: off).
        compare: (system, baseline) pairs whose paired difference of the headline metric is reported per task,
            with a bootstrap interval over the items both answered (`bootstrap_corpus_difference`).

    Returns:
        A JSON-serialisable dict: ``tasks[task]`` holds ``metrics``, ``headline``, ``higher_is_better``,
        ``languages`` (n, seen, chance), ``averages`` and ``systems[name]`` with ``languages`` (per-language
        metrics), ``averages`` (seen / unseen / all), ``intervals`` (group -> headline metric and agreement
        -> 95 % bootstrap interval over items) and ``examples``, and with `compare` ``differences["a - b"][group]``
        (``mean``, ``ci95``, ``better``); then ``bad_lines`` (task, id,
        error) and ``seen_langs``.
    """
    check_tasks(list(tasks))
    need = [t for t in tasks if task_scoring(t).headline == "agreement"]
    if need and agree_with not in systems:
        raise ValueError(f"task(s) {', '.join(need)} are scored by agreement with the {agree_with!r} system, "
                         f"which is not among the systems ({', '.join(systems)}); add it (eval.baselines)")
    seen = set(seen_langs)
    store = AnswerCache(cache) if cache is not None else None
    answers: dict[str, dict[str, dict[str, str]]] = {t: {name: {} for name in systems} for t in tasks}
    bad: list[dict] = []
    good: set[tuple[str, str]] = set()
    for task, items in Progress(_batches(tasks, batch_size), desc="generation", unit="batch"):
        ok, wavs = _load_batch(task, items, Path(root) if root is not None else None, bad)
        if not ok:
            continue
        good |= {(task, it.id) for it in ok}
        for name, system in systems.items():
            if getattr(system, "tasks", None) is not None and base_task(task) not in system.tasks:
                continue  # a system for some tasks only
            outs = store.ask(name, system, task, ok, wavs) if store is not None else ask(name, system, task, ok, wavs)
            answers[task][name].update({it.id: str(a) for it, a in zip(ok, outs)})
    result: dict[str, Any] = {"tasks": {}, "bad_lines": bad, "seen_langs": sorted(seen)}
    for task, items in tasks.items():
        spec = task_scoring(task)
        langs = task_languages(items, good, task, seen)
        oracle = answers[task].get(agree_with) or None
        scored = {name: score_answers(task, items, answers[task][name], seen, examples, oracle) for name in systems
                  if answers[task][name]}
        if base_task(task) == "asr":
            scored |= _front_ends(systems, items, answers[task], seen, examples)
        result["tasks"][task] = {"metrics": list(spec.metrics) + (["agreement"] if oracle else []),
                                 "headline": spec.headline,
                                 "higher_is_better": spec.higher_is_better, "languages": langs,
                                 "averages": macro_averages(langs), "systems": scored}
        if compare:
            result["tasks"][task]["differences"] = paired_differences(task, items, answers[task], list(compare), seen, oracle)
        _log_task(task, spec, scored)
    return result


def _front_ends(systems: dict[str, System], items: list[EvalItem], answered: dict[str, dict[str, str]],
                seen: set[str], examples: int) -> dict[str, dict]:
    """ASR scores of the transcripts that cascade systems made of the asr items."""
    out = {}
    for name, system in systems.items():
        transcripts = getattr(system, "transcripts", None)
        if isinstance(transcripts, dict) and answered[name]:
            own = {i: transcripts[i] for i in answered[name] if i in transcripts}
            if own:
                out[f"{name} front-end"] = score_answers("asr", items, own, seen, examples)
    return out


def _log_task(task: str, spec: TaskScoring, scored: dict[str, dict]) -> None:
    for name, r in scored.items():
        avg = r["averages"].get("all", {})
        log.info("%s / %s: %s %s", task, name, spec.headline,
                 f"{avg[spec.headline]:.3f}" if spec.headline in avg else "–")
