"""Instruction template bank for multi-instruction training (Denisov & Vu 2024, BLOOMZMMS).

A template is an xP3/BLOOMZ-style prefix/postfix pair: the LLM reads ``prefix + input + postfix``.
The input is the transcript when the frozen LLM writes the target, and the speech when the speech
model learns to give the same answer. Templates are data (YAML or JSON): the default bank ships as
``polyvox/data/templates/bank.yaml`` and users add or replace templates with files of the same schema.

Variants follow the paper: ``T`` (repeat / transcribe only), ``MI`` (other instructions only) and
``TMI`` (both). Held-out templates (``split: heldout``) are kept for evaluating instruction following
on instructions never seen in training.

Every draw is a pure function of ``(seed, utterance id)`` through SHA-256, so targets can be
regenerated on any machine and in any process order.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import json
import logging
import random
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from polyvox.data.languages import UnknownLanguageError, check_lang, language_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskSpec:
    """What a task is and how its templates must look."""

    kind: str
    """``T`` for repeat / transcribe, ``MI`` for every other instruction."""
    needs_target: bool = False
    """Whether its templates must name a target rule (translation needs a target language)."""
    description: str = ""
    """One line for reports."""


TASKS: dict[str, TaskSpec] = {
    "repeat": TaskSpec("T", description="repeat / transcribe the input word for word"),
    "translate": TaskSpec("MI", True, "translate the input into another language"),
    "summarise": TaskSpec("MI", description="summarise the input"),
    "question": TaskSpec("MI", description="ask a question about the topic of the input"),
    "topic": TaskSpec("MI", description="classify the topic of the input"),
    "continue": TaskSpec("MI", description="continue the input"),
    "paraphrase": TaskSpec("MI", description="say the input in other words"),
    "keywords": TaskSpec("MI", description="extract the keywords of the input"),
    "sentiment": TaskSpec("MI", description="say whether the input is positive, negative or neutral"),
    "title": TaskSpec("MI", description="give the input a headline"),
}
"""Known tasks; a template's ``kind`` must equal its task's."""

MIT_VARIANTS: dict[str, frozenset[str]] = {
    "T": frozenset({"T"}),
    "MI": frozenset({"MI"}),
    "TMI": frozenset({"T", "MI"}),
}
"""Training variant -> template kinds it draws from."""

INSTRUCTION_KINDS: frozenset[str] = frozenset({"T", "MI"})
SPLITS: tuple[str, ...] = ("train", "heldout")
SLOTS: frozenset[str] = frozenset({"source", "target", "labels"})
"""Slots allowed in a prefix or postfix."""

DEFAULT_N_LABELS = 4
"""Candidate topics shown by a ``{labels}`` slot."""

DEFAULT_BANK = "templates/bank.yaml"
"""The default bank, relative to the ``polyvox.data`` package."""

_REQUIRED = ("id", "task", "kind", "split")
_OPTIONAL: dict[str, Any] = {"prefix": "", "postfix": "", "lang": "en", "target": None}
_LANG_TAG = re.compile(r"^[a-z]{2,3}$")
_FILE_KEYS = frozenset({"templates", "topics", "presets"})
PRESET_SLOTS = frozenset({"source", "target", "labels", "prompt"})
"""Slots of a prompt preset: the input's language name, the target language name, the offered labels, and the
user's own text (the ``chat`` preset)."""


class TemplateBankError(ValueError):
    """A template file that cannot be used; the message names the file and the template."""


@dataclass(frozen=True)
class Template:
    """One prefix/postfix instruction pair, as written in a bank file."""

    id: str
    """Unique name; a user template with the same id replaces the bank's."""
    task: str
    """One of `TASKS`."""
    kind: str
    """``T`` (repeat / transcribe) or ``MI`` (every other task); must match the task."""
    split: str
    """``train``, or ``heldout`` for instructions kept out of training."""
    prefix: str = ""
    """Text before the input; may hold ``{source}``, ``{target}``, ``{labels}``."""
    postfix: str = ""
    """Text after the input; same slots as the prefix."""
    lang: str = "en"
    """Language the template itself is written in (ISO 639 code: en, de, fr …)."""
    target: str | None = None
    """Target rule: ``pivot``, ``other`` (a seeded draw from a list) or a fixed FLEURS code."""
    origin: str = field(default="", compare=False)
    """File the template was read from, for messages."""

    @property
    def slots(self) -> frozenset[str]:
        """Slot names used in the prefix and postfix."""
        return frozenset(_slot_names(self.prefix) + _slot_names(self.postfix))


