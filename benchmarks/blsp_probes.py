"""Short probes that chose the demo BLSP recipe: minutes each, on cached encoder states, before a long run.

    python benchmarks/blsp_probes.py ce  [--adapter stack-mlp --stack 8 --lr 1e-3 --minutes 6]
    python benchmarks/blsp_probes.py ctc [--stack 4 --lr 2e-3 --minutes 9 --time-mask 0.2]
    python benchmarks/blsp_probes.py prompt [--dev-items 160] [--prompts 1 --no-repeat 0,3,4]
    python benchmarks/blsp_probes.py warmup --model runs/blsp-demo/ctc/model [--lr 2e-4 --steps 30 --ctc-weight 1]
    python benchmarks/blsp_probes.py agreement --manifest data/demo-4k/manifest.jsonl
    python benchmarks/blsp_probes.py readout --model runs/blsp-demo/model --exclude data/demo-4k/manifest.jsonl \
        --manifest data/full/manifest.jsonl --cache runs/probe-cache --langs <the 8 seen> --dev-items 320 --no-repeat 6

- ``ce``: a fresh adapter learns transcription through the frozen LLM (cross-entropy, transcribe prompt): how fast?
- ``ctc``: CTC of the transcripts' LLM tokens over the LLM's frozen embedding rows (no LLM in the step); the
  greedy CTC transcript's CER, then the CER of the frozen LLM transcribing the compressed positions (readouts
  hard / soft / mean), untrained on that. ``--classes chars``: a head over the transcripts' characters instead
  (``--char-split N``: N character frames per adapter frame), also scored with each clip's characters restricted to
  those of its language's text (a script mask). ``--unseen M``: also the CER on held-out clips of a
  manifest in languages the probe does not train on; ``--dev-langs``: the dev clips only in these languages, so
  runs on different training languages score the same clips.
- ``prompt``: the ceiling under each candidate transcription instruction: the frozen LLM reads the gold
  transcript of each dev clip (no speech, no training) and should write it back; CER per instruction, paired
  against the current ``transcribe`` preset (and, with ``--no-repeat``, each under a guard against loops: no
  n-gram of n tokens twice). Chooses the preset and the decoding on dev clips, never on the test split.
- ``warmup``: cross-entropy through the LLM (the ASR warm-up) from a CTC-stage export, with or without the CTC
  loss kept on: does it improve on the export? Scored on 48 fixed training clips (optimisation, not
  generalisation: the export has seen them).
- ``readout``: where a trained export loses its transcript, on training-split sentences of `--manifest` that are
  not in `--exclude` (the export's own corpus; neither its training nor its test sentences): the greedy CTC
  transcript against the LLM transcribing the compressed positions under each readout, paired against the
  export's own readout; with ``--shots K``, also the evaluation's K-shot prompt (``eval.shots``: K sentences of the
  language written down word for word, then the input; ``--shots-other``: sentences of another language) for the
  oracle reading the transcript, for the last readout and for the LLM reading the greedy CTC transcript as text;
  ``--shots-heard``: also with each example's input as the model hears it (the example clip through the readout,
  or its greedy CTC transcript), then its gold transcript. The ``full`` corpus's training split holds about 1,200
  sentences per seen language that `data/demo-4k` has nowhere. With ``--joint W:B,...`` (and ``--shots K``), only the
  greedy CTC transcript and joint CTC/LLM decoding (`SpeechLLM.transcribe_joint`, CTC weight W, length bonus B, the
  LLM reading the K example sentences as text), each paired against the greedy transcript. For an export with a
  character head, ``--joint W:B,...`` ranks each clip's --beam best transcripts (CTC prefix beam search) by
  ``W * CTC + (1 - W) * LLM + B * characters`` (`SpeechLLM.ctc_nbest`, scored once for every setting), beside the
  best of each list (an oracle).
- ``agreement`` (``--answers runs/blsp-demo/eval-answers.jsonl --manifest data/demo-4k/manifest.jsonl``): no
  training, a reading of an evaluation's answers: the agreement of the LLM answering from a transcript (Whisper's or
  the joint decoder's) with its answer from the gold transcript, per bin of the transcript's CER.

``ce`` and ``ctc`` hold out the training clips of 1 message group in 25 (never the test split). Every run is
appended to benchmarks/results/blsp_probes.json under its tag.

How much training text helps, at equal minutes, on the same held-out groups (the ``full`` corpus has 2,000
training sentences per seen language against the demo's 700)::

    python benchmarks/blsp_probes.py ctc --manifest data/full/manifest.jsonl --cache runs/probe-cache \
        --langs de_de,es_419,fr_fr,it_it,pt_br,ru_ru,sv_se,tr_tr --dev-items 256 --llm-items 0 --minutes 24 \
        --train-per-lang 700 --tag ctc-full-700-24min
    python benchmarks/blsp_probes.py ctc ... --train-per-lang 2000 --tag ctc-full-2000-24min \
        --baseline ctc-full-700-24min

Training languages and head classes, on the same seen and unseen dev clips (``L8``: the 8 seen languages)::

    python benchmarks/blsp_probes.py ctc --manifest data/full/manifest.jsonl --cache runs/probe-cache --langs $L8 \
        --train-per-lang 2000 --dev-items 256 --llm-items 0 --minutes 12 --bf16 \
        --unseen data/dev-unseen/manifest.jsonl --tag ctc-langs8-2000-12min
    python benchmarks/blsp_probes.py ctc ... --stack 2 --classes chars --baseline ctc-langs8-2000-12min \
        --tag ctc-chars-stack2-12min
    python benchmarks/blsp_probes.py ctc ... --langs <20 languages> --dev-langs $L8 --train-per-lang 800 \
        --baseline ctc-langs8-2000-12min --tag ctc-langs20-800-12min
"""

