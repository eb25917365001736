"""Speed of the mit recipe on real demo clips: target generation (the frozen LLM's answers/s, one prompt at a
time vs batched), cross-entropy training steps without and with LoRA, and a CTC-stage step.

    python benchmarks/mit_speed.py [--config configs/mit-demo.yaml] [--set key=value ...] [--clips 24] [--repeats 3]

Takes the first `--clips` training utterances (`mit.train_utterances`: the recipe's seeded sample) with their
MI instructions. Generation calls `generate_text` directly (no answer cache, so repeats are real), prompts
sorted by length as step 1 does. A training step (forward + backward + AdamW) runs on the first
`train.batch_size` of those clips: the cross-entropy stage with the generated answers as targets, for LoRA
rank 0 and 8 (the rest of the model as configured), and the CTC stage on the transcripts (over the whole
embedding table, and over the training transcripts' tokens as `run_ctc` does by default). Every time is the
median of `--repeats` runs after one warm-up. Writes benchmarks/results/mit_speed.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import median_time, peak_rss_mb, write_result

from polyvox.audio import SAMPLE_RATE, load_audio
from polyvox.config import MITConfig, load_config
from polyvox.models.ctc import EmbeddingCTCHead
from polyvox.models.speech_llm import SpeechLLM, build_speech_llm
from polyvox.recipes import mit
from polyvox.recipes.speech_llm import CTCStage


def step_speed(params: list, loss_fn, lr: float, repeats: int, batch: int) -> dict:
    """Median seconds of one AdamW step on `loss_fn()` (forward + backward + update)."""
    opt = torch.optim.AdamW(params, lr=lr)

    def step() -> None:
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()

    med, times = median_time(step, repeats=repeats, warmup=1)  # the first step pays one-off allocation costs
    return {"trainable_params_m": sum(p.numel() for p in params) / 1e6, "step_s_median": med, "step_s_all": times,
            "utterances_per_s": batch / med}


def generation_speed(model: SpeechLLM, cfg: MITConfig, texts: list[str], prompts: list, repeats: int) -> dict:
    """Answers/s of the frozen LLM over all prompts, for each batch size; the last run's answers are kept."""
    t = cfg.targets
    out: dict = {"max_new_tokens": t.max_new_tokens, "stop_at_newline": t.stop_at_newline, "by_batch_size": {}}
    answers: list[str] = []

    def generate_all(bs: int) -> None:
        answers.clear()
        for s in range(0, len(texts), bs):
            answers.extend(model.generate_text(texts[s : s + bs], prompts[s : s + bs], max_new_tokens=t.max_new_tokens,
                                               stop_at_newline=t.stop_at_newline))

    model.eval()
    for bs in sorted({1, 8, t.batch_size}):
        with torch.no_grad():
            med, times = median_time(functools.partial(generate_all, bs), repeats=repeats, warmup=1)
        out["by_batch_size"][bs] = {"time_s_median": med, "times_s": times, "answers_per_s": len(texts) / med}
        print(f"generation, batch {bs}: {len(texts) / med:.2f} answers/s")
    speeds = {bs: r["answers_per_s"] for bs, r in out["by_batch_size"].items()}
    out["speedup_vs_batch_1"] = {bs: s / speeds[1] for bs, s in speeds.items() if bs != 1}
    out["answers"] = list(answers)
    out["empty_answers"] = sum(not a.strip() for a in answers)
    return out


def ce_speed(model: SpeechLLM, cfg: MITConfig, wavs: list, prompts: list, answers: list[str], repeats: int) -> dict:
    """A cross-entropy step on ``[prefix; speech; postfix] -> answer`` (answers cut to `loss.max_target_tokens` + EOS)."""
    model.train()
    eos = model.tokenizer.eos_token_id
    targets = [model.text_ids(a)[: cfg.loss.max_target_tokens] + [eos] for a in answers]

    def loss() -> torch.Tensor:
        logits, ids, _ = model(wavs, prompts, targets)
        return F.cross_entropy(logits, ids)

    params = [p for p in model.parameters() if p.requires_grad]
    return {**step_speed(params, loss, cfg.train.lr, repeats, len(wavs)), "peak_rss_mb_so_far": peak_rss_mb()}


