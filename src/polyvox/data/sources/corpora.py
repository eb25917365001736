"""Import real speech corpora (FLEURS, CoVoST 2, Common Voice, a plain folder) as polyvox manifests.

`import_corpus` reads a corpus with the reader registered for its kind (`READERS`: the released
corpora are read by :mod:`polyvox.data.sources.corpora_readers`; `read_folder` reads polyvox's
generic folder + table format), converts every clip (wav, flac, mp3 …, from files or
from bytes inside ``.tar.gz`` archives and arrow/parquet tables) to 16 kHz mono FLAC under
``<out>/audio/<lang>/<split>/``, in parallel processes, and writes

- ``<out>/manifest.jsonl``: one `Utterance` a line, sorted by id: the same corpus and options
  give the same bytes;
- ``<out>/import.json``: kind, source, options, counts per language and split, the entries left out
  and why (``file:line``), software versions and the manifest's sha256.

Bad entries (missing or unreadable audio, empty audio or text) are left out and listed; the rest
is imported. A re-run converts only clips whose source changed or whose FLAC is missing: a small
index (``<out>/.import-index.json``) keeps each clip's source fingerprint, FLAC size and length.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing as mp
import tarfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from polyvox.audio import SAMPLE_RATE, AudioError, load_audio, to_mono_16k, write_flac
from polyvox.data.languages import check_lang
from polyvox.data.manifest import Utterance, split_counts, write_manifest
from polyvox.data.sources.corpora_readers import (
    PYARROW_HINT,
    SPLITS,
    AudioRef,
    Clip,
    CorpusError,
    ReadContext,
    Reader,
    corpus_lang,
    import_pyarrow,
    open_table,
    read_commonvoice,
    read_covost2,
    read_fleurs,
    read_rows,
    safe_name,
    split_name,
    table_kind,
)
from polyvox.fileio import atomic_write, atomic_write_text, sha256_file
from polyvox.progress import Progress
from polyvox.provenance import versions

log = logging.getLogger(__name__)

__all__ = [
    "FOLDER_DEFAULT_SPLIT", "PYARROW_HINT", "READERS", "AudioRef", "Clip", "CorpusError", "ReadContext",
    "corpus_lang", "decode", "import_corpus", "read_folder", "split_name",
]

MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "import.json"
INDEX_NAME = ".import-index.json"
IMPORT_FORMAT = 1  # bump when the way clips are converted changes, so converted clips are remade
_WINDOW = 4  # jobs in flight per worker: bounds the memory held by audio bytes from archives and tables

Payload = str | bytes | tuple[Any, int]
"""Audio to convert: a file path, encoded bytes, or (samples, sample rate)."""


# ---------------------------------------------------------------------------------------------
# A folder of audio files + a table (polyvox's generic format)
# ---------------------------------------------------------------------------------------------

FOLDER_DEFAULT_SPLIT = "test"
"""Split of `folder` rows without a ``split`` column or value: own recordings are mostly for evaluation."""


def _folder_table(src: Path) -> Path:
    if src.is_file():
        return src
    tables = sorted(p for ext in ("*.tsv", "*.csv") for p in src.glob(ext))
    if not tables:
        raise CorpusError(f"{src}: no .tsv or .csv table (with columns path, text, lang) in the folder")
    if len(tables) > 1:
        raise CorpusError(f"{src}: several tables ({', '.join(p.name for p in tables)}); pass one as the source")
    return tables[0]


def read_folder(src: Path, ctx: ReadContext) -> Iterator[Clip]:
    """A folder of audio files and one TSV or CSV table (the delimiter comes from the extension).

    Columns: ``path`` (relative to the table's folder), ``text``, ``lang`` (optional with the `lang`
    override) and optionally ``translation`` (into `ReadContext.translation_lang`), ``split``
    (default ``test``), ``group`` and ``speaker``. Ids are ``<lang>/<split>/<path without suffix>``.
    """
    table = _folder_table(src)
    if table.suffix not in (".tsv", ".csv"):
        raise CorpusError(f"{table}: a folder table must be a .tsv or .csv file")
    tab = table.suffix == ".tsv"
    need = ("path", "text") + (("lang",) if ctx.lang is None else ())
    quoting = csv.QUOTE_NONE if tab else csv.QUOTE_MINIMAL
    for where, row in read_rows(table, "\t" if tab else ",", quoting=quoting, required=need):
        if "" in row:
            ctx.skip(where, row[""])
            continue
        lang = ctx.resolve(row.get("lang", "").strip(), where, row=True) or ""
        raw_split = (row.get("split") or "").strip() or FOLDER_DEFAULT_SPLIT
        split = split_name(raw_split)
        text, path = row["text"].strip(), row["path"].strip()
        if split is None:
            ctx.skip(where, f"unknown split {raw_split!r} (use train, dev or test)")
        elif not ctx.wants(lang, split):
            continue
        elif not path:
            ctx.skip(where, "empty path")
        elif not text:
            ctx.skip(where, "empty text")
        else:
            rel = PurePosixPath(path.replace("\\", "/"))
            name = "/".join(safe_name(p) for p in rel.with_suffix("").parts if p not in ("..", ".", "/")) or "_"
            translation = (row.get("translation") or "").strip()
            yield Clip(
                id=f"{lang}/{split}/{name}", lang=lang, split=split, text=text, where=where,
                audio=AudioRef(str(table.parent / path)), group=(row.get("group") or "").strip() or None,
                translations={ctx.translation_lang: translation} if translation else {},
                meta={"source": "folder", "file": path,
                      **({"speaker": row["speaker"].strip()} if (row.get("speaker") or "").strip() else {})},
            )


READERS: dict[str, Reader] = {
    "fleurs": read_fleurs,
    "covost2": read_covost2,
    "commonvoice": read_commonvoice,
    "folder": read_folder,
}
"""Corpus kind -> reader."""


# ---------------------------------------------------------------------------------------------
# Audio inside containers
# ---------------------------------------------------------------------------------------------


def iter_tar_audio(path: Path, keys: set[str]) -> Iterator[tuple[str, Payload]]:
    """Yield (member file name, bytes) for the wanted members of a (compressed) tar archive, in one pass."""
    with tarfile.open(path, "r|*") as tar:  # stream mode: one sequential read, no seeking back
        for member in tar:
            name = PurePosixPath(member.name).name
            if member.isfile() and name in keys:
                f = tar.extractfile(member)
                yield name, f.read() if f is not None else b""


def iter_table_audio(path: Path, keys: set[int]) -> Iterator[tuple[int, Payload]]:
    """Yield (row, audio) for the wanted rows of an arrow/parquet table's ``audio`` column.

    Audio is encoded bytes, a file path (a row that stores only a path; relative to the table's
    folder) or (samples, sample rate) for decoded audio.
    """
    _, pq = import_pyarrow()
    if table_kind(path) == "parquet":
        batches = (b.column(0) for b in pq.ParquetFile(path).iter_batches(batch_size=64, columns=["audio"]))
    else:
        batches = iter([open_table(path, columns=["audio"]).column("audio")])
    offset = 0
    for col in batches:
        for i in sorted(k for k in keys if offset <= k < offset + len(col)):
            yield i, _audio_payload(col[i - offset].as_py(), path)
        offset += len(col)


def _audio_payload(cell: Any, table: Path) -> Payload:
    if isinstance(cell, (bytes, str)):
        return cell if isinstance(cell, bytes) else str(table.parent / cell)
    if not isinstance(cell, dict):
        return b""
    if cell.get("bytes"):
        return cell["bytes"]
    if cell.get("array") is not None and cell.get("sampling_rate"):
        return cell["array"], int(cell["sampling_rate"])
    return str(table.parent / cell["path"]) if cell.get("path") else b""


CONTAINERS = {"tar": iter_tar_audio, "arrow": iter_table_audio, "parquet": iter_table_audio}
"""Container kind -> ``(path, keys) -> (key, payload)`` iterator."""


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


@dataclass
class _Job:
    id: str
    where: str
    out: str
    payload: Payload | None = None
    error: str | None = None  # a failure known before decoding (e.g. member missing from its archive)


def decode(payload: Payload, where: str) -> np.ndarray:
    """Decode a payload to 16 kHz mono float32, shape (T,).

    Raises:
        AudioError: missing, undecodable or empty audio; the message starts with `where`.
    """
    if isinstance(payload, tuple):
        return to_mono_16k(np.asarray(payload[0], dtype=np.float32), payload[1], where)
    if isinstance(payload, bytes):
        import soundfile as sf

        if not payload:
            raise AudioError(f"{where}: no audio data")
        try:
            wav, sr = sf.read(io.BytesIO(payload), dtype="float32", always_2d=False)
        except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad data
            raise AudioError(f"{where}: cannot decode audio ({e})") from None
        return to_mono_16k(wav, sr, where)
    return load_audio(payload, where)


def _convert(job: _Job) -> tuple[_Job, int, str | None]:
    """Decode one clip and write it as FLAC; returns (job, samples, error)."""
    if job.error is not None or job.payload is None:
        return job, 0, job.error or f"{job.where}: no audio"
    try:
        wav = decode(job.payload, job.where)
    except AudioError as e:
        return job, 0, str(e)
    except (ValueError, TypeError) as e:  # e.g. a malformed decoded-audio array in a table
        return job, 0, f"{job.where}: unusable audio ({e})"
    out = Path(job.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: write_flac(tmp, wav, SAMPLE_RATE))
    job.payload = None  # do not send the audio back
    return job, int(wav.shape[0]), None


def _run(jobs: Iterable[_Job], total: int, num_workers: int, progress: bool) -> list[tuple[_Job, int, str | None]]:
    """Convert jobs in `num_workers` processes (in this one for few jobs); results in completion order."""
    bar = Progress(total=total, desc="import", unit="clip", enabled=progress)
    results: list[tuple[_Job, int, str | None]] = []

    def done(res: tuple[_Job, int, str | None]) -> None:
        results.append(res)
        bar.update()

    jobs = iter(jobs)
    if num_workers > 1 and total >= 8:
        inflight: dict[Future, _Job] = {}
        current: _Job | None = None
        try:
            # spawn: fresh interpreters, no threads or locks inherited from the caller (torch, tqdm)
            with ProcessPoolExecutor(num_workers, mp_context=mp.get_context("spawn")) as pool:
                for current in jobs:
                    inflight[pool.submit(_convert, current)] = current
                    current = None
                    while len(inflight) >= _WINDOW * num_workers:
                        finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                        for f in finished:
                            done(f.result())
                            del inflight[f]
                for f in list(inflight):
                    done(f.result())
                    del inflight[f]
        except BrokenProcessPool as e:
            # e.g. the main module cannot be re-imported (code run from stdin or without a main guard)
            log.warning("import worker processes failed (%s); converting the rest in this process", e)
            for job in [*inflight.values(), *([current] if current is not None else [])]:
                done(_convert(job))
    for job in jobs:
        done(_convert(job))
    bar.close()
    return results


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


def _fingerprint(ref: AudioRef) -> str | None:
    """Cheap identity of a clip's source (size and mtime of its file or container), None if missing."""
    try:
        st = Path(ref.path).stat()
    except OSError:
        return None
    key = "" if ref.container is None else f":{ref.container}:{ref.key}"
    return f"{IMPORT_FORMAT}:{st.st_size}:{st.st_mtime_ns}{key}"


