"""Parallel text from gettext ``.mo`` catalogs: translated software messages, pivoted on English.

Every translated message in a catalog is an (English msgid, translation) pair written by a human
translator. Sentence-like pairs (several words, no placeholders, markup or keyboard accelerators)
make a free, offline multilingual parallel corpus. The English msgid is the pivot: all translations
of the same (normalised) msgid share one ``group`` id.

Catalogs come from named sources (a registry, see `CATALOG_SOURCES`) and from directories the
caller names. A catalog's locale (``fr``, ``pt_BR``, ``sr@latin`` …) is mapped to a FLEURS code with
`LOCALE_TO_FLEURS`; unmapped locales are skipped.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from polyvox.data.languages import check_lang
from polyvox.data.sources.catalogs import Catalog, MoError, find_catalogs, locale_to_fleurs, read_catalog
from polyvox.data.sources.debian import debian_catalogs
from polyvox.data.sources.text import ENGLISH, Message, group_id, normalise
from polyvox.progress import Progress

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Sentence filter
# ---------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLACEHOLDER = re.compile(
    r"%\(\w+\)|%[-+#0' ]*[\d*]*(?:\.[\d*]+)?(?:hh|ll|[hlLqjzt])?[a-zA-Z%@]|%\d"  # printf, Qt %1
    r"|[{}]"  # str.format / ICU / brace templates
    r"|\$\{?\w"  # $1, $HOME, ${var}
    r"|@\w+@"  # autoconf substitutions
)
_MARKUP = re.compile(r"<[^>]*>|&#?\w+;|[<>]")
_ACCELERATOR = re.compile(r"_|&(?=\S)|~")
# Code, paths, options, identifiers (camelCase, dotted names): read badly and say little.
_TECHNICAL = re.compile(r"`|\||=|\\|--|::|https?:|www\.|\w\(\)|[\[\]*#/^]|[a-z][A-Z]|\w\.\w")


def _count_words(text: str) -> int:
    return sum(1 for w in text.split() if any(c.isalpha() for c in w))


def reject_reason(
    msgid: str,
    msgstr: str,
    lang: str,
    *,
    min_words: int = 4,
    max_words: int = 14,
    max_chars: int = 120,
) -> str | None:
    """Why a (msgid, msgstr) pair is not a usable spoken sentence, or None if it is.

    Args:
        msgid: English source message (raw; newlines and tabs are rejected before normalising).
        msgstr: translation into `lang` (ignored when `lang` is English).
        lang: FLEURS code of the translation.
        min_words: fewest words the English message may have.
        max_words: most words the English message may have.
        max_chars: most characters either side may have.

    Returns:
        A short reason (``"placeholder"``, ``"markup"``, ``"accelerator"``, ``"untranslated"`` …)
        or None.
    """
    sides = [msgid] if lang == ENGLISH else [msgid, msgstr]
    for side in sides:
        if not side.strip():
            return "empty"
        if _CONTROL.search(side):
            return "control character"
        if _PLACEHOLDER.search(side):
            return "placeholder"
        if _MARKUP.search(side):
            return "markup"
        if _ACCELERATOR.search(side):
            return "accelerator"
        if _TECHNICAL.search(side):
            return "technical"
        if len(normalise(side)) > max_chars:
            return "too long"
    en = normalise(msgid)
    if not en[0].isalpha():
        return "not a sentence"
    n_words = _count_words(en)
    if n_words < min_words:
        return "too few words"
    if n_words > max_words:
        return "too many words"
    if lang != ENGLISH:
        tr = normalise(msgstr)
        if tr.casefold() == en.casefold():
            return "untranslated"
        if not any(c.isalpha() for c in tr) or len(tr) < 0.15 * len(en):
            return "not a translation"
    return None


# ---------------------------------------------------------------------------------------------
# Catalog sources (a registry)
# ---------------------------------------------------------------------------------------------


def system_catalogs() -> list[Catalog]:
    """The machine's gettext catalogs (``/usr/share/locale``); empty if the folder is missing."""
    root = Path("/usr/share/locale")
    if not root.is_dir():
        log.warning("no system locale folder at %s", root)
        return []
    return find_catalogs(root, "gettext")


def django_catalogs() -> list[Catalog]:
    """Catalogs bundled with Django (core and contrib apps); empty if Django is not installed."""
    try:
        import django
    except ImportError:
        log.warning("Django is not installed (pip install 'polyvox[data]'); skipping its catalogs")
        return []
    pkg = Path(django.__file__).parent
    out = []
    for cat in find_catalogs(pkg, "django"):
        # .../django/contrib/admin/locale/fr/LC_MESSAGES/django.mo -> django:admin
        app_dir = cat.path.parents[3]
        app = "core" if app_dir.name == "conf" else app_dir.name
        domain = cat.path.stem
        label = f"django:{app}" if domain == "django" else f"django:{app}.{domain}"
        out.append(Catalog(cat.path, cat.locale, label))
    return sorted(out)


CATALOG_SOURCES: dict[str, Callable[[], list[Catalog]]] = {
    "system": system_catalogs,
    "django": django_catalogs,
    "debian": debian_catalogs,
}
"""Named catalog sources: name -> function listing its catalogs."""


