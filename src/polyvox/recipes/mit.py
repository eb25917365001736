"""mit recipe (Denisov & Vu 2024, BLOOMZMMS): multi-instruction training of the speech LLM.

1. Targets: for each training transcript, instructions are drawn from the template bank (variant T, MI or
   TMI; `polyvox.data.instructions`) and the frozen LLM answers them *from the text* (repeat instructions
   take the transcript itself by default). Answers are cached (`polyvox.models.answers`).
2. Optional CTC stage: the adapter side (layer mix + adapter) learns to put its frames near the LLM input
   embeddings of the tokens said, through a CTC head whose output layer is the LLM's frozen embedding table.
3. Cross-entropy: ``[prefix; speech; postfix] -> answer`` through the frozen LLM (LoRA optional).
4. Evaluation: the zero-shot tasks of BLSP plus instruction following on held-out templates, scored against
   the frozen LLM's answer from the transcript.

Run folder (`cfg.out_dir`): ``targets.jsonl`` (unless `targets.cache` names a shared file) + ``targets.json``,
``ctc/`` (the CTC stage's checkpoints, metrics and exported model), ``checkpoints/``, ``model/``,
``metrics.jsonl``, ``eval.{json,md,png}``, ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from polyvox.config import MITConfig, config_to_dict
from polyvox.data.instructions import MIT_VARIANTS, Bank, Instruction, draw_instructions, load_bank
from polyvox.data.manifest import Utterance
from polyvox.fileio import atomic_write_text
from polyvox.models.answers import Request, answer_key, cached_answers
from polyvox.models.sources import fingerprint
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm
from polyvox.recipes.speech_llm import evaluate_checkpoint, fit, run_ctc, sample_utterances, start_run

log = logging.getLogger(__name__)

REPEAT_TARGETS = ("transcript", "llm")


@dataclass
class Example:
    """One training pair: a clip, an instruction about it and the answer to learn."""

    utt: Utterance
    instruction: Instruction
    target: str


def train_utterances(cfg: MITConfig) -> list[Utterance]:
    """The training split, or a seeded sample of `targets.max_utterances` of it."""
    return sample_utterances(cfg.data, cfg.targets.max_utterances, cfg.train.seed)


def bank_of(cfg: MITConfig) -> Bank:
    """The template bank: the default one (unless `targets.default_bank` is off) + `targets.banks`."""
    return load_bank(cfg.targets.banks, default=cfg.targets.default_bank)


def draw(cfg: MITConfig, bank: Bank, utts: list[Utterance]) -> list[tuple[Utterance, Instruction]]:
    """`targets.per_kind` instructions of each kind of the variant per utterance, seeded by (seed, utterance).

    Kinds are drawn separately, so the MI instructions of a TMI run are those of an MI run with the same
    seed (and the T ones those of a T run): variants share their answers.
    """
    t = cfg.targets
    if t.variant not in MIT_VARIANTS:
        raise ValueError(f"targets.variant must be one of {', '.join(MIT_VARIANTS)}, got {t.variant!r}")
    out = []
    for u in utts:
        for kind in sorted(MIT_VARIANTS[t.variant], reverse=True):  # T before MI
            out += [(u, ins) for ins in draw_instructions(bank, u.id, u.lang, kind, t.per_kind, cfg.train.seed,
                                                          pivot_lang=cfg.data.pivot_lang, other_langs=t.other_langs,
                                                          balance=t.balance)]
    return out


def _cache(cfg: MITConfig) -> Path:
    return Path(cfg.targets.cache) if cfg.targets.cache else Path(cfg.out_dir) / "targets.jsonl"


def answer(cfg: MITConfig, pairs: list[tuple[str, str, Instruction]], model: SpeechLLM | None,
           desc: str = "targets") -> tuple[list[str | None], dict[str, int]]:
    """The answer to each (id, transcript, instruction): the transcript itself for repeat instructions when
    `targets.repeat_target` is ``transcript``, otherwise the frozen LLM's (cached). None where there is none
    (prompt too long, empty answer)."""
    t = cfg.targets
    if t.repeat_target not in REPEAT_TARGETS:
        raise ValueError(f"targets.repeat_target must be one of {', '.join(REPEAT_TARGETS)}, got {t.repeat_target!r}")
    key = answer_key(fingerprint(cfg.model.llm), t.max_new_tokens, t.stop_at_newline)
    requests: dict[int, Request] = {}
    for i, (uid, text, ins) in enumerate(pairs):
        if ins.kind == "T" and t.repeat_target == "transcript":
            continue
        rid = f"{uid}|{ins.template_id}|{answer_key(text, ins.prefix, ins.postfix)[:10]}"
        requests[i] = Request(rid, key, text, (ins.prefix, ins.postfix),
                              {"utterance": uid, "template": ins.template_id, "prefix": ins.prefix,
                               "postfix": ins.postfix, "text": text})
    unique = list({r.id: r for r in requests.values()}.values())
    got, counts = cached_answers(
        unique, _cache(cfg), model or (lambda: build_speech_llm(cfg.model, cfg.train.seed)),
        max_new_tokens=t.max_new_tokens, max_input_tokens=t.max_input_tokens, batch_size=t.batch_size,
        stop_at_newline=t.stop_at_newline, desc=desc)
    out = [got.get(requests[i].id) if i in requests else text for i, (_, text, _) in enumerate(pairs)]
    return out, counts


def run_targets(cfg: MITConfig, model: SpeechLLM | None = None, utts: list[Utterance] | None = None) -> list[Example]:
    """Step 1: draw instructions for every training utterance and get their answers (cached, resumable).

    Writes ``targets.json`` (counts per task, the LLM's generation counts) into the run folder.
    """
    utts = utts if utts is not None else train_utterances(cfg)
    drawn = draw(cfg, bank_of(cfg), utts)
    answers, counts = answer(cfg, [(u.id, u.text, ins) for u, ins in drawn], model)
    examples = [Example(u, ins, a) for (u, ins), a in zip(drawn, answers) if a is not None and a.strip()]
    summary = {"variant": cfg.targets.variant, "utterances": len(utts), "drawn": len(drawn), "examples": len(examples),
               "by_task": dict(sorted(Counter(e.instruction.task for e in examples).items())), "llm": counts}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "targets.json", json.dumps(summary, indent=2) + "\n")
    log.info("targets: %d examples from %d utterances (%s)", len(examples), len(utts), summary["by_task"])
    return examples


# -- the cross-entropy stage ----------------------------------------------------------------------------


def run_train(cfg: MITConfig, examples: list[Example] | None = None) -> Path:
    """Targets (cached), the CTC stage when `ctc.steps` > 0, then cross-entropy training.

    Returns the exported model folder (``out_dir/model``).
    """
    out, model = start_run(cfg)
    utts = train_utterances(cfg)
    if examples is None:
        examples = run_targets(cfg, model, utts)
    if not examples:
        raise ValueError(f"no training example has a target: every prompt was too long or answered empty "
                         f"(counts in {out / 'targets.json'})")
    if cfg.ctc.steps > 0:  # on every transcript of the training split, as in the BLSP recipe
        run_ctc(model, sample_utterances(cfg.data, None, cfg.train.seed), cfg.ctc, cfg.train, cfg.data, out)
    eos = model.tokenizer.eos_token_id
    train_set = [(e.utt, ((e.instruction.prefix, e.instruction.postfix),
                          model.text_ids(e.target)[: cfg.loss.max_target_tokens] + [eos], e.instruction.kind))
                 for e in examples]
    return fit(model, train_set, cfg.loss, cfg.train, cfg.data, out, f"variant {cfg.targets.variant}",
               {"recipe": "mit", "variant": cfg.targets.variant, "ctc_steps": cfg.ctc.steps,
                "init_from": cfg.init_from})


# -- evaluation -------------------------------------------------------------------------------------------


def fill_heldout_references(cfg: MITConfig, model: SpeechLLM, tasks: dict, bank: Bank | None = None) -> None:
    """Reference answers of the heldout items: what the frozen LLM answers from the transcript (cached with
    the targets; the transcript itself for repeat templates, as in training). Items without one are dropped."""
    items = tasks.get("heldout")
    if not items:
        return
    bank = bank or bank_of(cfg)
    pairs = []
    for it in items:
        ins = Instruction(it.template, bank[it.template].task, it.kind, it.pair[0], it.pair[1], it.lang)
        pairs.append((it.id, it.text, ins))
    answers, _ = answer(cfg, pairs, model, desc="heldout references")
    for it, a in zip(items, answers):
        it.reference = a or ""
    tasks["heldout"] = [it for it in items if it.reference.strip()]
    if not tasks["heldout"]:
        del tasks["heldout"]


def run_eval(cfg: MITConfig, checkpoint: str | Path | None = None, name: str = "eval", system: str = "mit") -> dict:
    """The BLSP zero-shot tasks + held-out instructions, with the baselines on the same items; writes
    ``name.{json,md,png}`` into the run folder."""
    bank = bank_of(cfg)
    return evaluate_checkpoint(checkpoint or Path(cfg.out_dir) / "model", cfg.data, cfg.eval, cfg.out_dir,
                               config_to_dict(cfg), name, system, cfg.targets.stop_at_newline,
                               prepare=lambda model, tasks: fill_heldout_references(cfg, model, tasks, bank),
                               bank=bank, other_langs=cfg.targets.other_langs)