@dataclass(frozen=True)
class Preset:
    """A named prompt (``transcribe``, ``translate`` …) in both styles a speech LLM may be prompted in: what
    `polyvox generate --prompt NAME`, the server and the evaluation's tasks ask."""

    name: str
    instruction: str
    """The instruction an instruction-style model (BLSP) reads, placed by its prompt template."""
    prefix: str
    """Text before the input for a pair-style model (mit), as in a template."""
    postfix: str
    """Text after the input."""


@dataclass(frozen=True)
class Instruction:
    """A template expanded for one utterance: every slot filled."""

    template_id: str
    """Id of the template it came from."""
    task: str
    """Task of the template."""
    kind: str
    """``T`` or ``MI``."""
    prefix: str
    """Text before the input, fully expanded."""
    postfix: str
    """Text after the input, fully expanded."""
    source_lang: str
    """FLEURS code of the transcript."""
    target_lang: str | None = None
    """FLEURS code of the answer's language for templates with a target rule (translation), else None."""
    labels: tuple[str, ...] = ()
    """Candidate topics shown by a ``{labels}`` slot, in the template's language; empty otherwise."""
    lang: str = "en"
    """Language the instruction is written in."""

    def wrap(self, text: str) -> str:
        """``prefix + text + postfix``: what the frozen LLM reads when it writes the target."""
        return f"{self.prefix}{text}{self.postfix}"


# --- slots and target rules ------------------------------------------------------------------------


def _slot_names(text: str) -> list[str]:
    """Slot names in `text`; ValueError on malformed braces, conversions or format specs."""
    names = []
    for literal, name, spec, conversion in string.Formatter().parse(text):
        if "{" in literal or "}" in literal:
            raise ValueError("literal braces ('{{' or '}}') are not allowed")
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"slot {{{name}}} must not carry a conversion or format spec")
        names.append(name)
    return names


_TARGET_RULES: dict[str, Callable[[str, Sequence[str]], Sequence[str]]] = {
    "pivot": lambda pivot, others: [pivot],
    "other": lambda pivot, others: others,
}
"""Target rule -> candidate target languages given (pivot, other languages); any other rule is a FLEURS code."""


def _target_candidates(rule: str, source: str, pivot: str, others: Sequence[str]) -> list[str]:
    """Target languages a rule allows for a source: never the source itself, sorted for determinism."""
    make = _TARGET_RULES.get(rule, lambda pivot, others: [rule])
    return sorted({check_lang(c) for c in make(pivot, others)} - {source})


# --- validation ------------------------------------------------------------------------------------


def _check_task(t: Template) -> None:
    if t.task not in TASKS:
        raise ValueError(f"unknown task {t.task!r} (known: {', '.join(TASKS)})")


def _check_kind(t: Template) -> None:
    if t.kind not in INSTRUCTION_KINDS:
        raise ValueError(f"unknown kind {t.kind!r} (known: {', '.join(sorted(INSTRUCTION_KINDS))})")
    expected = TASKS[t.task].kind
    if t.kind != expected:
        raise ValueError(f"task {t.task!r} is kind {expected!r}, not {t.kind!r}")


def _check_split(t: Template) -> None:
    if t.split not in SPLITS:
        raise ValueError(f"bad split {t.split!r} (known: {', '.join(SPLITS)})")


def _check_lang(t: Template) -> None:
    if not _LANG_TAG.match(t.lang):
        raise ValueError(f"lang {t.lang!r} is not a short language code like 'en' or 'de'")


def _check_text(t: Template) -> None:
    if not (t.prefix + t.postfix).strip():
        raise ValueError("prefix and postfix are both empty")
    for name in ("prefix", "postfix"):
        try:
            unknown = sorted(set(_slot_names(getattr(t, name))) - SLOTS)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from e
        if unknown:
            raise ValueError(f"{name}: unknown slot {{{unknown[0]}}} (allowed: {', '.join(sorted(SLOTS))})")


