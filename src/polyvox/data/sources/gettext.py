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
import struct
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from polyvox.data.languages import check_lang
from polyvox.data.sources.text import ENGLISH, Message, group_id, normalise

log = logging.getLogger(__name__)

class MoError(ValueError):
    """A ``.mo`` file that cannot be parsed; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Locale names -> FLEURS codes
# ---------------------------------------------------------------------------------------------

# Plain/primary locale of each FLEURS language (rank 0). Locales written in another script or a
# clearly different standard (sr@latin, pt_PT, pa_PK, uz@cyrillic, zh_TW …) are deliberately absent.
_PRIMARY: dict[str, str] = {
    "af": "af_za", "am": "am_et", "ar": "ar_eg", "as": "as_in", "ast": "ast_es", "az": "az_az",
    "be": "be_by", "bg": "bg_bg", "bn": "bn_in", "bs": "bs_ba", "ca": "ca_es", "ckb": "ckb_iq",
    "zh_CN": "cmn_hans_cn", "cs": "cs_cz", "cy": "cy_gb", "da": "da_dk", "de": "de_de",
    "el": "el_gr", "es": "es_419", "et": "et_ee", "fa": "fa_ir", "ff": "ff_sn", "fi": "fi_fi",
    "fil": "fil_ph", "fr": "fr_fr", "ga": "ga_ie", "gl": "gl_es", "gu": "gu_in", "ha": "ha_ng",
    "he": "he_il", "hi": "hi_in", "hr": "hr_hr", "hu": "hu_hu", "hy": "hy_am", "id": "id_id",
    "ig": "ig_ng", "is": "is_is", "it": "it_it", "ja": "ja_jp", "jv": "jv_id", "ka": "ka_ge",
    "kk": "kk_kz", "km": "km_kh", "kn": "kn_in", "ko": "ko_kr", "ky": "ky_kg", "lb": "lb_lu",
    "lg": "lg_ug", "ln": "ln_cd", "lo": "lo_la", "lt": "lt_lt", "lv": "lv_lv", "mi": "mi_nz",
    "mk": "mk_mk", "ml": "ml_in", "mn": "mn_mn", "mr": "mr_in", "ms": "ms_my", "mt": "mt_mt",
    "my": "my_mm", "nb": "nb_no", "ne": "ne_np", "nl": "nl_nl", "nso": "nso_za", "ny": "ny_mw",
    "oc": "oc_fr", "om": "om_et", "or": "or_in", "pa": "pa_in", "pl": "pl_pl", "ps": "ps_af",
    "pt_BR": "pt_br", "ro": "ro_ro", "ru": "ru_ru", "sd": "sd_in", "sk": "sk_sk", "sl": "sl_si",
    "sn": "sn_zw", "so": "so_so", "sr": "sr_rs", "sv": "sv_se", "sw": "sw_ke", "ta": "ta_in",
    "te": "te_in", "tg": "tg_tj", "th": "th_th", "tr": "tr_tr", "uk": "uk_ua", "ur": "ur_pk",
    "uz": "uz_uz", "vi": "vi_vn", "wo": "wo_sn", "xh": "xh_za", "yo": "yo_ng", "zu": "zu_za",
}

# Secondary locales of the same language and script: used only for messages the primary lacks.
_SECONDARY: dict[str, tuple[str, int]] = {
    "bn_IN": ("bn_in", 1), "nb_NO": ("nb_no", 1), "no": ("nb_no", 2), "tl": ("fil_ph", 1),
    "zh_Hans": ("cmn_hans_cn", 1), "ro_MD": ("ro_ro", 2), "es_MX": ("es_419", 1),
    "es_AR": ("es_419", 2), "es_CO": ("es_419", 2), "es_VE": ("es_419", 2), "es_NI": ("es_419", 2),
    "es_PR": ("es_419", 2), "de_DE": ("de_de", 1), "fr_FR": ("fr_fr", 1), "it_IT": ("it_it", 1),
    "nl_NL": ("nl_nl", 1), "ru_RU": ("ru_ru", 1), "pl_PL": ("pl_pl", 1), "cs_CZ": ("cs_cz", 1),
    "sv_SE": ("sv_se", 1), "fi_FI": ("fi_fi", 1), "hu_HU": ("hu_hu", 1), "tr_TR": ("tr_tr", 1),
    "ja_JP": ("ja_jp", 1), "ko_KR": ("ko_kr", 1), "uk_UA": ("uk_ua", 1), "da_DK": ("da_dk", 1),
}

LOCALE_TO_FLEURS: dict[str, tuple[str, int]] = {
    **{loc: (code, 0) for loc, code in _PRIMARY.items()},
    **_SECONDARY,
}
"""gettext locale name -> (FLEURS code, rank); for each message the lowest-rank locale wins."""


def locale_to_fleurs(locale: str) -> tuple[str, int] | None:
    """Map a gettext locale name to ``(FLEURS code, rank)``, or None if the locale is not used.

    A charset suffix is ignored (``de_DE.UTF-8`` -> ``de_DE``); a modifier is kept, so ``sr@latin``
    (Latin-script Serbian) is not confused with ``sr`` (Cyrillic).

    Args:
        locale: a locale directory name such as ``fr``, ``pt_BR`` or ``sr@latin``.
    """
    name, _, modifier = locale.partition("@")
    name = name.split(".", 1)[0]
    key = f"{name}@{modifier}" if modifier else name
    return LOCALE_TO_FLEURS.get(key)


# ---------------------------------------------------------------------------------------------
# .mo files
# ---------------------------------------------------------------------------------------------

_MO_MAGIC = {0x950412DE: "<", 0xDE120495: ">"}
_CHARSET = re.compile(rb"charset=([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def read_mo(path: str | Path) -> dict[str, str]:
    """Read every entry of a compiled gettext catalog.

    Keys and values are as stored: the header has key ``""``, plural entries have keys
    ``msgid\\x00msgid_plural`` and values with ``\\x00``-separated forms, and context entries have
    keys ``context\\x04msgid``.

    Raises:
        MoError: not a ``.mo`` file, truncated, or not decodable in its declared charset.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise MoError(f"{path}: too short to be a .mo file")
    order = _MO_MAGIC.get(struct.unpack("<I", data[:4])[0])
    if order is None:
        raise MoError(f"{path}: not a .mo file (bad magic number)")
    _, n, o_orig, o_trans = struct.unpack(order + "4I", data[4:20])
    if max(o_orig, o_trans) + 8 * n > len(data):
        raise MoError(f"{path}: truncated string tables ({n} entries)")
    table = struct.Struct(order + "II")
    raw: list[tuple[bytes, bytes]] = []
    for i in range(n):
        mlen, moff = table.unpack_from(data, o_orig + 8 * i)
        tlen, toff = table.unpack_from(data, o_trans + 8 * i)
        if moff + mlen > len(data) or toff + tlen > len(data):
            raise MoError(f"{path}: entry {i} points past the end of the file")
        raw.append((data[moff : moff + mlen], data[toff : toff + tlen]))
    charset = "utf-8"
    for k, v in raw:
        if k == b"":
            m = _CHARSET.search(v)
            if m and m.group(1).upper() != b"CHARSET":
                charset = m.group(1).decode("ascii")
            break
    try:
        return {k.decode(charset): v.decode(charset) for k, v in raw}
    except (LookupError, UnicodeDecodeError) as e:
        raise MoError(f"{path}: cannot decode as {charset} ({e})") from None


