"""Speech-LLM speed on real demo clips: adapter training throughput and peak memory per adapter (from the
audio, and from the frozen encoder's cached states as training reads them), and the real-time factor of
prompted generation.

    python benchmarks/blsp_speed.py [--config configs/blsp-demo.yaml] [--steps 6] [--clips 24] [--model DIR]

Each adapter of the registry is timed without CTC compression; `--model` (a trained checkpoint, e.g. one with
``model.ctc_readout``) is timed as well, from cached states, and is the one whose generation is timed.
Training steps use the config's batch size, real training clips and their continuations when the run
folder has them (else the transcript is the target). Generation transcribes `--clips` test clips, greedy,
in batches of `eval.batch_size`; RTF = generation time / audio duration (lower is faster).
Writes benchmarks/results/blsp_speed.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import median_time, peak_rss_mb, write_result

from polyvox.audio import SAMPLE_RATE, load_audio
from polyvox.config import BLSPConfig, load_config
from polyvox.data.manifest import read_manifest
from polyvox.models.adapter import ADAPTERS
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm, make_instruction


def train_speed(model: SpeechLLM, cfg: BLSPConfig, wavs: list[np.ndarray], targets: list[list[int]],
                steps: int) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    b = cfg.train.batch_size
    instr = [cfg.continuation.instruction] * b
    starts = itertools.cycle(range(0, len(wavs) - b + 1, b))

    def step() -> None:
        s = next(starts)
        logits, ids, _ = model(wavs[s : s + b], instr, targets[s : s + b])
        loss = F.cross_entropy(logits, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()

    med, times = median_time(step, repeats=steps, warmup=1)  # the first step pays one-off allocation costs
    return {"trainable_params_m": sum(p.numel() for p in params) / 1e6, "step_s_median": med,
            "step_s_all": times, "utterances_per_s": b / med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/blsp-demo.yaml")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--model", help="a trained speech-LLM folder to time as well (and to generate with)")
    args = ap.parse_args()
    cfg = load_config(args.config, args.set, BLSPConfig)
    cfg.model.ctc_readout = None  # the registry's adapters alone; a compressor needs a trained head (--model)
    root = Path(cfg.data.manifest).parent
    rng = np.random.default_rng(0)
    train = read_manifest(cfg.data.manifest, split=cfg.data.train_split)
    train = [train[i] for i in rng.choice(len(train), cfg.train.batch_size * (args.steps + 1), replace=False)]
    cont_path = Path(cfg.out_dir) / "continuations.jsonl"
    cont = {}
    if cont_path.exists():
        cont = {r["id"]: r["continuation"] for r in map(json.loads, cont_path.read_text().splitlines()) if r}
    result: dict = {"config": args.config, "overrides": args.set, "batch_size": cfg.train.batch_size,
                    "targets": "continuations" if cont else "transcripts", "adapters": {}}
    wavs = [load_audio(u.audio_path(root)) for u in train]
    result["train_clip_s_mean"] = float(np.mean([len(w) for w in wavs]) / SAMPLE_RATE)
    model, states = None, None
    for name in ADAPTERS:
        cfg.model.adapter = name
        model = SpeechLLM(model.encoder, model.lm, model.tokenizer, cfg.model) if model else build_speech_llm(cfg.model)
        eos = model.tokenizer.eos_token_id
        targets = [model.text_ids(cont.get(u.id, u.text))[: cfg.loss.max_target_tokens] + [eos] for u in train]
        result["adapters"][name] = train_speed(model, cfg, wavs, targets, args.steps)
        result["adapters"][name]["peak_rss_mb_so_far"] = peak_rss_mb()
        print(name, result["adapters"][name])
        if states is None:  # what training reads from its cache (`recipes.speech_llm.encoder_states`)
            states = [s for w in wavs for s in model.encode_states([w])]
        cached = f"{name}, cached encoder states"
        result["adapters"][cached] = train_speed(model, cfg, states, targets, args.steps)
        print(cached, result["adapters"][cached])
    if args.model:
        model = SpeechLLM.load(args.model).train()
        name = f"{args.model} ({model.cfg.adapter}, ctc_readout {model.cfg.ctc_readout}), cached encoder states"
        result["adapters"][name] = train_speed(model, cfg, states, targets, args.steps)
        result["adapters"][name]["llm_speech_positions_mean"] = float(model.speech_frames(states)[1].float().mean())
        print(name, result["adapters"][name])

    test = read_manifest(cfg.data.manifest, split=cfg.data.test_split)
    test = [test[i] for i in rng.choice(len(test), args.clips, replace=False)]
    clips = [load_audio(u.audio_path(root)) for u in test]
    audio_s = sum(len(c) for c in clips) / SAMPLE_RATE
    model.eval()
    result["generation_model"] = args.model or cfg.model.adapter
    bs = cfg.eval.batch_size

    def generate_all() -> list[str]:
        out = []
        for s in range(0, len(clips), bs):
            out += model.generate(clips[s : s + bs], [make_instruction("transcribe", u.lang) for u in test[s : s + bs]],
                                  max_new_tokens=cfg.eval.max_new_tokens, stop_at_newline=True)
        return out

    med, times = median_time(generate_all, repeats=3, warmup=0)
    result["generation"] = {"clips": len(clips), "audio_s": audio_s, "batch_size": bs,
                            "max_new_tokens": cfg.eval.max_new_tokens, "time_s_median": med, "times_s": times,
                            "rtf": med / audio_s, "clips_per_s": len(clips) / med}
    result["peak_rss_mb"] = peak_rss_mb()
    write_result("blsp_speed", result)


if __name__ == "__main__":
    main()
