"""Readers of released speech corpora: FLEURS, CoVoST 2 and Common Voice.

A reader walks a corpus folder and yields `Clip`s: one utterance each, with its FLEURS language,
split, text, translations, group and where its audio is (`AudioRef`: a file, a member of a
``.tar.gz`` archive or a row of an arrow/parquet table). Readers only read tables; decoding and
converting the audio is done by :func:`polyvox.data.sources.corpora.import_corpus`.

Corpus locale names (``fr``, ``zh-CN``, ``sv-SE``, ``pt``, ``cmn_hans_cn`` …) are mapped to FLEURS codes
with `corpus_lang`. Split names are polyvox's ``train``, ``dev`` and ``test``: ``validation`` is read
as ``dev`` and CoVoST's ``train_covost`` (extra CoVoST 1 training data) as ``train``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from polyvox.data.languages import FLEURS
from polyvox.data.sources.catalogs import locale_to_fleurs
from polyvox.data.sources.text import group_id

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
"""polyvox split names."""
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "test": "test", "train_covost": "train",
}
"""Split names used by the corpora (and the Hugging Face layout) -> polyvox split names."""

CV_TABLES = ("train", "dev", "test", "validated", "invalidated", "other")
"""Common Voice tables with one clip a row; only train, dev and test are read unless asked for."""

PYARROW_HINT = "reading arrow/parquet corpora needs pyarrow: pip install 'polyvox[corpora]'"

# Corpus locale names that the gettext table does not map (or maps differently for speech).
_CORPUS_LOCALES: dict[str, str | None] = {
    "en": "en_us",
    "pt": "pt_br",  # Common Voice / CoVoST Portuguese; FLEURS Portuguese is Brazilian
    "zh-HK": "yue_hant_hk",  # Common Voice's zh-HK is spoken Cantonese
    "yue": "yue_hant_hk",
    "ceb": "ceb_ph", "kam": "kam_ke", "kea": "kea_cv", "luo": "luo_ke", "umb": "umb_ao",
    "zh-TW": None,  # Taiwanese Mandarin in traditional script: not FLEURS's cmn_hans_cn
    "nn-NO": None,  # Nynorsk: not FLEURS's Bokmål
}

# Language names of the Hugging Face FLEURS `language` column that differ from polyvox's names.
_NAME_ALIASES = {"cantonese chinese": "yue_hant_hk", "sorani kurdish": "ckb_iq", "northern sotho": "nso_za",
                 "norwegian": "nb_no", "oriya": "or_in"}
_NAMES = {**{name.casefold(): code for code, name in FLEURS.items()}, **_NAME_ALIASES}


class CorpusError(ValueError):
    """A corpus that cannot be read as laid out (missing table, unknown language …); names the file."""


def corpus_lang(name: str) -> str | None:
    """Map a corpus locale name to a FLEURS code, or None if there is no FLEURS language for it.

    Tries, in order: a FLEURS code as is (``cmn_hans_cn``); polyvox's table of corpus locales
    (``en``, ``pt``, ``zh-HK`` …); the gettext locale table after ``-`` -> ``_`` (``fr``, ``zh-CN``,
    ``sv-SE``); and a language whose FLEURS region is the locale's region (``ga-IE`` -> ``ga_ie``, but
    ``pt-PT`` is not ``pt_br``).

    Args:
        name: a locale such as ``fr``, ``zh-CN``, ``sv-SE``, ``pt`` or ``cmn_hans_cn``.
    """
    flat = name.strip().lower().replace("-", "_")
    if flat in FLEURS:
        return flat
    base, _, region = flat.partition("_")
    key = f"{base}_{region.upper()}" if region else base  # gettext spelling: zh_CN, sv_SE
    if key.replace("_", "-") in _CORPUS_LOCALES:
        return _CORPUS_LOCALES[key.replace("_", "-")]
    hit = locale_to_fleurs(key)
    if hit is not None:
        return hit[0]
    code = _CORPUS_LOCALES.get(base) or (locale_to_fleurs(base) or (None,))[0]
    return code if region and code is not None and code.endswith(f"_{region}") else None


def split_name(name: str) -> str | None:
    """polyvox split name of a corpus split name (``validation`` -> ``dev``), or None if unknown."""
    return SPLIT_ALIASES.get(name.strip().lower())


@dataclass(frozen=True)
class AudioRef:
    """Where a clip's audio is."""

    path: str
    """An audio file, or the container file (archive or table) holding the audio."""
    container: str | None = None
    """``tar``, ``arrow`` or ``parquet`` for audio inside a container; None for a plain file."""
    key: str | int | None = None
    """Member file name (``tar``) or row index (``arrow``, ``parquet``) inside the container."""