from __future__ import annotations

import argparse
import json
import random
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import RESULTS

from polyvox.config import SpeechLLMConfig
from polyvox.data.degrade import CONDITIONS, write_degraded
from polyvox.data.instructions import default_bank
from polyvox.data.languages import language_name
from polyvox.data.manifest import read_manifest
from polyvox.eval.metrics import bootstrap_corpus_difference, bootstrap_corpus_macro, cer, item_statistics
from polyvox.eval.tasks import shot_examples
from polyvox.models.ctc import CharCTCHead, ctc_loss, ctc_min_frames, greedy_ctc_decode
from polyvox.models.speech_llm import (
    SpeechLLM,
    build_speech_llm,
    few_shot_transcription,
    make_instruction,
    sentence_prior,
)
from polyvox.recipes.speech_llm import encoder_states, mask_time


def split(utts, per_lang: int = 0):
    """(train, dev): dev is every clip of 1 message group in 25, shuffled; train the rest, cut to `per_lang`
    clips per language (a fixed random subset; 0: all)."""
    dev = [u for u in utts if zlib.crc32((u.group or u.id).encode()) % 25 == 0]
    ids = {u.id for u in dev}
    random.Random(0).shuffle(dev)
    train = [u for u in utts if u.id not in ids]
    if per_lang:
        random.Random(0).shuffle(train)
        per: dict[str, list] = {}
        for u in train:
            per.setdefault(u.lang, []).append(u.id)
        keep = {i for ids in per.values() for i in ids[:per_lang]}
        train = [u for u in train if u.id in keep]  # in the shuffled order the probes' results were drawn from
    return train, dev


def train_utts(a) -> list:
    """The training split of `--manifest`, in the languages of `--langs`."""
    return [u for u in read_manifest(Path(a.manifest), split="train") if not a.langs or u.lang in a.langs]


def probe_data(a, m: SpeechLLM, dev_items: int):
    """The probe's train and dev clips (`--manifest`, `--langs`, `--train-per-lang`; dev in `--dev-langs`, so runs
    on other training languages score the same dev clips) and their cached states."""
    utts = train_utts(a)
    train, dev = split(utts, a.train_per_lang)
    if a.dev_langs:
        dev = split([u for u in utts if u.lang in a.dev_langs])[1]
    dev = dev[:dev_items]
    return train, dev, encoder_states(m, train + dev, Path(a.manifest).parent, Path(a.cache))


def unseen_data(a, m: SpeechLLM, train: list) -> tuple[list, list, dict]:
    """`--unseen`'s other sentences (text only), its held-out clips (its training split's dev groups, as `readout`
    draws them) and their states: languages the probe's `train` clips never speak."""
    if not a.unseen:
        return [], [], {}
    text, dev = split(list(read_manifest(Path(a.unseen), split="train")))
    dev = dev[: a.unseen_items]
    if overlap := {u.lang for u in dev} & {u.lang for u in train}:
        raise SystemExit(f"--unseen speaks training languages of the probe: {', '.join(sorted(overlap))}")
    return text, dev, encoder_states(m, dev, Path(a.unseen).parent, Path(a.cache))


def update(opt: torch.optim.Optimizer, params: list, loss: torch.Tensor, lr: float) -> None:
    """One optimiser step at `lr` with the gradient norm clipped to 1."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def transcribe(model: SpeechLLM, clips, utts, max_new_tokens: int = 40, no_repeat_ngram: int = 0,
               prompts: list | None = None) -> list[str]:
    """The model's answers to the ``transcribe`` preset (or to `prompts`, one per clip), 16 clips a batch."""
    prompts = prompts or [make_instruction("transcribe", u.lang) for u in utts]
    out = []
    for i in range(0, len(utts), 16):
        out += model.generate(clips[i : i + 16], prompts[i : i + 16], max_new_tokens=max_new_tokens,
                              stop_at_newline=True, no_repeat_ngram=no_repeat_ngram)
    return out


def lang_stats(utts, hyps) -> dict[str, dict[str, list]]:
    """lang -> clip id -> CER statistics rows (what `bootstrap_corpus_*` and `paired_cer` read)."""
    stats: dict[str, dict[str, list]] = {}
    for u, h in zip(utts, hyps):
        stats.setdefault(u.lang, {})[u.id] = item_statistics("CER", [h], [u.text]).tolist()
    return stats


def by_lang(stats: dict[str, dict[str, list]]) -> dict[str, np.ndarray]:
    return {lang: np.array([r for uid in sorted(s) for r in s[uid]]).reshape(-1, 2) for lang, s in stats.items()}


