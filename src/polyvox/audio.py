"""Audio I/O: load any soundfile-readable file as 16 kHz mono float32, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file."""


def to_mono_16k(wav: np.ndarray, sr: int, where: str = "<array>") -> np.ndarray:
    """Mix to mono, resample to 16 kHz with soxr, and check the result.

    Args:
        wav: samples, shape (T,) or (T, C).
        sr: sample rate of `wav` in Hz.
        where: a name for the error messages (a file path, a manifest line).
    """
    import soxr

    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)  # (T, C) -> (T,)
    if wav.ndim != 1:
        raise AudioError(f"{where}: expected 1-D or (samples, channels) audio, got shape {wav.shape}")
    if sr <= 0:
        raise AudioError(f"{where}: invalid sample rate {sr}")
    if wav.size == 0:
        raise AudioError(f"{where}: audio is empty")
    if not np.isfinite(wav).all():
        raise AudioError(f"{where}: audio contains NaN or infinite samples")
    if sr != SAMPLE_RATE:
        wav = soxr.resample(wav, sr, SAMPLE_RATE).astype(np.float32)
    return wav


def load_audio(path: str | Path, where: str | None = None) -> np.ndarray:
    """Load an audio file as 16 kHz mono float32, shape (T,).

    Raises:
        AudioError: missing, unreadable, corrupt or empty file, or NaN samples; the message names the file.
    """
    import soundfile as sf

    path = Path(path)
    where = where or str(path)
    if not path.exists():
        raise AudioError(f"{where}: audio file not found: {path}")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad files
        raise AudioError(f"{where}: cannot decode audio file {path} ({e})") from None
    return to_mono_16k(wav, sr, where)


def write_flac(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono audio as 16-bit FLAC (parent folders are created)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wav, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
