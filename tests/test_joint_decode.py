"""CTC prefix scores, the joint CTC/LLM beam search and CTC prefix beam search, checked against brute force over
every alignment and every answer; the LLM's sentence scores against plain forward passes."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polyvox.models.ctc import CTCPrefixScorer
from polyvox.models.joint_decode import ctc_beam_search, joint_ctc_search, sentence_logprobs
from polyvox.models.sources import load_llm


def collapse(path, blank: int) -> tuple[int, ...]:
    out, prev = [], None
    for k in path:
        if k != blank and k != prev:
            out.append(k)
        prev = k
    return tuple(out)


def brute_ctc(log_probs: torch.Tensor) -> tuple[dict, dict]:
    """(prefix, exact): P(output starts with y) and P(output == y) for every y, summed over all alignments."""
    t, c = log_probs.shape
    prefix, exact = {}, {}
    for path in itertools.product(range(c), repeat=t):
        p = math.exp(sum(float(log_probs[i, k]) for i, k in enumerate(path)))
        y = collapse(path, c - 1)
        exact[y] = exact.get(y, 0.0) + p
        for j in range(len(y) + 1):
            prefix[y[:j]] = prefix.get(y[:j], 0.0) + p
    return prefix, exact


def grow(scorer: CTCPrefixScorer, y: tuple[int, ...], classes: int) -> tuple[float, float]:
    """The scorer's prefix and exact log-probabilities of y, grown one class at a time."""
    r, last, psi = scorer.initial()[None], torch.tensor([-1]), 0.0
    for k in y:
        scores, rs = scorer.extend(r, last, torch.arange(classes))
        psi, r, last = float(scores[0, k]), rs[:, k], torch.tensor([k])
    return psi, float(scorer.final(r)[0])


def test_ctc_prefix_scores_match_brute_force():
    torch.manual_seed(0)
    log_probs = torch.randn(5, 3).log_softmax(-1)  # 5 frames, classes 0 and 1, blank 2
    prefix, exact = brute_ctc(log_probs)
    scorer = CTCPrefixScorer(log_probs)
    assert torch.allclose(scorer.initial()[:, 1], log_probs[:, 2].cumsum(0))
    for n in range(5):
        for y in itertools.product(range(2), repeat=n):
            psi, fin = grow(scorer, y, 2)
            want_psi = math.log(prefix[y]) if y in prefix else -math.inf
            assert (psi == want_psi == -math.inf) or psi == pytest.approx(want_psi, abs=1e-5), y
            assert fin == pytest.approx(math.log(exact[y]), abs=1e-5) if y in exact else fin == -math.inf, y
    assert grow(scorer, (0, 1, 0, 1, 0, 1), 2) == (-math.inf, -math.inf)  # 6 tokens cannot fit in 5 frames


class BigramLM(nn.Module):
    """A causal LM whose next token depends on the last one only: logits ``table[last]`` (its hidden state is the
    last token, one-hot, and its LM head ``table.T``); the prompt leaves it at `start`. Its cache is each row's last
    token, reordered as a Hugging Face cache is."""

    dtype = torch.float32
    config = SimpleNamespace(final_logit_softcapping=None)

    def __init__(self, table: torch.Tensor, start: int):
        super().__init__()
        self.table, self.start = table, start
        self.head = nn.Linear(len(table), len(table), bias=False)
        self.head.weight.data = table.T.contiguous()

    class Cache:
        def __init__(self, last: torch.Tensor):
            self.last = last

        def reorder_cache(self, idx: torch.Tensor) -> None:
            self.last = self.last[idx]

    def get_output_embeddings(self) -> nn.Linear:
        return self.head

    def base_model(self, inputs_embeds=None, input_ids=None, past_key_values=None, use_cache=True):
        if inputs_embeds is not None:
            past_key_values = self.Cache(torch.full((len(inputs_embeds),), self.start))
        else:
            past_key_values.last = input_ids[:, -1]
        hidden = F.one_hot(past_key_values.last, len(self.table)).float()[:, None]  # (N, 1, V)
        return SimpleNamespace(last_hidden_state=hidden, past_key_values=past_key_values)


def brute_joint(lm: BigramLM, log_probs, tokens, end, w: float, bonus: float) -> tuple[int, ...]:
    """The answer (classes) of highest (1 - w) log P_llm(answer, end) + w log P_ctc(answer) + bonus * length, the
    LLM's distribution normalised over the tokens of the classes and the ending ones."""
    _, exact = brute_ctc(log_probs)
    vocab = sorted(set(tokens.tolist()) | set(end.nonzero().squeeze(1).tolist()))
    lp = torch.full_like(lm.table, -math.inf)
    lp[:, vocab] = lm.table[:, vocab].log_softmax(-1)
    best, arg = -math.inf, None
    for y, p in exact.items():
        prev, llm = lm.start, 0.0
        for k in y:
            llm += float(lp[prev, tokens[k]])
            prev = int(tokens[k])
        llm += float(lp[prev, end].logsumexp(-1))
        score = (1 - w) * llm + w * math.log(p) + bonus * len(y)
        if score > best:
            best, arg = score, y
    return arg


