"""BLSP recipe: continuations (step 1) -> behaviour-alignment training (step 2) -> zero-shot evaluation.

Run folder (`cfg.out_dir`): ``continuations.jsonl`` + ``continuations.json`` (step 1 cache and counts),
``checkpoints/``, ``model/`` (the adapter + references to the frozen parts), ``metrics.jsonl``,
``eval.{json,md,png}``, ``config.yaml``.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from polyvox.audio import AudioError, load_audio
from polyvox.config import BLSPConfig, config_to_dict, save_config
from polyvox.data.manifest import Utterance, read_manifest
from polyvox.fileio import atomic_write_text
from polyvox.losses import distill_kl
from polyvox.models.export import read_meta
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm
from polyvox.recipes.answers import Request, answer_key, cached_answers
from polyvox.train.loop import train

log = logging.getLogger(__name__)


def train_utterances(cfg: BLSPConfig) -> list[Utterance]:
    """The training split, or a seeded sample of `continuation.max_utterances` of it."""
    utts = read_manifest(cfg.data.manifest, split=cfg.data.train_split)
    if not utts:
        raise ValueError(f"{cfg.data.manifest}: no utterances in split {cfg.data.train_split!r}")
    k = cfg.continuation.max_utterances
    if k is not None and len(utts) > k:
        rng = np.random.default_rng(cfg.train.seed)
        utts = [utts[i] for i in sorted(rng.choice(len(utts), k, replace=False))]
    return utts


def _continuation_key(cfg: BLSPConfig) -> str:
    """What a cached continuation depends on: the LLM, the prompt and the decoding bounds."""
    from polyvox.models.sources import fingerprint

    c = cfg.continuation
    return answer_key(fingerprint(cfg.model.llm), cfg.model.prompt_template, c.instruction, c.max_new_tokens,
                      c.stop_at_newline)


def run_continuations(cfg: BLSPConfig, model: SpeechLLM | None = None,
                      utts: list[Utterance] | None = None) -> dict[str, str]:
    """Step 1: the frozen LLM continues each training transcript (greedy, batched, cached, resumable).

    Rows go to ``continuations.jsonl`` (see `polyvox.recipes.answers.cached_answers`); prompts longer than
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


def _batches(cfg: BLSPConfig, model: SpeechLLM, train_set: list[tuple[Utterance, list[int]]], root: Path):
    """The step -> micro-batches function, a pure function of (seed, step) so a resumed run sees the same data."""
    t = cfg.train
    per_epoch = max(1, len(train_set) // t.batch_size)

    @functools.lru_cache(maxsize=2)
    def order(epoch: int) -> np.ndarray:
        return np.random.default_rng([t.seed, epoch]).permutation(len(train_set))

    def batches(step: int, rank: int, world: int) -> list[dict]:
        epoch, i = divmod(step, per_epoch)
        idx = order(epoch)[i * t.batch_size : (i + 1) * t.batch_size][rank::world]
        micros = []
        for m in range(t.grad_accum):
            sel, wavs = [], []
            for u, ids in (train_set[j] for j in idx[m :: t.grad_accum]):
                try:
                    wavs.append(load_audio(u.audio_path(root), u.id))
                    sel.append((u, ids))
                except AudioError as e:  # a bad clip costs one item, not the run
                    log.warning("step %d: skipping %s", step + 1, e)
            micros.append({"wavs": wavs, "targets": [ids for _, ids in sel], "texts": [u.text for u, _ in sel]})
        return micros

    return batches


def _loss_fn(cfg: BLSPConfig):
    lc, instruction = cfg.loss, cfg.continuation.instruction

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(batch["wavs"])
        logits, ids, teacher = model(batch["wavs"], [instruction] * n, batch["targets"],
                                     batch["texts"] if lc.kl_weight > 0 else None)
        ce = F.cross_entropy(logits, ids)
        m = {"ce": ce.item(), "token_acc": logits.argmax(-1).eq(ids).float().mean().item(), "tokens": len(ids)}
        loss = ce
        if teacher is not None:
            kl = distill_kl(logits, teacher, lc.kl_temperature)
            loss = loss + lc.kl_weight * kl
            m["kl"] = kl.item()
        return loss, m

    return loss_fn


def run_train(cfg: BLSPConfig, continuations: dict[str, str] | None = None) -> Path:
    """Step 2: train the adapter so the frozen LLM, given the speech, writes the text's continuation.

    Returns the exported model folder (``out_dir/model``).
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    model = build_speech_llm(cfg.model, cfg.train.seed)
    utts = train_utterances(cfg)
    if continuations is None:
        continuations = run_continuations(cfg, model, utts)
    eos = model.tokenizer.eos_token_id
    train_set = [(u, model.text_ids(continuations[u.id])[: cfg.loss.max_target_tokens] + [eos])
                 for u in utts if u.id in continuations]
    if len(train_set) < 1:
        raise ValueError("no training utterance has a continuation; run step 1 first (polyvox data continuations)")
    langs = sorted({u.lang for u, _ in train_set})
    params = [p for p in model.parameters() if p.requires_grad]
    log.info("training the %s adapter (%.2fM parameters) on %d utterances in %d languages", cfg.model.adapter,
             sum(p.numel() for p in params) / 1e6, len(train_set), len(langs))
    train(model, [{"params": params, "lr": cfg.train.lr}], _batches(cfg, model, train_set, Path(cfg.data.manifest).parent),
          _loss_fn(cfg), cfg.train, out)
    return model.save(out / "model", extra={"train_languages": langs, "recipe": "blsp"})


def run_eval(cfg: BLSPConfig, checkpoint: str | Path | None = None, name: str = "eval",
             system: str = "blsp") -> dict:
    """Zero-shot ASR, X -> pivot translation and intent classification by prompting, with the baselines
    of `cfg.eval.baselines` on the same items; writes ``name.{json,md,png}`` into the run folder."""
    from polyvox.eval.generation import CascadeSystem, SpeechLLMSystem, build_tasks, evaluate_generation
    from polyvox.eval.report import write_generation_report
    from polyvox.models.asr import Transcriber

    e = cfg.eval
    gen = {"max_new_tokens": e.max_new_tokens, "stop_at_newline": cfg.continuation.stop_at_newline}
    baselines = {  # each built from the trained model, sharing its frozen encoder and LLM
        "cascade": lambda m: CascadeSystem(m, Transcriber(e.asr_model), **gen),
        "untrained": lambda m: SpeechLLMSystem(SpeechLLM(m.encoder, m.lm, m.tokenizer, m.cfg, m.seed).eval(), **gen),
    }
    unknown = sorted(set(e.baselines) - set(baselines))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {sorted(baselines)}")
    folder = Path(checkpoint or Path(cfg.out_dir) / "model")
    model = SpeechLLM.load(folder)
    seen = set(read_meta(folder, "speech-LLM").get("train_languages", []))
    systems = {system: SpeechLLMSystem(model, **gen), **{b: baselines[b](model) for b in e.baselines}}
    tasks = build_tasks(cfg.data.manifest, e, cfg.data.pivot_lang)
    result = evaluate_generation(systems, tasks, Path(cfg.data.manifest).parent, seen, e.batch_size)
    paths = write_generation_report(result, cfg.out_dir, name, config_to_dict(cfg))
    log.info("report: %s", ", ".join(str(p) for p in paths.values()))
    return result