@dataclass
class Clip:
    """One utterance found in a corpus, before its audio is converted."""

    id: str
    """Manifest id, ``<lang>/<split>/<name>``; the FLAC goes to ``audio/<id>.flac``."""
    lang: str
    """FLEURS code."""
    split: str
    """train, dev or test (Common Voice tables asked for by name keep that name)."""
    text: str
    """Transcript."""
    where: str
    """``file:line`` (or ``file row N``) of the table entry, for messages."""
    audio: AudioRef
    """Where the audio is."""
    translations: dict[str, str] = field(default_factory=dict)
    """Translations keyed by FLEURS code."""
    group: str | None = None
    """Pivot id shared by recordings of the same sentence."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: source corpus, file name, speaker …"""


@dataclass
class ReadContext:
    """What the caller asked for, and the entries skipped so far."""

    langs: set[str] | None = None
    """FLEURS codes to keep (None: all)."""
    splits: set[str] | None = None
    """Split names to keep (None: the corpus's train, dev and test)."""
    lang: str | None = None
    """Language of every clip, overriding the corpus's own names."""
    translation_lang: str = "en_us"
    """FLEURS code of translations whose language the corpus does not name."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """``{"where", "reason"}`` of each entry left out."""

    def skip(self, where: str, reason: str) -> None:
        """Record an entry that is left out."""
        self.skipped.append({"where": where, "reason": reason})
        log.debug("skipping %s: %s", where, reason)

    def wants(self, lang: str | None = None, split: str | None = None) -> bool:
        """Whether clips of this language and split are asked for (None: not known yet)."""
        if lang is not None and self.langs is not None and lang not in self.langs:
            return False
        wanted = self.splits if self.splits is not None else set(SPLITS)
        return split is None or split in wanted

    def resolve(self, name: str, where: str, row: bool = False) -> str | None:
        """FLEURS code of a corpus language name (the `lang` override wins).

        An unmappable name is an error, except for whole folders or files when the caller named
        the languages it wants: those cannot be among them and are passed over.

        Raises:
            CorpusError: unknown language; the message names `where`.
        """
        if self.lang is not None:
            return self.lang
        code = corpus_lang(name)
        if code is not None:
            return code
        if self.langs is not None and not row:
            log.info("%s: language %r has no FLEURS code; not among the languages asked for", where, name)
            return None
        raise CorpusError(f"{where}: unknown language {name!r}: not a FLEURS code and no mapping to one "
                          "(name the language with lang=, e.g. lang='fr_fr')")


Reader = Callable[[Path, ReadContext], Iterator[Clip]]


def safe_name(name: str) -> str:
    """A file-name-safe version of a corpus key (clip stem, sentence id)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "_"


def read_rows(path: Path, delimiter: str = "\t", header: bool = True, quoting: int = csv.QUOTE_NONE,
          required: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, str] | list[str]]]:
    """Yield (``file:line``, row) of a delimited table; dict rows if it has a header."""
    if not path.is_file():
        raise CorpusError(f"table not found: {path}")
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        cols: list[str] | None = None
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if cols is None and header:
                cols = [c.strip() for c in row]
                missing = [c for c in required if c not in cols]
                if missing:
                    raise CorpusError(f"{where}: missing column(s) {', '.join(missing)} "
                                      f"(the header has {', '.join(cols) or 'nothing'})")
                continue
            if not any(c.strip() for c in row):
                continue
            if cols is None:
                yield where, row
            elif len(row) != len(cols):
                yield where, {"": f"expected {len(cols)} columns, got {len(row)}"}
            else:
                yield where, dict(zip(cols, row))


# --- FLEURS ------------------------------------------------------------------------------------