def test_joint_search_finds_the_brute_force_best_answer():
    """With a beam wide enough, the search returns each clip's answer of highest joint score over every answer CTC
    can align (LLM ids map through `tokens`; the LLM normalised over the tokens it may write), clips searched
    together as one batch; and the LLM's weight changes which answer that is."""
    torch.manual_seed(3)
    clips = [(torch.randn(t, 4) * 2).log_softmax(-1) for t in (6, 4, 5)]  # frames, classes 0-2, blank 3
    tokens = torch.tensor([4, 1, 2])  # class -> LLM token id; 3 is the start, 5 is never written, 0 ends an answer
    end = torch.tensor([True, False, False, False, False, False])
    lm = BigramLM(torch.randn(6, 6) * 3, start=3)
    found = set()
    for w, bonus in [(1.0, 0.0), (0.7, 0.0), (0.5, 1.0), (0.3, 0.0), (0.3, 2.0)]:
        got = joint_ctc_search(lm, torch.zeros(2, 8), clips, tokens, tokens, end, beam=64, ctc_weight=w,
                               max_new_tokens=8, per_frame=3, length_bonus=bonus)
        for lp, answer in zip(clips, got):
            assert answer == [int(tokens[k]) for k in brute_joint(lm, lp, tokens, end, w, bonus)], (w, bonus)
        found.add(tuple(map(tuple, got)))
    assert len(found) >= 3  # the weights matter


def test_clips_searched_together_get_the_answers_they_get_alone():
    """A narrow beam prunes differently per clip; batching the clips' hypotheses must not mix them up."""
    torch.manual_seed(5)
    clips = [(torch.randn(t, 5) * 2).log_softmax(-1) for t in (7, 3, 6, 5)]
    tokens, end = torch.tensor([1, 2, 4, 5]), torch.tensor([True] + [False] * 5)
    lm = BigramLM(torch.randn(6, 6) * 2, start=3)
    kwargs = {"beam": 2, "ctc_weight": 0.5, "max_new_tokens": 6, "per_frame": 2, "length_bonus": 0.5}
    together = joint_ctc_search(lm, torch.zeros(2, 8), clips, tokens, tokens, end, **kwargs)
    alone = [joint_ctc_search(lm, torch.zeros(2, 8), [lp], tokens, tokens, end, **kwargs)[0] for lp in clips]
    assert together == alone and len({tuple(a) for a in alone}) > 1


def test_ctc_beam_search_gives_the_exact_n_best_of_brute_force_and_prunes_what_is_masked():
    """Prefix beam search with a wide beam returns every output with log P_ctc summed over its alignments, exactly
    as enumerating all (C + 1)^T paths does, best first; a class at -inf (another script) is never written."""
    lp = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)).log_softmax(-1)  # 3 classes + blank
    _, brute = brute_ctc(lp)
    got = ctc_beam_search(lp, beam=1000, prune=-math.inf)
    assert len(got) == len(brute) and sum(math.exp(s) for _, s in got) == pytest.approx(1.0)
    assert [tuple(c) for c, _ in got[:5]] == [o for o, _ in sorted(brute.items(), key=lambda kv: -kv[1])[:5]]
    assert all(math.exp(s) == pytest.approx(brute[tuple(c)]) for c, s in got)
    top = ctc_beam_search(lp, beam=3)  # a narrow beam: the prefixes it dropped take their alignments with them
    assert len(top) == 3 and [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert all(math.exp(s) <= brute[tuple(c)] + 1e-9 for c, s in top)
    masked = lp.clone()
    masked[:, 1] = -math.inf
    masked = masked.log_softmax(-1)
    assert all(1 not in c for c, _ in ctc_beam_search(masked, beam=50, prune=-math.inf))


def test_sentence_logprobs_are_the_llm_log_likelihood_of_each_text_after_the_prefix():
    """The batched, padded scores equal the sum of the LLM's next-token log-probabilities over the full vocabulary,
    read from one unpadded forward pass per text."""
    lm, _ = load_llm("tiny-gemma3")
    prefix, texts = [2, 17, 33, 9], [[40, 41], [50], [60, 61, 62, 63]]
    got = sentence_logprobs(lm, prefix, texts, batch_size=2)
    for t, g in zip(texts, got):
        with torch.no_grad():
            lp = lm(input_ids=torch.tensor([prefix + t])).logits[0].float().log_softmax(-1)
        assert g.item() == pytest.approx(sum(lp[len(prefix) - 1 + j, k].item() for j, k in enumerate(t)), abs=1e-4)