def _read_index(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _jobs(todo: list[tuple[Clip, str]], out: Path) -> Iterator[_Job]:
    """Jobs for clips to convert: plain files first, then each container read once, in order."""
    containers: dict[tuple[str, str], dict[Any, list[Clip]]] = defaultdict(lambda: defaultdict(list))
    for clip, rel in todo:
        if clip.audio.container is None:
            yield _Job(clip.id, clip.where, str(out / rel), payload=clip.audio.path)
        else:
            containers[clip.audio.container, clip.audio.path][clip.audio.key].append(clip)
    for (kind, path), wanted in sorted(containers.items()):
        found: set[Any] = set()
        try:
            for key, payload in CONTAINERS[kind](Path(path), set(wanted)):
                if key not in found:  # an archive may hold two members of one name: the first counts
                    found.add(key)
                    yield from (_Job(c.id, c.where, str(out / f"audio/{c.id}.flac"), payload) for c in wanted[key])
            problem = f"not found in {path}"
        except (OSError, EOFError, ValueError, tarfile.TarError, zlib.error) as e:
            problem = f"cannot read {path} ({e})"
        for key in wanted.keys() - found:
            yield from (_Job(c.id, c.where, "", error=f"{c.where}: audio {key!r} {problem}") for c in wanted[key])


def _where_key(entry: dict[str, str]) -> tuple[str, int, str]:
    file, _, line = entry["where"].rpartition(":")
    return (file, int(line), entry["reason"]) if line.isdigit() else (entry["where"], 0, entry["reason"])


def import_corpus(
    kind: str,
    src: str | Path,
    out_dir: str | Path,
    *,
    lang: str | None = None,
    langs: list[str] | None = None,
    splits: list[str] | None = None,
    limit: int | None = None,
    translation_lang: str = "en_us",
    num_workers: int = 2,
    progress: bool = True,
) -> Path:
    """Import a speech corpus as a polyvox manifest with 16 kHz mono FLAC audio.

    Args:
        kind: corpus kind, a key of `READERS`: ``fleurs``, ``covost2``, ``commonvoice`` or ``folder``.
        src: the corpus as released (or in the Hugging Face arrow/parquet layout for fleurs and
            covost2); for ``folder``, the folder holding one table, or the table itself.
        out_dir: output folder for ``manifest.jsonl``, ``import.json`` and ``audio/``.
        lang: FLEURS code of every clip, overriding the corpus's own language names (for locales
            without a mapping, or a ``folder`` table without a ``lang`` column).
        langs: FLEURS codes to keep (None: all). Corpus folders or files whose language has no
            FLEURS code are an error when this is None, and passed over otherwise.
        splits: splits to keep (``validation`` means ``dev``); None: train, dev and test. Common Voice
            also reads other tables named here (``validated``, ``other`` …) under their own name.
        limit: at most this many utterances per language and split (the first in table order).
        translation_lang: FLEURS code of a ``folder`` table's ``translation`` column (and of
            CoVoST 2 translations in the Hugging Face layout when no config names the pair).
        num_workers: processes converting audio.
        progress: show a progress bar.

    Returns:
        The path of the written manifest.

    Raises:
        ValueError: unknown `kind`, or a bad language code or limit.
        FileNotFoundError: `src` does not exist.
        CorpusError: a table or audio folder the corpus layout needs is missing, or a language
            that cannot be mapped to FLEURS (the message names the file and line).
        ImportError: arrow/parquet input without pyarrow installed.
    """
    if kind not in READERS:
        raise ValueError(f"unknown corpus kind {kind!r}; known kinds: {', '.join(sorted(READERS))}")
    source, src, out = str(src), Path(src), Path(out_dir)
    if not src.exists():
        raise FileNotFoundError(f"corpus source not found: {src}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of utterances, got {limit}")
    ctx = ReadContext(
        langs={check_lang(c) for c in langs} if langs is not None else None,
        splits={split_name(s) or s for s in splits} if splits is not None else None,
        lang=check_lang(lang) if lang is not None else None,
        translation_lang=check_lang(translation_lang),
    )
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX_NAME
    index = _read_index(index_path)

    done: dict[str, tuple[Clip, str, int]] = {}  # id -> (clip, audio path, samples)
    todo: list[tuple[Clip, str]] = []
    first_seen: dict[str, str] = {}
    taken: Counter[tuple[str, str]] = Counter()
    fingerprints: dict[str, str] = {}
    for clip in READERS[kind](src, ctx):
        if not ctx.wants(clip.lang, clip.split):
            continue
        if clip.id in first_seen:
            ctx.skip(clip.where, f"duplicate id {clip.id!r} (first at {first_seen[clip.id]})")
            continue
        first_seen[clip.id] = clip.where
        if limit is not None and taken[clip.lang, clip.split] >= limit:
            continue
        fp = _fingerprint(clip.audio)
        if fp is None:
            what = "audio file" if clip.audio.container is None else clip.audio.container
            ctx.skip(clip.where, f"{what} not found: {clip.audio.path}")
            continue
        taken[clip.lang, clip.split] += 1
        rel = f"audio/{clip.id}.flac"
        fingerprints[clip.id] = fp
        prev, flac = index.get(rel), out / rel
        if prev and prev.get("source") == fp and flac.is_file() and flac.stat().st_size == prev.get("bytes"):
            done[clip.id] = (clip, rel, int(prev["samples"]))
        else:
            todo.append((clip, rel))
    reused = len(done)

    by_id = {clip.id: (clip, rel) for clip, rel in todo}
    try:
        for job, samples, error in _run(_jobs(todo, out), len(todo), num_workers, progress):
            clip, rel = by_id[job.id]
            if error is not None:
                ctx.skip(clip.where, error.removeprefix(f"{clip.where}: "))
                continue
            done[clip.id] = (clip, rel, samples)
            index[rel] = {"source": fingerprints[clip.id], "bytes": (out / rel).stat().st_size, "samples": samples}
    finally:  # an interrupted import keeps what it converted
        atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True) + "\n")

    ctx.skipped.sort(key=_where_key)
    utts = [
        Utterance(id=clip.id, audio=rel, text=clip.text, lang=clip.lang, split=clip.split,
                  duration=round(samples / SAMPLE_RATE, 3), translations=dict(sorted(clip.translations.items())),
                  group=clip.group, meta=clip.meta)
        for clip, rel, samples in (done[i] for i in sorted(done))
    ]
    manifest = write_manifest(out / MANIFEST_NAME, utts)
    _write_info(out, kind, source, ctx, limit, utts, len(done) - reused, reused, manifest)
    if ctx.skipped:
        log.warning("%s import left out %d entr%s of %s (first: %s: %s); all are listed in %s", kind,
                    len(ctx.skipped), "y" if len(ctx.skipped) == 1 else "ies", source,
                    ctx.skipped[0]["where"], ctx.skipped[0]["reason"], out / INFO_NAME)
    log.info("%s: %d utterances (%d converted, %d already there) -> %s", kind, len(utts), len(done) - reused,
             reused, manifest)
    return manifest


def _write_info(out: Path, kind: str, source: str, ctx: ReadContext, limit: int | None, utts: list[Utterance],
                converted: int, reused: int, manifest: Path) -> None:
    info = {
        "kind": kind,
        "source": source,
        "options": {"lang": ctx.lang, "langs": sorted(ctx.langs) if ctx.langs is not None else None,
                    "splits": sorted(ctx.splits) if ctx.splits is not None else list(SPLITS), "limit": limit,
                    "translation_lang": ctx.translation_lang},
        "utterances": len(utts),
        "hours": round(sum(u.duration or 0.0 for u in utts) / 3600, 4),
        "counts": split_counts(utts),
        "converted": converted,
        "reused": reused,
        "skipped_count": len(ctx.skipped),
        "skipped": ctx.skipped,
        "versions": versions(["polyvox", "numpy", "soundfile", "soxr", "pyarrow"]),
        "manifest": MANIFEST_NAME,
        "manifest_sha256": sha256_file(manifest),
    }
    atomic_write_text(out / INFO_NAME, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