def _fleurs_lang_dirs(src: Path) -> list[Path]:
    """Language folders of a released FLEURS tree (the root itself if it is one), or []."""
    data = src / "data" if (src / "data").is_dir() else src
    if not data.is_dir():
        return []
    if any((data / f"{s}.tsv").is_file() for s in SPLITS):
        return [data]
    return sorted(d for d in data.iterdir() if d.is_dir() and any((d / f"{s}.tsv").is_file() for s in SPLITS))


def read_fleurs(src: Path, ctx: ReadContext) -> Iterator[Clip]:
    """FLEURS as released (``data/<lang>/<split>.tsv`` + ``audio/<split>.tar.gz`` or ``audio/<split>/``),
    or the Hugging Face layout (arrow or parquet files).

    Each sentence has several recordings (same sentence id, different files): recording ``k`` (in
    table order) gets id ``<lang>/<split>/<sentence id>-<k>``; all recordings, in every language,
    share the group ``fleurs-<sentence id>``. `text` is the raw transcription.
    """
    dirs = _fleurs_lang_dirs(src)
    if not dirs:
        if not hf_tables(src):
            raise CorpusError(f"{src}: no FLEURS language folder with train.tsv, dev.tsv or test.tsv "
                              "(expected <root>/data/<lang>/<split>.tsv) and no arrow/parquet files")
        yield from read_fleurs_hf(src, ctx)
        return
    for d in dirs:
        lang = ctx.resolve(d.name, str(d))
        if lang is None or not ctx.wants(lang):
            continue
        for split in sorted(ctx.splits) if ctx.splits is not None else SPLITS:
            tsv = d / f"{split}.tsv"
            if not tsv.is_file():
                if ctx.splits is not None:
                    raise CorpusError(f"FLEURS table not found: {tsv}")
                log.info("%s: no %s split", d, split)
                continue
            folder, tar = d / "audio" / split, d / "audio" / f"{split}.tar.gz"
            if not folder.is_dir() and not tar.is_file():
                raise CorpusError(f"{tsv}: its audio is missing: expected {folder}/ or {tar}")
            recordings: Counter[str] = Counter()
            for where, row in read_rows(tsv, header=False):
                if len(row) < 7:
                    ctx.skip(where, f"expected 7 tab-separated columns, got {len(row)}")
                    continue
                sid, file_name, raw, normalized, _, _, gender = (c.strip() for c in row[:7])
                k = recordings[sid]
                recordings[sid] += 1  # counted before any check, so ids stay stable when a row is bad
                if not raw:
                    ctx.skip(where, "empty text")
                    continue
                ref = AudioRef(str(folder / file_name)) if folder.is_dir() else AudioRef(str(tar), "tar", file_name)
                yield Clip(
                    id=f"{lang}/{split}/{safe_name(sid)}-{k}", lang=lang, split=split, text=raw, where=where,
                    audio=ref, group=f"fleurs-{sid}",
                    meta={"source": "fleurs", "recording": k, "gender": gender.lower(), "file": file_name,
                          "normalized": normalized},
                )


def read_fleurs_hf(src: Path, ctx: ReadContext) -> Iterator[Clip]:
    """FLEURS in the Hugging Face layout: ``save_to_disk`` arrow files or parquet files."""
    recordings: Counter[tuple[str, str, str]] = Counter()
    for table in hf_tables(src):
        split = _table_split(table, src, ctx)
        if not ctx.wants(split=split):
            continue
        features = hf_info(table, src).get("features") or {}
        lang_names = features.get("lang_id", {}).get("names")
        genders = features.get("gender", {}).get("names") or ["male", "female", "other"]
        for i, row in enumerate(read_table_rows(table)):
            where = f"{table} row {i}"
            lang = _hf_fleurs_lang(row, lang_names, table, ctx, where)
            if not ctx.wants(lang, split):
                continue
            sid = str(row.get("id", "")).strip()
            k = recordings[lang, split, sid]
            recordings[lang, split, sid] += 1
            text = (row.get("raw_transcription") or row.get("transcription") or "").strip()
            if not sid or not text:
                ctx.skip(where, "empty text" if sid else "no sentence id")
                continue
            gender = row.get("gender")
            if isinstance(gender, int) and 0 <= gender < len(genders):
                gender = genders[gender]
            file_name = PurePosixPath(str(row.get("path") or "")).name
            yield Clip(
                id=f"{lang}/{split}/{safe_name(sid)}-{k}", lang=lang, split=split, text=text, where=where,
                audio=AudioRef(str(table), table_kind(table), i), group=f"fleurs-{sid}",
                meta={"source": "fleurs", "recording": k, "gender": str(gender or "").lower(), "file": file_name,
                      "normalized": row.get("transcription") or ""},
            )


