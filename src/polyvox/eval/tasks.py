"""The items of a zero-shot speech LLM evaluation: a seeded per-language sample of the test split for each task
(ASR, X -> pivot translation, intent classification, BLSP's continuation prompt, held-out instruction templates),
how each task is scored (`EVAL_TASKS`), and degraded copies of the ASR clips."""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from polyvox.config import GenerationEvalConfig
from polyvox.data.degrade import CONDITIONS, write_degraded
from polyvox.data.instructions import draw_instructions
from polyvox.data.manifest import Utterance, read_manifest
from polyvox.eval.metrics import (
    normalize_text,
)
from polyvox.models.speech_llm import Prompt, few_shot_transcription, make_instruction

log = logging.getLogger(__name__)


@dataclass
class EvalItem:
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
    examples: list[str] = field(default_factory=list)
    """ASR only: the gold sentences of the language shown before the input (``eval.shots``; none: zero-shot)."""

    @property
    def shots(self) -> int:
        """How many example sentences the prompt shows (0: zero-shot)."""
        return len(self.examples)

    def prompt(self, style: str) -> Prompt:
        """The prompt in a style of `polyvox.models.speech_llm.STYLES`."""
        return self.pair if style == "pair" else self.instruction

@dataclass(frozen=True)
class TaskScoring:
    """How one task is scored."""

    metrics: tuple[str, ...]
    """Per-language metrics, in report order."""
    headline: str
    """The metric that summarises the task."""
    higher_is_better: bool
    """Direction of the headline metric."""


EVAL_TASKS: dict[str, TaskScoring] = {
    "asr": TaskScoring(("WER", "CER"), "CER", False),
    "translation": TaskScoring(("BLEU", "chrF"), "chrF", True),
    "intent": TaskScoring(("accuracy", "parsed"), "accuracy", True),
    "heldout": TaskScoring(("chrF", "BLEU"), "chrF", True),
    "continuation": TaskScoring((), "agreement", True),
}
"""Known tasks (``asr:<condition>`` is the ASR task on degraded copies of its clips, see `degraded_items`).
CER is the ASR headline as it stays meaningful for scripts written without spaces. The
continuation task (BLSP's training prompt: continue what was said) has no reference but the frozen LLM's own
continuation of the transcript: it is scored by ``agreement`` with the oracle-text system alone."""


def base_task(task: str) -> str:
    """The task of `EVAL_TASKS` a task name is scored as: ``asr:<condition>`` -> ``asr``."""
    return task.partition(":")[0]


def task_scoring(task: str) -> TaskScoring:
    """The spec of a task name of `EVAL_TASKS`, or of ``asr:<condition>`` (scored as ASR)."""
    return EVAL_TASKS[base_task(task)]


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


def shot_examples(pool: list[Utterance], avoid: list[Utterance], k: int, seed: int = 0,
                  chars: tuple[int, int] = (20, 60)) -> dict[str, list[str]]:
    """lang -> `k` sentences of `pool` (a training split) in that language to show as examples: a seeded sample of
    those of `chars` characters that share neither text nor group with any of `avoid` (the test split). A language
    with fewer than `k` such sentences gets none."""
    banned = {(u.lang, normalize_text(u.text)) for u in avoid} | {(u.lang, u.group) for u in avoid if u.group}
    by_lang: dict[str, list[Utterance]] = defaultdict(list)
    for u in pool:
        if (chars[0] <= len(u.text) <= chars[1] and (u.lang, normalize_text(u.text)) not in banned
                and not (u.group and (u.lang, u.group) in banned)):
            by_lang[u.lang].append(u)
    out = {lang: [u.text for u in _sample(utts, k, f"{seed}:shots:{lang}")] for lang, utts in sorted(by_lang.items())}
    return {lang: texts for lang, texts in out.items() if len(texts) == k}


def _asr_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig,
               examples: dict[str, list[str]]) -> list[EvalItem]:
    items = []
    for lang, utts in by_lang.items():
        shown = examples.get(lang, [])
        prompt = few_shot_transcription(lang, shown) if shown else None
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}"):
            items.append(EvalItem(u.id, lang, str(u.audio_path(root)), prompt or make_instruction("transcribe", lang),
                                  u.text, pair=prompt or make_instruction("transcribe", lang, style="pair"),
                                  text=u.text, examples=shown))
    return items


