"""The frozen LLM's own answers from transcripts, batched, cached in JSONL and resumable.

BLSP's continuations and the mit recipe's instruction targets (and its held-out references) are all
"what the text-only LLM says to this prompt about this transcript". Each request has an id and a key (a
hash of everything the answer depends on: the LLM, the prompt, the decoding bounds); a cached row is reused
when both match, so runs with different settings can share one cache file. Every finished batch is appended,
so a killed run loses at most one batch, and a row cut off mid-write is dropped and made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyvox.fileio import atomic_write_text
from polyvox.models.speech_llm import Prompt, SpeechLLM
from polyvox.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One prompt about one transcript."""

    id: str
    """Unique within the cache's key (e.g. the utterance id, or utterance id + template id)."""
    key: str
    """Hash of what the answer depends on (see `answer_key`)."""
    text: str
    """The transcript, read where the speech will be."""
    prompt: Prompt
    """Instruction for the prompt template, or a raw (prefix, postfix) pair."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra fields written to the cache row (language, template …), for people reading the cache."""


def answer_key(*parts: object) -> str:
    """A short stable hash of the parts (the LLM fingerprint, the prompt, decoding bounds …)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def read_cache(path: Path) -> dict[tuple[str, str], dict]:
    """(key, id) -> row of a JSONL cache (the last row wins); an unfinished last row is dropped."""
    if not path.exists():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):  # killed inside a write: drop the partial row, keep whole ones
        log.warning("%s: dropping an unfinished last row (an interrupted run); it is generated again", path)
        text = text[: text.rfind("\n") + 1]
        atomic_write_text(path, text)
    done = {}
    for line in text.splitlines():
        row = json.loads(line)
        done[row["key"], row["id"]] = row
    return done


def cached_answers(requests: list[Request], cache: str | Path, model: SpeechLLM | Callable[[], SpeechLLM], *,
                   max_new_tokens: int, max_input_tokens: int, batch_size: int, stop_at_newline: bool = True,
                   field_name: str = "answer", desc: str = "answers") -> tuple[dict[str, str], dict[str, int]]:
    """Answer each request with the frozen LLM reading its text (greedy), reusing cached rows.

    Args:
        requests: what to answer; ids must be unique.
        cache: JSONL file; rows are ``{"id", "key", field_name, **meta}``.
        model: the speech LLM (its LLM reads the text), or a function that builds it, called only if some
            request is not cached.
        max_new_tokens: bound on generated tokens.
        max_input_tokens: prompts longer than this (in LLM tokens) are skipped and counted as ``too_long``.
        batch_size: prompts per generation batch (sorted by length, so batches pad little).
        stop_at_newline: end an answer at its first line break.
        field_name: the row field holding the answer.
        desc: progress-bar label.

    Returns:
        id -> answer for every request with a non-empty answer, and counts: ``requests``, ``cached``,
        ``generated``, ``too_long``, ``empty``, ``usable``.
    """
    cache = Path(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = {k: row[field_name] for k, row in read_cache(cache).items()}
    todo = [r for r in requests if (r.key, r.id) not in done]
    counts = {"requests": len(requests), "cached": len(requests) - len(todo), "generated": 0, "too_long": 0}
    if todo:
        model = model if isinstance(model, SpeechLLM) else model()
        sizes = {r.id: sum(map(len, model.prompt_ids(r.prompt))) + len(model.text_ids(r.text)) for r in todo}
        fits = sorted((r for r in todo if sizes[r.id] <= max_input_tokens), key=lambda r: sizes[r.id])
        counts["too_long"] = len(todo) - len(fits)
        with cache.open("a") as f:
            for s in Progress(range(0, len(fits), batch_size), desc=desc, unit="batch"):
                batch = fits[s : s + batch_size]
                texts = model.generate_text([r.text for r in batch], [r.prompt for r in batch],
                                            max_new_tokens=max_new_tokens, stop_at_newline=stop_at_newline)
                for r, t in zip(batch, texts):
                    f.write(json.dumps({"id": r.id, "key": r.key, **r.meta, field_name: t}, ensure_ascii=False) + "\n")
                    done[r.key, r.id] = t
                f.flush()
                counts["generated"] += len(batch)
    answers = {r.id: done[r.key, r.id] for r in requests if (r.key, r.id) in done}
    result = {i: t for i, t in answers.items() if t.strip()}
    counts["empty"] = len(answers) - len(result)
    counts["usable"] = len(result)
    log.info("%s: %s", desc, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return result, counts