def _check_target(t: Template) -> None:
    if t.target is None:
        if "target" in t.slots:
            raise ValueError("{target} is used but the template has no target rule (pivot, other or a code)")
        if TASKS[t.task].needs_target:
            raise ValueError(f"task {t.task!r} needs a target rule (pivot, other or a FLEURS code)")
        return
    if t.target not in _TARGET_RULES:
        try:
            check_lang(t.target)
        except UnknownLanguageError as e:
            raise ValueError(f"target must be pivot, other or a FLEURS code: {e}") from e
    elif "target" not in t.slots:
        raise ValueError(f"target {t.target!r} needs a {{target}} slot to name the language")


_CHECKS: tuple[Callable[[Template], None], ...] = (
    _check_task, _check_kind, _check_split, _check_lang, _check_text, _check_target,
)
"""Run in order: later checks may rely on earlier ones (a known task)."""


def _where(origin: str, index: int, raw: Any) -> str:
    tid = raw.get("id") if isinstance(raw, Mapping) else None
    return f"{origin}: template #{index}" + (f" (id {tid!r})" if isinstance(tid, str) else "")


def _parse_template(raw: Any, origin: str, index: int) -> Template:
    """One raw mapping -> a validated Template; TemplateBankError naming file and template otherwise."""
    where = _where(origin, index, raw)
    if not isinstance(raw, Mapping):
        raise TemplateBankError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise TemplateBankError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join([*_REQUIRED, *_OPTIONAL])})")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise TemplateBankError(f"{where}: missing field {missing[0]!r}")
    values = {**_OPTIONAL, **raw}
    for key, value in values.items():
        if not isinstance(value, str) and not (key == "target" and value is None):
            raise TemplateBankError(f"{where}: field {key!r} must be a string, got {value!r}")
    if not values["id"].strip():
        raise TemplateBankError(f"{where}: empty id")
    template = Template(**values, origin=origin)
    for check in _CHECKS:
        try:
            check(template)
        except ValueError as e:
            raise TemplateBankError(f"{where}: {e}") from e
    return template


def _parse_topics(raw: Any, origin: str) -> dict[str, tuple[str, ...]]:
    """``topics:`` -> template language -> labels; a plain list is English. Lists are parallel translations."""
    if isinstance(raw, list):
        raw = {"en": raw}
    if not isinstance(raw, Mapping) or not raw:
        raise TemplateBankError(f"{origin}: topics must be a list or a mapping language -> list of labels")
    topics = {}
    for lang, labels in raw.items():
        ok = isinstance(labels, list) and labels and all(isinstance(x, str) and x.strip() for x in labels)
        if not ok:
            raise TemplateBankError(f"{origin}: topics[{lang!r}] must be a non-empty list of strings")
        topics[str(lang)] = tuple(labels)
    sizes = {lang: len(labels) for lang, labels in topics.items()}
    if len(set(sizes.values())) > 1:
        raise TemplateBankError(f"{origin}: topic lists are parallel translations and must have one length, got {sizes}")
    return topics


# --- reading files ---------------------------------------------------------------------------------


def _load_yaml(text: str, origin: str) -> Any:
    stream = io.StringIO(text)
    stream.name = origin  # type: ignore[attr-defined]  # PyYAML's error marks name the stream
    try:
        return yaml.safe_load(stream)
    except yaml.YAMLError as e:
        raise TemplateBankError(f"{origin}: malformed YAML: {e}") from e


def _load_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TemplateBankError(f"{origin}: malformed JSON: {e}") from e


_LOADERS: dict[str, Callable[[str, str], Any]] = {".json": _load_json, ".yaml": _load_yaml, ".yml": _load_yaml}
"""File suffix -> parser; anything else is read as YAML (a superset of JSON)."""


