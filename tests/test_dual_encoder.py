import numpy as np
import pytest
import torch
import torch.nn.functional as F

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
    x = model.tokenize_speech([[0, 31]], ["fr_fr"])
    assert x.kind == "units" and x.content == [[0, 31]]
    assert model.tokenizer.decode(x.prefix[0], skip_special_tokens=True) == "French speech: "
    # the original text-embedding rows stay frozen by default; the new audio rows train
    assert not model.backbone.get_input_embeddings().weight.requires_grad and model.audio_embed.requires_grad


def test_padding_does_not_change_embeddings():
    model = tiny_model().eval()
    with torch.no_grad():
        alone = model.encode_speech([[1, 2, 3]], "fr_fr")
        padded = model.encode_speech([[1, 2, 3], list(range(30))], "fr_fr")[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_direct_speech_path_on_audio_units():
    """With `speech_direct`, a units model adds the mean and max of a clip's audio rows: an item embeds the same
    alone or padded in a batch, and a single item in training mode uses the running statistics."""
    cfg = ModelConfig(backbone="tiny-gemma3", proj_dim=32, max_speech_tokens=64, speech_direct="inputs")
    backbone, tok = load_backbone(cfg, 0)
    model = DualEncoder(backbone, tok, 32, cfg, 0)
    model.encode_speech([[1, 2, 3], [4, 5, 6, 7]], "fr_fr").sum().backward()
    assert model.speech_direct[1].weight.grad.abs().sum() > 0 and model.audio_embed.grad.abs().sum() > 0
    assert model.encode_speech([[1, 2, 3]], "fr_fr").shape == (1, 32)  # training mode, one item
    model.eval()
    with torch.no_grad():
        alone = model.encode_speech([[1, 2, 3]], "fr_fr")
        padded = model.encode_speech([[1, 2, 3], list(range(30))], "fr_fr")[:1]
        model.speech_direct[1].weight.zero_()
        model.speech_direct[1].bias.zero_()
        without = model.encode_speech([[1, 2, 3]], "fr_fr")
    assert torch.allclose(alone, padded, atol=1e-5)
    assert not torch.allclose(alone, without, atol=1e-3)  # the path changes the embedding


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
    model = tiny_model()
    with pytest.raises(ValueError, match="empty text at position"):
        model.encode_text(["ok", "  "], "fr_fr")
    with pytest.raises(ValueError, match="unknown language code"):
        model.encode_text(["ok"], "klingon")
    with pytest.raises(ValueError, match=r"unit ids at position 0 must be in 0..31"):
        model.encode_speech([[40]], "fr_fr")
    with pytest.raises(ValueError, match="empty unit sequence"):
        model.encode_speech([[]], "fr_fr")


FEAT_CFG = ModelConfig(backbone="tiny-gemma3", proj_dim=32, pooling="content", standardize=True, spelling_buckets=512,
                       text_ngram_buckets=512, speech_direct="frames", adapter_hidden=16, adapter_stride=2,
                       adapter_dropout=0.0)


def feature_model(seed=0):
    backbone, tok = load_backbone(FEAT_CFG, seed)
    return DualEncoder(backbone, tok, 0, FEAT_CFG, seed, feature_dim=12)


def test_continuous_features_overfit_and_round_trip(tmp_path):
    """Continuous speech frames through the conv adapter, content pooling, per-modality standardisation,
    spelling features, the text n-gram sketch and the direct speech path: 16 pairs are learned both ways, and a saved model (running
    statistics included) embeds exactly as before."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(["red", "green", "blue", "cat", "dog", "sun"], 3)) + f" {i}" for i in range(16)]
    feats = [rng.standard_normal((int(rng.integers(6, 20)), 12)).astype(np.float32) for _ in texts]
    model = feature_model()
    model.text_ngrams.fit_tfidf([model.text_ngrams.ngram_ids(t) for t in texts])
    initial = model.text_ngrams.table.weight.detach().clone()
    assert model.audio_embed is None and model.tokenize_speech(feats, ["de_de"] * 16).kind == "features"
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(60):
        loss = contrastive_loss(model.encode_speech(feats, "de_de"), model.encode_text(texts, "de_de"), 20.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        text = model.encode_text(texts, "de_de")
        scores = (model.encode_speech(feats, "de_de") @ text.T).numpy()
        alone = (model.encode_speech(feats[:1], "de_de") @ text.T).numpy()
    assert recall_at_k(scores, list(range(16)), (1,))["R@1"] == 1.0
    assert np.allclose(scores[0], alone[0], atol=1e-5)  # an item's embedding does not depend on its batch
    assert model.spelling.out.weight.abs().sum() > 0  # spelling features were learned
    sketch = model.text_ngrams.table.weight.detach().clone()
    assert not torch.equal(sketch, initial)  # the sketch trains
    model.save(tmp_path / "m")
    again = DualEncoder.load(tmp_path / "m")
    assert torch.equal(again.pool_norm["speech"].running_mean, model.pool_norm["speech"].running_mean)
    assert torch.equal(again.speech_direct[0].running_var, model.speech_direct[0].running_var)
    assert model.speech_direct[0].running_var.ne(1).any()  # its statistics were learned too
    with torch.no_grad():
        assert torch.allclose(again.encode_speech(feats[:3], "de_de"), model.encode_speech(feats[:3], "de_de"), atol=1e-5)
        assert torch.allclose(again.encode_text(texts[:3], "de_de"), text[:3], atol=1e-5)
    assert torch.equal(again.text_ngrams.table.weight, sketch)  # the trained bag is saved, not re-drawn
    assert torch.equal(again.text_ngrams.idf, model.text_ngrams.idf) and model.text_ngrams.idf.ne(1).any()


def test_concatenated_direct_paths_weigh_each_cosine():
    """With `direct_weight` w, an embedding is the LLM path and the direct path, each L2-normalised, scaled by
    sqrt(1 - w) and sqrt(w): a similarity is (1 - w) cos(LLM) + w cos(direct), whatever the paths' sizes."""
    cfg = ModelConfig(**{**FEAT_CFG.__dict__, "direct_weight": 0.75, "direct_dim": 20})
    backbone, tok = load_backbone(cfg, 0)
    model = DualEncoder(backbone, tok, 0, cfg, 0, feature_dim=12).eval()
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((int(rng.integers(6, 20)), 12)).astype(np.float32) for _ in range(3)]
    with torch.no_grad():
        s, t = model.encode_speech(feats, "de_de"), model.encode_text(["rot", "blau", "gruen"], "de_de")
        model.proj.weight.mul_(7.0)  # the LLM path's scale does not matter
        model.proj.bias.mul_(7.0)
        assert torch.allclose(model.encode_speech(feats, "de_de"), s, atol=1e-5)
    assert s.shape == t.shape == (3, 32 + 20) == (3, model.embed_dim)
    for e in (s, t):
        assert torch.allclose(e[:, :32].norm(dim=-1) ** 2, torch.full((3,), 0.25), atol=1e-5)
        assert torch.allclose(e[:, 32:].norm(dim=-1) ** 2, torch.full((3,), 0.75), atol=1e-5)
    with pytest.raises(ValueError, match="direct_weight must be in"):
        DualEncoder(backbone, tok, 0, ModelConfig(**{**cfg.__dict__, "speech_direct": ""}), 0, feature_dim=12)