def _hf_fleurs_lang(row: dict, lang_names: list[str] | None, table: Path, ctx: ReadContext, where: str) -> str:
    if ctx.lang is not None:
        return ctx.lang
    name = str(row.get("language") or "").replace("-", " ").replace("_", " ").casefold()
    if name in _NAMES:
        return _NAMES[name]
    lang_id = row.get("lang_id")
    if lang_names and isinstance(lang_id, int) and 0 <= lang_id < len(lang_names):
        code = corpus_lang(lang_names[lang_id])
        if code is not None:
            return code
    for part in reversed(table.parts[:-1]):
        if part in FLEURS:
            return part
    raise CorpusError(f"{where}: cannot tell the language (language={row.get('language')!r}, "
                      f"lang_id={lang_id!r}); name it with lang=")


# --- Arrow / parquet tables (Hugging Face layout) ----------------------------------------------


def hf_tables(src: Path) -> list[Path]:
    """Arrow and parquet files under `src` (or `src` itself), sorted."""
    if src.is_file():
        return [src] if src.suffix in (".arrow", ".parquet") else []
    return sorted(p for ext in ("*.arrow", "*.parquet") for p in src.rglob(ext) if not p.name.startswith("."))


def table_kind(path: Path) -> str:
    """``arrow`` or ``parquet``, from the file name."""
    return "parquet" if path.suffix == ".parquet" else "arrow"


