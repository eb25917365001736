"""CTC over the LLM's frozen embedding table, the learned layer mix and `SpeechEncoder.hidden_states`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tone_speech
from torch import nn

from polyvox.data.languages import scripts
from polyvox.models.ctc import (
    CharCTCHead,
    EmbeddingCTCHead,
    aligned_ctc_loss,
    ctc_compress,
    ctc_loss,
    ctc_min_frames,
    greedy_ctc_decode,
)
from polyvox.models.layer_mix import WeightedLayerSum
from polyvox.models.sources import load_llm, load_speech_model
from polyvox.models.speech_encoder import SpeechEncoder


@pytest.fixture(scope="module")
def llm():
    return load_llm("tiny-gemma3")


def test_head_holds_the_llm_table_itself_and_only_trains_blank_and_scale(llm):
    lm, _ = llm
    emb = lm.get_input_embeddings()
    head = EmbeddingCTCHead(emb)
    assert head.embedding.weight is emb.weight
    assert head.embedding.weight.data_ptr() == emb.weight.data_ptr()
    assert not emb.weight.requires_grad
    assert {n for n, p in head.named_parameters() if p.requires_grad} == {"log_scale", "blank"}
    assert all(p is not emb.weight for p in head.parameters()) and "embedding.weight" not in head.state_dict()
    x = torch.randn(2, 5, emb.weight.shape[1])
    assert head(x).shape == (2, 5, emb.weight.shape[0] + 1)


def test_training_drives_loss_down_decodes_targets_and_leaves_table_bit_identical(llm):
    lm, tok = llm
    emb = lm.get_input_embeddings()
    table = emb.weight.detach().clone()
    targets = [tok(w, add_special_tokens=False)["input_ids"] for w in ["cat", "dog", "sun", "moon"]]
    assert ctc_min_frames(targets[3]) == 5  # "moon" has a repeat: a blank must sit between
    torch.manual_seed(0)
    feats = torch.randn(4, 10, 64)  # fixed random "encoder frames"
    lengths = torch.tensor([10, 8, 10, 9])
    upstream = nn.Linear(64, emb.weight.shape[1])
    head = EmbeddingCTCHead(emb)
    before = {n: p.detach().clone() for n, p in [*upstream.named_parameters(), *head.named_parameters()]}
    opt = torch.optim.Adam([*upstream.parameters(), *head.parameters()], lr=0.03)
    losses = []
    for _ in range(120):
        loss = ctc_loss(head, upstream(feats), lengths, targets)
        opt.zero_grad()
        loss.backward()
        assert emb.weight.grad is None
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert torch.equal(emb.weight, table) and head.embedding.weight is emb.weight
    after = dict([*upstream.named_parameters(), *head.named_parameters()])
    assert all(not torch.equal(after[n], v) for n, v in before.items())  # every trainable part moved
    with torch.no_grad():
        assert greedy_ctc_decode(head(upstream(feats)), lengths) == targets
        # compressed, the frames become the LLM's own embeddings of the target tokens (hard), or close to them (soft)
        hard, n = ctc_compress(head, upstream(feats), lengths, "hard")
        soft, _ = ctc_compress(head, upstream(feats), lengths, "soft")
    assert n.tolist() == [len(t) for t in targets]
    for i, t in enumerate(targets):
        assert torch.equal(hard[i, : len(t)], emb(torch.tensor(t)))
        assert nn.functional.cosine_similarity(soft[i, : len(t)], hard[i, : len(t)]).min() > 0.9


def test_a_restricted_head_scores_the_same_rows_and_learns_in_token_ids(llm):
    """With `vocab`, the classes are those rows of the same frozen table: their logits equal the full head's
    at those ids (and the blank's); CTC normalises over them only; targets and decoded paths are LLM ids."""
    lm, tok = llm
    emb = lm.get_input_embeddings()
    targets = [tok(w, add_special_tokens=False)["input_ids"] for w in ["cat", "dog", "sun", "moon"]]
    vocab = sorted({k for t in targets for k in t} | {5, 9})
    full, head = EmbeddingCTCHead(emb), EmbeddingCTCHead(emb, vocab=vocab)
    assert head.vocab_size == len(vocab) and head.embedding.weight is emb.weight and "token_ids" not in head.state_dict()
    torch.manual_seed(0)
    x = torch.randn(2, 6, emb.weight.shape[1])
    with torch.no_grad():
        keep = torch.tensor([*vocab, emb.weight.shape[0]])  # the vocabulary's classes, then the blank
        assert torch.allclose(head(x), full(x)[..., keep], atol=1e-5)
        lengths, tgt = torch.tensor([6, 5]), targets[:2]
        by_hand = torch.nn.functional.ctc_loss(
            torch.log_softmax(full(x)[..., keep], -1).transpose(0, 1),
            torch.tensor([vocab.index(k) for t in tgt for k in t]), lengths, torch.tensor([len(t) for t in tgt]),
            blank=len(vocab), zero_infinity=True)
        assert ctc_loss(head, x, lengths, tgt).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert head.tokens(head.classes(targets[3])) == targets[3]
    with pytest.raises(ValueError, match="not among the head's"):
        head.classes([max(vocab) + 1])
    with pytest.raises(ValueError, match="vocab must hold token ids"):
        EmbeddingCTCHead(emb, vocab=[emb.weight.shape[0]])

    feats = torch.randn(4, 10, 64)
    upstream = nn.Linear(64, emb.weight.shape[1])
    opt = torch.optim.Adam([*upstream.parameters(), *head.parameters()], lr=0.03)
    for _ in range(80):
        loss = ctc_loss(head, upstream(feats), torch.tensor([10, 8, 10, 9]), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        decoded = greedy_ctc_decode(head(upstream(feats)), torch.tensor([10, 8, 10, 9]))
    assert [head.tokens(d) for d in decoded] == targets


def test_char_head_splits_frames_learns_to_spell_and_masks_other_scripts():
    """CharCTCHead: `split` CTC frames per input frame (the loss scales the lengths: the same value as torch's CTC
    on the split logits), a few steps spell two transcripts from random frames, and `allowed` keeps the
    non-letters and the letters of the language's scripts (CLDR's, through `scripts`)."""
    torch.manual_seed(0)
    texts = ["ab ba.", "baa, b"]
    head = CharCTCHead(8, sorted(set("".join(texts))), split=2)
    assert head.chars == [" ", ",", ".", "a", "b"] and head.vocab_size == 5
    targets = [head.encode(t) for t in texts]
    assert head.decode(targets[0]) == texts[0] and head.encode("abc") == [3, 4]  # unknown characters are dropped
    x, n = torch.randn(2, 5, 8), torch.tensor([5, 4])  # 6 characters need 6 CTC frames: 10 and 8 here
    logits = head(x)
    assert logits.shape == (2, 10, 6)
    want = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), torch.tensor(sum(targets, [])), n * 2,
                      torch.tensor([6, 6]), blank=5)
    assert ctc_loss(head, x, n, targets).item() == pytest.approx(want.item(), rel=1e-5)
    assert aligned_ctc_loss(head, x, torch.tensor([5, 2]), targets)[1] == 1  # 4 CTC frames cannot hold 6 characters
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(150):
        loss = ctc_loss(head, x, n, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert [head.decode(p) for p in greedy_ctc_decode(head(x), n * 2)] == texts
    mixed = CharCTCHead(4, ["a", "é", "ж", "ł", " ", ".", "1", "\u0301", "の", "カ", "字", "한"])
    allowed = {s: {c for c, ok in zip(mixed.chars, mixed.allowed(scripts(lang)).tolist()) if ok}
               for s, lang in (("latn", "pl_pl"), ("cyrl", "uk_ua"), ("jpan", "ja_jp"))}
    common = {" ", ".", "1", "\u0301"}  # not letters: any script
    assert allowed["latn"] == common | {"a", "é", "ł"} and allowed["cyrl"] == common | {"ж"}
    assert allowed["jpan"] == common | {"の", "カ", "字"}
    assert mixed.allowed([]).all() and mixed.allowed(["Latn"])[-1]  # no script: no mask; the blank is always allowed
    assert scripts("ko_kr") == ("Hang", "Hani") and scripts("sr_rs") == ("Cyrl",)
    with pytest.raises(ValueError, match="single characters"):
        CharCTCHead(4, ["ab"])


def test_ctc_loss_by_hand():
    emb = nn.Embedding(3, 2)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]]))
    head = EmbeddingCTCHead(emb)
    with torch.no_grad():
        head.log_scale.zero_()
        head.blank.copy_(torch.tensor([0.5, 0.5]))
    x = torch.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 3.0], [1.0, 1.0]]])  # (B=2, T=2, D=2)
    classes = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.5, 0.5]]  # rows of E, then the blank (class 3)

    def probs(frame: list[float]) -> list[float]:
        z = [math.exp(sum(a * b for a, b in zip(frame, c))) for c in classes]
        return [v / sum(z) for v in z]

    p = [[probs(f) for f in item] for item in x.tolist()]
    # item 0, target [0] in 2 frames: paths (0,0), (0,-), (-,0); item 1, target [1, 0]: only (1,0); /target length
    item0 = -math.log(p[0][0][0] * p[0][1][0] + p[0][0][0] * p[0][1][3] + p[0][0][3] * p[0][1][0]) / 1
    item1 = -math.log(p[1][0][1] * p[1][1][0]) / 2
    loss = ctc_loss(head, x, torch.tensor([2, 2]), [[0], [1, 0]])
    assert loss.item() == pytest.approx((item0 + item1) / 2, rel=1e-5)


