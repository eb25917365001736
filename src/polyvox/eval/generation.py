"""Zero-shot evaluation of a speech LLM by prompting: ASR, speech translation, intent classification and
instruction following on held-out instruction templates.

Every system answers the same items (a seeded per-language sample of the test split); answers are
scored per language (ASR: WER and CER; translation into the pivot language: BLEU and chrF; intent:
accuracy over a few offered labels; held-out instructions: chrF and BLEU against the frozen LLM's answer from
the transcript) with macro averages over seen, unseen and all languages.
Systems are anything with ``answer(items, wavs) -> list[str]``: the speech LLM itself, the same LLM
behind a Whisper front-end (the cascade baseline), or fakes in tests.
"""

from __future__ import annotations

import difflib
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from polyvox.audio import AudioError, load_audio
from polyvox.config import GenerationEvalConfig
from polyvox.data.degrade import CONDITIONS, write_degraded
from polyvox.data.manifest import Utterance, read_manifest
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
from polyvox.eval.systems import AnswerCache, ask
from polyvox.models.speech_llm import Prompt, make_instruction

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One question put to every system: a clip, an instruction and the expected answer."""

    id: str
    """Utterance id (shared by the ASR and translation items of one clip)."""
    lang: str
    """FLEURS code of the speech."""
    audio: str
    """Audio file; a relative path is taken relative to the `root` given to `evaluate_generation`."""
    instruction: Prompt
    """The prompt for models prompted by instruction (see `polyvox.models.speech_llm.make_instruction`)."""
    reference: str
    """Transcript (asr), pivot-language translation (translation), gold label (intent) or the frozen LLM's
    answer from the transcript (heldout; filled in by `fill_heldout_references`)."""
    pair: tuple[str, str] = ("", "")
    """The same question as an xP3-style (prefix, postfix) pair, for models trained on such pairs."""
    labels: list[str] = field(default_factory=list)
    """Intent only: the offered labels (gold + distractors, shuffled), as in the manifest."""
    shown: list[str] = field(default_factory=list)
    """Intent only: the human-readable names of `labels` shown to the LLM (same order, unique)."""
    text: str = ""
    """The clip's transcript: what the oracle-text system reads (and heldout references are written from)."""
    template: str = ""
    """Heldout only: the id of the held-out template."""
    kind: str = ""
    """Heldout only: the template's kind (T or MI)."""

    def prompt(self, style: str) -> Prompt:
        """The prompt in a style of `polyvox.models.speech_llm.STYLES`."""
        return self.pair if style == "pair" else self.instruction

@dataclass(frozen=True)
class TaskSpec:
    """How one task is scored."""

    metrics: tuple[str, ...]
    """Per-language metrics, in report order."""
    headline: str
    """The metric that summarises the task."""
    higher_is_better: bool
    """Direction of the headline metric."""


TASKS: dict[str, TaskSpec] = {
    "asr": TaskSpec(("WER", "CER"), "CER", False),
    "translation": TaskSpec(("BLEU", "chrF"), "chrF", True),
    "intent": TaskSpec(("accuracy", "parsed"), "accuracy", True),
    "heldout": TaskSpec(("chrF", "BLEU"), "chrF", True),
    "continuation": TaskSpec((), "agreement", True),
}
"""Known tasks (``asr:<condition>`` is the ASR task on degraded copies of its clips, see `degraded_items`).
CER is the ASR headline as it stays meaningful for scripts written without spaces. The
continuation task (BLSP's training prompt: continue what was said) has no reference but the frozen LLM's own
continuation of the transcript: it is scored by ``agreement`` with the oracle-text system alone."""


def base_task(task: str) -> str:
    """The task of `TASKS` a task name is scored as: ``asr:<condition>`` -> ``asr``."""
    return task.partition(":")[0]


def task_spec(task: str) -> TaskSpec:
    """The spec of a task name of `TASKS`, or of ``asr:<condition>`` (scored as ASR)."""
    return TASKS[base_task(task)]


class System(Protocol):
    """Anything that answers items from their 16 kHz clips (one answer per item, in order)."""

    def answer(self, items: list[Item], wavs: list[np.ndarray]) -> list[str]: ...


# -- building the tasks ------------------------------------------------------------------------------