def read_po(path: str | Path) -> dict[str, str]:
    """Read the translated, current entries of a ``.po`` file in `read_mo`'s key format.

    Fuzzy, obsolete and untranslated entries are left out: a translator has not vouched for them.

    Raises:
        MoError: a file polib cannot parse.
    """
    try:
        import polib
    except ImportError as e:
        raise ImportError("reading .po catalogs needs polib: pip install 'polyvox[data]'") from e
    try:
        po = polib.pofile(str(path))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise MoError(f"{path}: not a readable .po file ({e})") from None
    out = {"": po.header}
    for e in po.translated_entries():
        key = e.msgid if not e.msgctxt else f"{e.msgctxt}\x04{e.msgid}"
        if e.msgid_plural:
            forms = [e.msgstr_plural[k] for k in sorted(e.msgstr_plural)]
            out[f"{key}\x00{e.msgid_plural}"] = "\x00".join(forms)
        else:
            out[key] = e.msgstr
    return out


CATALOG_READERS: dict[str, Callable[[str | Path], dict[str, str]]] = {".mo": read_mo, ".po": read_po}
"""Catalog file suffix -> reader returning ``{msgid: msgstr}``."""


def read_catalog(path: str | Path) -> dict[str, str]:
    """Read a ``.mo`` or ``.po`` catalog (see `read_mo` for the key format)."""
    reader = CATALOG_READERS.get(Path(path).suffix)
    if reader is None:
        raise MoError(f"{path}: not a gettext catalog (expected {' or '.join(CATALOG_READERS)})")
    return reader(path)


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
# Catalog discovery (a registry of named sources)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Catalog:
    """One catalog file (compiled ``.mo`` or source ``.po``) of one locale."""

    path: Path
    """Location of the ``.mo`` or ``.po`` file."""
    locale: str
    """gettext locale name (the folder above ``LC_MESSAGES``, or the stem of ``po/<locale>.po``)."""
    source: str
    """Provenance label without machine paths, e.g. ``gettext:coreutils`` or ``django:admin``."""


def _catalog_files(root: Path) -> list[Path]:
    """``.mo`` and ``.po`` files below `root`; a ``.po`` beside a ``.mo`` of the same name is left out."""
    mo = {p for p in root.rglob("*.mo") if p.is_file()}
    po = {p for p in root.rglob("*.po") if p.is_file() and p.with_suffix(".mo") not in mo}
    return sorted(mo | po)


def find_catalogs(root: str | Path, prefix: str = "gettext") -> list[Catalog]:
    """All catalogs below `root`, sorted by path.

    Two layouts are recognised: ``<locale>/LC_MESSAGES/<domain>.mo|.po`` (installed catalogs) and
    ``<domain>/po/<locale>.po`` (a project's translation folder; the locale must be known to
    `locale_to_fleurs`, which keeps ``po/`` files like ``POTFILES`` or ``en@quot`` out).

    Args:
        root: a folder to search recursively (a locale folder or anything containing some).
        prefix: first part of each catalog's `source` label; the domain name follows it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"catalog folder not found: {root}")
    out = []
    for p in _catalog_files(root):
        if p.parent.name == "LC_MESSAGES":
            out.append(Catalog(p, p.parent.parent.name, f"{prefix}:{p.stem}"))
        elif p.suffix == ".po" and locale_to_fleurs(p.stem) is not None:
            domain = p.parent.parent.name if p.parent.name == "po" and p.parent != root else p.parent.name
            out.append(Catalog(p, p.stem, f"{prefix}:{domain}"))
    return sorted(out)


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


def debian_catalogs() -> list[Catalog]:
    """Catalogs of the Debian translation packages in `polyvox.data.sources.debian.PACKAGES`."""
    from polyvox.data.sources.debian import debian_catalogs as fetch

    return fetch()


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
    for cat, lang, rank in tqdm(cats, desc="catalogs", unit="file", disable=not progress):
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
