"""CTC over the LLM's frozen input-embedding table (Denisov & Vu 2024, stage 1).

The output layer of the CTC loss is the LLM's own input-embedding table, so the trainable encoder side
(adapter, layer mix) learns to put each frame near the embedding of the token said there: its outputs land
in the space the LLM reads. The table is never trained; the only parameters of the head are a blank vector
(the CTC blank is an extra class, so no real token is sacrificed) and a scalar scale.

Cost: over the whole vocabulary, as in the paper, the logits are (B, T, V + 1). For gemma3 (V = 262,145)
that is 1 MiB of float32 per frame, and the log-softmax and its gradient need as much again twice over:
about 3 MiB per frame, e.g. ~1.2 GiB for 8 clips of 50 adapter frames. Restricted to the tokens of the
training transcripts (`vocab`, a few thousand), the classes are still rows of the same frozen table, at a
few percent of that cost.

`CharCTCHead` is the alternative whose classes are the characters of the training transcripts (a linear layer):
it reads speech better than token classes (README, BLSP probes) but has no embedding rows for the LLM to read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import regex
import torch
import torch.nn.functional as F
from torch import nn

CTC_READOUTS = ("soft", "hard", "mean")
"""What a position of `ctc_compress` holds (see there)."""


class EmbeddingCTCHead(nn.Module):
    """CTC output layer whose V token classes are rows of a frozen input-embedding table, plus a blank.

    ``logits = scale * x @ [E; b].T`` where E (V, D) is the embedding module's ``weight`` itself (the same
    tensor, not a copy) — or, with `vocab`, its rows of those token ids only — and b (D,) a learned blank
    vector; the blank is class V. Targets and decoded paths stay LLM token ids (`classes`, `tokens`).

    E is the raw ``weight``: Gemma's embedding module multiplies its lookups by sqrt(D), but that is one
    constant for every row, so it changes nothing a learned scale cannot absorb, and reading the weight
    avoids a (V, D) scaled copy per call.

    The table is held outside the module's registry: it is not in ``parameters()`` or ``state_dict()`` (so a
    checkpoint of the head is a few floats, and a model that holds both the LLM and the head does not list the
    168M-value table twice), and ``.to()`` does not move it; the LLM owns it. Its ``requires_grad`` is set to
    False, which freezes it for the LLM as well, as every polyvox recipe keeps the LLM's table frozen.

    Args:
        embedding: the LLM's input-embedding module (``lm.get_input_embeddings()``).
        learn_scale: learn the scale (stored as its log, so it stays positive); otherwise keep it fixed.
        vocab: the LLM token ids that are classes (e.g. those of the training transcripts); None: every row.
    """

    split = 1
    """CTC frames per input frame (see `CharCTCHead`)."""

    def __init__(self, embedding: nn.Embedding, learn_scale: bool = True, vocab: Sequence[int] | None = None):
        super().__init__()
        weight = embedding.weight
        weight.requires_grad_(False)
        object.__setattr__(self, "_embedding", embedding)  # a plain attribute: not a registered submodule
        ids = sorted(set(vocab)) if vocab is not None else []
        if vocab is not None and (not ids or ids[0] < 0 or ids[-1] >= weight.shape[0]):
            raise ValueError(f"vocab must hold token ids in 0..{weight.shape[0] - 1}, got {len(ids)} ids")
        # the class -> token id map (derived from data, so not in the checkpoint)
        self.register_buffer("token_ids", torch.tensor(ids, dtype=torch.long) if ids else None, persistent=False)
        self._class_of = {k: i for i, k in enumerate(ids)}
        v, d = weight.shape
        rms = float(weight.detach().float().pow(2).mean().sqrt()) or 1.0
        # Like attention's 1/sqrt(D), divided by the table's RMS: a unit-RMS input then gives unit-variance
        # logits at the start, whatever the scale of the table (Gemma's rows are ~0.03, others ~1).
        log_scale = torch.tensor(-math.log(math.sqrt(d) * rms))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        # Drawn like a row of the table, so at the start the blank is scored like any token.
        gen = torch.Generator().manual_seed(0)
        self.blank = nn.Parameter(torch.randn(d, generator=gen) * rms)

    @property
    def embedding(self) -> nn.Embedding:
        """The LLM's input-embedding module (shared, frozen)."""
        return self._embedding

    @property
    def vocab_size(self) -> int:
        """V, the number of token classes; the blank is class V."""
        return len(self.token_ids) if self.token_ids is not None else self._embedding.weight.shape[0]

    def classes(self, ids: Sequence[int]) -> list[int]:
        """LLM token ids -> class indices; raises ValueError for an id outside the head's vocabulary."""
        if self.token_ids is None:
            return list(ids)
        missing = [k for k in ids if k not in self._class_of]
        if missing:
            raise ValueError(f"token ids {missing[:5]} are not among the head's {self.vocab_size} classes")
        return [self._class_of[k] for k in ids]

    def tokens(self, classes: Sequence[int]) -> list[int]:
        """Class indices (no blank) -> LLM token ids."""
        return list(classes) if self.token_ids is None else self.token_ids[list(classes)].tolist()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) encoder-side frames -> (B, T, V + 1) float32 logits; the last class is the blank."""
        weight = self._embedding.weight
        if self.token_ids is not None:
            weight = weight[self.token_ids]  # (V, D): the classes' rows, gathered from the frozen table
        x = x.to(weight.dtype) * self.log_scale.exp().to(weight.dtype)  # scaled here: D wide, not V wide
        tokens = F.linear(x, weight)  # (B, T, V)
        blank = (x @ self.blank.to(weight.dtype))[..., None]  # (B, T, 1)
        return torch.cat([tokens, blank], dim=-1).float()  # (B, T, V + 1)


class CharCTCHead(nn.Module):
    """CTC output layer over characters (e.g. those of the training transcripts), plus a blank: a linear layer.

    With `split` > 1 each input frame gives `split` CTC frames (a learned (D, split * D) expansion), so a 12.5 Hz
    adapter can spell at 25 Hz; `ctc_loss` scales the lengths by it. Targets are class indices (`encode`).

    Args:
        dim: D, the width of the input frames.
        chars: the classes (single characters; sorted); the blank is class ``len(chars)``.
        split: CTC frames per input frame.
    """

    token_ids = None  # classes are characters, not LLM tokens

    def __init__(self, dim: int, chars: Sequence[str], split: int = 1):
        super().__init__()
        self.chars = sorted(set(chars))
        if not self.chars or any(len(c) != 1 for c in self.chars) or split < 1:
            raise ValueError(f"a character CTC head needs single characters and split >= 1, got "
                             f"{len(self.chars)} classes, split {split}")
        self.split = split
        self._index = {c: i for i, c in enumerate(self.chars)}
        self.expand = nn.Linear(dim, split * dim) if split > 1 else nn.Identity()
        self.proj = nn.Linear(dim, len(self.chars) + 1)

    @property
    def vocab_size(self) -> int:
        """C, the number of character classes; the blank is class C."""
        return len(self.chars)

    def classes(self, ids: Sequence[int]) -> list[int]:
        """Targets are class indices already (`encode`)."""
        return list(ids)

    def encode(self, text: str) -> list[int]:
        """A transcript -> its class indices; characters outside the classes are dropped."""
        return [self._index[c] for c in text if c in self._index]

    def decode(self, classes: Sequence[int]) -> str:
        return "".join(self.chars[k] for k in classes)

    def allowed(self, scripts: Sequence[str]) -> torch.Tensor:
        """(C + 1,) mask of the classes a text in `scripts` (ISO 15924 codes, `polyvox.data.languages.scripts`)
        may hold: every character that is not a letter (digits, punctuation, marks, spaces), the letters of
        those scripts, and the blank; every class when `scripts` is empty."""
        if not scripts:
            return torch.ones(len(self.chars) + 1, dtype=torch.bool)
        script = regex.compile("[" + "".join(f"\\p{{Script={s}}}" for s in scripts) + "]")
        ok = [not regex.match(r"\p{L}", c) or bool(script.match(c)) for c in self.chars]
        return torch.tensor(ok + [True])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) frames -> (B, T * split, C + 1) float32 logits; the last class is the blank."""
        b, t, d = x.shape
        return self.proj(self.expand(x).reshape(b, t * self.split, d)).float()


