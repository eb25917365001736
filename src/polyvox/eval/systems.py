"""The systems that answer evaluation items, and the cache of their answers.

A system is anything with ``answer(items, wavs) -> list[str]`` (`System`): the speech LLM
from the speech (`SpeechLLMSystem`), the same LLM behind a Whisper front-end (`CascadeSystem`) or reading the gold
transcript (`OracleTextSystem`). A system with a ``key`` (what its answers depend on besides the item) has its
answers kept by `AnswerCache`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from polyvox.eval.tasks import EvalItem
from polyvox.models.answers import answer_key, read_cache
from polyvox.models.sources import fingerprint
from polyvox.models.speech_llm import STYLES, sentence_prior

# -- systems -------------------------------------------------------------------------------------------


class System(Protocol):
    """Anything that answers items from their 16 kHz clips (one answer per item, in order)."""

    def answer(self, items: list[EvalItem], wavs: list[np.ndarray]) -> list[str]: ...


def _check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(STYLES)}")
    return style


class EncoderStates:
    """The frozen speech encoder's states of each clip (float16, as training reads them from its cache),
    computed once per item id and shared by the speech-LLM systems on that encoder (the trained and the
    untrained adapter). A model that mixes encoder layers (``layer_mix``) gets the audio instead.

    Args:
        model: a `SpeechLLM` whose encoder computes the states.
    """

    def __init__(self, model):
        self.model = model
        self.states: dict[str, np.ndarray] = {}

    def __call__(self, items: list[EvalItem], wavs: list[np.ndarray]) -> list[np.ndarray]:
        if self.model.layer_mix is not None:
            return wavs
        todo = {it.id: w for it, w in zip(items, wavs) if it.id not in self.states}
        if todo:
            self.states.update(zip(todo, self.model.encode_states(list(todo.values()))))
        return [self.states[it.id] for it in items]


class SpeechLLMSystem:
    """A speech LLM answering from the speech itself.

    Args:
        model: a `SpeechLLM` (anything with ``generate(wavs, instructions, **kwargs)``).
        style: how it is prompted (see `polyvox.models.speech_llm.STYLES`): ``instruction`` or ``pair``.
        states: shared `EncoderStates` to read instead of running the encoder on the audio (None: the audio).
        gen_kwargs: generation options (``max_new_tokens``, ``stop_at_newline`` …).
    """

    def __init__(self, model, style: str = "instruction", states: EncoderStates | None = None, **gen_kwargs: Any):
        self.model, self.style, self.states = model, _check_style(style), states
        self.gen_kwargs = {"stop_at_newline": True, **gen_kwargs}

    @functools.cached_property
    def key(self) -> str | None:
        """What its answers depend on besides the item (None: not cached; see `AnswerCache`)."""
        fp = getattr(self.model, "fingerprint", None)
        return None if fp is None else answer_key("speech", fp(), self.style, sorted(self.gen_kwargs.items()))

    def answer(self, items: list[EvalItem], wavs: list[np.ndarray]) -> list[str]:
        clips = self.states(items, wavs) if self.states is not None else wavs
        return self.model.generate(clips, [it.prompt(self.style) for it in items], **self.gen_kwargs)


class JointCTCSystem:
    """A speech LLM transcribing with its CTC head (`SpeechLLM.transcribe_ctc`): a token head by joint CTC/LLM beam
    search, the frozen LLM reading the item's example sentences (`sentence_prior`) scoring each hypothesis; a
    character head by its best path in the item's scripts, or with options its N-best list rescored by that LLM.
    It answers ASR items only (``tasks``).

    Args:
        model: a `SpeechLLM` with a CTC head.
        states: shared `EncoderStates`, as in `SpeechLLMSystem`.
        record: where its answers are also written by item id, e.g. the `transcripts` of a `CascadeSystem` on a
            `JointTranscriber` with the same options, which then does not decode those clips again.
        options: of `SpeechLLM.transcribe_ctc`: ``ctc_weight``, ``length_bonus``, ``beam`` (``max_new_tokens`` too
            for a token head); none for a character head's best path.
    """

    tasks = ("asr",)
    """The base tasks it answers (`polyvox.eval.generation.evaluate_generation` asks it no other)."""

    def __init__(self, model, states: EncoderStates | None = None, record: dict[str, str] | None = None,
                 **options: Any):
        if model.ctc_head is None:
            raise ValueError("joint CTC/LLM decoding needs a model with a CTC head")
        self.model, self.states, self.record, self.options = model, states, record, options

    @functools.cached_property
    def key(self) -> str | None:
        """What its answers depend on besides the item (see `AnswerCache`): the weights and the search's options,
        not the CTC readout (the search does not read the compressed positions)."""
        return answer_key("joint", _joint_fingerprint(self.model), sorted(self.options.items()))

    def answer(self, items: list[EvalItem], wavs: list[np.ndarray]) -> list[str]:
        clips = self.states(items, wavs) if self.states is not None else wavs
        priors = [sentence_prior(it.lang, it.examples) for it in items]
        texts = self.model.transcribe_ctc(clips, [it.lang for it in items], priors, **self.options)
        if self.record is not None:
            self.record.update((it.id, t) for it, t in zip(items, texts))
        return texts


def _joint_fingerprint(model) -> str:
    """The fingerprint of a model's CTC transcripts: its weights under any one CTC readout (they read none)."""
    return model.fingerprint() if model.cfg.ctc_readout is None else model.with_ctc_readout("hard").fingerprint()