# ---------------------------------------------------------------------------------------------
# Parallel messages
# ---------------------------------------------------------------------------------------------


def _gather_catalogs(sources: Iterable[str], dirs: Iterable[str | Path]) -> list[Catalog]:
    cats: set[Catalog] = set()
    for name in sources:
        if name not in CATALOG_SOURCES:
            raise ValueError(f"unknown text source {name!r}; known: {', '.join(sorted(CATALOG_SOURCES))}")
        cats.update(CATALOG_SOURCES[name]())
    for d in dirs:
        cats.update(find_catalogs(d, "gettext"))
    return sorted(cats)


def collect_messages(
    langs: Iterable[str],
    *,
    sources: Iterable[str] = ("system", "django"),
    dirs: Iterable[str | Path] = (),
    min_words: int = 4,
    max_words: int = 14,
    max_chars: int = 120,
    progress: bool = True,
    report: dict[str, Any] | None = None,
) -> dict[str, list[Message]]:
    """Sentence-like messages per language, one per pivot group, sorted by group.

    Catalogs of the requested non-English languages are read; English (``en_us``) messages are the
    accepted msgids of those catalogs (or of every mapped catalog when English is the only language).
    For a group with several translations in one language, the lowest-rank locale wins, then the
    most frequent translation, then the alphabetically first. Within a language, texts are unique
    (case-insensitively); the group with the smaller id keeps a shared text.

    Args:
        langs: FLEURS codes to collect.
        sources: names in `CATALOG_SOURCES`.
        dirs: extra folders to search for ``<locale>/LC_MESSAGES/*.mo``.
        min_words: fewest words an English message may have.
        max_words: most words an English message may have.
        max_chars: most characters a message or translation may have.
        progress: show a progress bar.
        report: if given, filled with what was read and skipped: ``catalogs`` (count read),
            ``unreadable`` (catalog label and reason), ``rejected`` (pair count by reason).

    Returns:
        FLEURS code -> messages (every requested language is a key, possibly with an empty list).
    """
    wanted = {check_lang(code) for code in langs}
    others = wanted - {ENGLISH}
    limits = {"min_words": min_words, "max_words": max_words, "max_chars": max_chars}
    cats = []
    for cat in _gather_catalogs(sources, dirs):
        mapped = locale_to_fleurs(cat.locale)
        if mapped and (mapped[0] in others or (not others and ENGLISH in wanted)):
            cats.append((cat, *mapped))
    log.info("reading %d catalogs for %d languages", len(cats), len(wanted))

    # (lang, group) -> candidate (rank, text, source); group -> Counter of English spellings
    cands: dict[tuple[str, str], list[tuple[int, str, str]]] = defaultdict(list)
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    en_source: dict[str, set[str]] = defaultdict(set)
    rejected: Counter[str] = Counter()
    unreadable: list[str] = []
    for cat, lang, rank in Progress(cats, desc="catalogs", unit="file", enabled=progress):
        try:
            entries = read_catalog(cat.path)
        except (MoError, OSError) as e:
            log.warning("skipping unreadable catalog: %s", e)
            unreadable.append(f"{cat.source} ({cat.locale}): {str(e).removeprefix(str(cat.path) + ': ')}")
            continue
        for msgid, msgstr in entries.items():
            if not msgid or "\x00" in msgid or "\x04" in msgid or "\x00" in msgstr:
                continue  # header, plural and context entries
            why = reject_reason(msgid, msgstr, lang, **limits)
            if why is not None:
                rejected[why] += 1
                continue
            en, gid = normalise(msgid), group_id(msgid)
            spellings[gid][en] += 1
            en_source[gid].add(cat.source)
            if lang != ENGLISH:
                cands[(lang, gid)].append((rank, normalise(msgstr), cat.source))
    log.info("rejected pairs by reason: %s", dict(sorted(rejected.items())))
    if report is not None:
        report.update(catalogs=len(cats) - len(unreadable), unreadable=sorted(unreadable),
                      rejected=dict(sorted(rejected.items())))

    pivot = {gid: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for gid, c in spellings.items()}
    chosen: dict[str, list[Message]] = {code: [] for code in sorted(wanted)}
    for (lang, gid), options in sorted(cands.items()):
        best_rank = min(r for r, _, _ in options)
        top = [(t, s) for r, t, s in options if r == best_rank]
        counts = Counter(t for t, _ in top)
        text = min(counts, key=lambda t: (-counts[t], t))
        source = min(s for t, s in top if t == text)
        chosen[lang].append(Message(lang, text, pivot[gid], gid, source))
    if ENGLISH in wanted:
        chosen[ENGLISH] = [Message(ENGLISH, pivot[g], pivot[g], g, min(en_source[g])) for g in sorted(pivot)]

    for lang, msgs in chosen.items():
        seen: set[str] = set()
        unique = []
        for m in msgs:  # already sorted by group
            key = m.text.casefold()
            if key not in seen:
                seen.add(key)
                unique.append(m)
        chosen[lang] = unique
        log.info("%s: %d sentence-like messages", lang, len(unique))
    return chosen