def probe_ce(a) -> dict:
    cfg = SpeechLLMConfig(adapter=a.adapter, adapter_stack=a.stack, adapter_hidden=a.hidden)
    m = build_speech_llm(cfg)
    train, dev, states = probe_data(a, m, 64)
    eos, rng = m.tokenizer.eos_token_id, random.Random(0)

    def loss(us):
        logits, ids, _ = m([states[u.id] for u in us], [make_instruction("transcribe", u.lang) for u in us],
                           [m.text_ids(u.text)[:40] + [eos] for u in us])
        return F.cross_entropy(logits, ids), logits.argmax(-1).eq(ids).float().mean().item()

    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr)
    curve, t0, step = [], time.time(), 0
    while time.time() - t0 < a.minutes * 60:
        update(opt, params, loss(rng.sample(train, a.batch))[0], a.lr * min(1, (step + 1) / 20))
        step += 1
        if step % 20 == 0:
            with torch.no_grad():
                r = [loss(dev[i : i + 16]) for i in range(0, len(dev), 16)]
            curve.append({"step": step, "min": round((time.time() - t0) / 60, 2),
                          "dev_ce": sum(x[0].item() for x in r) / len(r), "dev_acc": sum(x[1] for x in r) / len(r)})
            print(curve[-1], flush=True)
    m.eval()
    hyps = transcribe(m, [states[u.id] for u in dev[:32]], dev[:32])
    return {"curve": curve, "dev_cer": cer([u.text for u in dev[:32]], hyps), "steps": step}


def script_masked(head: CharCTCHead, ctc_hyps, out: dict, text: list, dev: list, unseen: list) -> dict:
    """Greedy CTC CER with each clip's characters restricted to those of its language's `text`, paired against
    the unrestricted transcripts of the same clips."""
    seen: dict[str, set[str]] = {}
    for u in text:
        seen.setdefault(u.lang, set()).update(u.text)
    allowed = {lang: torch.tensor([c in chars for c in head.chars] + [True]) for lang, chars in seen.items()}
    res = {}
    for name, clips in (("dev", dev), ("unseen", unseen)):
        if clips:
            stats = lang_stats(clips, ctc_hyps(clips, allowed))
            res[f"{name}_masked_ctc_cer_macro_ci"] = bootstrap_corpus_macro(by_lang(stats), "CER")
            res[f"{name}_masked_minus_unmasked"] = paired_cer(stats, out[f"{name}_item_stats"])
    print(res, flush=True)
    return res