def test_text_ngram_bag_after_fit_tfidf_is_the_tfidf_projection():
    """With rank >= the number of texts, the truncated-SVD basis keeps every inner product: the bags' Gram
    matrix equals the one of TF-IDF vectors computed by hand (smoothed idf, L2-normalised rows)."""
    from polyvox.models.dual_encoder import TextNgrams

    texts = ["le chat dort", "le chien dort", "un chat noir", "la maison", "chat", "une maison noire"]
    bag = TextNgrams(97, 16, rank=16)
    ids = [bag.ngram_ids(t) for t in texts]
    bag.fit_tfidf(ids)
    counts = np.zeros((len(texts), 97))
    for i, b in enumerate(ids):
        for j in b:
            counts[i, j] += 1
    idf = np.log((1 + len(texts)) / (1 + (counts > 0).sum(0))) + 1
    tfidf = counts * idf  # counts are 0/1: a bag holds distinct buckets
    tfidf /= np.linalg.norm(tfidf, axis=1, keepdims=True)
    with torch.no_grad():
        out = bag(ids, "cpu").double().numpy()
    assert np.allclose(bag.idf.numpy(), idf, atol=1e-5)
    assert np.allclose(out @ out.T, tfidf @ tfidf.T, atol=1e-4)


def test_closed_form_init_starts_from_the_linear_probe():
    """Frames that spell their text (one fixed vector per letter, plus noise) are matched to their transcripts
    right after `closed_form_init`, with no training step; before it, at chance. The LLM path starts at zero."""
    rng = np.random.default_rng(0)
    letters = {c: rng.standard_normal(12) for c in "abcdefghijklmnopqrstuvwxyz "}
    words = ["rot", "gruen", "blau", "katze", "hund", "sonne", "mond", "baum", "fluss", "stein", "vogel", "fisch"]
    texts = list(dict.fromkeys(" ".join(rng.choice(words, 3)) for _ in range(80)))
    feats = [np.stack([letters[c] + 0.3 * rng.standard_normal(12) for c in t]).astype(np.float32) for t in texts]
    model = feature_model().eval()

    def recall():
        with torch.no_grad():
            scores = (model.encode_speech(feats, "de_de") @ model.encode_text(texts, "de_de").T).numpy()
        return recall_at_k(scores, list(range(len(texts))), (1,))["R@1"]

    before = recall()
    model.closed_form_init(feats, texts, alpha=1.0)
    assert before < 0.1 and recall() > 0.8
    assert model.proj.weight.abs().sum() == 0
    with pytest.raises(ValueError, match="needs model.text_ngram_buckets and model.speech_direct"):
        tiny_model().closed_form_init([[1, 2]], ["ab"])