def _continuation_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig) -> list[EvalItem]:
    items = []
    for lang, utts in by_lang.items():
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}"):  # the ASR sample's clips
            items.append(EvalItem(u.id, lang, str(u.audio_path(root)), make_instruction("continue", lang), "",
                              pair=make_instruction("continue", lang, style="pair"), text=u.text))
    return items


def _translation_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig,
                       pivot: str) -> list[EvalItem]:
    def has_pivot(u: Utterance) -> bool:
        return bool(u.translations.get(pivot))

    items = []
    for lang, utts in by_lang.items():
        if lang == pivot:
            continue
        # the ASR sample's seed and order: both tasks ask about the same clips where they can
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}", keep=has_pivot):
            items.append(EvalItem(u.id, lang, str(u.audio_path(root)), make_instruction("translate", lang, target=pivot),
                              u.translations[pivot], pair=make_instruction("translate", lang, pivot, style="pair"),
                              text=u.text))
    return items


def _intent_items(path: Path, cfg: GenerationEvalConfig) -> list[EvalItem]:
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
            items.append(EvalItem(u.id, lang, audio, make_instruction("intent", lang, labels=shown), u.intent, labels=labels,
                              shown=shown, pair=make_instruction("intent", lang, labels=shown, style="pair"),
                              text=u.text))
    return items


def _heldout_items(by_lang: dict[str, list[Utterance]], root: Path, cfg: GenerationEvalConfig, bank,
                   pivot: str, other_langs: list[str]) -> list[EvalItem]:
    """One held-out template per clip (seeded), the same xP3 pair for every style; references come later."""
    items = []
    for lang, utts in by_lang.items():
        for u in _sample(utts, cfg.per_lang, f"{cfg.seed}:{lang}"):
            (ins,) = draw_instructions(bank, u.id, lang, "TMI", 1, cfg.seed, split="heldout", pivot_lang=pivot,
                                       other_langs=other_langs, balance="task")
            pair = (ins.prefix, ins.postfix)
            items.append(EvalItem(u.id, lang, str(u.audio_path(root)), pair, "", pair=pair, text=u.text,
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
    unknown = [t for t in tasks if t not in EVAL_TASKS and not (t.startswith("asr:") and t[4:] in CONDITIONS)]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(EVAL_TASKS)}, "
                         f"and asr:<condition> for a condition of {', '.join(CONDITIONS)}")


def degraded_items(items: list[EvalItem], root: Path, folder: Path, condition: str) -> list[EvalItem]:
    """The `items` again, about copies of their clips degraded by `condition` (`polyvox.data.degrade.CONDITIONS`),
    written once under ``folder/condition`` (same paths relative to `root`, the data folder); ids get
    ``#condition``, so caches keyed by item id keep the copies apart."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
    root, out = Path(root).resolve(), Path(folder) / condition
    utts = [Utterance(id=it.id, audio=str(Path(it.audio).resolve().relative_to(root)), text=it.text, lang=it.lang,
                      split="test") for it in items]
    copies = {c.id.split("#")[0]: c for c in write_degraded(utts, root, out, condition)}
    return [replace(it, id=copies[it.id].id, audio=copies[it.id].audio)
            for it in items if it.id in copies]


def build_tasks(manifest_path: str | Path, cfg: GenerationEvalConfig, pivot_lang: str, bank=None,
                other_langs: list[str] | None = None) -> dict[str, list[EvalItem]]:
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
    test = read_manifest(manifest_path, split="test")
    by_lang = _by_lang(test)
    examples = {}
    if cfg.shots and "asr" in cfg.tasks:
        examples = shot_examples(read_manifest(manifest_path, split="train"), test, cfg.shots, cfg.seed)
        zero = sorted(set(by_lang) - set(examples))
        log.info("asr: %d-shot prompts in %d languages%s", cfg.shots, len(examples),
                 f"; zero-shot (fewer than {cfg.shots} training sentences) in {', '.join(zero)}" if zero else "")
    builders: dict[str, Callable[[], list[EvalItem]]] = {
        "asr": lambda: _asr_items(by_lang, manifest_path.parent, cfg, examples),
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