def probe_ctc(a) -> dict:
    m = build_speech_llm(SpeechLLMConfig(adapter="stack-mlp", adapter_stack=a.stack, adapter_hidden=a.hidden))
    train, dev, states = probe_data(a, m, a.dev_items)
    unseen_text, unseen, unseen_states = unseen_data(a, m, train)
    states.update(unseen_states)
    if a.classes == "chars":
        head = m.add_char_head(sorted({c for u in train for c in u.text}), a.char_split)
        ids = {u.id: head.encode(u.text) for u in train + dev}
        oov = 1 - sum(len(ids[u.id]) for u in dev) / sum(len(u.text) for u in dev)
        decode = head.decode
    else:
        ids = {u.id: m.text_ids(u.text) for u in train + dev}
        head = m.add_ctc_head(sorted({k for u in train for k in ids[u.id]}))
        oov = (sum(k not in set(head.token_ids.tolist()) for u in dev for k in ids[u.id])
               / sum(len(ids[u.id]) for u in dev))

        def decode(classes: list[int]) -> str:
            return m.tokenizer.decode(head.tokens(classes))
    params = [*m.adapter.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    rng = random.Random(0)

    def ctc_hyps(clips=dev, allowed: dict[str, torch.Tensor] | None = None) -> list[str]:
        """Greedy CTC transcripts; with `allowed` (language -> (V + 1,) bool), each clip's classes outside its
        language's are never chosen."""
        m.eval()
        hyps = []
        with torch.no_grad():
            for i in range(0, len(clips), 32):
                x, n = m.adapter_frames([states[u.id] for u in clips[i : i + 32]])
                logits = head(x)  # (B, T * split, V + 1)
                for j, u in enumerate(clips[i : i + 32] if allowed is not None else []):
                    logits[j, :, ~allowed[u.lang]] = -float("inf")
                hyps += [decode(p) for p in greedy_ctc_decode(logits, n * head.split)]
        m.train()
        return hyps

    def ctc_cer(clips=dev) -> float:
        return cer([u.text for u in clips], ctc_hyps(clips))

    curve, t0, step = [], time.time(), 0
    masks = np.random.default_rng(0)
    while time.time() - t0 < a.minutes * 60:
        us = rng.sample(train, a.batch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):  # as train.mixed_precision=bf16
            x, n = m.adapter_frames([mask_time(states[u.id], a.time_mask, a.mask_span, masks) for u in us])
            keep = [i for i, u in enumerate(us) if ctc_min_frames(ids[u.id]) <= n[i] * head.split]
            loss = ctc_loss(head, x[keep], n[keep], [ids[us[i].id] for i in keep])
        update(opt, params, loss, a.lr * min(1, (step + 1) / 50))
        step += 1
        if step % 100 == 0:
            curve.append({"step": step, "min": round((time.time() - t0) / 60, 2), "loss": loss.item(),
                          "dev_ctc_cer": ctc_cer(), **({"unseen_ctc_cer": ctc_cer(unseen)} if unseen else {})})
            print(curve[-1], flush=True)
    hyps = ctc_hyps()
    stats = lang_stats(dev, hyps)
    out = {"curve": curve, "steps": step, "minutes": round((time.time() - t0) / 60, 2), "train_clips": len(train),
           "train_sentences_per_lang": len(train) // max(1, len(stats)), "vocab": head.vocab_size,
           "dev_oov": oov, "dev_items": len(dev), "dev_ctc_cer": cer([u.text for u in dev], hyps),
           "dev_ctc_cer_macro_ci": bootstrap_corpus_macro(by_lang(stats), "CER"), "dev_item_stats": stats,
           "dev_examples": [{"ref": u.text, "hyp": h} for u, h in zip(dev[:5], hyps[:5])]}
    if unseen:
        hyps = ctc_hyps(unseen)
        stats = lang_stats(unseen, hyps)
        out |= {"unseen_items": len(unseen), "unseen_ctc_cer": cer([u.text for u in unseen], hyps),
                "unseen_ctc_cer_macro_ci": bootstrap_corpus_macro(by_lang(stats), "CER"), "unseen_item_stats": stats,
                "unseen_examples": [{"ref": u.text, "hyp": h} for u, h in zip(unseen[:5], hyps[:5])]}
    if a.classes == "chars":  # the characters of each language's text: training transcripts, --unseen's others
        out |= script_masked(head, ctc_hyps, out, train + unseen_text, dev, unseen)
    m.eval()
    ev = dev[: a.llm_items] if a.classes == "tokens" else []  # the LLM reads token classes only
    for readout in ("hard", "soft", "mean") if ev else ():  # the frozen LLM, untrained on compressed positions
        m.cfg.ctc_readout = readout
        out[f"llm_cer_{readout}"] = cer([u.text for u in ev], transcribe(m, [states[u.id] for u in ev], ev))
        print(readout, out[f"llm_cer_{readout}"], flush=True)
    return out


# candidate transcription instructions ({source}: the language's name); the first is the preset in use
PROMPTS = [
    default_bank().presets["transcribe"].instruction,
    "Repeat the following {source} text exactly, word for word. Do not translate it.",
    "Copy the following {source} sentence exactly as it is written:",
    "Write the following {source} sentence again, in {source}, without changing any word.",
    "Transcribe this {source} input verbatim. Output only the transcript, in {source}.",
]


def probe_prompt(a) -> dict:
    m = build_speech_llm(SpeechLLMConfig())
    dev = split(train_utts(a))[1]
    langs = sorted({u.lang for u in dev})
    dev = [u for lang in langs for u in [v for v in dev if v.lang == lang][: a.dev_items // len(langs)]]
    refs, out, stats = [u.text for u in dev], {}, {}
    arms = {p if n == 0 else f"{p} [no_repeat_ngram={n}]": (p, n) for p in PROMPTS[: a.prompts] for n in a.no_repeat}
    first = next(iter(arms))  # the preset, as decoded now (with the default --no-repeat 0)
    for name, (prompt, n) in arms.items():
        prompts = [prompt.format(source=language_name(u.lang)) for u in dev]
        hyps = []
        for i in range(0, len(dev), 16):
            hyps += m.generate_text(refs[i : i + 16], prompts[i : i + 16], max_new_tokens=60, stop_at_newline=True,
                                    no_repeat_ngram=n)
        stats[name] = {lang: item_statistics("CER", [h for u, h in zip(dev, hyps) if u.lang == lang],
                                             [u.text for u in dev if u.lang == lang]) for lang in langs}
        out[name] = {"cer_macro_ci": bootstrap_corpus_macro(stats[name], "CER"),
                     "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:: max(1, len(dev) // 6)]]}
        if name != first:
            out[name]["minus_preset"] = bootstrap_corpus_difference(stats[name], stats[first], "CER")
        print(name, out[name]["cer_macro_ci"], out[name].get("minus_preset"), flush=True)
    return {"dev_items": len(dev), "prompts": out}


def probe_warmup(a) -> dict:
    from polyvox.config import AlignConfig
    from polyvox.recipes.speech_llm import alignment_loss

    m = SpeechLLM.load(a.model)
    utts = train_utts(a)
    states = encoder_states(m, utts, Path(a.manifest).parent, Path(a.cache))
    rng = random.Random(1)
    fixed = rng.sample(utts, 48)
    pool = [u for u in utts if u not in fixed]
    eos = m.tokenizer.eos_token_id
    loss_fn = alignment_loss(AlignConfig(40, ctc_weight=a.ctc_weight))

    def batch(us):
        return {"wavs": [states[u.id] for u in us], "utts": us,
                "items": [(make_instruction("transcribe", u.lang), m.text_ids(u.text)[:40] + [eos], None) for u in us]}

    def score(gen: bool) -> dict:
        m.eval()
        with torch.no_grad():
            r = [loss_fn(m, batch(fixed[i : i + 16]))[1] for i in range(0, 48, 16)]
        out = {"ce": sum(x["ce"] for x in r) / 3, "token_acc": sum(x["token_acc"] for x in r) / 3}
        if gen:
            out["cer"] = cer([u.text for u in fixed[:16]], transcribe(m, [states[u.id] for u in fixed[:16]], fixed[:16], 30))
        m.train()
        return out

    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr)
    curve, t0 = [{"step": 0, **score(True)}], time.time()
    print(curve[-1], flush=True)
    for step in range(1, a.steps + 1):
        update(opt, params, loss_fn(m, batch(rng.sample(pool, 8)))[0], a.lr)
        if step % 10 == 0:
            curve.append({"step": step, "min": round((time.time() - t0) / 60, 2), **score(step == a.steps)})
            print(curve[-1], flush=True)
    return {"curve": curve}


def probe_readout(a) -> dict:
    """A trained export on sentences it never saw: its greedy CTC transcript, and the LLM transcribing the
    compressed positions under each readout (the export's own first), decoded as the evaluation decodes."""
    m = SpeechLLM.load(a.model)
    if m.ctc_head is None:
        raise SystemExit(f"{a.model} has no CTC head (model.ctc_readout)")
    known = {u.text for u in read_manifest(Path(a.exclude))} if a.exclude else set()
    fresh = [u for u in train_utts(a) if u.text not in known]
    langs = sorted({u.lang for u in fresh})
    dev = [u for lang in langs for u in [v for v in fresh if v.lang == lang][: a.dev_items // len(langs)]]
    heard = degraded(a, dev) if a.condition else dev
    states = encoder_states(m, heard, Path(a.manifest).parent, Path(a.cache))
    clips, refs, hyps = [states[u.id] for u in heard], [u.text for u in dev], {}
    with torch.no_grad():
        hyps["ctc greedy"] = []
        for i in range(0, len(dev), 32):
            if isinstance(m.ctc_head, CharCTCHead):  # its best path in the language's scripts
                hyps["ctc greedy"] += m.transcribe_ctc(clips[i : i + 32], [u.lang for u in dev[i : i + 32]], [])
                continue
            x, n = m.adapter_frames(clips[i : i + 32])
            hyps["ctc greedy"] += [m.tokenizer.decode(m.ctc_head.tokens(p)) for p in greedy_ctc_decode(m.ctc_head(x), n)]
    if isinstance(m.ctc_head, CharCTCHead):
        return char_rescoring(a, m, dev, clips, hyps)
    own = m.cfg.ctc_readout
    if a.joint:
        return joint_systems(a, m, dev, clips, hyps)
    for readout in dict.fromkeys([own, *a.readouts]):
        hyps[f"llm {readout}"] = transcribe(m.with_ctc_readout(readout), clips, dev, no_repeat_ngram=a.no_repeat[-1])
        print(readout, cer(refs, hyps[f"llm {readout}"]), flush=True)
    base = {name: f"llm {own}" for name in hyps}  # what each system is paired against
    if a.shots:  # the base LLM prompted with K gold examples of the language (from the export's corpus) first
        shots = few_shot_prompts(shot_pool(a, dev), dev, langs, a.shots, a.shots_other)
        prompts = [shots[u.lang] for u in dev]
        gen = {"max_new_tokens": 40, "stop_at_newline": True, "no_repeat_ngram": a.no_repeat[-1]}
        hyps["oracle"] = m.generate_text(refs, [make_instruction("transcribe", u.lang) for u in dev], **gen)
        hyps[f"oracle {a.shots}-shot"] = m.generate_text(refs, prompts, **gen)
        name = f"llm {a.readouts[-1]} {a.shots}-shot"
        hyps[name] = transcribe(m.with_ctc_readout(a.readouts[-1]), clips, dev, no_repeat_ngram=a.no_repeat[-1],
                                prompts=prompts)
        # the LLM copying the greedy CTC transcript as text (its own tokenisation): a cascade on the adapter's CTC
        hyps[f"ctc text {a.shots}-shot"] = m.generate_text(hyps["ctc greedy"], prompts, **gen)
        base |= {"oracle": "oracle", f"oracle {a.shots}-shot": "oracle", name: f"llm {a.readouts[-1]}",
                 f"ctc text {a.shots}-shot": "ctc greedy"}
        if a.shots_heard:  # the same examples as the model hears them: noisy input -> gold transcript
            hyps |= heard_shots(a, m, dev, clips, hyps["ctc greedy"], langs, gen)
            base |= {f"llm {a.readouts[-1]} {a.shots}-shot heard": name,
                     f"ctc text {a.shots}-shot heard": f"ctc text {a.shots}-shot"}
    return scored(dev, langs, hyps, base)


def degraded(a, dev) -> list:
    """The dev clips under --condition (`polyvox.data.degrade`), written once under runs/probe-degraded."""
    return write_degraded(dev, Path(a.manifest).parent, Path("runs/probe-degraded", a.condition), a.condition)


def joint_systems(a, m: SpeechLLM, dev, clips, hyps: dict[str, list[str]]) -> dict:
    """Joint CTC/LLM decoding (`SpeechLLM.transcribe_joint`) under each --joint setting, the LLM reading the --shots
    example sentences of the language as text, each paired against the greedy CTC transcript in `hyps`."""
    examples = shot_examples(shot_pool(a, dev), dev, a.shots) if a.shots else {}
    priors = [sentence_prior(u.lang, examples.get(u.lang, [])) for u in dev]
    for w, bonus in a.joint:
        name = f"ctc+llm w={w:g} bonus={bonus:g}{'' if a.shots else ' shots=0'}"
        t0, hyps[name] = time.time(), []
        for i in range(0, len(dev), 16):
            hyps[name] += m.transcribe_joint(clips[i : i + 16], priors[i : i + 16], ctc_weight=w,
                                             length_bonus=bonus, beam=a.beam, max_new_tokens=40)
        print(name, cer([u.text for u in dev], hyps[name]), f"{(time.time() - t0) / len(dev):.2f} s/clip", flush=True)
    return scored(dev, sorted({u.lang for u in dev}), hyps, {name: "ctc greedy" for name in hyps})


def char_rescoring(a, m: SpeechLLM, dev, clips, hyps: dict[str, list[str]]) -> dict:
    """A character head's N-best lists (`SpeechLLM.ctc_nbest`, --beam of them), each rescored by the frozen LLM
    reading the --shots example sentences of the language as text, under each --joint ctc_weight:length_bonus
    setting (the bonus per character); with the best of each list (oracle) and the CTC beam's own best, each paired
    against the greedy transcript. The N-best lists and their scores are computed once for all settings."""
    examples = shot_examples(shot_pool(a, dev), dev, a.shots) if a.shots else {}
    priors = [sentence_prior(u.lang, examples.get(u.lang, [])) for u in dev]
    t0, nbest = time.time(), []
    for i in range(0, len(dev), 16):
        nbest += m.ctc_nbest(clips[i : i + 16], [u.lang for u in dev[i : i + 16]], priors[i : i + 16], a.beam)
        print(f"{len(nbest)}/{len(dev)} clips, {(time.time() - t0) / len(nbest):.2f} s/clip", flush=True)
    took = (time.time() - t0) / len(dev)
    print(f"{a.beam}-best lists and their LLM scores: {took:.2f} s/clip", flush=True)
    hyps[f"ctc beam {a.beam}"] = [max(h, key=lambda x: x[1])[0] for h in nbest]
    hyps[f"oracle of {a.beam}-best"] = [min(h, key=lambda x: cer([u.text], [x[0]]))[0] for u, h in zip(dev, nbest)]
    for w, bonus in a.joint:
        hyps[f"ctc+llm w={w:g} bonus={bonus:g}"] = [max(h, key=lambda x: w * x[1] + (1 - w) * x[2] + bonus * len(x[0]))[0]
                                                  for h in nbest]
    for name, h in hyps.items():
        print(name, round(cer([u.text for u in dev], h), 4), flush=True)
    out = scored(dev, sorted({u.lang for u in dev}), hyps, {name: "ctc greedy" for name in hyps})
    return out | {"nbest_s_per_clip": round(took, 3)}


def shot_pool(a, dev) -> list:
    """The sentences the --shots examples come from: the train split of --pool, or of --exclude; never a dev
    sentence."""
    held = {u.text for u in dev}
    return [u for u in read_manifest(Path(a.pool or a.exclude), split="train") if u.text not in held]


def scored(dev, langs: list[str], hyps: dict[str, list[str]], base: dict[str, str]) -> dict:
    """Each system's dev CER (macro over languages, 95 % interval) and examples, and its paired difference against
    its entry of `base` (a system paired against itself has none)."""
    refs = [u.text for u in dev]
    stats = {name: lang_stats(dev, h) for name, h in hyps.items()}
    out = {"dev_items": len(dev), "langs": langs, "systems": {}, "dev_item_stats": stats}
    for name in hyps:
        out["systems"][name] = {"cer_macro_ci": bootstrap_corpus_macro(by_lang(stats[name]), "CER"),
                                "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps[name]))[:: max(1, len(dev) // 6)]]}
        if name != base[name]:
            out["systems"][name]["paired_against"] = base[name]
            out["systems"][name]["cer_difference"] = paired_cer(stats[name], stats[base[name]])
        print(name, out["systems"][name]["cer_macro_ci"], out["systems"][name].get("cer_difference"), flush=True)
    return out


def few_shot_prompts(pool, dev, langs: list[str], k: int, other: bool = False) -> dict[str, tuple[str, str]]:
    """lang -> the evaluation's `k`-shot transcription prompt (`eval.shots`), its examples drawn from `pool` (never
    a dev sentence). `other`: the examples of the next language of `langs` instead (as for a language without
    training sentences)."""
    examples = shot_examples(pool, dev, k)
    if missing := [lang for lang in langs if lang not in examples]:
        raise SystemExit(f"{', '.join(missing)}: fewer than {k} example sentences in --exclude")
    return {lang: few_shot_transcription(lang, examples[langs[(i + 1) % len(langs)] if other else lang])
            for i, lang in enumerate(langs)}


def heard_shots(a, m: SpeechLLM, dev, clips, ctc_text: list[str], langs: list[str], gen: dict) -> dict[str, list[str]]:
    """K-shot transcription where each example's input is what the model hears of an example clip (through the
    last of --readouts; for the CTC text, its greedy CTC transcript), followed by the example's gold transcript."""
    pool = read_manifest(Path(a.exclude), split="train")
    chosen = shot_examples(pool, dev, a.shots)
    by_text = {(u.lang, u.text): u for u in pool}
    ex = {lang: [by_text[lang, t] for t in chosen[lang]] for lang in langs}
    flat = [u for lang in langs for u in ex[lang]]
    states = encoder_states(m, flat, Path(a.exclude).parent, Path(a.cache))
    reader = m.with_ctc_readout(a.readouts[-1])
    with torch.no_grad():
        heard = dict(zip([u.id for u in flat], reader.speech_embeds([states[u.id] for u in flat])))
        x, n = m.adapter_frames([states[u.id] for u in flat])
        ex_ctc = {u.id: m.tokenizer.decode(m.ctc_head.tokens(p)) for u, p in zip(flat, greedy_ctc_decode(m.ctc_head(x), n))}
    start = {lang: few_shot_transcription(lang, [])[0] for lang in langs}  # the header, then "Input: "
    after = "\nTranscript: {}\n\nInput: "  # closes an example and opens the next input
    text_prompts = {lang: (start[lang] + "".join(ex_ctc[u.id] + after.format(u.text) for u in ex[lang]), "\nTranscript:")
                    for lang in langs}
    out = {f"ctc text {a.shots}-shot heard": m.generate_text(ctc_text, [text_prompts[u.lang] for u in dev], **gen)}

    def row(lang: str, speech: torch.Tensor) -> list:
        parts = [m.tokenizer(start[lang], add_special_tokens=True)["input_ids"]]
        for u in ex[lang]:
            parts += [heard[u.id], m.text_ids(after.format(u.text))]
        return [*parts, speech, m.text_ids("\nTranscript:")]

    answers = []
    for i in range(0, len(dev), 16):
        with torch.no_grad():
            speech = reader.speech_embeds(clips[i : i + 16])
        answers += reader.decode([row(u.lang, sp) for u, sp in zip(dev[i : i + 16], speech)], **gen)
    out[f"llm {a.readouts[-1]} {a.shots}-shot heard"] = answers
    return out


def paired_cer(system: dict[str, dict], baseline: dict[str, dict]) -> dict:
    """Dev CER of a system minus a baseline's on the same clips, macro over languages, with a 95 % paired
    bootstrap interval (both: lang -> clip id -> CER statistics rows)."""
    if {k: v.keys() for k, v in system.items()} != {k: v.keys() for k, v in baseline.items()}:
        raise SystemExit("the baseline probe scored other dev clips (same --manifest, --langs and --dev-items?)")

    d, lo, hi = bootstrap_corpus_difference(by_lang(system), by_lang(baseline), "CER")
    return {"cer_difference": d, "ci95": [lo, hi]}


def probe_agreement(a) -> dict:
    """How far the LLM's answer from a transcript drifts from its answer from the gold one, against how wrong the
    transcript is: every cascade-like system of an evaluation's answer cache (those whose rows keep the transcript the
    LLM read: Whisper's or the joint decoder's), its items binned by the transcript's CER, and per bin the agreement
    (chrF against the oracle-text system's answer to the same item and prompt) with a bootstrap interval. Each
    (system, task) counts with the key of its last row: the evaluation's latest answers. A reading of finished
    answers: no choice is made from it."""
    rows = [json.loads(r) for r in Path(a.answers).read_text().splitlines() if r.strip()]
    latest = {(r["system"], r["task"]): r["key"] for r in rows}
    answers: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        if latest[r["system"], r["task"]] == r["key"]:
            answers.setdefault((r["system"], r["task"]), {})[r["item"]] = r
    gold = {u.id: u.text for u in read_manifest(a.manifest, split="test")}
    edges = a.cer_bins + [float("inf")]
    out = {}
    for task in a.tasks:
        oracle = answers.get(("oracle", task), {})
        points = [(cer([gold[item]], [r["transcript"]]), r["answer"], oracle[item]["answer"], system)
                  for (system, t), got in sorted(answers.items()) if t == task
                  for item, r in got.items() if "transcript" in r and item in oracle]
        if not points:
            raise SystemExit(f"{a.answers}: no {task} answers from a transcript with the oracle's beside them")
        bins = {}
        for lo, hi in zip(edges, edges[1:]):
            inside = [p for p in points if lo <= p[0] < hi]
            if inside:
                stats = item_statistics("chrF", [p[1] for p in inside], [p[2] for p in inside])
                mean, low, high = bootstrap_corpus_macro({"all": stats}, "chrF")
                bins[f"[{lo:g}, {hi:g})"] = {"n": len(inside), "agreement": round(mean, 1),
                                            "ci95": [round(low, 1), round(high, 1)],
                                            "systems": dict(Counter(p[3] for p in inside))}
        out[task] = {"items": len(points), "bins": bins}
    return {"answers": a.answers, "by_transcript_cer": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=["ce", "ctc", "prompt", "warmup", "readout", "agreement"])
    ap.add_argument("--adapter", default="stack-mlp")
    ap.add_argument("--stack", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=None, help="default: ce 1e-3, ctc 2e-3, warmup 2e-4")
    ap.add_argument("--batch", type=int, default=None, help="default: ce 16, ctc 32")
    ap.add_argument("--minutes", type=float, default=6)
    ap.add_argument("--steps", type=int, default=30, help="warmup: optimiser steps of 8 clips")
    ap.add_argument("--ctc-weight", type=float, default=0.0, help="warmup: CTC loss kept on (loss.ctc_weight)")
    ap.add_argument("--time-mask", type=float, default=0.0, help="ctc: share of frames masked (ctc.time_mask)")
    ap.add_argument("--mask-span", type=int, default=5, help="ctc: frames per masked span (ctc.mask_span)")
    ap.add_argument("--bf16", action="store_true", help="ctc: training steps under bfloat16 autocast")
    ap.add_argument("--llm-items", type=int, default=32, help="ctc: held-out clips the LLM transcribes (0: none)")
    ap.add_argument("--model", help="warmup: a CTC-stage export (e.g. runs/blsp-demo/ctc/model); readout: any export with a CTC head")
    ap.add_argument("--exclude", help="readout: a manifest whose sentences (the export's training corpus) are not scored")
    ap.add_argument("--readouts", type=lambda s: s.split(","), default=["hard", "soft"], help="readout: comma-separated")
    ap.add_argument("--shots", type=int, default=0, help="readout: also K-shot prompts (examples from --pool or --exclude) for "
                    "the oracle and the last of --readouts, paired against their zero-shot answers")
    ap.add_argument("--shots-other", action="store_true", help="readout: the K examples in another language")
    ap.add_argument("--shots-heard", action="store_true", help="readout: also K-shot prompts whose example inputs are "
                    "what the model hears of the example clips (and their greedy CTC transcripts for the CTC text)")
    ap.add_argument("--joint", type=lambda s: [tuple(map(float, p.split(":"))) for p in s.split(",")], default=[],
                    help="readout: instead of the LLM readouts, joint CTC/LLM decoding under each of these "
                    "comma-separated ctc_weight:length_bonus settings, the LLM reading the --shots examples as text; "
                    "paired against the greedy CTC transcript")
    ap.add_argument("--beam", type=int, default=4, help="readout: hypotheses of --joint (a character head: its N-best)")
    ap.add_argument("--pool", help="readout: a manifest whose train split (never a dev sentence) gives the --shots "
                    "examples instead of --exclude (e.g. text in languages the export was not trained on)")
    ap.add_argument("--condition", choices=sorted(CONDITIONS), help="readout: the dev clips degraded so (the "
                    "robustness report's conditions)")
    ap.add_argument("--manifest", default="data/demo/manifest.jsonl", help="its train split is used")
    ap.add_argument("--cache", default="runs/blsp-demo/cache", help="the encoder-state cache")
    ap.add_argument("--langs", type=lambda s: s.split(","), default=None, help="comma-separated (default: all)")
    ap.add_argument("--train-per-lang", type=int, default=0, help="ce/ctc: training clips per language (0: all)")
    ap.add_argument("--dev-langs", type=lambda s: s.split(","), default=None,
                    help="ce/ctc: the dev clips only in these languages (default: --langs)")
    ap.add_argument("--unseen", help="ctc: a manifest in languages the probe does not train on (e.g. "
                    "data/dev-unseen/manifest.jsonl): greedy CTC CER on its held-out clips too")
    ap.add_argument("--unseen-items", type=int, default=200, help="ctc: how many --unseen clips")
    ap.add_argument("--classes", choices=["tokens", "chars"], default="tokens", help="ctc: the head's classes: the "
                    "training transcripts' LLM tokens (over their frozen embedding rows) or their characters")
    ap.add_argument("--char-split", type=int, default=1, help="ctc --classes chars: character frames per adapter frame")
    ap.add_argument("--dev-items", type=int, default=128, help="ctc / prompt: held-out clips scored")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="prompt: how many candidates (the first: the preset)")
    ap.add_argument("--no-repeat", type=lambda s: [int(n) for n in s.split(",")], default=[0],
                    help="prompt: comma-separated no_repeat_ngram settings tried with each candidate (0: off); readout: the last")
    ap.add_argument("--baseline", help="ctc, readout: a stored probe's tag, scored on the same dev clips: paired CER "
                    "difference (readout: of each system the baseline also ran)")
    ap.add_argument("--answers", default="runs/blsp-demo/eval-answers.jsonl", help="agreement: an evaluation's answer cache")
    ap.add_argument("--tasks", type=lambda s: s.split(","), default=["translation", "continuation"],
                    help="agreement: comma-separated")
    ap.add_argument("--cer-bins", type=lambda s: [float(x) for x in s.split(",")], default=[0, 0.05, 0.15, 0.3, 0.5, 1],
                    help="agreement: lower edges of the transcript-CER bins")
    ap.add_argument("--tag", default=None)
    a = ap.parse_args()
    a.lr = a.lr or {"ce": 1e-3, "ctc": 2e-3, "warmup": 2e-4}.get(a.probe, 0.0)
    a.batch = a.batch or {"ce": 16, "ctc": 32, "warmup": 8}.get(a.probe, 0)
    if a.probe in ("warmup", "readout") and not a.model:
        ap.error(f"{a.probe} needs --model")
    if a.shots and not (a.exclude or a.pool):
        ap.error("--shots takes its example sentences from --pool or --exclude")
    torch.manual_seed(0)
    result = {"ce": probe_ce, "ctc": probe_ctc, "prompt": probe_prompt, "warmup": probe_warmup,
              "readout": probe_readout, "agreement": probe_agreement}[a.probe](a)
    tag = a.tag or f"{a.probe}-{a.adapter if a.probe == 'ce' else ''}{a.stack}-lr{a.lr:g}"
    path = RESULTS / "blsp_probes.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    if a.baseline:
        base = runs[a.baseline]["dev_item_stats"]
        result["minus_baseline"] = ({name: paired_cer(st, base[name]) for name, st in result["dev_item_stats"].items()
                                     if name in base} if a.probe == "readout" else paired_cer(result["dev_item_stats"], base))
        if "unseen_item_stats" in result and "unseen_item_stats" in runs[a.baseline]:
            result["unseen_minus_baseline"] = paired_cer(result["unseen_item_stats"], runs[a.baseline]["unseen_item_stats"])
    runs[tag] = {"args": vars(a), **result, "torch_threads": torch.get_num_threads()}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(runs, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in runs[tag].items() if not k.endswith("item_stats")}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
