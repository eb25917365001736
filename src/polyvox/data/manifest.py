"""Typed JSONL manifests: one utterance a line, audio paths relative to the manifest's folder."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polyvox.data.languages import UnknownLanguageError, check_lang
from polyvox.fileio import atomic_write_text


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names the file and line."""


@dataclass
class Utterance:
    """One spoken utterance (or, with `audio=None`, a text-only item)."""

    id: str
    """Unique id within the manifest, e.g. ``fr_fr/000123``."""
    audio: str | None
    """Audio file path, relative to the manifest's folder (absolute paths are kept as given)."""
    text: str
    """Transcript in `lang`."""
    lang: str
    """FLEURS language code of the speech and transcript."""
    split: str = "train"
    """Split name: train, dev or test."""
    duration: float | None = None
    """Length of the audio in seconds, if known."""
    translations: dict[str, str] = field(default_factory=dict)
    """Translations of `text`, keyed by FLEURS code."""
    group: str | None = None
    """Pivot id shared by all utterances that say the same thing in any language."""
    intent: str | None = None
    """Intent label for spoken-understanding tasks."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (voice, source package …)."""

    def audio_path(self, root: str | Path) -> Path:
        """Absolute audio path given the manifest's folder."""
        if self.audio is None:
            raise ManifestError(f"utterance {self.id!r} has no audio")
        p = Path(self.audio)
        return p if p.is_absolute() else Path(root) / p

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=False)


_FIELDS = {f for f in Utterance.__dataclass_fields__}
_TYPES: dict[str, tuple[type, ...]] = {"id": (str,), "audio": (str, type(None)), "text": (str,), "lang": (str,),
                                       "split": (str,), "translations": (dict,), "group": (str, type(None)),
                                       "intent": (str, type(None)), "meta": (dict,)}
"""Fields whose JSON type is checked (duration is checked as a number below)."""


def parse_line(line: str, where: str) -> Utterance:
    """Parse and validate one manifest line; `where` (``file:line``) goes into every error."""
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    missing = [k for k in ("id", "text", "lang") if k not in raw]
    if missing:
        raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    raw.setdefault("audio", None)
    for key, kinds in _TYPES.items():
        if key in raw and not isinstance(raw[key], kinds):
            names = " or ".join("null" if k is type(None) else {str: "a string", dict: "an object"}[k] for k in kinds)
            raise ManifestError(f"{where}: {key} must be {names}, got {type(raw[key]).__name__} {raw[key]!r}")
    if any(not isinstance(v, str) for v in raw.get("translations", {}).values()):
        raise ManifestError(f"{where}: translations must map language codes to strings")
    utt = Utterance(**raw)
    if not utt.text.strip():
        raise ManifestError(f"{where}: empty text for {utt.id!r}")
    try:
        check_lang(utt.lang)
    except UnknownLanguageError as e:
        raise ManifestError(f"{where}: {e}") from None
    if utt.duration is not None and (not isinstance(utt.duration, (int, float)) or not math.isfinite(utt.duration)):
        raise ManifestError(f"{where}: duration must be a finite number, got {utt.duration!r}")
    return utt


def iter_manifest(path: str | Path) -> Iterator[Utterance]:
    """Yield utterances of a JSONL manifest, raising `ManifestError` at the first bad line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                yield parse_line(line, f"{path}:{i}")


def read_manifest(path: str | Path, split: str | None = None, langs: Iterable[str] | None = None) -> list[Utterance]:
    """Read a manifest, optionally keeping one split and some languages.

    Raises:
        ManifestError: on the first bad line (file and line in the message), duplicate ids, an empty manifest, or
            a `split` it does not have.
    """
    keep = set(langs) if langs is not None else None
    out, seen, splits = [], set(), set()
    for u in iter_manifest(path):
        if u.id in seen:
            raise ManifestError(f"{path}: duplicate id {u.id!r}")
        seen.add(u.id)
        splits.add(u.split)
        if (split is None or u.split == split) and (keep is None or u.lang in keep):
            out.append(u)
    if not seen:
        raise ManifestError(f"{path}: no utterances (an empty manifest)")
    if split is not None and split not in splits:
        raise ManifestError(f"{path}: no utterances in split {split!r}; its splits: {', '.join(sorted(splits))}")
    return out


def write_manifest(path: str | Path, utts: Iterable[Utterance]) -> Path:
    """Write utterances as JSONL atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, "".join(u.to_json() + "\n" for u in utts))


def split_counts(utts: Iterable[Utterance]) -> dict[str, dict[str, int]]:
    """Language -> split -> number of utterances (both sorted)."""
    out: dict[str, dict[str, int]] = {}
    for u in sorted(utts, key=lambda u: (u.lang, u.split)):
        out.setdefault(u.lang, {}).setdefault(u.split, 0)
        out[u.lang][u.split] += 1
    return out


def speech_hours(utts: Iterable[Utterance]) -> dict[str, float]:
    """Language -> hours of speech (known durations), rounded to 4 decimals, sorted by language."""
    seconds: dict[str, float] = {}
    for u in utts:
        seconds[u.lang] = seconds.get(u.lang, 0.0) + (u.duration or 0.0)
    return {lang: round(seconds[lang] / 3600, 4) for lang in sorted(seconds)}
