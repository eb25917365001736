"""Frozen Whisper encoder that runs on each clip's real length instead of a 30 s window."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polyvox.audio import SAMPLE_RATE
from polyvox.models.sources import load_speech_model

WHISPER_WINDOW_S = 30


class SpeechEncoder(nn.Module):
    """Audio -> hidden states of one Whisper encoder layer, pooled in time.

    Whisper's encoder is trained on 30 s windows; its convolution and attention work on any shorter
    input once the sinusoidal position table is sliced to the input length. Padding frames of a batch
    are masked out of attention, so a clip's features do not depend on what it is batched with.

    Args:
        whisper: a `WhisperForConditionalGeneration` or `WhisperModel` (only the encoder is used).
        feature_extractor: the matching `WhisperFeatureExtractor` (log-mel, 100 frames/s).
        layer: 1-based encoder layer to read; the last layer includes the final LayerNorm.
        pool: average-pool this many 50 Hz frames into one.
        pad_to_30s: pad every clip to 30 s and attend over the padding, as Whisper was trained.
    """

    def __init__(self, whisper: nn.Module, feature_extractor, layer: int, pool: int = 2, pad_to_30s: bool = False):
        super().__init__()
        self.encoder = whisper.get_encoder()
        n = len(self.encoder.layers)
        if not 1 <= layer <= n:
            raise ValueError(f"layer must be in 1..{n} for this encoder, got {layer}")
        self.feature_extractor = feature_extractor
        self.layer, self.pool, self.pad_to_30s = layer, pool, pad_to_30s
        self.requires_grad_(False).eval()

    @classmethod
    def load(cls, name: str, layer: int, pool: int = 2, pad_to_30s: bool = False) -> SpeechEncoder:
        """The encoder of a named model (a preset, a folder, a hub id; see `polyvox.models.sources`)."""
        whisper, fe = load_speech_model(name)
        return cls(whisper, fe, layer=layer, pool=pool, pad_to_30s=pad_to_30s)

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    def features(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features, shape (B, n_mels, T) with T even, and valid mel lengths (B,).

        Without 30 s padding each clip's log-mel is computed on its own (its last frames would otherwise see
        the batch's padding) and frames past its length are zero.
        """
        hop = self.feature_extractor.hop_length
        max_len = WHISPER_WINDOW_S * SAMPLE_RATE
        if any(len(w) > max_len for w in wavs):
            raise ValueError(f"clips longer than {WHISPER_WINDOW_S} s are not supported; cut them first")
        lengths = torch.tensor([min(len(w) // hop, max_len // hop) for w in wavs])
        lengths = lengths + lengths % 2  # the stride-2 conv halves T
        wavs = [np.asarray(w, dtype=np.float32) for w in wavs]
        with torch.autocast("cpu", enabled=False):  # the extractor's STFT is float32 numpy work, even in a bf16 step
            return self._mel(wavs, lengths)

    def _mel(self, wavs: list[np.ndarray], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pad_to_30s:
            mel = self.feature_extractor(wavs, sampling_rate=SAMPLE_RATE, padding="max_length", return_tensors="pt",
                                         truncation=True)["input_features"]  # (B, n_mels, 3000)
            return mel, lengths
        mel = torch.zeros(len(wavs), self.feature_extractor.feature_size, int(lengths.max()))  # (B, n_mels, T)
        for i, (w, n) in enumerate(zip(wavs, lengths.tolist())):
            one = self.feature_extractor([w], sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="pt",
                                         truncation=True)["input_features"][0]  # (n_mels, ~n)
            one = one[:, :n]
            mel[i, :, : one.shape[-1]] = one
        return mel, lengths

    @torch.no_grad()
    def hidden_states(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encode log-mels and keep every layer up to `layer` (for a learned weighted sum of layers).

        Args:
            mel: (B, n_mels, T) log-mel features.
            lengths: (B,) valid mel frames of each clip.

        Returns:
            hidden: `layer + 1` tensors (B, T', D), pooled like `forward`: the conv stem's output (with
                positions added, the input of layer 1), then the output of each layer 1..`layer`; the last
                is after the final LayerNorm when `layer` is the top layer, so it equals `forward`'s output.
            frames: (B,) valid output frames of each clip.
        """
        return self._encode(mel, lengths, keep_all=True)

    def _encode(self, mel: torch.Tensor, lengths: torch.Tensor,
                keep_all: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The conv stem and layers 1..`layer`; returns every state (`keep_all`) or only the last, pooled."""
        enc = self.encoder
        mel = mel.to(enc.conv1.weight.dtype)
        valid = None if self.pad_to_30s else (torch.arange(mel.shape[-1], device=mel.device)[None, :]
                                              < lengths.to(mel.device)[:, None])[:, None, :]  # (B, 1, T)
        if valid is not None:  # a clip alone is zero-padded by the convolutions: make a batch look the same
            mel = mel * valid
        x = F.gelu(enc.conv1(mel))
        if valid is not None:
            x = x * valid
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T/2, D)
        t = x.shape[1]
        x = x + enc.embed_positions.weight[:t]
        frames = (lengths + 1) // 2
        mask = None
        if not self.pad_to_30s:
            keep = torch.arange(t, device=x.device)[None, :] < frames.to(x.device)[:, None]  # (B, T/2)
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
            mask = mask[:, None, None, :]  # (B, 1, 1, T/2) additive key mask
        states = [x]
        for layer in enc.layers[: self.layer]:
            x = layer(x, attention_mask=mask)
            states = [*states, x] if keep_all else [x]
        if self.layer == len(enc.layers):
            states[-1] = enc.layer_norm(x)
        if self.pool > 1:
            t_pooled = t // self.pool
            states = [s[:, : t_pooled * self.pool].reshape(s.shape[0], t_pooled, self.pool, -1).mean(2)
                      for s in states]  # each (B, T', D)
            frames = (frames // self.pool).clamp(min=1)
        return states, frames

    @torch.no_grad()
    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode log-mels.

        Args:
            mel: (B, n_mels, T) log-mel features.
            lengths: (B,) valid mel frames of each clip.

        Returns:
            hidden: (B, T', D) pooled features of `layer`, T' = T / 2 / pool.
            frames: (B,) valid output frames of each clip.
        """
        states, frames = self._encode(mel, lengths, keep_all=False)
        return states[-1], frames

    def encode(self, wavs: list[np.ndarray]) -> list[torch.Tensor]:
        """Encode a batch of 16 kHz clips; returns one (T_i, D) tensor per clip, padding removed."""
        mel, lengths = self.features(wavs)
        hidden, frames = self(mel, lengths)
        return [h[:n] for h, n in zip(hidden, frames.tolist())]