def _sample(utts: list[Utterance], n: int, seed: str,
            keep: Callable[[Utterance], bool] | None = None) -> list[Utterance]:
    """The first `n` utterances passing `keep` (all when `n` is 0) in a seeded order, returned in id order.

    Filtering after shuffling makes samples with one seed overlap as much as their filters allow.
    """
    utts = sorted(utts, key=lambda u: u.id)
    random.Random(seed).shuffle(utts)
    utts = [u for u in utts if keep is None or keep(u)]
    return sorted(utts[:n] if n > 0 else utts, key=lambda u: u.id)


def _by_lang(utts: list[Utterance]) -> dict[str, list[Utterance]]:
    out: dict[str, list[Utterance]] = defaultdict(list)
    for u in utts:
        if u.audio is not None:
            out[u.lang].append(u)
    return {lang: out[lang] for lang in sorted(out)}


def label_name(label: str, with_skill: bool = False) -> str:
    """Human-readable name of an intent label: ``"weather:current_weather.intent"`` -> ``"current weather"``.

    CamelCase and ``-_.`` separators become spaces; `with_skill` puts the skill's name first.
    """
    skill, _, name = label.rpartition(":")
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.removesuffix(".intent"))
    if with_skill and skill:
        name = f"{skill} {name}"
    return " ".join(re.sub(r"[-_.]+", " ", name).lower().split()) or label


def shown_names(labels: list[str]) -> list[str]:
    """Names for `labels`, unique once normalised: the skill goes first where names clash, then a number."""
    names = [label_name(lb) for lb in labels]
    keys = [normalize_text(n) for n in names]
    names = [label_name(lb, with_skill=True) if keys.count(k) > 1 else n
             for lb, n, k in zip(labels, names, keys)]
    out: list[str] = []
    for n in names:
        base, i = n, 2
        while normalize_text(n) in {normalize_text(o) for o in out}:
            n, i = f"{base} {i}", i + 1
        out.append(n)
    return out


def _asr_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig) -> list[Item]:
    items = []
    for lang, utts in by_lang.items():
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}"):
            items.append(Item(u.id, lang, str(u.audio_path(root)), make_instruction("transcribe", lang), u.text,
                              pair=make_instruction("transcribe", lang, style="pair"), text=u.text))
    return items


def _continuation_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig) -> list[Item]:
    items = []
    for lang, utts in by_lang.items():
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}"):  # the ASR sample's clips
            items.append(Item(u.id, lang, str(u.audio_path(root)), make_instruction("continue", lang), "",
                              pair=make_instruction("continue", lang, style="pair"), text=u.text))
    return items


def _translation_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig,
                       pivot: str) -> list[Item]:
    def has_pivot(u: Utterance) -> bool:
        return bool(u.translations.get(pivot))

    items = []
    for lang, utts in by_lang.items():
        if lang == pivot:
            continue
        # the ASR sample's seed and order: both tasks ask about the same clips where they can
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}", keep=has_pivot):
            items.append(Item(u.id, lang, str(u.audio_path(root)), make_instruction("translate", lang, target=pivot),
                              u.translations[pivot], pair=make_instruction("translate", lang, pivot, style="pair"),
                              text=u.text))
    return items


def _intent_items(path: Path, cfg: GenerationEvalConfig) -> list[Item]:
    """Test-split intent questions; distractors come from the labels the manifest has in that language."""
    everything = _by_lang([u for u in read_manifest(path) if u.intent])
    items = []
    for lang, utts in everything.items():
        pool = sorted({u.intent for u in utts if u.intent})
        if len(pool) < 2:
            log.info("intent: %s has %d label(s); no question to ask", lang, len(pool))
            continue
        for u in _sample([u for u in utts if u.split == "test"], cfg.per_lang, f"{cfg.seed}:intent:{lang}"):
            rng = random.Random(f"{cfg.seed}:{u.id}")
            others = [lb for lb in pool if lb != u.intent]
            labels = [u.intent, *rng.sample(others, min(cfg.intent_choices - 1, len(others)))]
            rng.shuffle(labels)
            shown = shown_names(labels)
            audio = str(u.audio_path(path.parent))
            items.append(Item(u.id, lang, audio, make_instruction("intent", lang, labels=shown), u.intent, labels=labels,
                              shown=shown, pair=make_instruction("intent", lang, labels=shown, style="pair"),
                              text=u.text))
    return items


