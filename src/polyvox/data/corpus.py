"""The offline multilingual speech corpus: translated software messages spoken by eSpeak NG.

`build_corpus` collects parallel sentences from gettext catalogs (`polyvox.data.sources`), splits
them by English pivot group (`polyvox.data.splits`), picks per-language train and test sets, speaks
them (`polyvox.data.tts`) and writes ``manifest.jsonl`` plus ``corpus.json``.

Seen languages get train and test utterances; unseen languages get test utterances only. Test sets
prefer sentences translated into many of the chosen languages, so that most test groups exist in
every language and cross-lingual retrieval (speech in X -> English text) is meaningful.

The same config gives a byte-identical manifest: every choice is a sorted or hash-ordered pick and
every clip is a pure function of its text and voice settings. Clips already on disk with the
expected content are not spoken again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from polyvox.audio import SAMPLE_RATE
from polyvox.data import splits, tts
from polyvox.data.languages import check_lang
from polyvox.data.manifest import Utterance, write_manifest
from polyvox.data.sources.gettext import collect_messages
from polyvox.data.sources.text import ENGLISH, Message
from polyvox.fileio import atomic_write_text
from polyvox.provenance import versions

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "corpus.json"
INDEX_NAME = ".synth-index.json"  # id -> synthesis key, file hash, length: lets a rebuild skip done clips
SYNTH_FORMAT = 1  # bump when the way clips are made changes, so cached clips are remade


class CorpusError(RuntimeError):
    """A corpus that cannot be built as configured (e.g. too little text for a language)."""


@dataclass
class CorpusConfig:
    """What goes into an offline speech corpus."""

    seen_langs: list[str] = field(default_factory=list)
    """FLEURS codes with train and test utterances."""
    unseen_langs: list[str] = field(default_factory=list)
    """FLEURS codes with test utterances only (held out of training)."""
    train_per_lang: int = 350
    """Train utterances per seen language."""
    test_per_lang: int = 150
    """Test utterances per language (seen and unseen)."""
    min_words: int = 4
    """Fewest words an English pivot sentence may have."""
    max_words: int = 14
    """Most words an English pivot sentence may have (speech is costly to encode later)."""
    max_chars: int = 120
    """Most characters a sentence may have, in any language."""
    test_fraction: float = 0.3
    """Share of pivot groups eligible for test; the rest is eligible for train."""
    seed: int = 0
    """Seed of the split, the picks and the voices."""
    sources: list[str] = field(default_factory=lambda: ["system", "django"])
    """Named catalog sources (see `polyvox.data.sources.CATALOG_SOURCES`)."""
    catalog_dirs: list[str] = field(default_factory=list)
    """Extra folders searched for ``<locale>/LC_MESSAGES/*.mo`` catalogs."""
    num_workers: int = 2
    """Processes speaking in parallel (each runs its own eSpeak)."""

    @classmethod
    def demo(cls) -> CorpusConfig:
        """8 seen + 5 unseen languages, 150 test utterances each, 700 train per seen language.

        Seen languages are CoVoST-2 source languages; unseen ones are not. All have thousands of
        sentence-like messages on a stock Debian machine, and >2,000 groups shared by all 13.
        """
        return cls(
            seen_langs=["de_de", "es_419", "fr_fr", "it_it", "pt_br", "ru_ru", "sv_se", "tr_tr"],
            unseen_langs=["cs_cz", "fi_fi", "pl_pl", "ro_ro", "uk_ua"],
            train_per_lang=700,
            test_per_lang=150,
        )

    @classmethod
    def tiny(cls) -> CorpusConfig:
        """3 languages, a handful of utterances each, from Django's catalogs only (seconds)."""
        return cls(
            seen_langs=["de_de", "fr_fr"],
            unseen_langs=["es_419"],
            train_per_lang=4,
            test_per_lang=3,
            sources=["django"],
            num_workers=1,
        )

    @classmethod
    def from_preset(cls, name: str) -> CorpusConfig:
        """A named preset: ``demo`` or ``tiny``."""
        if name not in PRESETS:
            raise ValueError(f"unknown corpus preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[name]()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CorpusConfig:
        """Build from a plain dict (e.g. parsed YAML), rejecting unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown corpus config key(s): {', '.join(unknown)}")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON/YAML serialisable)."""
        return asdict(self)

    @property
    def langs(self) -> list[str]:
        """All languages, seen first, each list sorted."""
        return sorted(self.seen_langs) + sorted(self.unseen_langs)

    def validate(self) -> None:
        """Raise ValueError/CorpusError for inconsistent settings or unspeakable languages."""
        for code in self.langs:
            check_lang(code)
        both = sorted(set(self.seen_langs) & set(self.unseen_langs))
        if both:
            raise ValueError(f"language(s) both seen and unseen: {', '.join(both)}")
        if len(set(self.langs)) != len(self.langs):
            raise ValueError("a language is listed twice")
        if not self.langs:
            raise ValueError("no languages configured")
        if self.train_per_lang < 0 or self.test_per_lang < 1:
            raise ValueError("train_per_lang must be >= 0 and test_per_lang >= 1")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        for code in self.langs:
            why = tts.unsupported_reason(code)
            if why is not None:
                raise CorpusError(f"cannot speak {code}: {why}")


PRESETS = {"demo": CorpusConfig.demo, "tiny": CorpusConfig.tiny}
"""Preset name -> config factory."""


# ---------------------------------------------------------------------------------------------
# Choosing sentences
# ---------------------------------------------------------------------------------------------


def _speakable(lang: str, msgs: list[Message]) -> dict[str, Message]:
    limit = tts.MAX_INPUT_CHARS.get(lang)
    return {m.group: m for m in msgs if limit is None or len(m.text) <= limit}


def select_messages(cfg: CorpusConfig, by_lang: dict[str, list[Message]]) -> dict[str, dict[str, list[Message]]]:
    """Pick train and test messages per language.

    Groups are first split into a train pool and a test pool by hash (`splits.assign_split`).
    Test picks walk the test pool from groups present in most chosen languages to fewest (ties in
    seeded-hash order), filling every language up to `test_per_lang`. Train picks take seen
    languages' train-pool groups in seeded-hash order.

    Returns:
        lang -> {"train": [...], "test": [...]}, each sorted by group.

    Raises:
        CorpusError: a language has too few sentences; the message says how many were found.
    """
    avail = {lang: _speakable(lang, by_lang.get(lang, [])) for lang in cfg.langs}
    fractions = {"test": cfg.test_fraction, "train": 1.0 - cfg.test_fraction}
    groups = sorted({g for a in avail.values() for g in a})
    pool = {g: splits.assign_split(g, fractions, cfg.seed) for g in groups}
    order = {g: splits.group_unit(g, cfg.seed + 1) for g in groups}

    coverage = {g: sum(g in a for a in avail.values()) for g in groups}
    test_groups = sorted((g for g in groups if pool[g] == "test"), key=lambda g: (-coverage[g], order[g]))
    picked: dict[str, dict[str, list[Message]]] = {lang: {"train": [], "test": []} for lang in cfg.langs}
    for g in test_groups:
        for lang in cfg.langs:
            if g in avail[lang] and len(picked[lang]["test"]) < cfg.test_per_lang:
                picked[lang]["test"].append(avail[lang][g])
        if all(len(p["test"]) >= cfg.test_per_lang for p in picked.values()):
            break
    train_groups = sorted((g for g in groups if pool[g] == "train"), key=lambda g: order[g])
    for lang in sorted(cfg.seen_langs):
        picked[lang]["train"] = [avail[lang][g] for g in train_groups if g in avail[lang]][: cfg.train_per_lang]

    short = []
    for lang in cfg.langs:
        want = {"test": cfg.test_per_lang, "train": cfg.train_per_lang if lang in cfg.seen_langs else 0}
        for split, n in want.items():
            if len(picked[lang][split]) < n:
                short.append(f"{lang} {split}: {len(picked[lang][split])} of {n} (from {len(avail[lang])} sentences)")
        for split in picked[lang]:
            picked[lang][split].sort(key=lambda m: m.group)
    if short:
        raise CorpusError(
            "too little text for the configured corpus: " + "; ".join(short) + ". Lower train_per_lang/"
            "test_per_lang, raise max_words/max_chars, add catalog_dirs, or choose other languages."
        )
    return picked


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def _synth_key(job: tts.SynthJob) -> str:
    payload = [SYNTH_FORMAT, tts.espeak_version(), job.lang, job.text, asdict(job.spec)]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def _read_index(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        log.warning("ignoring unreadable synthesis index %s; all clips will be remade", path)
        return {}


def _speak(jobs: list[tts.SynthJob], out: Path, num_workers: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Speak the jobs whose clip is missing or stale; returns id -> index entry for the good ones."""
    index_path = out / INDEX_NAME
    old = _read_index(index_path)
    keys = {job.id: _synth_key(job) for job in jobs}
    index: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        prev, path = old.get(job.id), Path(job.path)
        if prev and prev.get("key") == keys[job.id] and path.exists() and tts.file_sha256(path) == prev.get("sha256"):
            index[job.id] = prev
        else:
            todo.append(job)
    log.info("%d clips up to date, %d to speak", len(index), len(todo))
    for res in tts.synthesize_batch(todo, num_workers=num_workers, progress=progress):
        if res.error is None:
            index[res.id] = {"key": keys[res.id], "sha256": res.sha256, "num_samples": res.num_samples}
    _write_json_atomic(index_path, dict(sorted(index.items())))
    return index


def _versions() -> dict[str, str]:
    return versions(("polyvox", "espeakng-loader", "Django", "numpy", "soxr", "soundfile"))


def _remove_stale_audio(out: Path, keep: set[Path]) -> None:
    audio_root = out / "audio"
    if not audio_root.is_dir():
        return
    stale = sorted(p for p in audio_root.rglob("*.flac") if p not in keep)
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d clips no longer in the corpus", len(stale))


def build_corpus(cfg: CorpusConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Build (or bring up to date) a spoken corpus; returns the manifest path.

    Writes ``out_dir/manifest.jsonl`` (ids ``<lang>/<n:06d>``, audio ``audio/<lang>/<n:06d>.flac``
    relative to `out_dir`) and ``out_dir/corpus.json`` (config, counts, versions, manifest hash).

    Raises:
        CorpusError: too little text, or a language eSpeak cannot speak.
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_lang = collect_messages(
        cfg.langs, sources=cfg.sources, dirs=cfg.catalog_dirs, min_words=cfg.min_words,
        max_words=cfg.max_words, max_chars=cfg.max_chars, progress=progress,
    )
    picked = select_messages(cfg, by_lang)

    utts: list[Utterance] = []
    jobs: list[tts.SynthJob] = []
    for lang in cfg.langs:
        for n, (split, msg) in enumerate((s, m) for s in ("train", "test") for m in picked[lang][s]):
            uid, rel = f"{lang}/{n:06d}", f"audio/{lang}/{n:06d}.flac"
            spec = tts.voice_for(lang, uid, cfg.seed)
            jobs.append(tts.SynthJob(uid, lang, msg.text, str(out / rel), spec))
            utts.append(
                Utterance(
                    id=uid, audio=rel, text=msg.text, lang=lang, split=split,
                    translations={} if lang == ENGLISH else {ENGLISH: msg.en}, group=msg.group,
                    meta={"voice": spec.voice, "rate": spec.rate, "pitch": spec.pitch, "source": msg.source},
                )
            )

    index = _speak(jobs, out, cfg.num_workers, progress)
    failed = sorted(u.id for u in utts if u.id not in index)
    if failed:
        log.warning("%d utterance(s) could not be spoken and are left out: %s", len(failed), ", ".join(failed[:10]))
    utts = [u for u in utts if u.id in index]
    for u in utts:
        u.duration = round(index[u.id]["num_samples"] / SAMPLE_RATE, 3)
    splits.check_no_leak(utts)
    _remove_stale_audio(out, {out / u.audio for u in utts if u.audio})

    manifest = write_manifest(out / MANIFEST_NAME, utts)
    _write_json_atomic(out / INFO_NAME, _corpus_info(cfg, utts, manifest, failed))
    log.info("corpus: %d utterances, %.2f h of speech in %s", len(utts), sum(u.duration or 0 for u in utts) / 3600, out)
    return manifest


def _corpus_info(cfg: CorpusConfig, utts: list[Utterance], manifest: Path, failed: list[str]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {lang: {"train": 0, "test": 0} for lang in cfg.langs}
    hours: dict[str, float] = dict.fromkeys(cfg.langs, 0.0)
    test_langs: dict[str, set[str]] = {}
    for u in utts:
        counts[u.lang][u.split] += 1
        hours[u.lang] += (u.duration or 0.0) / 3600
        if u.split == "test" and u.group:
            test_langs.setdefault(u.group, set()).add(u.lang)
    return {
        "config": cfg.to_dict(),
        "counts": counts,
        "hours": {lang: round(h, 4) for lang, h in hours.items()},
        "total_utterances": len(utts),
        "total_hours": round(sum(hours.values()), 4),
        "test_groups": len(test_langs),
        "test_groups_in_all_languages": sum(len(s) == len(cfg.langs) for s in test_langs.values()),
        "failed": failed,
        "versions": _versions(),
        "manifest_sha256": tts.file_sha256(manifest),
    }