def test_unalignable_targets_raise_naming_the_item():
    head = EmbeddingCTCHead(nn.Embedding(10, 4))
    x = torch.randn(2, 4, 4)
    assert [ctc_min_frames(t) for t in ([], [1, 2], [3, 3], [3, 3, 3])] == [0, 2, 3, 5]
    ctc_loss(head, x, torch.tensor([4, 2]), [[1, 2, 3], [1, 2]])  # tight but possible
    with pytest.raises(ValueError, match="batch item 1: target of 3 tokens needs at least 3 frames"):
        ctc_loss(head, x, torch.tensor([4, 2]), [[1], [1, 2, 3]])
    with pytest.raises(ValueError, match="batch item 0: .* needs at least 3 frames"):
        ctc_loss(head, x, torch.tensor([2, 4]), [[3, 3], [1]])  # a repeat needs a blank between
    with pytest.raises(ValueError, match="batch item 1: target ids"):
        ctc_loss(head, x, torch.tensor([4, 4]), [[1], [10]])  # 10 is the blank


def test_greedy_decode_collapses_repeats_drops_blanks_and_stops_at_length():
    b = 3
    paths = torch.tensor([[b, 1, 1, b, 1, 2, 2, b], [0, 0, b, 0, 2, 2, 1, 1]])
    logits = nn.functional.one_hot(paths, 4).float()  # (B, T, 4)
    assert greedy_ctc_decode(logits, torch.tensor([8, 5])) == [[1, 1, 2], [0, 0, 2]]


