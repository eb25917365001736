"""Joint CTC/LLM beam search (Watanabe et al. 2017, as ESPnet decodes; here with the LLM as the language model): the
CTC head scores how well each hypothesis fits the clip's frames, and the LLM, reading a text prompt, how likely it is
as a sentence.

    score(h) = (1 - w) * log P_llm(h | prompt) + w * log P_ctc(output starts with h | frames) + bonus * |h|

The CTC term keeps the answer on what was said; the LLM's term mends what CTC gets wrong in spelling and word choice.
Hypotheses are grown over the CTC head's classes only (LLM token ids), and the LLM's next-token distribution is
normalised over those tokens and the ones that end an answer (a line break, EOS), which the LM head alone reads.
An ended answer is scored by CTC as the exact output.

Clips that share the prompt are searched together: their live hypotheses are one batch of the LLM, whose KV cache
is reordered between steps.

A character head's classes are not the LLM's tokens, so its hypotheses are not grown with the LLM: CTC prefix beam
search (`ctc_beam_search`) gives each clip's N best transcripts, and the LLM rescores the whole sentences
(`sentence_logprobs`), the same weighted sum with the bonus per character (`SpeechLLM.transcribe_ctc`).
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from polyvox.models.ctc import CTCPrefixScorer


class RestrictedLM:
    """A causal LLM's next-token log-probabilities over the token ids `ids` only (renormalised there): the LM head
    reads those rows (a few thousand of Gemma's 262k, the costly part of a step on a CPU)."""

    def __init__(self, lm: nn.Module, ids: torch.Tensor):
        head = lm.get_output_embeddings()
        self.lm = lm
        self.weight = head.weight[ids.to(head.weight.device)]  # (K, D)
        self.bias = None if getattr(head, "bias", None) is None else head.bias[ids.to(head.weight.device)]
        self.cap = getattr(lm.config, "final_logit_softcapping", None)

    def __call__(self, cache=None, **inputs) -> tuple[torch.Tensor, object]:
        """One forward step -> (N, K) log-probabilities (on the CPU) of the next token and the updated cache."""
        out = self.lm.base_model(**inputs, past_key_values=cache, use_cache=True)
        logits = F.linear(out.last_hidden_state[:, -1], self.weight, self.bias).float()  # (N, K)
        if self.cap:
            logits = torch.tanh(logits / self.cap) * self.cap
        return logits.log_softmax(-1).cpu(), out.past_key_values


@dataclass
class _Beam:
    """One clip's search: its CTC scorer, candidate classes and live hypotheses (N of them)."""

    scorer: CTCPrefixScorer
    cands: torch.Tensor  # (S,) candidate classes
    limit: int  # the most tokens an answer may have
    r: torch.Tensor  # (N, T, 2) CTC forward variables
    last: torch.Tensor = field(default_factory=lambda: torch.tensor([-1]))  # (N,) last classes (-1: empty)
    psi: torch.Tensor = field(default_factory=lambda: torch.zeros(1))  # (N,) CTC prefix log-probabilities
    score: torch.Tensor = field(default_factory=lambda: torch.zeros(1))  # (N,) joint scores
    seqs: list[list[int]] = field(default_factory=lambda: [[]])  # the hypotheses' classes
    best: float = -float("inf")  # the best ended answer's score, and its classes
    best_seq: list[int] = field(default_factory=list)


@torch.no_grad()
def joint_ctc_search(lm: nn.Module, prompt: torch.Tensor, log_probs: list[torch.Tensor], tokens: torch.Tensor,
                     first_tokens: torch.Tensor, end: torch.Tensor, beam: int = 4, ctc_weight: float = 0.7,
                     max_new_tokens: int = 48, per_frame: int = 4, length_bonus: float = 0.0) -> list[list[int]]:
    """The best answer's LLM token ids for each clip, every clip's answer following the same prompt.

    Args:
        lm: the causal LLM (Hugging Face ``*ForCausalLM``: ``base_model``, output embeddings, a reorderable cache).
        prompt: (L, D) input embeddings of everything before the answer.
        log_probs: per clip, (T, C + 1) CTC log-posteriors of its valid frames; the blank is the last class.
        tokens: (C,) the LLM token id of each class.
        first_tokens: (C,) the LLM token id of each class as the answer's first token (e.g. with the leading space
            the prompt calls for; see `first_token_ids`), -1 where the LLM has none.
        end: (V,) True for the LLM tokens that end an answer.
        beam: hypotheses kept per clip and step.
        ctc_weight: w above, in [0, 1]; 1 is CTC prefix beam search alone.
        max_new_tokens: bound on an answer's tokens (CTC also bounds it by the clip's frames).
        per_frame: a clip's candidate classes are those among the `per_frame` best of some frame (blank excluded).
        length_bonus: added per token (offsets the LLM's cost of every word, as it reads no speech).
    """
    w = float(ctc_weight)
    enders = end.nonzero().squeeze(1)
    vocab = torch.cat([tokens, first_tokens[first_tokens >= 0], enders]).unique()  # (K,) what the head reads
    where = torch.full((len(end),), -1, dtype=torch.long)
    where[vocab] = torch.arange(len(vocab))
    tok, first, ends = where[tokens], torch.where(first_tokens >= 0, where[first_tokens.clamp(min=0)], -1), where[enders]
    llm = RestrictedLM(lm, vocab)
    beams = []
    for lp in log_probs:
        scorer = CTCPrefixScorer(lp.cpu())
        cands = scorer.x[:, :-1].topk(min(per_frame, scorer.x.shape[1] - 1), dim=-1).indices.unique()
        beams.append(_Beam(scorer, cands, min(max_new_tokens, len(scorer.x)), scorer.initial()[None]))
    lp, cache = llm(inputs_embeds=prompt[None].to(lm.dtype))
    cache.reorder_cache(torch.zeros(len(beams), dtype=torch.long, device=prompt.device))  # one row per clip
    rows = {i: i for i in range(len(beams))}  # clip -> the batch row of its first live hypothesis
    lp = lp.expand(len(beams), -1)
    live = list(range(len(beams)))
    for step in range(max_new_tokens + 1):
        order, nxt, still, moved = [], [], [], {}
        for i in live:
            b, n = beams[i], len(beams[i].seqs)
            lpi = lp[rows[i] : rows[i] + n]  # (N, K)
            ended = b.score + (1 - w) * lpi[:, ends].logsumexp(-1) + w * (b.scorer.final(b.r) - b.psi)  # (N,)
            j = int(ended.argmax())
            if ended[j] > b.best:
                b.best, b.best_seq = float(ended[j]), b.seqs[j]
            if step == b.limit:
                continue
            new_psi, new_r = b.scorer.extend(b.r, b.last, b.cands)  # (N, S), (N, S, T, 2)
            ids = (first if step == 0 else tok)[b.cands]  # (S,) positions in the head's vocabulary
            total = b.score[:, None] + (1 - w) * lpi[:, ids.clamp(min=0)] + w * (new_psi - b.psi[:, None]) + length_bonus
            total = total.masked_fill(ids[None] < 0, -float("inf"))  # a class the LLM cannot write here
            top, flat = total.flatten().topk(min(beam, total.numel()))
            # every other term is a log-probability: a hypothesis gains at most the bonus of the tokens left
            keep = top + length_bonus * (b.limit - step - 1) > b.best
            if not keep.any():
                continue
            top, flat = top[keep], flat[keep]
            h, c = flat // len(b.cands), flat % len(b.cands)
            b.seqs = [b.seqs[x] + [int(b.cands[y])] for x, y in zip(h.tolist(), c.tolist())]
            b.r, b.psi, b.score, b.last = new_r[h, c], new_psi[h, c], top, b.cands[c]
            moved[i] = len(order)  # where its hypotheses sit in the next batch
            order += (h + rows[i]).tolist()
            nxt.append(vocab[ids[c]])
            still.append(i)
        if not still:
            break
        live, rows = still, moved
        cache.reorder_cache(torch.tensor(order, device=prompt.device))
        lp, cache = llm(cache, input_ids=torch.cat(nxt)[:, None].to(prompt.device))
    return [[int(first_tokens[k]) if j == 0 else int(tokens[k]) for j, k in enumerate(b.best_seq)] for b in beams]


@functools.lru_cache(maxsize=8)
def first_token_ids(tokenizer, ids: tuple[int, ...], spaced: bool) -> torch.Tensor:
    """(C,) the token id each of `ids` takes as the first token of an answer: itself, or with `spaced` (the prompt
    ends without white space, as ``"Transcript:"``, so the answer opens with a space) the single token of
    ``" " + its text`` (-1 where that is no single token). A transcript's own tokens (CTC targets) start without
    the space."""
    if not spaced:
        return torch.tensor(ids)
    texts = tokenizer.batch_decode([[k] for k in ids])
    enc = tokenizer([t if t[:1].isspace() else " " + t for t in texts], add_special_tokens=False)["input_ids"]
    return torch.tensor([e[0] if len(e) == 1 else -1 for e in enc])


def ctc_beam_search(log_probs: torch.Tensor, beam: int = 8, prune: float = -8.0) -> list[tuple[list[int], float]]:
    """CTC prefix beam search (Hannun et al. 2014) over one clip's frames: its `beam` best outputs (class indices)
    and each one's log P_ctc, summed over its alignments, best first.

    Args:
        log_probs: (T, C + 1) log-posteriors of the clip's valid frames; the blank is the last class; a class that
            may not be written is at -inf.
        beam: prefixes kept per frame (and outputs returned).
        prune: a frame extends the prefixes only by the classes above this log-probability there (and its best).
    """
    x = log_probs.float().cpu()
    blank = x.shape[1] - 1
    rows, keep = x.tolist(), (x[:, :-1] > prune) | (x[:, :-1] == x[:, :-1].max(-1, keepdim=True).values)
    cands = [k.nonzero().squeeze(1).tolist() for k in keep]
    add = _logaddexp
    beams = {(): (0.0, -math.inf)}  # prefix -> log P(its alignments so far end in a blank, in its last class)
    for row, cs in zip(rows, cands):
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            here = nxt.setdefault(prefix, [-math.inf, -math.inf])
            here[0] = add(here[0], add(pb, pnb) + row[blank])
            last = prefix[-1] if prefix else -1
            for c in cs:
                grown = nxt.setdefault(prefix + (c,), [-math.inf, -math.inf])
                if c == last:  # a repeat without a blank between collapses into the prefix itself
                    here[1] = add(here[1], pnb + row[c])
                    grown[1] = add(grown[1], pb + row[c])
                else:
                    grown[1] = add(grown[1], add(pb, pnb) + row[c])
        scored = sorted(((add(*v), p) for p, v in nxt.items() if max(v) > -math.inf), reverse=True)[:beam]
        beams = {p: tuple(nxt[p]) for _, p in scored}
    return [(list(p), add(*v)) for p, v in beams.items()]  # best first, as kept


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


@torch.no_grad()
def sentence_logprobs(lm: nn.Module, prefix: list[int], texts: list[list[int]], batch_size: int = 16) -> torch.Tensor:
    """(N,) log P_llm(text | prefix) of each token sequence after the same `prefix` (token ids), normalised over the
    LLM's whole vocabulary. The prefix is read once (its KV cache copied for each batch), and the LM head reads only
    the texts' positions.

    Args:
        lm: a Hugging Face ``*ForCausalLM`` (``base_model``, output embeddings).
        prefix: what the LLM reads first (e.g. `sentence_prior`'s tokens, with BOS); at least one token.
        texts: each hypothesis's token ids (e.g. ending in the line break that closes it), none empty.
    """
    head = lm.get_output_embeddings()
    cap = getattr(lm.config, "final_logit_softcapping", None)
    device, out = head.weight.device, []
    first = lm.base_model(input_ids=torch.tensor([prefix], device=device), use_cache=True)  # the prefix, once
    for s in range(0, len(texts), batch_size):
        part = texts[s : s + batch_size]
        cache = copy.deepcopy(first.past_key_values)
        cache.batch_repeat_interleave(len(part))
        ids = pad_sequence([torch.tensor(t) for t in part], batch_first=True).to(device)  # (B, L)
        mask = pad_sequence([torch.ones(len(prefix) + len(t), dtype=torch.long) for t in part], batch_first=True)
        h = lm.base_model(input_ids=ids, attention_mask=mask.to(device), past_key_values=cache).last_hidden_state
        # the state before each text token: the prefix's last for the first, then the text's own (B, L, D)
        rows = torch.cat([torch.cat([first.last_hidden_state[0, -1:], h[i, : len(t) - 1]]) for i, t in enumerate(part)])
        logits = head(rows).float()  # (sum of lengths, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        lp = logits.log_softmax(-1).gather(1, torch.tensor([k for t in part for k in t], device=device)[:, None])
        out += [float(v.sum()) for v in lp.squeeze(1).cpu().split([len(t) for t in part])]
    return torch.tensor(out)