def import_pyarrow() -> tuple[Any, Any]:
    """`pyarrow` and `pyarrow.parquet`, or an ImportError naming the extra to install."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(PYARROW_HINT) from None
    return pa, pq


def _arrow_reader(path: Path) -> Any:
    pa, _ = import_pyarrow()
    source = pa.memory_map(str(path))  # zero-copy: only the columns used are ever read
    try:
        return pa.ipc.open_stream(source)  # `save_to_disk` writes IPC streams
    except pa.ArrowInvalid:
        return pa.ipc.open_file(source)


def open_table(path: Path, columns: list[str] | None = None, exclude: tuple[str, ...] = ()) -> Any:
    """A `pyarrow.Table` of an arrow (IPC stream or file, memory-mapped) or parquet file.

    Raises:
        CorpusError: not a readable arrow or parquet file.
    """
    _, pq = import_pyarrow()
    try:
        if table_kind(path) == "parquet":
            names = pq.read_schema(path).names
            return pq.read_table(path, columns=[c for c in (columns or names) if c not in exclude])
        table = _arrow_reader(path).read_all()
        return table.select([c for c in (columns or table.column_names) if c not in exclude and c in table.column_names])
    except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise CorpusError(f"{path}: cannot read as {table_kind(path)} ({e})") from None


def read_table_rows(path: Path) -> list[dict[str, Any]]:
    """Every column but ``audio`` of a table, as one dict a row."""
    return open_table(path, exclude=("audio",)).to_pylist()


def hf_info(table: Path, root: Path) -> dict[str, Any]:
    """The Hugging Face ``dataset_info`` of a table (features, config name), or {}.

    Read from a ``dataset_info.json`` beside the table or above it (up to `root`), updated with
    the table's own schema metadata.
    """
    _, pq = import_pyarrow()
    info: dict[str, Any] = {}
    for folder in [table.parent, *table.parent.parents]:
        if (folder / "dataset_info.json").is_file():
            with contextlib.suppress(OSError, ValueError):
                info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
            break
        if folder == root or root not in folder.parents:
            break
    with contextlib.suppress(OSError, ValueError, AttributeError):
        schema = pq.read_schema(table) if table_kind(table) == "parquet" else _arrow_reader(table).schema
        if b"huggingface" in (schema.metadata or {}):
            info = {**info, **(json.loads(schema.metadata[b"huggingface"]).get("info") or {})}
    return info


def _table_split(table: Path, root: Path, ctx: ReadContext) -> str:
    """Split of a table from its file name (``test-00000-of-00001``) or a folder (``validation/``)."""
    rel = table.relative_to(root) if root in table.parents else PurePosixPath(table.name)
    for name in [*re.split(r"[-_.]", table.stem), *reversed(rel.parts[:-1])]:
        split = split_name(name)
        if split is not None:
            return split
    if ctx.splits is not None and len(ctx.splits) == 1:
        return next(iter(ctx.splits))
    raise CorpusError(f"{table}: cannot tell the split from the path (no train, validation or test in it); "
                      "ask for exactly one split to name it")


# --- CoVoST 2 and Common Voice -----------------------------------------------------------------

_COVOST_NAME = re.compile(r"^covost_v2\.([A-Za-z-]+)_([A-Za-z-]+)(?:\.(\w+))?\.tsv$")


def _covost_pair(src: str, tgt: str, where: str, ctx: ReadContext) -> tuple[str | None, str]:
    lang = ctx.resolve(src, where)
    target = corpus_lang(tgt)
    if target is None:
        raise CorpusError(f"{where}: unknown translation language {tgt!r}: no FLEURS code for it")
    return lang, target


def _clips_dir(tsv: Path, src: Path, locale: str) -> Path:
    for d in (tsv.parent / "clips", src / "clips", src / locale / "clips", tsv.parent / locale / "clips"):
        if d.is_dir():
            return d
    raise CorpusError(f"{tsv}: Common Voice clips folder not found (looked for {tsv.parent / 'clips'}"
                      f" and {src / locale / 'clips'})")


def read_covost2(src: Path, ctx: ReadContext) -> Iterator[Clip]:
    """CoVoST 2: ``covost_v2.<src>_<tgt>[.<split>].tsv`` + Common Voice ``clips/``, or the HF layout.

    ``translations`` = {target FLEURS code: translation}; the target comes from the table name (in
    the HF layout from the config name ``<src>_<tgt>``, else `ReadContext.translation_lang`).
    Rows of split ``train_covost`` go to ``train`` (as CoVoST's own recipes do) and keep
    ``covost_split`` in meta.
    """
    tables = [src] if src.is_file() and src.suffix == ".tsv" else sorted(src.glob("covost_v2.*.tsv"))
    if not tables:
        if hf_tables(src):
            yield from read_covost2_hf(src, ctx)
            return
        raise CorpusError(f"{src}: no covost_v2.<src>_<tgt>.tsv table (nor arrow/parquet files)")
    for tsv in tables:
        m = _COVOST_NAME.match(tsv.name)
        if m is None:
            raise CorpusError(f"{tsv}: not a CoVoST 2 table name (expected covost_v2.<src>_<tgt>[.<split>].tsv)")
        lang, target = _covost_pair(m.group(1), m.group(2), str(tsv), ctx)
        if lang is None or not ctx.wants(lang) or (m.group(3) and not ctx.wants(split=split_name(m.group(3)))):
            continue
        clips = _clips_dir(tsv, src.parent if src.is_file() else src, m.group(1))
        need = ("path", "sentence", "translation") + (() if m.group(3) else ("split",))
        for where, row in read_rows(tsv, required=need):
            if "" in row:
                ctx.skip(where, row[""])
                continue
            raw_split = row.get("split") or m.group(3) or ""
            split = split_name(raw_split)
            if split is None:
                ctx.skip(where, f"unknown split {raw_split!r}")
                continue
            if not ctx.wants(lang, split):
                continue
            yield _cv_clip(row, lang, split, where, clips, "covost2",
                           translations={target: row["translation"].strip()} if row["translation"].strip() else {},
                           extra={"covost_split": raw_split} if raw_split != split else {})


def read_covost2_hf(src: Path, ctx: ReadContext) -> Iterator[Clip]:
    """CoVoST 2 in the Hugging Face layout (columns client_id, file, audio, sentence, translation, id)."""
    for table in hf_tables(src):
        split = _table_split(table, src, ctx)
        if not ctx.wants(split=split):
            continue
        config = str(hf_info(table, src).get("config_name") or "")
        pair = next((p for p in [config, *reversed(table.parts[:-1])] if re.fullmatch(r"[A-Za-z-]+_[A-Za-z-]+", p)
                     and p.lower() not in FLEURS and corpus_lang(p.split("_")[1])), None)
        if pair is not None:
            lang, target = _covost_pair(*pair.split("_"), str(table), ctx)
        elif ctx.lang is not None:
            lang, target = ctx.lang, ctx.translation_lang
        else:
            raise CorpusError(f"{table}: cannot tell the language pair (no <src>_<tgt> config or folder name); "
                              "name the source language with lang=")
        if lang is None or not ctx.wants(lang, split):
            continue
        for i, row in enumerate(read_table_rows(table)):
            where = f"{table} row {i}"
            text, translation = (row.get("sentence") or "").strip(), (row.get("translation") or "").strip()
            if not text:
                ctx.skip(where, "empty text")
                continue
            name = PurePosixPath(str(row.get("file") or row.get("id") or f"row{i}")).stem
            yield Clip(
                id=f"{lang}/{split}/{safe_name(name)}", lang=lang, split=split, text=text, where=where,
                audio=AudioRef(str(table), table_kind(table), i), group=group_id(text, "cv"),
                translations={target: translation} if translation else {},
                meta={"source": "covost2", "file": PurePosixPath(str(row.get("file") or "")).name,
                      "speaker": row.get("client_id") or ""},
            )


def _cv_clip(row: dict[str, str], lang: str, split: str, where: str, clips: Path, source: str,
             translations: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> Clip:
    text, path = row["sentence"].strip(), row["path"].strip()
    sid = (row.get("sentence_id") or "").strip()
    meta: dict[str, Any] = {"source": source, "file": path, "speaker": (row.get("client_id") or "").strip()}
    meta.update({k: row[k].strip() for k in ("gender", "age", "accents") if (row.get(k) or "").strip()})
    if sid:
        meta["sentence_id"] = sid
    return Clip(
        id=f"{lang}/{split}/{safe_name(PurePosixPath(path).stem)}", lang=lang, split=split, text=text, where=where,
        audio=AudioRef(str(clips / path)), group=f"cv-{sid}" if sid else group_id(text, "cv"),
        translations=translations or {}, meta={**meta, **(extra or {})},
    )


def read_commonvoice(src: Path, ctx: ReadContext) -> Iterator[Clip]:
    """Common Voice as released: ``<root>/<locale>/<table>.tsv`` + ``<root>/<locale>/clips/``.

    `src` may be the release root (every locale folder is read) or one locale's folder. Tables
    read: ``train``, ``dev`` and ``test`` unless `ReadContext.splits` names others (``validated``,
    ``other`` …, kept under that split name). Recordings of one sentence by several speakers share
    the group ``cv-<sentence_id>`` (or ``cv-<hash of the normalised sentence>``); the speaker
    (``client_id``) is in meta.
    """
    is_locale = (src / "clips").is_dir() or any((src / f"{t}.tsv").is_file() for t in CV_TABLES)
    dirs = [src] if is_locale else sorted(d for d in src.iterdir() if d.is_dir() and (d / "clips").is_dir())
    if not dirs:
        raise CorpusError(f"{src}: no Common Voice locale folder (expected <root>/<locale>/clips/ and tables)")
    for d in dirs:
        lang = ctx.resolve(d.name, str(d))
        if lang is None or not ctx.wants(lang):
            continue
        names = sorted(ctx.splits) if ctx.splits is not None else list(SPLITS)
        found = [n for n in names if (d / f"{n}.tsv").is_file()]
        if not found or (ctx.splits is not None and len(found) < len(names)):
            missing = [str(d / f"{n}.tsv") for n in names if n not in found]
            raise CorpusError(f"Common Voice table(s) not found: {', '.join(missing)}")
        for name in found:
            split = split_name(name) or name
            for where, row in read_rows(d / f"{name}.tsv", required=("path", "sentence")):
                if "" in row:
                    ctx.skip(where, row[""])
                elif not row["sentence"].strip():
                    ctx.skip(where, "empty text")
                else:
                    yield _cv_clip(row, lang, split, where, d / "clips", "commonvoice")
