"""Speech recognition with a Whisper model: greedy transcripts in a given language.

Used to sanity-check synthetic speech (is the eSpeak clip intelligible?) and as the first half of
cascade baselines (ASR, then text models).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from polyvox.audio import SAMPLE_RATE
from polyvox.data.languages import FLEURS, check_lang
from polyvox.models.sources import fingerprint, load_speech_model, load_speech_tokenizer

log = logging.getLogger(__name__)

# FLEURS code -> Whisper language token, where the ISO 639-1 prefix is not the token Whisper uses.
_WHISPER_SPECIAL: dict[str, str | None] = {
    "cmn_hans_cn": "zh", "yue_hant_hk": "yue", "fil_ph": "tl", "nb_no": "no", "jv_id": "jw",
    "ast_es": None, "ceb_ph": None, "ckb_iq": None, "ff_sn": None, "ga_ie": None, "ig_ng": None,
    "kam_ke": None, "kea_cv": None, "ky_kg": None, "lg_ug": None, "luo_ke": None, "nso_za": None,
    "ny_mw": None, "om_et": None, "or_in": None, "umb_ao": None, "wo_sn": None, "xh_za": None, "zu_za": None,
}


def whisper_language(lang: str) -> str | None:
    """Whisper's language token (without ``<|…|>``) for a FLEURS code, or None if Whisper lacks it."""
    lang = check_lang(lang)
    return _WHISPER_SPECIAL[lang] if lang in _WHISPER_SPECIAL else lang.split("_")[0]


class Transcriber:
    """Greedy Whisper transcription of 16 kHz clips, batched, with the language forced when Whisper knows it."""

    def __init__(self, model: str = "whisper-base", cache_dir: str | Path | None = None, max_new_tokens: int = 128):
        """Load the model (a preset, a local directory or a hub id; see `load_speech_model`)."""
        self.model, self.features = load_speech_model(model, cache_dir)
        self.tokenizer = load_speech_tokenizer(model, cache_dir)
        # the decoder's position table bounds prompt (4 tokens) + generated tokens
        self.max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - 5)
        self.key = f"{fingerprint(model)}|greedy|{self.max_new_tokens}"
        """What its transcripts depend on besides the clip (keys cached cascade answers)."""

    @torch.no_grad()
    def detect_language(self, clips: Sequence[np.ndarray], candidates: Sequence[str] | None = None,
                        batch_size: int = 8) -> list[tuple[str, float]]:
        """The most likely FLEURS language of each clip and its probability, from Whisper's language token
        after ``<|startoftranscript|>``, normalised over `candidates` (FLEURS codes; default every language
        Whisper knows). Languages Whisper lacks cannot be detected."""
        codes = [c for c in (candidates or FLEURS) if whisper_language(c) is not None]
        if not codes:
            raise ValueError("Whisper knows none of the candidate languages")
        token_ids = torch.tensor(self.tokenizer.convert_tokens_to_ids([f"<|{whisper_language(c)}|>" for c in codes]))
        start = self.model.generation_config.decoder_start_token_id
        out: list[tuple[str, float]] = []
        for s in range(0, len(clips), batch_size):
            batch = [np.asarray(c, dtype=np.float32) for c in clips[s : s + batch_size]]
            feats = self.features(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features  # (B, 80, 3000)
            prompt = torch.full((len(batch), 1), start)
            logits = self.model(input_features=feats, decoder_input_ids=prompt).logits[:, -1]  # (B, V)
            probs = logits[:, token_ids].softmax(-1)  # (B, C)
            best = probs.argmax(-1)
            out += [(codes[i], float(probs[b, i])) for b, i in enumerate(best.tolist())]
        return out

    @torch.no_grad()
    def transcribe(self, clips: Sequence[np.ndarray], lang: str, batch_size: int = 8) -> list[str]:
        """Transcripts of `clips` (1-D float32 arrays at 16 kHz, at most 30 s) spoken in `lang`.

        Languages Whisper does not know are decoded with language detection.
        """
        language = whisper_language(lang)
        if language is None:
            log.info("Whisper has no %s token; detecting the language instead", lang)
        out: list[str] = []
        for s in range(0, len(clips), batch_size):
            batch = [np.asarray(c, dtype=np.float32) for c in clips[s : s + batch_size]]
            feats = self.features(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features  # (B, 80, 3000)
            ids = self.model.generate(feats, language=language, task="transcribe", max_new_tokens=self.max_new_tokens)
            out += [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out
