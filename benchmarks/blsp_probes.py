"""Short probes that chose the demo BLSP recipe: minutes each, on cached encoder states, before a long run.

    python benchmarks/blsp_probes.py ce  [--adapter stack-mlp --stack 8 --lr 1e-3 --minutes 6]
    python benchmarks/blsp_probes.py ctc [--stack 4 --lr 2e-3 --minutes 9 --time-mask 0.2]
    python benchmarks/blsp_probes.py warmup --model runs/blsp-demo/ctc/model [--lr 2e-4 --steps 30 --ctc-weight 1]

- ``ce``: a fresh adapter learns transcription through the frozen LLM (cross-entropy, transcribe prompt): how fast?
- ``ctc``: CTC of the transcripts' LLM tokens over the LLM's frozen embedding rows (no LLM in the step); the
  greedy CTC transcript's CER, then the CER of the frozen LLM transcribing the compressed positions (readouts
  hard / soft / mean), untrained on that.
- ``warmup``: cross-entropy through the LLM (the ASR warm-up) from a CTC-stage export, with or without the CTC
  loss kept on: does it improve on the export? Scored on 48 fixed training clips (optimisation, not
  generalisation: the export has seen them).

``ce`` and ``ctc`` hold out the training clips of 1 message group in 25 (never the test split). Every run is
appended to benchmarks/results/blsp_probes.json under its tag.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import RESULTS

from polyvox.config import SpeechLLMConfig
from polyvox.data.manifest import read_manifest
from polyvox.eval.metrics import cer
from polyvox.models.ctc import ctc_loss, ctc_min_frames, greedy_ctc_decode
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm, make_instruction
from polyvox.recipes.speech_llm import encoder_states, mask_time

MANIFEST, CACHE = Path("data/demo/manifest.jsonl"), Path("runs/blsp-demo/cache")


def split(utts):
    dev = [u for u in utts if zlib.crc32((u.group or u.id).encode()) % 25 == 0]
    ids = {u.id for u in dev}
    random.Random(0).shuffle(dev)
    return [u for u in utts if u.id not in ids], dev


def update(opt: torch.optim.Optimizer, params: list, loss: torch.Tensor, lr: float) -> None:
    """One optimiser step at `lr` with the gradient norm clipped to 1."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def transcribe(model: SpeechLLM, clips, utts, max_new_tokens: int = 40) -> list[str]:
    out = []
    for i in range(0, len(utts), 16):
        out += model.generate(clips[i : i + 16], [make_instruction("transcribe", u.lang) for u in utts[i : i + 16]],
                              max_new_tokens=max_new_tokens, stop_at_newline=True)
    return out


def probe_ce(a) -> dict:
    cfg = SpeechLLMConfig(adapter=a.adapter, adapter_stack=a.stack, adapter_hidden=a.hidden)
    m = build_speech_llm(cfg)
    utts = read_manifest(MANIFEST, split="train")
    states = encoder_states(m, utts, MANIFEST.parent, CACHE)
    train, dev = split(utts)
    dev = dev[:64]
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


def probe_ctc(a) -> dict:
    m = build_speech_llm(SpeechLLMConfig(adapter="stack-mlp", adapter_stack=a.stack, adapter_hidden=a.hidden))
    utts = read_manifest(MANIFEST, split="train")
    states = encoder_states(m, utts, MANIFEST.parent, CACHE)
    train, dev = split(utts)
    dev = dev[:128]
    ids = {u.id: m.text_ids(u.text) for u in utts}
    head = m.add_ctc_head(sorted({k for u in train for k in ids[u.id]}))
    oov = sum(k not in set(head.token_ids.tolist()) for u in dev for k in ids[u.id]) / sum(len(ids[u.id]) for u in dev)
    params = [*m.adapter.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    rng = random.Random(0)

    def ctc_cer() -> float:
        m.eval()
        hyps = []
        with torch.no_grad():
            for i in range(0, len(dev), 32):
                x, n = m.adapter_frames([states[u.id] for u in dev[i : i + 32]])
                hyps += [m.tokenizer.decode(head.tokens(p)) for p in greedy_ctc_decode(head(x), n)]
        m.train()
        return cer([u.text for u in dev], hyps)

    curve, t0, step = [], time.time(), 0
    masks = np.random.default_rng(0)
    while time.time() - t0 < a.minutes * 60:
        us = rng.sample(train, a.batch)
        x, n = m.adapter_frames([mask_time(states[u.id], a.time_mask, a.mask_span, masks) for u in us])
        keep = [i for i, u in enumerate(us) if ctc_min_frames(ids[u.id]) <= n[i]]
        loss = ctc_loss(head, x[keep], n[keep], [ids[us[i].id] for i in keep])
        update(opt, params, loss, a.lr * min(1, (step + 1) / 50))
        step += 1
        if step % 100 == 0:
            curve.append({"step": step, "min": round((time.time() - t0) / 60, 2), "loss": loss.item(),
                          "dev_ctc_cer": ctc_cer()})
            print(curve[-1], flush=True)
    out = {"curve": curve, "steps": step, "vocab": head.vocab_size, "dev_oov": oov, "dev_ctc_cer": ctc_cer()}
    m.eval()
    ev = dev[: a.llm_items]
    for readout in ("hard", "soft", "mean"):  # the frozen LLM reads the compressed positions, untrained on them
        m.cfg.ctc_readout = readout
        out[f"llm_cer_{readout}"] = cer([u.text for u in ev], transcribe(m, [states[u.id] for u in ev], ev))
        print(readout, out[f"llm_cer_{readout}"], flush=True)
    return out


def probe_warmup(a) -> dict:
    from polyvox.config import AlignConfig
    from polyvox.recipes.speech_llm import alignment_loss

    m = SpeechLLM.load(a.model)
    utts = read_manifest(MANIFEST, split="train")
    states = encoder_states(m, utts, MANIFEST.parent, CACHE)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=["ce", "ctc", "warmup"])
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
    ap.add_argument("--llm-items", type=int, default=32, help="ctc: held-out clips the LLM transcribes")
    ap.add_argument("--model", help="warmup: a CTC-stage export (e.g. runs/blsp-demo/ctc/model)")
    ap.add_argument("--tag", default=None)
    a = ap.parse_args()
    a.lr = a.lr or {"ce": 1e-3, "ctc": 2e-3, "warmup": 2e-4}[a.probe]
    a.batch = a.batch or {"ce": 16, "ctc": 32, "warmup": 8}[a.probe]
    if a.probe == "warmup" and not a.model:
        ap.error("warmup needs --model")
    torch.manual_seed(0)
    result = {"ce": probe_ce, "ctc": probe_ctc, "warmup": probe_warmup}[a.probe](a)
    tag = a.tag or f"{a.probe}-{a.adapter if a.probe == 'ce' else ''}{a.stack}-lr{a.lr:g}"
    path = RESULTS / "blsp_probes.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs[tag] = {"args": vars(a), **result, "torch_threads": torch.get_num_threads()}
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(runs, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(runs[tag], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