def hand_head() -> EmbeddingCTCHead:
    """A head over token ids 5, 7 and 9 of a 10-row table whose rows are one-hot (D = 4: row k has a 1 at k % 3;
    the blank is the 4th axis), so a frame's best class is the axis where it is largest."""
    emb = nn.Embedding(10, 4)
    with torch.no_grad():
        emb.weight.zero_()
        for k in range(10):
            emb.weight[k, k % 3] = 1.0
        head = EmbeddingCTCHead(emb, vocab=[5, 7, 9], learn_scale=False)
        head.blank.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
        head.log_scale.fill_(math.log(10.0))
    return head  # classes 0, 1, 2 = tokens 5, 7, 9 = axes 2, 1, 0; blank = class 3 = axis 3


def test_ctc_compress_by_hand():
    """Blank frames are dropped and each run of one class becomes one position; a blank splits two runs of one
    class; lengths are respected; a clip with only blank frames keeps its least blank one."""
    head = hand_head()
    axis = {0: 2, 1: 1, 2: 0, 3: 3}  # class -> axis of the frame that selects it
    paths = [[3, 0, 0, 3, 0, 1, 1, 3], [2, 2, 3, 1, 1, 0, 0, 0], [3, 3, 3, 3, 3, 3, 3, 3]]
    x = torch.stack([torch.stack([torch.nn.functional.one_hot(torch.tensor(axis[c]), 4).float() * (1 + 0.1 * t)
                                  for t, c in enumerate(p)]) for p in paths])  # (3, 8, 4)
    x[2, 5] = torch.tensor([0.9, 0.0, 0.0, 1.0])  # the all-blank clip's least blank frame leans to token 9
    lengths = torch.tensor([8, 5, 8])
    rows = head.embedding.weight
    hard, n = ctc_compress(head, x, lengths, "hard")
    assert n.tolist() == [3, 2, 1] and hard.shape == (3, 3, 4)
    assert torch.equal(hard[0], rows[[5, 5, 7]]) and torch.equal(hard[1, :2], rows[[9, 7]])
    assert torch.equal(hard[2, :1], rows[[9]]) and not hard[1, 2:].any()
    mean, _ = ctc_compress(head, x, lengths, "mean")
    want = [x[0, 1:3].mean(0), x[0, 4], x[0, 5:7].mean(0)]
    assert torch.allclose(mean[0], torch.stack(want)) and torch.allclose(mean[1, :2], torch.stack([x[1, :2].mean(0), x[1, 3:5].mean(0)]))
    x.requires_grad_(True)
    soft, _ = ctc_compress(head, x, lengths, "soft")
    post = head(x)[..., :3].softmax(-1)  # (B, T, 3) posteriors of the token classes, blank left out
    table = rows[[5, 7, 9]]
    brute = torch.stack([post[0, 1:3].mean(0), post[0, 4], post[0, 5:7].mean(0)]) @ table
    assert torch.allclose(soft[0], brute, atol=1e-6)
    soft.sum().backward()
    assert x.grad[0, 1:3].abs().sum() > 0 and not x.grad[0, 0].any()  # dropped frames get no gradient
    with pytest.raises(ValueError, match="readout"):
        ctc_compress(head, x, lengths, "max")