def _heldout_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig, bank,
                   pivot: str, other_langs: list[str]) -> list[Item]:
    """One held-out template per clip (seeded), the same xP3 pair for every style; references come later."""
    from polyvox.data.instructions import draw_instructions

    items = []
    for lang, utts in by_lang.items():
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}"):
            (ins,) = draw_instructions(bank, u.id, lang, "TMI", 1, cfg.seed, split="heldout", pivot_lang=pivot,
                                       other_langs=other_langs, balance="task")
            pair = (ins.prefix, ins.postfix)
            items.append(Item(u.id, lang, str(u.audio_path(root)), pair, "", pair=pair, text=u.text,
                              template=ins.template_id, kind=ins.kind))
    return items


def _intents_path(manifest_path: Path, cfg: GenerationEvalConfig) -> Path | None:
    if cfg.intents_manifest:
        path = Path(cfg.intents_manifest)
        if not path.exists():
            raise FileNotFoundError(f"intents manifest not found: {path} (eval.intents_manifest)")
        return path
    path = manifest_path.parent / "intents.jsonl"
    if not path.exists():
        log.info("intent task left out: no %s beside the data manifest", path.name)
        return None
    return path


def check_tasks(tasks: list[str]) -> None:
    """Raise ValueError naming the known tasks if any of `tasks` is unknown."""
    unknown = [t for t in tasks if t not in TASKS and not (t.startswith("asr:") and t[4:] in CONDITIONS)]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}, "
                         f"and asr:<condition> for a condition of {', '.join(CONDITIONS)}")


def degraded_items(items: list[Item], root: Path, folder: Path, condition: str) -> list[Item]:
    """The `items` again, about copies of their clips degraded by `condition` (`polyvox.data.degrade.CONDITIONS`),
    written once under ``folder/condition`` (same paths relative to `root`, the data folder); ids get
    ``#condition``, so caches keyed by item id keep the copies apart."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
    root, out = Path(root).resolve(), Path(folder) / condition
    utts = [Utterance(id=it.id, audio=str(Path(it.audio).resolve().relative_to(root)), text=it.text, lang=it.lang,
                      split="test") for it in items]
    copies = {c.id.split("#")[0]: c for c in write_degraded(utts, root, out, condition)}
    return [replace(it, id=copies[it.id].id, audio=str((out / copies[it.id].audio).resolve()))
            for it in items if it.id in copies]


def build_tasks(manifest_path: str | Path, cfg: GenerationEvalConfig, pivot_lang: str, bank=None,
                other_langs: list[str] | None = None) -> dict[str, list[Item]]:
    """The items of each task in ``cfg.tasks``, from the test split (seeded: the same call, the same items).

    Args:
        manifest_path: the data manifest (transcripts, translations).
        cfg: which tasks, how many items per language, the intents manifest and the number of labels offered.
        pivot_lang: target language of the translation task.
        bank: the instruction template `Bank` whose held-out templates the heldout task asks.
        other_langs: targets of its ``target: other`` translation templates.

    Returns:
        Task name -> items (audio paths resolved, absolute); tasks without any item are left out (logged).

    Raises:
        ValueError: an unknown task name, or the heldout task without a bank.
        FileNotFoundError: the data manifest, or an explicitly named intents manifest, is missing.
    """
    check_tasks(cfg.tasks)
    if "heldout" in cfg.tasks and bank is None:
        raise ValueError("the heldout task needs an instruction template bank (it is a task of the mit recipe)")
    manifest_path = Path(manifest_path).resolve()
    by_lang = _by_lang(read_manifest(manifest_path, split="test"))
    builders: dict[str, Callable[[], list[Item]]] = {
        "asr": lambda: _asr_items(by_lang, manifest_path.parent, cfg),
        "translation": lambda: _translation_items(by_lang, manifest_path.parent, cfg, pivot_lang),
        "intent": lambda: _intent_items(p.resolve(), cfg) if (p := _intents_path(manifest_path, cfg)) else [],
        "heldout": lambda: _heldout_items(by_lang, manifest_path.parent, cfg, bank, pivot_lang, other_langs or []),
        "continuation": lambda: _continuation_items(by_lang, manifest_path.parent, cfg),
    }
    out = {}
    for task in cfg.tasks:
        items = builders[task]()
        if items:
            out[task] = items
            log.info("%s: %d items in %d languages", task, len(items), len({it.lang for it in items}))
        else:
            log.info("%s task left out: no test items", task)
    return out


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


def _score_asr(items: list[Item], answers: list[str]) -> dict[str, float]:
    refs = [it.reference for it in items]
    return {"WER": wer(refs, answers), "CER": cer(refs, answers)}


def _score_translation(items: list[Item], answers: list[str]) -> dict[str, float]:
    refs = [it.reference for it in items]
    return {"BLEU": corpus_bleu(answers, refs), "chrF": chrf(answers, refs)}


def _score_intent(items: list[Item], answers: list[str]) -> dict[str, float]:
    """Accuracy of the parsed labels; ``parsed``: share naming a label outright; ``fuzzy``: count matched by
    similarity only (empty answers are neither, and wrong)."""
    parsed = [parse_label(a, it.shown) for it, a in zip(items, answers)]
    pred = [it.labels[i] if i is not None else None for it, (i, _) in zip(items, parsed)]
    fuzzy = sum(f for _, f in parsed)
    return {"accuracy": accuracy(pred, [it.reference for it in items]),
            "parsed": sum(i is not None and not f for i, f in parsed) / len(items), "fuzzy": fuzzy}


def _score_heldout(items: list[Item], answers: list[str]) -> dict[str, float]:
    refs = [it.reference for it in items]
    return {"chrF": chrf(answers, refs), "BLEU": corpus_bleu(answers, refs)}


SCORERS: dict[str, Callable[[list[Item], list[str]], dict[str, float]]] = {
    "asr": _score_asr, "translation": _score_translation, "intent": _score_intent, "heldout": _score_heldout,
    "continuation": lambda items, answers: {},  # agreement only, added by `_score_system`
}


def _headline_statistics(task: str, items: list[Item], answers: list[str]) -> np.ndarray:
    """Per-item statistics of the task's headline metric (`item_statistics`), for bootstrap intervals."""
    if task == "intent":
        picked = [parse_label(a, it.shown)[0] for it, a in zip(items, answers)]
        pred = [it.labels[i] if i is not None else None for it, i in zip(items, picked)]
        return item_statistics("accuracy", pred, [it.reference for it in items])
    return item_statistics(task_spec(task).headline, answers, [it.reference for it in items])


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


