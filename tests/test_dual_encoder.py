import numpy as np
import torch

from polyvox.config import ModelConfig
from polyvox.eval.metrics import recall_at_k
from polyvox.losses import contrastive_loss
from polyvox.models.dual_encoder import DualEncoder, load_backbone

CFG = ModelConfig(backbone="tiny-gemma3", proj_dim=32, max_speech_tokens=64)


def tiny_model(num_units=32, seed=0):
    backbone, tok = load_backbone(CFG, seed)
    return DualEncoder(backbone, tok, num_units, CFG, seed)


def test_shapes_normalisation_and_audio_rows():
    model = tiny_model()
    s = model.encode_speech([[1, 2, 3], [4, 5]], "fr_fr")
    t = model.encode_text(["bonjour", "le fichier est introuvable"], "fr_fr")
    assert s.shape == t.shape == (2, 32)
    assert torch.allclose(s.norm(dim=-1), torch.ones(2), atol=1e-5)
    ids = model.tokenize_speech([[0, 31]], ["fr_fr"])[0]
    assert ids[-2:] == [model.vocab_size, model.vocab_size + 31]  # audio unit u is token V + u
    # the original text-embedding rows stay frozen by default; the new audio rows train
    assert not model.backbone.get_input_embeddings().weight.requires_grad and model.audio_embed.requires_grad


def test_padding_does_not_change_embeddings():
    model = tiny_model().eval()
    with torch.no_grad():
        alone = model.encode_speech([[1, 2, 3]], "fr_fr")
        padded = model.encode_speech([[1, 2, 3], list(range(30))], "fr_fr")[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_overfits_16_synthetic_pairs():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    words = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "river", "stone", "bird", "fish"]
    texts = [" ".join(rng.choice(words, 3)) + f" {i}" for i in range(16)]
    units = [list(rng.integers(0, 32, int(rng.integers(8, 20)))) for _ in texts]
    model = tiny_model()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(80):
        s = model.encode_speech(units, "de_de")
        t = model.encode_text(texts, "de_de")
        loss = contrastive_loss(s, t, model.log_scale.exp())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        scores = (model.encode_speech(units, "de_de") @ model.encode_text(texts, "de_de").T).numpy()
    assert losses[-1] < 0.2 * losses[0]
    assert recall_at_k(scores, list(range(16)), (1,))["R@1"] == 1.0
    assert recall_at_k(scores.T, list(range(16)), (1,))["R@1"] == 1.0


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.audio_embed.add_(1.0)
        model.proj.weight.mul_(2.0)
    model.save(tmp_path / "m")
    again = DualEncoder.load(tmp_path / "m")
    x = [[3, 1, 4, 1, 5]]
    with torch.no_grad():
        assert torch.allclose(model.eval().encode_speech(x, "fr_fr"), again.encode_speech(x, "fr_fr"), atol=1e-6)


def test_bad_inputs_get_clear_errors():
    import pytest

    model = tiny_model()
    with pytest.raises(ValueError, match="empty text at position"):
        model.encode_text(["ok", "  "], "fr_fr")
    with pytest.raises(ValueError, match="unknown language code"):
        model.encode_text(["ok"], "klingon")
    with pytest.raises(ValueError, match=r"unit ids at position 0 must be in 0..31"):
        model.encode_speech([[40]], "fr_fr")
    with pytest.raises(ValueError, match="empty unit sequence"):
        model.encode_speech([[]], "fr_fr")
