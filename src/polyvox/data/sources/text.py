"""Parallel text shared by every text source: one sentence in one language, tied to an English pivot."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

ENGLISH = "en_us"
"""FLEURS code of the pivot language; its text is the pivot itself."""


def normalise(text: str) -> str:
    """NFC-normalise and collapse runs of whitespace into single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def group_id(msgid: str, prefix: str = "msg") -> str:
    """Stable pivot id of an English message: case, spacing and final punctuation do not matter."""
    key = normalise(msgid).casefold().rstrip(" .!:;?…")
    return f"{prefix}-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class Message:
    """One sentence in one language, tied to its English pivot."""

    lang: str
    """FLEURS code of `text`."""
    text: str
    """The sentence (the msgid itself for English)."""
    en: str
    """The English pivot message."""
    group: str
    """Pivot id (e.g. `group_id` of `en`), shared by every language's version of it."""
    source: str
    """Where the text came from, e.g. ``gettext:gtk30`` or ``udhr:fra``."""
    intent: str | None = None
    """Intent label, for spoken-understanding data."""