def _score_system(task: str, items: list[Item], answers: dict[str, str], seen: set[str],
                  examples: int, oracle: dict[str, str] | None = None) -> dict:
    """Per-language scores, seen / unseen / all averages with 95 % bootstrap intervals of the headline metric,
    and a few (reference, answer) examples; with the `oracle` system's answers, also ``agreement``: the chrF
    of these answers against the oracle's."""
    by_lang: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        if it.id in answers:
            by_lang[it.lang].append(it)
    rows, shown = {}, {}
    headline = task_spec(task).headline
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


def _differences(task: str, items: list[Item], answers: dict[str, dict[str, str]], pairs: list[tuple[str, str]],
                 seen: set[str], oracle: dict[str, str] | None) -> dict:
    """Paired differences of the headline metric, system minus baseline on the items both answered, per group
    (seen / unseen / all), with 95 % intervals from `bootstrap_corpus_difference`; ``better`` names the side
    the interval favours (None when it contains 0)."""
    spec = task_spec(task)
    metric = "chrF" if spec.headline == "agreement" else spec.headline
    out: dict[str, dict] = {}
    for a, b in pairs:
        both = [it for it in items if it.id in answers.get(a, {}) and it.id in answers.get(b, {})]
        if not both or (spec.headline == "agreement" and not oracle):
            continue
        stats: dict[str, dict[str, list[np.ndarray]]] = {a: defaultdict(list), b: defaultdict(list)}
        by_lang: dict[str, list[Item]] = defaultdict(list)
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


def _task_languages(items: list[Item], good: set[tuple[str, str]], task: str, seen: set[str]) -> dict:
    """Per-language facts shared by all systems: items scored, seen flag, chance (intent)."""
    rows: dict[str, dict] = {}
    for it in items:
        if (task, it.id) in good:
            row = rows.setdefault(it.lang, {"n": 0, "seen": it.lang in seen})
            row["n"] += 1
            if it.labels:
                row["chance"] = row.get("chance", 0.0) + 1 / len(it.labels)
    for row in rows.values():
        if "chance" in row:
            row["chance"] /= row["n"]
    return {lang: rows[lang] for lang in sorted(rows)}


# -- running -----------------------------------------------------------------------------------------