CTCHead = EmbeddingCTCHead | CharCTCHead


def ctc_min_frames(target: list[int]) -> int:
    """The fewest input frames CTC can align `target` to: one per token, plus a blank between repeats."""
    return len(target) + sum(a == b for a, b in zip(target, target[1:]))


def ctc_loss(head: CTCHead, x: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """CTC loss of `targets` given encoder-side frames, mean over the batch of (loss / target length).

    Args:
        head: the CTC head (V classes + blank V; ``head.split`` CTC frames per input frame).
        x: (B, T, D) frames.
        lengths: (B,) valid input frames of each item.
        targets: each item's transcript as the head's targets: LLM token ids for `EmbeddingCTCHead` (among its
            classes), class indices for `CharCTCHead` (no blank).

    Raises:
        ValueError: when an item cannot be aligned (fewer valid frames than `ctc_min_frames` of its target),
            naming its batch index; filter such items with `ctc_min_frames` before batching. Also for ids out
            of range and mismatched batch sizes.
    """
    b, t = x.shape[0], x.shape[1] * head.split
    if len(targets) != b or len(lengths) != b:
        raise ValueError(f"batch of {b} frames but {len(targets)} targets and {len(lengths)} lengths")
    v = head.vocab_size
    lengths = lengths.to(torch.long).cpu() * head.split
    for i, (tgt, n) in enumerate(zip(targets, lengths.tolist())):
        if not 1 <= n <= t:
            raise ValueError(f"batch item {i}: {n} valid frames, expected 1..{t}")
        if head.token_ids is None and any(not 0 <= k < v for k in tgt):
            raise ValueError(f"batch item {i}: target ids must be in 0..{v - 1} (class {v} is the blank)")
        need = ctc_min_frames(tgt)
        if need > n:
            raise ValueError(f"batch item {i}: target of {len(tgt)} tokens needs at least {need} frames, "
                             f"but the input has {n}; CTC cannot align it")
    log_probs = F.log_softmax(head(x), dim=-1).transpose(0, 1)  # (T, B, V + 1)
    flat = torch.tensor([k for tgt in targets for k in head.classes(tgt)], dtype=torch.long)
    target_lengths = torch.tensor([len(tgt) for tgt in targets], dtype=torch.long)
    return F.ctc_loss(log_probs, flat.to(x.device), lengths, target_lengths, blank=v, reduction="mean",
                      zero_infinity=True)


def aligned_ctc_loss(head: CTCHead, x: torch.Tensor, lengths: torch.Tensor,
                     targets: list[list[int]]) -> tuple[torch.Tensor, int]:
    """`ctc_loss` over the items it can score: a non-empty target of the head's classes with enough frames
    (`ctc_min_frames`); returns the loss (0 with a graph when none) and how many items it scored."""
    known = set(head.token_ids.tolist()) if head.token_ids is not None else None
    keep = [i for i, (t, n) in enumerate(zip(targets, lengths.tolist()))
            if t and ctc_min_frames(t) <= n * head.split and (known is None or known.issuperset(t))]
    if not keep:
        return x.sum() * 0.0, 0
    idx = torch.tensor(keep, device=x.device)
    return ctc_loss(head, x[idx], lengths[idx], [targets[i] for i in keep]), len(keep)


def ctc_compress(head: EmbeddingCTCHead, x: torch.Tensor, lengths: torch.Tensor,
                 readout: str = "soft") -> tuple[torch.Tensor, torch.Tensor]:
    """The CTC compressor (Wu et al. 2023, Speech-LLaMA): drop the frames whose best class is the blank and merge
    each run of one class into one position, so the LLM reads about one position per token said.

    Args:
        head: the CTC head the frames were trained with.
        x: (B, T, D) frames (adapter outputs).
        lengths: (B,) valid frames of each item.
        readout: what a merged position holds, see `CTC_READOUTS`: ``soft``, the run's mean non-blank posterior
            times the classes' embedding rows (as the LLM embeds them: a point in the span of its token
            embeddings, differentiable); ``hard``, the embedding of the run's class (not differentiable); ``mean``,
            the mean of the run's frames.

    Returns:
        (B, L, D) positions (zero-padded) and (B,) their counts (at least 1: a clip without a non-blank frame
        keeps the frame where the blank is least probable).
    """
    if readout not in CTC_READOUTS:
        raise ValueError(f"unknown CTC readout {readout!r}; known: {', '.join(CTC_READOUTS)}")
    logits = head(x)  # (B, T, V + 1)
    blank = head.vocab_size
    rows = None
    if readout != "mean":
        ids = head.token_ids if head.token_ids is not None else torch.arange(blank, device=x.device)
        rows = head.embedding(ids).to(x.dtype)  # (V, D): the classes' tokens as the LLM embeds them
    outs = []
    for i, n in enumerate(lengths.tolist()):
        best = logits[i, :n].argmax(-1)  # (n,)
        keep = best != blank
        if not keep.any():
            keep = torch.zeros_like(keep)
            keep[logits[i, :n].log_softmax(-1)[:, blank].argmin()] = True
        start = torch.ones_like(keep)
        start[1:] = (best[1:] != best[:-1]) | ~keep[:-1]  # a new run: another class, or after a blank
        frames = keep.nonzero().squeeze(1)  # (K,)
        seg = torch.cumsum(start[frames].long(), 0) - 1  # (K,) position of each kept frame
        if readout == "mean":
            val = x[i, frames]
        elif readout == "soft":
            val = logits[i, frames, :blank].softmax(-1).to(x.dtype) @ rows  # (K, D)
        else:
            val = rows[logits[i, frames, :blank].argmax(-1)]
        size = int(seg[-1]) + 1
        total = val.new_zeros(size, val.shape[-1]).index_add(0, seg, val)
        count = torch.bincount(seg, minlength=size).clamp(min=1).to(val.dtype)[:, None]
        outs.append(total / count)  # (L_i, D)
    n = torch.tensor([len(o) for o in outs], device=x.device)
    return torch.nn.utils.rnn.pad_sequence(outs, batch_first=True), n


def greedy_ctc_decode(logits: torch.Tensor, lengths: torch.Tensor, blank: int | None = None) -> list[list[int]]:
    """Best path per item: argmax per frame, collapse repeats, drop blanks. Returns class indices
    (`EmbeddingCTCHead.tokens` maps a restricted head's classes back to LLM token ids).

    Args:
        logits: (B, T, C) logits or log-probabilities.
        lengths: (B,) valid frames of each item.
        blank: the blank class; the last class (C - 1) if None, as `EmbeddingCTCHead` puts it.
    """
    blank = logits.shape[-1] - 1 if blank is None else blank
    out = []
    for path, n in zip(logits.argmax(-1).tolist(), lengths.tolist()):
        path = path[:n]
        out.append([k for j, k in enumerate(path) if k != blank and (j == 0 or k != path[j - 1])])
    return out


class CTCPrefixScorer:
    """CTC prefix probabilities of one clip (Watanabe et al. 2017; ESPnet's joint CTC/attention decoding): for a
    hypothesis h, log P(the frames' output starts with h), summed over every alignment, for hypotheses grown one
    class at a time; and log P(the output is exactly h) to end one.

    A hypothesis is carried as its forward variables r, (T, 2) log-probabilities of its alignments up to frame t
    that end in one of its tokens (r[:, 0]) or in a blank (r[:, 1]), and its last class (-1: empty).

    Args:
        log_probs: (T, C + 1) log-posteriors of the clip's valid frames; the blank is the last class.
    """

    def __init__(self, log_probs: torch.Tensor):
        self.x = log_probs.float()  # (T, C + 1)
        self.blank = log_probs.shape[1] - 1

    def initial(self) -> torch.Tensor:
        """(T, 2) forward variables of the empty hypothesis: only blanks so far (its prefix log-probability is 0)."""
        r = torch.full((len(self.x), 2), -math.inf)
        r[:, 1] = torch.cumsum(self.x[:, self.blank], 0)
        return r

    def extend(self, r: torch.Tensor, last: torch.Tensor, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every hypothesis extended by every candidate class.

        Args:
            r: (N, T, 2) forward variables of N hypotheses; last: (N,) their last classes (-1: empty).
            cands: (S,) candidate classes (no blank).

        Returns:
            (N, S) prefix log-probabilities of the extended hypotheses and their (N, S, T, 2) forward variables.
        """
        n, t = r.shape[:2]
        xc = self.x[:, cands]  # (T, S)
        xb = self.x[:, self.blank]  # (T,)
        same = (last[:, None] == cands[None, :])[..., None]  # (N, S, 1): a repeat needs a blank between
        # phi[t]: the hypothesis ends by frame t and the candidate may start a new token at frame t + 1
        phi = torch.logaddexp(r[:, None, :, 1], torch.where(same, -math.inf, r[:, None, :, 0]))  # (N, S, T)
        rn = torch.full_like(phi, -math.inf)
        rb = torch.full_like(phi, -math.inf)
        rn[:, :, 0] = torch.where(last[:, None] < 0, xc[0][None], -math.inf)  # only the first token starts at 0
        for i in range(1, t):
            rn[:, :, i] = torch.logaddexp(rn[:, :, i - 1], phi[:, :, i - 1]) + xc[i]
            rb[:, :, i] = torch.logaddexp(rb[:, :, i - 1], rn[:, :, i - 1]) + xb[i]
        starts = torch.cat([rn[:, :, :1], phi[:, :, :-1] + xc[1:].T[None]], dim=-1)  # (N, S, T): token starts at t
        return torch.logsumexp(starts, -1), torch.stack([rn, rb], dim=-1)

    def final(self, r: torch.Tensor) -> torch.Tensor:
        """(N, T, 2) forward variables -> (N,) log P(the output is exactly each hypothesis)."""
        return torch.logaddexp(r[:, -1, 0], r[:, -1, 1])