class JointTranscriber:
    """A `CascadeSystem` front-end made of a speech LLM's CTC transcripts (`SpeechLLM.transcribe_ctc`): joint CTC/LLM
    decoding, the LLM reading `examples[lang]` (`sentence_prior`; none for a language without), or a character
    head's best path or LLM-rescored N-best list.

    Args:
        model: a `SpeechLLM` with a CTC head.
        examples: lang -> example sentences (e.g. those of the ASR items' few-shot prompts).
        options: of `SpeechLLM.transcribe_ctc`, as for `JointCTCSystem`.
    """

    def __init__(self, model, examples: dict[str, list[str]], **options: Any):
        self.model, self.examples, self.options = model, examples, options

    @functools.cached_property
    def key(self) -> str:
        """What its transcripts depend on besides the clip and its language."""
        return answer_key("joint", _joint_fingerprint(self.model), sorted(self.options.items()),
                          sorted(self.examples.items()))

    def transcribe(self, clips: list[np.ndarray], lang: str, batch_size: int = 8) -> list[str]:
        prior = sentence_prior(lang, self.examples.get(lang, []))
        out = []
        for s in range(0, len(clips), batch_size):
            part = clips[s : s + batch_size]
            out += self.model.transcribe_ctc(part, [lang] * len(part), [prior] * len(part), **self.options)
        return out


class CascadeSystem:
    """Whisper (or another front-end) transcribes, then the same LLM answers the same instruction from the transcript.

    Transcripts are cached by item id (a clip asked in several tasks is transcribed once) and kept in
    `transcripts`, so the front-end's own ASR quality can be scored.

    Args:
        model: a `SpeechLLM` (anything with ``generate_text(texts, instructions, **kwargs)``).
        transcriber: a `Transcriber` or `JointTranscriber` (anything with ``transcribe(clips, lang, batch_size)``).
        asr_batch_size: clips per front-end batch.
        states: shared `EncoderStates` the front-end reads instead of the audio (a `JointTranscriber` of the same
            speech LLM; None: the audio, as Whisper needs).
        style: how the LLM is prompted, as in `SpeechLLMSystem`.
        tasks: the base tasks it answers (None: every task).
        gen_kwargs: generation options for the LLM.
    """

    def __init__(self, model, transcriber, asr_batch_size: int = 8, style: str = "instruction",
                 tasks: tuple[str, ...] | None = None, states: EncoderStates | None = None, **gen_kwargs: Any):
        self.model, self.style, self.tasks, self.states = model, _check_style(style), tasks, states
        self.transcriber = transcriber
        self.asr_batch_size = asr_batch_size
        self.gen_kwargs = {"stop_at_newline": True, **gen_kwargs}
        self.transcripts: dict[str, str] = {}

    @functools.cached_property
    def key(self) -> str | None:
        """What its answers depend on besides the item (None: not cached; see `AnswerCache`)."""
        return _text_key("cascade", self.model, self.style, self.gen_kwargs, self.transcript_key)

    @property
    def transcript_key(self) -> str | None:
        """What its transcripts depend on besides the clip and its language: the front-end and whether it reads the
        encoder states or the audio (None: unknown)."""
        key = getattr(self.transcriber, "key", None)
        return key if key is None or self.states is None else answer_key(key, "encoder states")

    def _transcribe(self, items: list[EvalItem], wavs: list[np.ndarray]) -> None:
        todo: dict[str, dict[str, int]] = defaultdict(dict)  # lang -> item id -> index of its clip
        for i, it in enumerate(items):
            if it.id not in self.transcripts:
                todo[it.lang].setdefault(it.id, i)
        heard = self.states(items, wavs) if self.states is not None and todo else wavs
        for lang, idx in todo.items():
            clips = [heard[i] for i in idx.values()]
            texts = self.transcriber.transcribe(clips, lang, batch_size=self.asr_batch_size)
            self.transcripts.update(zip(idx, texts))

    def answer(self, items: list[EvalItem], wavs: list[np.ndarray]) -> list[str]:
        self._transcribe(items, wavs)
        texts = [self.transcripts[it.id] for it in items]
        return self.model.generate_text(texts, [it.prompt(self.style) for it in items], **self.gen_kwargs)