def _batches(tasks: dict[str, list[Item]], batch_size: int) -> list[tuple[str, list[Item]]]:
    """(task, items) batches, each from one language."""
    out = []
    for task, items in tasks.items():
        by_lang: dict[str, list[Item]] = defaultdict(list)
        for it in items:
            by_lang[it.lang].append(it)
        for lang in sorted(by_lang):
            its = by_lang[lang]
            out += [(task, its[s : s + batch_size]) for s in range(0, len(its), batch_size)]
    return out


def _load_batch(task: str, items: list[Item], root: Path | None,
                bad: list[dict]) -> tuple[list[Item], list[np.ndarray]]:
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


def evaluate_generation(systems: dict[str, System], tasks: dict[str, list[Item]],
                        root: str | Path | None = None, seen_langs: set[str] | frozenset[str] = frozenset(),
                        batch_size: int = 16, examples: int = 3, agree_with: str = "oracle",
                        cache: str | Path | None = None, compare: list[tuple[str, str]] = ()) -> dict:
    """Run every system on every task and score the answers per language.

    Audio is loaded once per batch (one language of one task) and given to every system; a clip that
    cannot be loaded is reported in ``result["bad_lines"]`` and left out for all systems.

    Args:
        systems: name -> system (see `System`); a system with a ``transcripts`` dict (the cascade) also gets
            its front-end's ASR scored, as ``"<name> front-end"`` in the asr task.
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
    need = [t for t in tasks if task_spec(t).headline == "agreement"]
    if need and agree_with not in systems:
        raise ValueError(f"task(s) {', '.join(need)} are scored by agreement with the {agree_with!r} system, "
                         f"which is not among the systems ({', '.join(systems)}); add it (eval.baselines)")
    seen = set(seen_langs)
    store = AnswerCache(cache) if cache is not None else None
    answers: dict[str, dict[str, dict[str, str]]] = {t: {name: {} for name in systems} for t in tasks}
    bad: list[dict] = []
    good: set[tuple[str, str]] = set()
    for task, items in tqdm(_batches(tasks, batch_size), desc="generation", unit="batch", disable=None):
        ok, wavs = _load_batch(task, items, Path(root) if root is not None else None, bad)
        if not ok:
            continue
        good |= {(task, it.id) for it in ok}
        for name, system in systems.items():
            outs = store.ask(name, system, task, ok, wavs) if store is not None else ask(name, system, task, ok, wavs)
            answers[task][name].update({it.id: str(a) for it, a in zip(ok, outs)})
    result: dict[str, Any] = {"tasks": {}, "bad_lines": bad, "seen_langs": sorted(seen)}
    for task, items in tasks.items():
        spec = task_spec(task)
        langs = _task_languages(items, good, task, seen)
        oracle = answers[task].get(agree_with) or None
        scored = {name: _score_system(task, items, answers[task][name], seen, examples, oracle) for name in systems
                  if answers[task][name]}
        if base_task(task) == "asr":
            scored |= _front_ends(systems, items, answers[task], seen, examples)
        result["tasks"][task] = {"metrics": list(spec.metrics) + (["agreement"] if oracle else []),
                                 "headline": spec.headline,
                                 "higher_is_better": spec.higher_is_better, "languages": langs,
                                 "averages": macro_averages(langs), "systems": scored}
        if compare:
            result["tasks"][task]["differences"] = _differences(task, items, answers[task], list(compare), seen, oracle)
        _log_task(task, spec, scored)
    return result


def _front_ends(systems: dict[str, System], items: list[Item], answered: dict[str, dict[str, str]],
                seen: set[str], examples: int) -> dict[str, dict]:
    """ASR scores of the transcripts that cascade systems made of the asr items."""
    out = {}
    for name, system in systems.items():
        transcripts = getattr(system, "transcripts", None)
        if isinstance(transcripts, dict) and answered[name]:
            own = {i: transcripts[i] for i in answered[name] if i in transcripts}
            if own:
                out[f"{name} front-end"] = _score_system("asr", items, own, seen, examples)
    return out


def _log_task(task: str, spec: TaskSpec, scored: dict[str, dict]) -> None:
    for name, r in scored.items():
        avg = r["averages"].get("all", {})
        log.info("%s / %s: %s %s", task, name, spec.headline,
                 f"{avg[spec.headline]:.3f}" if spec.headline in avg else "–")
