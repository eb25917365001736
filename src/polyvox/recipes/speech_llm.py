"""What the speech-LLM recipes (blsp, mit) share: the training sample, clip batches, the loss, training and
evaluation."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polyvox.audio import AudioError, load_audio
from polyvox.config import (
    AlignConfig,
    CTCStageConfig,
    DataConfig,
    GenerationEvalConfig,
    TrainConfig,
    save_config,
)
from polyvox.data.degrade import augmentation_subset, write_degraded
from polyvox.data.manifest import Utterance, read_manifest
from polyvox.eval.generation import evaluate_generation
from polyvox.eval.report import write_generation_report
from polyvox.eval.systems import (
    CascadeSystem,
    EncoderStates,
    JointCTCSystem,
    JointTranscriber,
    OracleTextSystem,
    SpeechLLMSystem,
)
from polyvox.eval.tasks import build_tasks, degraded_items
from polyvox.losses import distill_kl, mean_over_processes
from polyvox.models.asr import Transcriber
from polyvox.models.ctc import CharCTCHead, CTCHead, EmbeddingCTCHead, aligned_ctc_loss
from polyvox.models.export import read_meta, save_trainable
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm
from polyvox.models.units import encode_units
from polyvox.train.loop import train

log = logging.getLogger(__name__)


def sample_utterances(data: DataConfig, k: int | None, seed: int) -> list[Utterance]:
    """The training split, or a seeded sample of `k` of it (in manifest order)."""
    utts = read_manifest(data.manifest, split=data.train_split)
    if not utts:
        raise ValueError(f"{data.manifest}: no utterances in split {data.train_split!r}")
    if k is not None and len(utts) > k:
        rng = np.random.default_rng(seed)
        utts = [utts[i] for i in sorted(rng.choice(len(utts), k, replace=False))]
    return utts


def start_run(cfg) -> tuple[Path, SpeechLLM]:
    """The run folder of a speech-LLM recipe config (made, with the config saved in it) and its model: fresh, or
    with the trained weights of `cfg.init_from`."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    model = build_speech_llm(cfg.model, cfg.train.seed)
    if cfg.init_from:
        model.load_weights(cfg.init_from)
        log.info("starting from the trained weights of %s", cfg.init_from)
    return out, model


def encoder_states(model: SpeechLLM, utts: list[Utterance], root: Path, cache_dir: Path,
                   batch_size: int = 16) -> dict[str, np.ndarray] | None:
    """The frozen encoder's (T, D) states of each clip, computed once and cached on disk (content-keyed, like
    the unit cache), so training steps run only the adapter and the LLM. None when the model mixes encoder
    layers (``layer_mix`` needs every layer: the encoder then runs in each step). Clips that cannot be
    encoded are reported and left out."""
    if model.layer_mix is not None:
        log.info("model.layer_mix: the encoder runs in every step (its states are not cached)")
        return None
    states, bad = encode_units(utts, root, model.encoder, model.state_tokenizer(), cache_dir, batch_size)
    if bad:
        log.warning("%d clips could not be encoded and are left out", len(bad))
    return dict(states)  # read once: every training step asks for some (the cache view would read them again)