def test_spelling_ngrams_are_shared_by_tokens_with_the_same_letters():
    from polyvox.models.dual_encoder import Spelling

    s = Spelling(1 << 16, 8, orders=3)
    a, b = set(s.ngram_ids("\u2581Farbe")), set(s.ngram_ids("farben"))
    assert len(s.ngram_ids("ab")) == 3  # a, b, ab
    assert len(a & b) >= 9 and a != b  # " farbe" and "farben" share f, a, r, b, e, fa, ar, rb, be, far, arb, rbe


def test_feature_inputs_get_clear_errors():
    model = feature_model()
    with pytest.raises(ValueError, match=r"features at position 1 must be \(T, 12\)"):
        model.encode_speech([np.zeros((4, 12)), np.zeros((4, 5))], "fr_fr")
    with pytest.raises(ValueError, match="features at position 0 are not finite"):
        model.encode_speech([np.full((4, 12), np.nan)], "fr_fr")


def test_text_ngram_sketch_ranks_texts_by_shared_letters_from_the_start():
    """The whole-text n-gram bag: ids are the distinct hashed 1..n-grams, spaces included; untrained, a text is
    closer to one sharing most of its n-grams than to an unrelated one."""
    from polyvox.models.dual_encoder import TextNgrams, char_ngram_ids

    assert len(char_ngram_ids("ABab", 2, 1 << 20)) == 4  # a, b, ab, ba (lower-cased, distinct)
    bag = TextNgrams(1 << 16, 32, orders=3)
    # " a b ": ' ', a, b; ' a', 'a ', ' b', 'b '; ' a ', 'a b', ' b ' (runs of spaces collapsed)
    assert bag.ngram_ids("a  b") == char_ngram_ids(" a b ", 3, 1 << 16) and len(bag.ngram_ids("a  b")) == 10
    texts = ["le chat noir dort", "le chat noir dors", "un bateau rouge passe"]
    e = F.normalize(bag([bag.ngram_ids(t) for t in texts], "cpu"), dim=-1)
    assert float(e[0] @ e[1]) > 0.8 > float(e[0] @ e[2])
