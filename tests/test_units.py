import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tone_speech

from polyvox.audio import AudioError, load_audio
from polyvox.data.manifest import read_manifest
from polyvox.models.sources import fingerprint, load_speech_model
from polyvox.models.speech_encoder import SpeechEncoder
from polyvox.models.units import UnitSpec, UnitTokenizer, encode_units, fit_units


def encoder(pad=False, layer=2):
    whisper, fe = load_speech_model("tiny-whisper")
    return SpeechEncoder(whisper, fe, layer=layer, pool=2, pad_to_30s=pad)


def spec(k=8):
    return UnitSpec("tiny-whisper", fingerprint("tiny-whisper"), 2, 2, False, False, k)


def test_variable_length_and_padded_agree():
    wavs = [tone_speech("hello world"), tone_speech("a much longer sentence than the first one")]
    var, pad = encoder().encode(wavs), encoder(pad=True).encode(wavs)
    for v, p, w in zip(var, pad, wavs):
        assert v.shape == p.shape
        assert v.shape[0] == pytest.approx(len(w) / 16000 * 25, abs=1)  # 25 frames/s after pooling
        cos = torch.nn.functional.cosine_similarity(v, p, dim=-1)
        assert cos.mean() > 0.99 and cos.min() > 0.95


def test_batching_does_not_change_features():
    wavs = [tone_speech("short"), tone_speech("a longer clip to pad against")]
    enc = encoder()
    alone, batched = enc.encode(wavs[:1])[0], enc.encode(wavs)[0]
    assert torch.allclose(alone, batched, atol=1e-5)


def test_kmeans_deterministic_and_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((50, 16)).astype(np.float32) + c for c in range(4)]
    a = UnitTokenizer.fit(feats, spec(), iters=10, seed=3)
    b = UnitTokenizer.fit(feats, spec(), iters=10, seed=3)
    assert np.array_equal(a.centroids, b.centroids)
    assert a.fingerprint == b.fingerprint
    a.save(tmp_path / "u")
    c = UnitTokenizer.load(tmp_path / "u")
    assert np.array_equal(c.centroids, a.centroids) and c.spec == a.spec
    x = rng.standard_normal((30, 16)).astype(np.float32)
    assert np.array_equal(a(x), c(x))
    # nearest centroid, checked by brute force
    brute = ((x[:, None, :] - a.centroids[None]) ** 2).sum(-1).argmin(1)
    assert np.array_equal(a(x), brute)


def test_dedup_collapses_runs():
    tok = UnitTokenizer(np.array([[0.0], [10.0]], dtype=np.float32), UnitSpec("x", "x", 1, 1, False, True, 2))
    assert tok(np.array([[0.1], [0.2], [9.0], [9.5], [0.0]], dtype=np.float32)).tolist() == [0, 1, 0]


def test_encode_skips_and_reports_bad_lines(tiny_corpus, tmp_path):
    root = tiny_corpus.parent
    utts = read_manifest(tiny_corpus)
    (root / utts[1].audio).write_bytes(b"not audio at all")  # corrupt
    (root / utts[2].audio).write_bytes(b"")  # empty
    (root / utts[3].audio).unlink()  # missing
    enc = encoder()
    tok, bad_fit = fit_units(utts, root, enc, spec(), iters=5)
    units, bad = encode_units(utts, root, enc, tok, cache_dir=tmp_path / "cache")
    assert sorted(b.id for b in bad) == sorted(u.id for u in utts[1:4])
    assert all(u.id in b.error for b, u in zip(sorted(bad, key=lambda b: b.id), sorted(utts[1:4], key=lambda u: u.id)))
    assert "not found" in next(b.error for b in bad if b.id == utts[3].id)
    assert len(units) == len(utts) - 3
    assert all(0 <= x < 8 for seq in units.values() for x in seq)
    # the cache answers a second call without running the encoder
    again, bad2 = encode_units(utts[4:], root, None, tok, cache_dir=tmp_path / "cache")
    assert bad2 == [] and again == {u.id: units[u.id] for u in utts[4:]}
    rows = [json.loads(x) for x in (tmp_path / "cache" / f"units-{tok.fingerprint}.jsonl").read_text().splitlines()]
    assert len(rows) == len(utts) - 3
    # audio that changed under the same id and path is encoded again, never answered from the cache
    (root / utts[4].audio).write_bytes(b"replaced")
    again, bad3 = encode_units(utts[4:], root, enc, tok, cache_dir=tmp_path / "cache")
    assert [b.id for b in bad3] == [utts[4].id] and utts[4].id not in again and len(again) == len(utts) - 5