def mask_time(x: np.ndarray, share: float, span: int, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment's time masking of (T, D) encoder states: ``round(share * T / span)`` spans of `span` frames
    (at random starts, they may overlap) set to zero, in a copy."""
    n = round(share * len(x) / span)
    if n == 0:
        return x
    x = x.copy()
    for s in rng.integers(0, max(1, len(x) - span + 1), n):
        x[s : s + span] = 0
    return x


def clip_batches(t: TrainConfig, train_set: list[tuple[Utterance, Any]], root: Path,
                 states: dict[str, np.ndarray] | None = None, time_mask: float = 0.0, mask_span: int = 5):
    """The step -> micro-batches function of the training loop, a pure function of (seed, step) so a resumed
    run sees the same data. A micro-batch is ``{"wavs", "utts", "items"}``: the clips (16 kHz audio, or the
    encoder's cached `states` when given), their utterances and the payload paired with each (targets,
    prompts …); a clip that fails to load costs one item. `time_mask` > 0 masks that share of each clip's
    cached states (`mask_time`, spans of `mask_span` frames), drawn from (seed, step, item)."""
    if time_mask > 0 and states is None:
        raise ValueError("time masking works on cached encoder states (not with model.layer_mix)")
    per_epoch = max(1, len(train_set) // t.batch_size)

    @functools.lru_cache(maxsize=2)
    def order(epoch: int) -> np.ndarray:
        return np.random.default_rng([t.seed, epoch]).permutation(len(train_set))

    def batches(step: int, rank: int, world: int) -> list[dict]:
        epoch, i = divmod(step, per_epoch)
        idx = order(epoch)[i * t.batch_size : (i + 1) * t.batch_size]
        micros = []
        for m in range(t.grad_accum):  # the same micro-batches for any number of processes, each holding a share
            utts, items, wavs = [], [], []
            for j in idx[m :: t.grad_accum][rank::world]:
                u, item = train_set[j]
                if states is not None:
                    if u.id in states:  # else it could not be encoded (reported by `encoder_states`)
                        x = states[u.id]
                        wavs.append(mask_time(x, time_mask, mask_span, np.random.default_rng([t.seed, step, j]))
                                    if time_mask else x)
                        utts.append(u)
                        items.append(item)
                    continue
                try:
                    wavs.append(load_audio(u.audio_path(root), u.id))
                    utts.append(u)
                    items.append(item)
                except AudioError as e:
                    log.warning("step %d: skipping %s", step + 1, e)
            micros.append({"wavs": wavs, "utts": utts, "items": items})
        return micros

    return batches


def alignment_loss(lc: AlignConfig):
    """The training loss of both recipes: cross-entropy on the target tokens of ``prompt + speech -> target``,
    plus the text-teacher KL when `lc.kl_weight` > 0 and the transcript's CTC loss on the model's CTC head when
    `lc.ctc_weight` > 0.

    Micro-batch items (see `clip_batches`) are ``(prompt, target ids, kind)``; a kind (e.g. mit's T / MI) gets its
    own ``ce_<kind>`` metric, None gets none.
    """

    def loss_fn(model: SpeechLLM, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        prompts, targets, kinds = zip(*batch["items"]) if batch["items"] else ((), (), ())
        logits, ids, teacher = model(batch["wavs"], list(prompts), list(targets),
                                     [u.text for u in batch["utts"]] if lc.kl_weight > 0 else None)
        per_token = F.cross_entropy(logits, ids, reduction="none")  # (N,)
        ce = mean_over_processes(per_token.sum(), len(ids))  # per token of every process's micro-batch
        m = {"ce": per_token.mean().item(), "token_acc": logits.argmax(-1).eq(ids).float().mean().item(), "tokens": len(ids)}
        token_kinds = [k for k, t in zip(kinds, targets) for _ in t]
        for kind in sorted({k for k in kinds if k is not None}):
            sel = torch.tensor([k == kind for k in token_kinds], device=per_token.device)
            m[f"ce_{kind}"] = per_token[sel].mean().item()
        loss = ce
        if teacher is not None:
            kl = distill_kl(logits, teacher, lc.kl_temperature)
            loss = loss + lc.kl_weight * mean_over_processes(kl * len(ids), len(ids))
            m["kl"] = kl.item()
        if lc.ctc_weight > 0:
            ctc, m["ctc_items"] = transcript_ctc(model, batch)
            loss = loss + lc.ctc_weight * mean_over_processes(ctc * m["ctc_items"], m["ctc_items"])
            m["ctc"] = ctc.item()
        return loss, m

    return loss_fn


def transcript_ctc(model: SpeechLLM, batch: dict) -> tuple[torch.Tensor, int]:
    """CTC loss of the batch's transcripts on the adapter's frames with the model's own CTC head, over the clips
    it can score (every token among the head's classes, enough frames); returns the loss and that count."""
    if model.ctc_head is None:
        raise ValueError("loss.ctc_weight needs the model's CTC head: ctc.steps > 0 with model.ctc_readout set or "
                         "ctc.classes chars")
    x, n = model.adapter_frames(batch["wavs"])  # (B, T, D), (B,)
    return aligned_ctc_loss(model.ctc_head, x, n, [model.ctc_targets(u.text) for u in batch["utts"]])


def augmented(t: TrainConfig, train_set: list[tuple[Utterance, Any]], root: Path,
              out: Path) -> list[tuple[Utterance, Any]]:
    """`train.augment` copies of the training clips (of a seeded `train.augment_fraction` of the utterances),
    each written once under ``out/augmented/<name>`` and paired with its original's items: extra training pairs."""
    if not t.augment:
        return []
    utts = augmentation_subset(list({u.id: u for u, _ in train_set}.values()), t.augment_fraction, t.seed)
    extra = []
    for name in t.augment:
        copies = {c.id.split("#")[0]: c for c in write_degraded(utts, root, out / "augmented" / name, name)}
        extra += [(copies[u.id], item) for u, item in train_set if u.id in copies]
        log.info("augmentation %s: %d training copies", name, len(copies))
    return extra


def fit(model: SpeechLLM, train_set: list[tuple[Utterance, Any]], lc: AlignConfig, t: TrainConfig,
        data: DataConfig, out: Path, what: str, meta: dict, shared: Path | None = None) -> Path:
    """Train `model`'s trainable parts with `alignment_loss` on ``(utterance, (prompt, target ids, kind))`` pairs
    (and their `train.augment` copies) and export it to ``out/model`` with the training languages and `meta`
    recorded. The encoder-state cache and the augmented copies go under `shared` (default `out`), which the
    stages of one run share."""
    langs = sorted({u.lang for u, _ in train_set})
    root, shared = Path(data.manifest).parent, shared or out
    train_set = train_set + augmented(t, train_set, root, shared)
    params = [p for p in model.parameters() if p.requires_grad]
    log.info("training %s (%.2fM parameters) on %d examples of %d utterances in %d languages", what,
             sum(p.numel() for p in params) / 1e6, len(train_set), len({u.id for u, _ in train_set}), len(langs))
    states = encoder_states(model, list({u.id: u for u, _ in train_set}.values()), root, shared / "cache")
    train(model, [{"params": params, "lr": t.lr}], clip_batches(t, train_set, root, states), alignment_loss(lc), t, out)
    return model.save(out / "model", extra={"train_languages": langs, **meta})


class CTCStage(nn.Module):
    """The speech LLM's adapter side + a CTC head: the model's own (over the LLM's frozen embedding rows with
    ``model.ctc_readout``, or over characters) or one of its own, dropped after the stage."""

    def __init__(self, model: SpeechLLM, head: CTCHead):
        super().__init__()
        self.model, self.head = model, head

    def trainable(self) -> list[nn.Parameter]:
        """Layer mix, adapter and the head's blank and scale (LoRA, if any, waits for the cross-entropy stage)."""
        parts = [self.model.adapter, self.head] + ([self.model.layer_mix] if self.model.layer_mix is not None else [])
        return [p for m in parts for p in m.parameters() if p.requires_grad]

    def forward(self, wavs: list, targets: list[list[int]]) -> tuple[torch.Tensor, dict[str, float]]:
        """CTC loss of the transcripts (the head's targets); items too short to align are left out and counted."""
        x, n = self.model.adapter_frames(wavs)  # (B, L, D_llm), (B,)
        loss, kept = aligned_ctc_loss(self.head, x, n, targets)
        return mean_over_processes(loss * kept, kept), {"ctc_items": kept, "ctc_skipped": len(targets) - kept}

    def save(self, folder: str | Path) -> Path:
        return save_trainable(self, folder, {"kind": "ctc_stage"})


def run_ctc(model: SpeechLLM, utts: list[Utterance], c: CTCStageConfig, t: TrainConfig, data: DataConfig,
            out: Path) -> Path:
    """The CTC stage: CTC on the transcripts of `utts` (and their `train.augment` copies, shared with the later
    stages under ``out/augmented``) trains the layer mix and adapter of `model` in place (and its CTC head with
    ``model.ctc_readout``; the head's classes are the transcripts' tokens unless `c.full_vocab`; with
    ``c.classes: chars``, a head over the transcripts' characters that stays with the model). Runs in
    ``out/ctc`` with its own checkpoints (resumable; the encoder-state cache is ``out/cache``) and exports the
    speech LLM to ``ctc/model``."""
    run = out / "ctc"
    tc = copy.deepcopy(t)
    tc.steps, tc.lr, tc.warmup_steps = c.steps, c.lr, c.warmup_steps
    tc.batch_size = c.batch_size or t.batch_size
    tc.grad_accum = min(tc.grad_accum, tc.batch_size)
    if c.classes == "chars":  # the model's own head (kept if it already has these classes)
        chars = sorted({ch for u in utts for ch in u.text})
        have = model.ctc_head
        same = isinstance(have, CharCTCHead) and (have.chars, have.split) == (chars, c.char_split)
        head = have if same else model.add_char_head(chars, c.char_split)
        train_set = [(u, head.encode(u.text)) for u in utts]
    else:
        train_set = [(u, model.text_ids(u.text)) for u in utts]
        vocab = None if c.full_vocab else sorted({k for _, ids in train_set for k in ids})
        if model.cfg.ctc_readout is not None:  # the model's own head (kept if it already scores these classes)
            have = model.ctc_head
            same = isinstance(have, EmbeddingCTCHead) and (
                None if have.token_ids is None else have.token_ids.tolist()) == vocab
            head = have if same else model.add_ctc_head(vocab)
        else:
            head = EmbeddingCTCHead(model.lm.get_input_embeddings(), vocab=vocab)
    stage = CTCStage(model, head)

    def loss_fn(stage: CTCStage, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        loss, m = stage(batch["wavs"], batch["items"])
        return loss, {"ctc": loss.item(), **m}

    root = Path(data.manifest).parent
    train_set = train_set + augmented(t, train_set, root, out)
    log.info("CTC stage: %d steps on %d clips, %d %s classes", tc.steps, len(train_set), head.vocab_size, c.classes)
    states = encoder_states(model, [u for u, _ in train_set], root, out / "cache")
    batches = clip_batches(tc, train_set, root, states, c.time_mask, c.mask_span)
    train(stage, [{"params": stage.trainable(), "lr": tc.lr}], batches, loss_fn, tc, run)
    return model.save(run / "model", extra={"recipe": "ctc"})


def untrained_like(model: SpeechLLM) -> SpeechLLM:
    """The same speech LLM with its trainable parts at initialisation: a fresh adapter (and layer mix) on the
    shared frozen encoder and LLM; with LoRA, on a freshly loaded LLM, as the shared one carries trained LoRA; with a
    CTC head, a fresh one over the same classes."""
    if model.cfg.lora_rank > 0:
        fresh = build_speech_llm(model.cfg, model.seed)
    else:
        fresh = SpeechLLM(model.encoder, model.lm, model.tokenizer, model.cfg, model.seed)
    head = model.ctc_head
    if isinstance(head, CharCTCHead):
        fresh.add_char_head(head.chars, head.split)
    elif head is not None:
        fresh.add_ctc_head(None if head.token_ids is None else head.token_ids.tolist())
    return fresh.eval()


def joint_systems(model: SpeechLLM, system: str, states: EncoderStates, e: GenerationEvalConfig, tasks: dict,
                  gen: dict, with_cascade: bool) -> tuple[dict, list[tuple[str, str]]]:
    """The systems that transcribe with `model`'s CTC head (`SpeechLLM.transcribe_ctc`) beside `model` (answering as
    `system`), with the paired differences to report: ``<system> [ctc+llm]`` transcribes the ASR items by joint
    CTC/LLM decoding (when `e.joint_ctc_weight` > 0; a character head's N-best list rescored by the LLM), and a
    character head's ``<system> [ctc]`` by its best path; with `e.joint_cascade`, ``<system> [<tag> cascade]`` has
    the LLM (`gen`: its generation options) answer every other task from each one's transcripts. Each is paired
    with the model's own answers and, `with_cascade`, the Whisper cascade's; ``[ctc+llm]`` also with ``[ctc]``. A
    clip the first system has transcribed is not decoded again for the second."""
    chars = isinstance(model.ctc_head, CharCTCHead)
    variants = {"ctc": {}} if chars else {}
    if e.joint_ctc_weight > 0:
        variants["ctc+llm"] = {"ctc_weight": e.joint_ctc_weight, "length_bonus": e.joint_length_bonus,
                               "beam": e.joint_beam} | ({} if chars else {"max_new_tokens": e.max_new_tokens})
    systems = {}
    for tag, options in variants.items():
        chained = None
        if e.joint_cascade:
            front = JointTranscriber(model, {it.lang: it.examples for it in tasks.get("asr", [])}, **options)
            chained = CascadeSystem(model, front, asr_batch_size=e.batch_size, states=states,
                                    tasks=("translation", "intent", "continuation", "heldout"), **gen)
        systems[f"{system} [{tag}]"] = JointCTCSystem(model, states, chained.transcripts if chained else None, **options)
        if chained:
            systems[f"{system} [{tag} cascade]"] = chained
    pairs = [(name, other) for name in systems for other in [system] + ["cascade"] * with_cascade]
    if len(variants) == 2:  # the LLM's rescoring against the head's own best path
        pairs += [(f"{system} [ctc+llm{end}]", f"{system} [ctc{end}]") for end in ("", " cascade")]
    return systems, pairs


def evaluate_checkpoint(folder: str | Path, data: DataConfig, e: GenerationEvalConfig, out_dir: str | Path,
                        config: dict, name: str, system: str, stop_at_newline: bool = True,
                        prepare: Callable[[SpeechLLM, dict], None] | None = None, **task_kwargs: Any) -> dict:
    """Evaluate a trained speech LLM with the baselines of `e.baselines` on the same items; writes
    ``out_dir/name.{json,md,png}``.

    The model is prompted in its style (``model.prompt_style``: instruction or pair), and the baselines in the
    same style. `prepare(model, tasks)` may complete the items before they are asked
    (the mit recipe writes held-out references with the frozen LLM); `task_kwargs` go to `build_tasks`.
    """
    if e.shots and not stop_at_newline:
        raise ValueError("eval.shots: a few-shot answer ends at its first line break; turn stop_at_newline on")
    meta = read_meta(folder, "speech_llm")
    model = SpeechLLM.load(folder)
    if e.ctc_readout is not None:
        model = model.with_ctc_readout(e.ctc_readout)  # the untrained baseline, built from it, reads the same way
    gen = {"max_new_tokens": e.max_new_tokens, "stop_at_newline": stop_at_newline,
           "style": model.cfg.prompt_style,  # the guard only when on: plain decoding keeps its cached answers' keys
           **({"no_repeat_ngram": e.no_repeat_ngram} if e.no_repeat_ngram else {})}
    baselines = {  # each built from the trained model, sharing its frozen encoder (and its states) and LLM
        "cascade": lambda m, _: CascadeSystem(m, Transcriber(e.asr_model), **gen),
        "untrained": lambda m, states: SpeechLLMSystem(untrained_like(m), states=states, **gen),
        "oracle": lambda m, _: OracleTextSystem(m, **gen),
    }
    unknown = sorted(set(e.baselines) - set(baselines))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {sorted(baselines)}")
    states = EncoderStates(model)  # the encoder runs once per clip for every speech system
    systems = {**({system: SpeechLLMSystem(model, states=states, **gen)} if e.speech_positions else {}),
               **{b: baselines[b](model, states) for b in e.baselines}}
    compare = [(system, b) for b in ("cascade", "untrained") if b in systems]  # paired, with intervals
    for readout in e.compare_readouts:  # the same weights read another way
        systems[f"{system} [{readout}]"] = SpeechLLMSystem(model.with_ctc_readout(readout), states=states, **gen)
        compare.append((system, f"{system} [{readout}]"))
    tasks = build_tasks(data.manifest, e, data.pivot_lang, **task_kwargs)
    more, pairs = joint_systems(model, system, states, e, tasks, gen, with_cascade="cascade" in systems)
    systems.update(more)
    compare = [c for c in compare + pairs if set(c) <= set(systems)]
    if prepare is not None:
        prepare(model, tasks)
    seen, root = set(meta.get("train_languages", [])), Path(data.manifest).parent
    cache = e.answer_cache or Path(out_dir) / "answers.jsonl"
    result = evaluate_generation(systems, tasks, root, seen, e.batch_size, cache=cache, compare=compare)
    if e.conditions:  # degraded clips: only the systems that hear them (the oracle reads text, the untrained adapter noise)
        if "asr" not in tasks:
            raise ValueError("eval.conditions degrade the ASR task's clips: add asr to eval.tasks")
        degraded = {f"asr:{c}": degraded_items(tasks["asr"], root, Path(out_dir) / "degraded", c) for c in e.conditions}
        hearing = {k: v for k, v in systems.items() if k in (system, "cascade") or isinstance(v, JointCTCSystem)}
        more = evaluate_generation(hearing, degraded, root, seen, e.batch_size, cache=cache,
                                   compare=[c for c in compare if c[1] in hearing])
        result["tasks"].update(more["tasks"])
        result["bad_lines"] += more["bad_lines"]
    paths = write_generation_report(result, out_dir, name, config)
    log.info("report: %s", ", ".join(str(p) for p in paths.values()))
    return result
