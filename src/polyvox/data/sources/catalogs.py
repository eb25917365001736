"""gettext catalogs: reading ``.mo`` / ``.po`` files, finding them in a folder, and mapping their locales to
FLEURS codes. `polyvox.data.sources.gettext` turns them into parallel messages; the catalog sources (the
machine's, Django's, Debian's packages) list them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


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
# Catalog discovery
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