def test_load_audio_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(bad)
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.flac")


def test_feature_tokenizer_cache_and_streaming_chunks(tiny_corpus, tmp_path):
    """Continuous features: equal to the encoder's output, cached in safetensors shards that a second run
    reads instead of encoding, and the same whatever the audio chunk size."""
    from polyvox.models.units import CachedFeatures, FeatureTokenizer, iter_features, load_speech_tokenizer

    utts = read_manifest(tiny_corpus)
    root = tiny_corpus.parent
    enc = encoder()
    tok = FeatureTokenizer(UnitSpec("tiny-whisper", fingerprint("tiny-whisper"), 2, 2, False, False, 0,
                                    kind="features"), enc.dim)
    tok.save(tmp_path / "u")
    again = load_speech_tokenizer(tmp_path / "u")
    assert isinstance(again, FeatureTokenizer) and again.fingerprint == tok.fingerprint
    feats, bad = encode_units(utts, root, enc, tok, tmp_path / "cache", batch_size=4)
    assert not bad and len(feats) == len(utts)
    assert isinstance(feats, CachedFeatures) and list(feats) == [u.id for u in utts]  # read from disk when asked
    assert list((tmp_path / "cache").glob("features-*/*.safetensors"))
    ref = {u.id: f for u, f, _ in iter_features(utts, root, enc, batch_size=32, chunk=len(utts))}
    small = {u.id: f for u, f, _ in iter_features(utts, root, enc, batch_size=2, chunk=3)}
    for u in utts:
        assert feats[u.id].dtype == np.float16 and feats[u.id].shape == ref[u.id].shape
        assert np.allclose(feats[u.id], ref[u.id], atol=1e-2) and np.allclose(small[u.id], ref[u.id], atol=1e-5)

    class NoEncoder:
        def encode(self, wavs):
            raise AssertionError("cached features must not be re-encoded")

    cached, _ = encode_units(utts, root, NoEncoder(), tok, tmp_path / "cache")
    assert all(np.array_equal(cached[u.id], feats[u.id]) for u in utts)
    # a moved corpus (the same bytes under another folder, path and id) is served from the cache too
    shutil.copytree(root, tmp_path / "moved")
    moved = [dataclasses.replace(u, id=f"moved/{u.id}", audio=str((tmp_path / "moved" / u.audio).resolve()))
             for u in utts]
    cached, bad = encode_units(moved, tmp_path / "elsewhere", NoEncoder(), tok, tmp_path / "cache")
    assert not bad and all(np.array_equal(cached[m.id], feats[u.id]) for m, u in zip(moved, utts))


def test_feature_cache_reads_entries_under_the_older_id_path_digest_keys(tiny_corpus, tmp_path):
    """A cache written when keys were ``id<TAB>path<TAB>digest`` still answers: by the audio's digest."""
    from safetensors.numpy import save_file

    from polyvox.models.units import FeatureTokenizer

    u = read_manifest(tiny_corpus)[0]
    tok = FeatureTokenizer(UnitSpec("tiny-whisper", fingerprint("tiny-whisper"), 2, 2, False, False, 0,
                                    kind="features"), 64)
    digest = hashlib.blake2b((tiny_corpus.parent / u.audio).read_bytes(), digest_size=8).hexdigest()
    old = np.arange(12, dtype=np.float16).reshape(3, 4)
    (tmp_path / "cache" / f"features-{tok.fingerprint}").mkdir(parents=True)
    save_file({f"{u.id}\t{u.audio}\t{digest}": old}, tmp_path / "cache" / f"features-{tok.fingerprint}" / "000000.safetensors")
    got, bad = encode_units([u], tiny_corpus.parent, None, tok, tmp_path / "cache")
    assert not bad and np.array_equal(got[u.id], old)
    # and so does a unit-id (k-means) cache row
    units = fit_units([u], tiny_corpus.parent, encoder(), spec(k=2), iters=1)[0]
    (tmp_path / "cache" / f"units-{units.fingerprint}.jsonl").write_text(
        json.dumps({"key": f"{u.id}\t{u.audio}\t{digest}", "units": [1, 0, 1]}) + "\n")
    got, bad = encode_units([u], tiny_corpus.parent, None, units, tmp_path / "cache")
    assert not bad and got == {u.id: [1, 0, 1]}