def test_weighted_layer_sum():
    torch.manual_seed(0)
    layers = [torch.randn(2, 5, 8) * (i + 1) for i in range(3)]
    mix = WeightedLayerSum(3)
    assert torch.allclose(mix(layers), torch.stack(layers).mean(0), atol=1e-6)
    assert torch.allclose(mix(torch.stack(layers)), mix(layers))
    with torch.no_grad():
        mix.logits.copy_(torch.tensor([2.0, -1.0, 0.5]))
    assert mix.weights.sum().item() == pytest.approx(1.0)
    (mix(layers) * torch.randn(2, 5, 8)).sum().backward()
    assert mix.logits.grad is not None and mix.logits.grad.abs().sum() > 0
    normed = WeightedLayerSum(3, norm=True)
    expected = torch.stack([nn.functional.layer_norm(x, (8,)) for x in layers]).mean(0)
    assert torch.allclose(normed(layers), expected, atol=1e-6)
    assert [n for n, _ in normed.named_parameters()] == ["logits"]  # no affine: only the mix learns
    with pytest.raises(ValueError, match="expected 3 layers, got 2"):
        mix(layers[:2])


@pytest.mark.parametrize("layer", [1, 2])
def test_hidden_states_ends_with_forward_output(layer):
    whisper, fe = load_speech_model("tiny-whisper")
    enc = SpeechEncoder(whisper, fe, layer=layer, pool=1)
    mel, lengths = enc.features([tone_speech("hello"), tone_speech("hi")])
    states, frames = enc.hidden_states(mel, lengths)
    hidden, frames_fwd = enc(mel, lengths)
    assert len(states) == layer + 1
    assert all(s.shape == hidden.shape for s in states) and hidden.shape[-1] == enc.dim
    assert torch.equal(states[-1], hidden) and torch.equal(frames, frames_fwd)
    assert not torch.equal(states[0], states[-1])
    assert WeightedLayerSum(layer + 1, norm=True)(states).shape == hidden.shape