def _parse_presets(raw: Any, origin: str, templates: Mapping[str, Template]) -> dict[str, Preset]:
    """``presets:`` -> name -> `Preset`; a preset's pair is its own ``prefix`` / ``postfix`` or a ``template``'s."""
    if not isinstance(raw, Mapping):
        raise TemplateBankError(f"{origin}: 'presets:' must map preset names to their prompts")
    out = {}
    for name, p in raw.items():
        where = f"{origin}: preset {name!r}"
        if not isinstance(p, Mapping) or "instruction" not in p or not (("template" in p) ^ ("postfix" in p)):
            raise TemplateBankError(f"{where}: needs 'instruction' and either 'template' (an id) or 'prefix' / "
                                    "'postfix'")
        extra = sorted(set(p) - {"instruction", "template", "prefix", "postfix"})
        if extra:
            raise TemplateBankError(f"{where}: unknown key {extra[0]!r}")
        if "template" in p and p["template"] not in templates:
            raise TemplateBankError(f"{where}: no template {p['template']!r}")
        pair = templates[p["template"]] if "template" in p else None
        preset = Preset(str(name), str(p["instruction"]), pair.prefix if pair else str(p.get("prefix", "")),
                        pair.postfix if pair else str(p["postfix"]))
        for text in (preset.instruction, preset.prefix, preset.postfix):
            try:
                unknown = set(_slot_names(text)) - PRESET_SLOTS
            except ValueError as e:
                raise TemplateBankError(f"{where}: {e}") from e
            if unknown:
                raise TemplateBankError(f"{where}: unknown slot {sorted(unknown)[0]!r}; known: "
                                        f"{', '.join(sorted(PRESET_SLOTS))}")
        out[preset.name] = preset
    return out


def _read_file(source: Any) -> tuple[list[Template], dict[str, tuple[str, ...]] | None, Any]:
    """A bank file -> (templates, topics or None, raw presets or None). `source` is a Path or an importlib
    Traversable."""
    origin = str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateBankError(f"{origin}: cannot read template file: {e}") from e
    data = _LOADERS.get(Path(source.name).suffix.lower(), _load_yaml)(text, origin)
    topics = presets = None
    if isinstance(data, Mapping):
        extra = sorted(set(map(str, data)) - _FILE_KEYS)
        if extra or "templates" not in data:
            what = f"unknown key {extra[0]!r}" if extra else "no 'templates:' key"
            raise TemplateBankError(f"{origin}: {what}; a bank file is a list of templates or a mapping "
                                    "with 'templates:' (and optional 'topics:', 'presets:')")
        topics = _parse_topics(data["topics"], origin) if "topics" in data else None
        presets = data.get("presets")
        data = data["templates"]
    if not isinstance(data, list):
        raise TemplateBankError(f"{origin}: expected a list of templates or a mapping with 'templates:', "
                                f"got {type(data).__name__}")
    templates = [_parse_template(raw, origin, i) for i, raw in enumerate(data)]
    _check_unique(templates, origin)
    return templates, topics, presets


def _check_unique(templates: Iterable[Template], origin: str) -> None:
    seen: dict[str, int] = {}
    for i, t in enumerate(templates):
        if t.id in seen:
            raise TemplateBankError(f"{origin}: template #{i}: duplicate id {t.id!r} (first at #{seen[t.id]})")
        seen[t.id] = i


def _check_labels(templates: Iterable[Template], topics: Mapping[str, Sequence[str]]) -> None:
    """Every ``{labels}`` template needs a topic list in its own language."""
    for t in templates:
        if "labels" in t.slots and t.lang not in topics:
            have = ", ".join(sorted(topics)) or "none"
            raise TemplateBankError(f"{t.origin}: template {t.id!r} uses {{labels}} but there is no topic list "
                                    f"for its language {t.lang!r} (topics: {have})")


def default_bank_file() -> Any:
    """The default bank shipped with polyvox (an importlib Traversable; a Path in normal installs)."""
    return importlib.resources.files("polyvox.data").joinpath(DEFAULT_BANK)


