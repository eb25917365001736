"""Audio I/O: load any soundfile-readable file as 16 kHz mono float32, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
MIN_CLIP_S = 0.1
"""Shorter clips are refused where a user gives them (the command line, the server): too short for the encoder."""


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file."""


class AudioFormatError(AudioError):
    """Bytes that are not audio in an accepted format."""


class AudioTooLongError(AudioError):
    """Audio longer than allowed."""


def to_mono_16k(wav: np.ndarray, sr: int, where: str = "<array>") -> np.ndarray:
    """Mix to mono, resample to 16 kHz with soxr, and check the result: empty or non-finite audio is refused, and
    audio whose peak is beyond full scale (a float file of another scale) is normalised to a peak of 1.

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
    peak = float(np.abs(wav).max())
    if peak > 1.0:  # float files may hold any scale (int16 values, gain, garbage): bring the peak to full scale
        wav = wav / peak
    if sr != SAMPLE_RATE:
        wav = soxr.resample(wav, sr, SAMPLE_RATE).astype(np.float32)
    return wav


def load_audio(path: str | Path, where: str | None = None, min_seconds: float = 0.0) -> np.ndarray:
    """Load an audio file as 16 kHz mono float32, shape (T,).

    Raises:
        AudioError: missing, unreadable, corrupt or empty file, NaN samples, or shorter than `min_seconds`; the
            message names the file.
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
    wav = to_mono_16k(wav, sr, where)
    if len(wav) < min_seconds * SAMPLE_RATE:
        raise AudioError(f"{where}: the clip is {len(wav) / SAMPLE_RATE:.2f} s long; at least {min_seconds:g} s is needed")
    return wav


def decode_audio(data: bytes, where: str = "<upload>", formats: tuple[str, ...] | None = None,
                 max_seconds: float | None = None) -> np.ndarray:
    """Decode an audio file held in memory as 16 kHz mono float32, shape (T,).

    Args:
        formats: accepted soundfile container names (``WAV``, ``FLAC``, ``OGG``, ``MP3`` …); None accepts any.
        max_seconds: longer audio is refused from its header, before it is decoded.

    Raises:
        AudioFormatError: not decodable, or not in `formats`. AudioTooLongError: over `max_seconds`.
        AudioError: empty, or NaN samples.
    """
    import io

    import soundfile as sf

    if not data:
        raise AudioError(f"{where}: the audio file is empty")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # LibsndfileError / RuntimeError / TypeError
        raise AudioFormatError(f"{where}: cannot decode the audio (not a known audio format, or corrupt)") from None
    if formats is not None and info.format not in formats:
        raise AudioFormatError(f"{where}: {info.format} audio is not accepted; send one of {', '.join(formats)}")
    if max_seconds is not None and info.duration > max_seconds:
        raise AudioTooLongError(f"{where}: the audio is {info.duration:.1f} s long; the limit is {max_seconds:g} s")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as e:
        raise AudioFormatError(f"{where}: cannot decode the audio ({e})") from None
    return to_mono_16k(wav, sr, where)


def write_flac(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write mono audio as 16-bit FLAC (parent folders are created)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wav, -1.0, 1.0), sr, format="FLAC", subtype="PCM_16")