def ctc_speed(model: SpeechLLM, cfg: MITConfig, wavs: list, texts: list[str], repeats: int,
              vocab: list[int] | None = None) -> dict:
    """A CTC-stage step on the transcripts' LLM tokens, over the whole table or the classes of `vocab`;
    counts the items too short to align."""
    stage = CTCStage(model, EmbeddingCTCHead(model.lm.get_input_embeddings(), vocab=vocab)).train()
    targets = [model.text_ids(t) for t in texts]
    metrics: dict = {}

    def loss() -> torch.Tensor:
        value, m = stage(wavs, targets)
        metrics.update(m)
        return value

    return {**step_speed(stage.trainable(), loss, cfg.ctc.lr, repeats, len(wavs)), "ctc_skipped": metrics["ctc_skipped"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/mit-demo.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(args.config, args.set, MITConfig)
    mi = copy.deepcopy(cfg)
    mi.targets.variant = "MI"
    root = Path(cfg.data.manifest).parent
    utts = mit.train_utterances(cfg)[: args.clips]
    drawn = mit.draw(mi, mit.bank_of(mi), utts)  # [(utterance, instruction)], one MI instruction per utterance
    wavs = {u.id: load_audio(u.audio_path(root), u.id) for u in utts}
    result: dict = {"config": args.config, "overrides": args.set, "clips": len(utts), "instructions": len(drawn),
                    "audio_s": sum(len(w) for w in wavs.values()) / SAMPLE_RATE, "batch_size": cfg.train.batch_size,
                    "torch_threads": torch.get_num_threads()}

    model = build_speech_llm(dataclasses.replace(cfg.model, lora_rank=0), cfg.train.seed)
    drawn.sort(key=lambda p: sum(map(len, model.prompt_ids((p[1].prefix, p[1].postfix)))) + len(model.text_ids(p[0].text)))
    prompts = [(ins.prefix, ins.postfix) for _, ins in drawn]
    gen = generation_speed(model, cfg, [u.text for u, _ in drawn], prompts, args.repeats)
    answers = gen.pop("answers")
    result["generation"] = gen

    # one training batch: the first train.batch_size (clip, MI prompt, answer) triples
    b = cfg.train.batch_size
    batch = ([wavs[u.id] for u, _ in drawn[:b]], prompts[:b], answers[:b])
    result["batch_audio_s"] = sum(len(w) for w in batch[0]) / SAMPLE_RATE
    result["train"] = {"lora_0": ce_speed(model, cfg, *batch, args.repeats)}
    texts = [u.text for u, _ in drawn[:b]]
    result["ctc"] = ctc_speed(model, cfg, batch[0], texts, args.repeats)  # the whole table (never trains LoRA)
    vocab = sorted({k for u in mit.train_utterances(cfg) for k in model.text_ids(u.text)})  # what run_ctc uses
    result["ctc_transcript_vocab"] = {**ctc_speed(model, cfg, batch[0], texts, args.repeats, vocab), "classes": len(vocab)}
    del model
    gc.collect()
    model = build_speech_llm(dataclasses.replace(cfg.model, lora_rank=8), cfg.train.seed)
    result["train"]["lora_8"] = ce_speed(model, cfg, *batch, args.repeats)
    result["peak_rss_mb"] = peak_rss_mb()
    write_result("mit_speed", result)

    g, tr = result["generation"]["by_batch_size"], result["train"]
    print(f"\nsummary ({len(utts)} clips, {result['audio_s']:.0f} s audio, {result['torch_threads']} threads):")
    print("  targets: " + ", ".join(f"batch {bs} {r['answers_per_s']:.2f} answers/s" for bs, r in g.items())
          + "; speed-up " + ", ".join(f"x{s:.2f} (batch {bs})" for bs, s in gen["speedup_vs_batch_1"].items()))
    print(f"  cross-entropy step (batch {b}): " + ", ".join(
        f"LoRA {k[5:]} {r['step_s_median']:.2f} s ({r['utterances_per_s']:.2f} utt/s)" for k, r in tr.items())
          + f"; LoRA 8 / 0: x{tr['lora_8']['step_s_median'] / tr['lora_0']['step_s_median']:.2f}")
    r = result["ctc_transcript_vocab"]
    print(f"  CTC step: {result['ctc']['step_s_median']:.2f} s over the whole table, {r['step_s_median']:.2f} s over "
          f"the transcripts' {r['classes']} tokens ({result['ctc']['ctc_skipped']} of {len(batch[0])} skipped); "
          f"peak RSS {result['peak_rss_mb']:.0f} MiB")


if __name__ == "__main__":
    main()