def load_bank(paths: Sequence[str | Path] | None = None, *, default: bool = True) -> Bank:
    """Load the default bank plus user template files.

    Args:
        paths: YAML or JSON files, each a list of templates or a mapping with ``templates:`` (and
            optional ``topics:``, which replaces the topic lists). Later files win: a template with an
            existing id replaces it, in place.
        default: start from the default bank; False loads only `paths`.

    Raises:
        TemplateBankError: a file that cannot be read or is invalid; the message names the file and
            the template (index and id).
    """
    sources = ([default_bank_file()] if default else []) + [Path(p) for p in paths or ()]
    templates: dict[str, Template] = {}
    topics: dict[str, tuple[str, ...]] = {}
    presets: dict[str, Preset] = {}
    for source in sources:
        file_templates, file_topics, file_presets = _read_file(source)
        for t in file_templates:
            if t.id in templates:
                log.info("%s: template %r replaces the one from %s", t.origin, t.id, templates[t.id].origin)
            templates[t.id] = t
        topics = file_topics if file_topics is not None else topics
        if file_presets is not None:  # a preset of a later file replaces the one of the same name
            presets |= _parse_presets(file_presets, str(source), templates)
    _check_labels(templates.values(), topics)
    return Bank(templates, topics, presets)


@functools.cache
def default_bank() -> Bank:
    """The bank shipped with polyvox, loaded once."""
    return load_bank()


# --- the bank --------------------------------------------------------------------------------------