class OracleTextSystem:
    """The same LLM and prompt reading the gold transcript instead of the speech: the ceiling that behaviour
    alignment aims at, and what the other systems' `agreement` is measured against.

    Args:
        model: a `SpeechLLM` (anything with ``generate_text(texts, instructions, **kwargs)``).
        style: how the LLM is prompted, as in `SpeechLLMSystem`.
        gen_kwargs: generation options for the LLM.
    """

    def __init__(self, model, style: str = "instruction", **gen_kwargs: Any):
        self.model, self.style = model, _check_style(style)
        self.gen_kwargs = {"stop_at_newline": True, **gen_kwargs}

    @functools.cached_property
    def key(self) -> str | None:
        """What its answers depend on besides the item (None: not cached; see `AnswerCache`)."""
        return _text_key("oracle", self.model, self.style, self.gen_kwargs, "")

    def answer(self, items: list[EvalItem], wavs: list[np.ndarray]) -> list[str]:
        if any(not it.text for it in items):
            raise ValueError("the oracle-text system needs each item's transcript (EvalItem.text)")
        return self.model.generate_text([it.text for it in items], [it.prompt(self.style) for it in items],
                                        **self.gen_kwargs)


def _text_key(kind: str, model, style: str, gen_kwargs: dict, front_end: str | None) -> str | None:
    """The cache key of a system whose answers come from the frozen LLM reading a text (LoRA off): the LLM,
    the prompt template, the style, the decoding options and the front-end (None: not cached)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or front_end is None:
        return None
    return answer_key(kind, fingerprint(cfg.llm), cfg.prompt_template, style, sorted(gen_kwargs.items()), front_end)



# -- the answer cache ------------------------------------------------------------------------------


def ask(name: str, system: System, task: str, items: list[EvalItem], wavs: list[np.ndarray]) -> list[str]:
    """The system's answers to the items, refusing a wrong count."""
    outs = system.answer(items, wavs)
    if len(outs) != len(items):
        raise RuntimeError(f"system {name!r} gave {len(outs)} answers for {len(items)} {task} items")
    return outs


class AnswerCache:
    """Answers of systems that have a ``key`` (what their answers depend on besides the item: the model's
    weights, the prompt style, decoding options), kept in a JSONL file under that key and a hash of the item's
    content (both prompt forms, the transcript, the clip's samples). A cascade's transcripts are kept beside
    its answers, so its front-end is scored from cache too, and keyed by its front-end, the language and the clip
    alone, so the same clips asked under another prompt are not transcribed again. Systems without a key are
    always asked.

    Every answered batch is appended at once, so a killed evaluation loses at most one batch.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = read_cache(self.path)
        self.heard = {(r["front_end"], r["lang"], r["clip"]): r["transcript"] for r in self.rows.values()
                      if "front_end" in r}  # (front-end, language, clip hash) -> a cascade's transcript

    def ask(self, name: str, system: System, task: str, items: list[EvalItem], wavs: list[np.ndarray]) -> list[str]:
        """The system's answers to the items, from the cache where it has them."""
        key = getattr(system, "key", None)
        if key is None:
            return ask(name, system, task, items, wavs)
        clips = [hashlib.sha256(np.ascontiguousarray(w).tobytes()).hexdigest() for w in wavs]
        ids = [answer_key(it.instruction, it.pair, it.text, c) for it, c in zip(items, clips)]
        transcripts = getattr(system, "transcripts", None)
        transcripts = transcripts if isinstance(transcripts, dict) else None
        front_end = getattr(system, "transcript_key", None) if transcripts is not None else None
        todo = [i for i, rid in enumerate(ids) if (key, rid) not in self.rows]
        if todo:
            for i in todo:  # clips it transcribed before, under another prompt
                if (heard := self.heard.get((front_end, items[i].lang, clips[i]))) is not None:
                    transcripts.setdefault(items[i].id, heard)
            outs = ask(name, system, task, [items[i] for i in todo], [wavs[i] for i in todo])
            with self.path.open("a") as f:
                for i, a in zip(todo, outs):
                    row = {"key": key, "id": ids[i], "system": name, "task": task, "item": items[i].id, "answer": str(a)}
                    if transcripts is not None and items[i].id in transcripts:
                        row["transcript"] = transcripts[items[i].id]
                        if front_end is not None:
                            row |= {"front_end": front_end, "lang": items[i].lang, "clip": clips[i]}
                            self.heard[front_end, items[i].lang, clips[i]] = row["transcript"]
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    self.rows[key, ids[i]] = row
        rows = [self.rows[key, rid] for rid in ids]
        if transcripts is not None:
            transcripts.update({it.id: r["transcript"] for it, r in zip(items, rows) if "transcript" in r})
        return [r["answer"] for r in rows]
