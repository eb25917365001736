"""BLSP recipe: continuations (step 1) -> optional CTC stage -> optional ASR warm-up -> behaviour-alignment
training (step 2) -> zero-shot evaluation.

The CTC stage and the ASR warm-up read every transcript of the training split; continuations are generated and
learned for `continuation.max_utterances` of them.

Run folder (`cfg.out_dir`): ``continuations.jsonl`` + ``continuations.json`` (step 1 cache and counts),
``ctc/`` and ``warmup/`` (each stage's checkpoints, metrics and exported model), ``cache/`` (encoder states),
``checkpoints/``, ``model/`` (the adapter + references to the frozen parts), ``metrics.jsonl``,
``eval.{json,md,png}``, ``config.yaml``.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from polyvox.config import AlignConfig, BLSPConfig, config_to_dict
from polyvox.data.manifest import Utterance
from polyvox.fileio import atomic_write_text
from polyvox.models.answers import Request, answer_key, cached_answers
from polyvox.models.sources import fingerprint
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm, make_instruction
from polyvox.recipes.speech_llm import evaluate_checkpoint, fit, run_ctc, sample_utterances, start_run

log = logging.getLogger(__name__)


def train_utterances(cfg: BLSPConfig) -> list[Utterance]:
    """The training split, or a seeded sample of `continuation.max_utterances` of it."""
    return sample_utterances(cfg.data, cfg.continuation.max_utterances, cfg.train.seed)


def _continuation_key(cfg: BLSPConfig) -> str:
    """What a cached continuation depends on: the LLM, the prompt and the decoding bounds."""
    c = cfg.continuation
    return answer_key(fingerprint(cfg.model.llm), cfg.model.prompt_template, c.instruction, c.max_new_tokens,
                      c.stop_at_newline)


def run_continuations(cfg: BLSPConfig, model: SpeechLLM | None = None,
                      utts: list[Utterance] | None = None) -> dict[str, str]:
    """Step 1: the frozen LLM continues each training transcript (greedy, batched, cached, resumable).

    Rows go to ``continuations.jsonl`` (see `polyvox.models.answers.cached_answers`); prompts longer than
    `continuation.max_input_tokens` are skipped; the counts go to ``continuations.json``. `utts` is
    `train_utterances(cfg)` when the caller already has it. Returns utterance id -> continuation.
    """
    c, out = cfg.continuation, Path(cfg.out_dir)
    key = _continuation_key(cfg)
    utts = utts if utts is not None else train_utterances(cfg)
    requests = [Request(u.id, key, u.text, c.instruction, {"lang": u.lang, "text": u.text}) for u in utts]
    result, counts = cached_answers(
        requests, out / "continuations.jsonl", model or (lambda: build_speech_llm(cfg.model, cfg.train.seed)),
        max_new_tokens=c.max_new_tokens, max_input_tokens=c.max_input_tokens, batch_size=c.batch_size,
        stop_at_newline=c.stop_at_newline, field_name="continuation", desc="continuations")
    counts["utterances"] = counts.pop("requests")
    atomic_write_text(out / "continuations.json", json.dumps({**counts, "key": key}, indent=2) + "\n")
    return result


def run_train(cfg: BLSPConfig, continuations: dict[str, str] | None = None) -> Path:
    """Step 2: train the adapter so the frozen LLM, given the speech, writes the text's continuation.

    Returns the exported model folder (``out_dir/model``).
    """
    out, model = start_run(cfg)
    utts = train_utterances(cfg)
    if continuations is None:
        continuations = run_continuations(cfg, model, utts)
    eos = model.tokenizer.eos_token_id
    if cfg.ctc.steps > 0 or cfg.asr_warmup.steps > 0:
        every = sample_utterances(cfg.data, None, cfg.train.seed)
        if cfg.ctc.steps > 0:
            run_ctc(model, every, cfg.ctc, cfg.train, cfg.data, out)
        if cfg.asr_warmup.steps > 0:
            run_warmup(cfg, model, every)
    instruction = cfg.continuation.instruction
    train_set = [(u, (instruction, model.text_ids(continuations[u.id])[: cfg.loss.max_target_tokens] + [eos], None))
                 for u in utts if u.id in continuations]
    if len(train_set) < 1:
        raise ValueError("no training utterance has a continuation; run step 1 first (polyvox data continuations)")
    return fit(model, train_set, cfg.loss, cfg.train, cfg.data, out, f"the {cfg.model.adapter} adapter",
               {"recipe": "blsp", "ctc_steps": cfg.ctc.steps, "asr_warmup_steps": cfg.asr_warmup.steps,
                "init_from": cfg.init_from})


def run_warmup(cfg: BLSPConfig, model: SpeechLLM, utts: list[Utterance]) -> Path:
    """The optional ASR warm-up (`cfg.asr_warmup`): the adapter of `model` learns, in place, to make the frozen LLM
    repeat each transcript under the transcription prompt. Runs in ``out_dir/warmup`` (checkpoints, metrics,
    resumable) and exports the speech LLM to ``warmup/model``."""
    w, eos = cfg.asr_warmup, model.tokenizer.eos_token_id
    tc = copy.deepcopy(cfg.train)
    tc.steps, tc.lr, tc.warmup_steps = w.steps, w.lr, w.warmup_steps
    train_set = [(u, (make_instruction("transcribe", u.lang), model.text_ids(u.text)[: cfg.loss.max_target_tokens] + [eos],
                      None)) for u in utts]
    out = Path(cfg.out_dir)
    lc = AlignConfig(cfg.loss.max_target_tokens, ctc_weight=cfg.loss.ctc_weight)
    return fit(model, train_set, lc, tc, cfg.data, out / "warmup",
               "the ASR warm-up", {"recipe": "blsp-warmup"}, shared=out)


def run_eval(cfg: BLSPConfig, checkpoint: str | Path | None = None, name: str = "eval",
             system: str = "blsp") -> dict:
    """Zero-shot ASR, X -> pivot translation and intent classification by prompting, with the baselines
    of `cfg.eval.baselines` on the same items; writes ``name.{json,md,png}`` into the run folder."""
    return evaluate_checkpoint(checkpoint or Path(cfg.out_dir) / "model", cfg.data, cfg.eval, cfg.out_dir,
                               config_to_dict(cfg), name, system, cfg.continuation.stop_at_newline)