def _stable_int(*parts: object) -> int:
    """A 64-bit integer from SHA-256 of the parts: the same on every machine, process and Python run."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _stable_rng(*parts: object) -> random.Random:
    """A Random seeded by `_stable_int` (never Python's salted ``hash()``)."""
    return random.Random(_stable_int(*parts))


@dataclass
class Bank:
    """Validated templates (by id, in file order) and the topic lists for ``{labels}``."""

    templates: dict[str, Template]
    """Id -> template."""
    topics: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Template language -> candidate topics (parallel translations of one list)."""
    presets: dict[str, Preset] = field(default_factory=dict)
    """Name -> prompt preset (see `Preset`)."""

    def __len__(self) -> int:
        return len(self.templates)

    def __iter__(self) -> Iterator[Template]:
        return iter(self.templates.values())

    def __getitem__(self, template_id: str) -> Template:
        return self.templates[template_id]

    def select(self, variant: str, split: str = "train") -> list[Template]:
        """Templates of a variant (``T``, ``MI``, ``TMI``) and split, in bank order."""
        if variant not in MIT_VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (known: {', '.join(MIT_VARIANTS)})")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        kinds = MIT_VARIANTS[variant]
        return [t for t in self if t.kind in kinds and t.split == split]

    def applicable(
        self, template: Template, source_lang: str, *, pivot_lang: str = "en_us", other_langs: Sequence[str] = ()
    ) -> bool:
        """Whether the template can be expanded for a source: its target rule leaves a language other than it."""
        if template.target is None:
            return True
        return bool(_target_candidates(template.target, source_lang, pivot_lang, other_langs))

    def expand(
        self,
        template: Template,
        source_lang: str,
        *,
        target_lang: str | None = None,
        seed: int,
        pivot_lang: str = "en_us",
        other_langs: Sequence[str] = (),
        n_labels: int = DEFAULT_N_LABELS,
    ) -> Instruction:
        """Fill a template's slots for one source language, deterministically in `seed`.

        Args:
            template: a template of this bank.
            source_lang: FLEURS code of the transcript.
            target_lang: overrides the template's target rule (only for templates that have one).
            seed: seeds the topic labels and the ``other`` target draw.
            pivot_lang: target of ``target: pivot``.
            other_langs: candidates of ``target: other`` (the source is left out).
            n_labels: candidate topics shown by ``{labels}``.

        Raises:
            ValueError: an unknown language code, a target equal to the source, no target left, or a
                target given to a template without a target rule.
        """
        check_lang(source_lang)
        rng = _stable_rng(seed, "expand", template.id, source_lang)
        target = self._target(template, source_lang, target_lang, pivot_lang, other_langs, rng)
        labels = self._labels(template, n_labels, rng) if "labels" in template.slots else ()
        values = {
            "source": language_name(source_lang),
            "target": language_name(target) if target else "",
            "labels": ", ".join(labels),
        }
        return Instruction(
            template_id=template.id, task=template.task, kind=template.kind,
            prefix=template.prefix.format_map(values), postfix=template.postfix.format_map(values),
            source_lang=source_lang, target_lang=target, labels=labels, lang=template.lang,
        )

    @staticmethod
    def _target(
        template: Template, source: str, target: str | None, pivot: str, others: Sequence[str], rng: random.Random
    ) -> str | None:
        if template.target is None:
            if target is not None:
                raise ValueError(f"template {template.id!r} has no target rule; got target_lang={target!r}")
            return None
        if target is not None:
            if check_lang(target) == source:
                raise ValueError(f"template {template.id!r}: target language {target!r} equals the source")
            return target
        candidates = _target_candidates(template.target, source, pivot, others)
        if not candidates:
            raise ValueError(f"template {template.id!r} (target {template.target!r}) has no target language "
                             f"other than the source {source!r} (pivot {pivot!r}, others {list(others)})")
        return rng.choice(candidates)

    def _labels(self, template: Template, n_labels: int, rng: random.Random) -> tuple[str, ...]:
        if template.lang not in self.topics:
            raise ValueError(f"template {template.id!r} uses {{labels}} but there are no {template.lang!r} topics")
        topics = self.topics[template.lang]
        return tuple(topics[i] for i in rng.sample(range(len(topics)), min(n_labels, len(topics))))


# --- drawing instructions for an utterance -------------------------------------------------------


def _by_template(pool: list[Template], rng: random.Random) -> list[Template]:
    order = list(pool)
    rng.shuffle(order)
    return order


def _by_task(pool: list[Template], rng: random.Random) -> list[Template]:
    """Round-robin over shuffled tasks, each task's templates shuffled: tasks come up equally often."""
    groups: dict[str, list[Template]] = {}
    for t in pool:
        groups.setdefault(t.task, []).append(t)
    tasks = sorted(groups)
    rng.shuffle(tasks)
    queues = [_by_template(groups[task], rng) for task in tasks]
    longest = max(map(len, queues))
    return [q[i] for i in range(longest) for q in queues if i < len(q)]


BALANCES: dict[str, Callable[[list[Template], random.Random], list[Template]]] = {
    "template": _by_template,
    "task": _by_task,
}
"""How `draw_instructions` orders the pool: uniformly over templates, or over tasks first."""


def draw_instructions(
    bank: Bank,
    utt_id: str,
    source_lang: str,
    variant: str,
    n: int,
    seed: int,
    split: str = "train",
    pivot_lang: str = "en_us",
    other_langs: Sequence[str] = (),
    *,
    balance: str = "template",
) -> list[Instruction]:
    """`n` expanded instructions for one utterance, deterministic in ``(seed, utt_id)``.

    Templates are drawn without replacement; when `n` exceeds the applicable templates the draw
    cycles through the same order again (slots are re-drawn). Templates whose target rule leaves no
    language other than the source (``pivot`` for a pivot-language utterance) are skipped.

    Args:
        bank: the template bank.
        utt_id: utterance id (the manifest line id).
        source_lang: FLEURS code of the transcript.
        variant: ``T``, ``MI`` or ``TMI``.
        n: how many instructions.
        seed: run seed.
        split: ``train``, or ``heldout`` for evaluation.
        pivot_lang: target of ``target: pivot`` templates.
        other_langs: candidates of ``target: other`` templates.
        balance: a key of `BALANCES`: ``template`` (uniform over templates) or ``task``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if balance not in BALANCES:
        raise ValueError(f"unknown balance {balance!r} (known: {', '.join(BALANCES)})")
    check_lang(source_lang)
    pool = [
        t for t in bank.select(variant, split)
        if bank.applicable(t, source_lang, pivot_lang=pivot_lang, other_langs=other_langs)
    ]
    if not pool:
        raise ValueError(f"no {split} template of variant {variant!r} applies to {source_lang!r}")
    order = BALANCES[balance](pool, _stable_rng(seed, "draw", utt_id))
    return [
        bank.expand(
            order[i % len(order)], source_lang, seed=_stable_int(seed, utt_id, i),
            pivot_lang=pivot_lang, other_langs=other_langs,
        )
        for i in range(n)
    ]
