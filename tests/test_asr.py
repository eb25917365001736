"""Whisper transcription: language tokens and decoding on a tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from polyvox.data.languages import FLEURS
from polyvox.models.asr import Transcriber, whisper_language


def test_every_fleurs_language_maps_to_a_whisper_token_or_to_detection() -> None:
    assert whisper_language("fr_fr") == "fr" and whisper_language("cmn_hans_cn") == "zh"
    assert whisper_language("nb_no") == "no" and whisper_language("fil_ph") == "tl"
    assert whisper_language("wo_sn") is None
    mapped = {code: whisper_language(code) for code in FLEURS}
    assert all(tok in LANGUAGES for tok in mapped.values() if tok is not None)
    assert sum(tok is not None for tok in mapped.values()) >= 80


def test_transcriber_decodes_batches_in_order() -> None:
    asr = Transcriber("tiny-whisper", max_new_tokens=1000)
    assert asr.max_new_tokens < asr.model.config.max_target_positions
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 2, 3)]
    together = asr.transcribe(clips, "fr_fr", batch_size=2)
    assert len(together) == 3 and all(isinstance(t, str) for t in together)
    assert together == [asr.transcribe([c], "fr_fr")[0] for c in clips]


def test_detect_language_is_the_argmax_of_whisper_language_tokens() -> None:
    import torch

    asr = Transcriber("tiny-whisper")
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 2, 3)]
    candidates = ["fr_fr", "de_de", "pl_pl", "cmn_hans_cn", "wo_sn"]  # Whisper has no Wolof token
    found = asr.detect_language(clips, candidates, batch_size=2)
    tokens = asr.tokenizer.convert_tokens_to_ids(["<|fr|>", "<|de|>", "<|pl|>", "<|zh|>"])
    for clip, (code, p) in zip(clips, found):
        feats = asr.features([clip], sampling_rate=16000, return_tensors="pt").input_features
        start = torch.tensor([[asr.model.generation_config.decoder_start_token_id]])
        with torch.no_grad():
            logits = asr.model(input_features=feats, decoder_input_ids=start).logits[0, -1, tokens]
        probs = logits.softmax(-1)
        assert code == candidates[int(probs.argmax())] and p == pytest.approx(float(probs.max()), abs=1e-5)
    alone = [asr.detect_language([c], candidates)[0] for c in clips]  # batch-independent
    assert [c for c, _ in found] == [c for c, _ in alone] and np.allclose([p for _, p in found], [p for _, p in alone])
    assert all(code in FLEURS and 0 < p <= 1 for code, p in asr.detect_language(clips[:1]))
