"""Offline speech synthesis with eSpeak NG (through ctypes on the library `espeakng-loader` ships).

eSpeak NG is a formant synthesiser: robotic, but it speaks ~74 FLEURS languages, needs no network
and runs ~1000x faster than real time, so a multilingual benchmark can be spoken in seconds.

Reproducibility: eSpeak keeps state between utterances inside the library (function-level statics
such as the pitch-flutter phase, and its random generator), so the same call made after different
earlier calls gives slightly different audio. `Synthesizer` therefore loads a private copy of the
library and reloads it for every utterance, which makes each clip a pure function of
(text, voice, rate, pitch, seed), whatever the order, the number of processes or which clips
were already on disk.
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
import hashlib
import importlib.util
import logging
import multiprocessing as mp
import multiprocessing.util
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyvox.audio import SAMPLE_RATE, AudioError, to_mono_16k, write_flac
from polyvox.data.languages import check_lang
from polyvox.fileio import sha256_file
from polyvox.progress import Progress

log = logging.getLogger(__name__)

# eSpeak NG API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

DEFAULT_RATE = 175
"""eSpeak's default speaking rate in words per minute."""
DEFAULT_PITCH = 50
"""eSpeak's default base pitch (0-100)."""
RATE_RANGE = (145, 195)
"""Range of speaking rates drawn per utterance (words per minute, inclusive)."""
PITCH_RANGE = (35, 65)
"""Range of base pitches drawn per utterance (inclusive)."""
VOICE_VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
"""eSpeak voice variants (speaker timbres) drawn per utterance."""

ESPEAK_VOICES: dict[str, str] = {
    "af_za": "af", "am_et": "am", "ar_eg": "ar", "as_in": "as", "az_az": "az", "be_by": "be",
    "bg_bg": "bg", "bn_in": "bn", "bs_ba": "bs", "ca_es": "ca", "cmn_hans_cn": "cmn-latn-pinyin",
    "cs_cz": "cs", "cy_gb": "cy", "da_dk": "da", "de_de": "de", "el_gr": "el", "en_us": "en-us",
    "es_419": "es-419", "et_ee": "et", "fa_ir": "fa", "fi_fi": "fi", "fr_fr": "fr", "ga_ie": "ga",
    "gu_in": "gu", "he_il": "he", "hi_in": "hi", "hr_hr": "hr", "hu_hu": "hu", "hy_am": "hy",
    "id_id": "id", "is_is": "is", "it_it": "it", "ja_jp": "ja", "ka_ge": "ka", "kk_kz": "kk",
    "kn_in": "kn", "ko_kr": "ko", "ky_kg": "ky", "lb_lu": "lb", "lt_lt": "lt", "lv_lv": "lv",
    "mi_nz": "mi", "mk_mk": "mk", "ml_in": "ml", "mr_in": "mr", "ms_my": "ms", "mt_mt": "mt",
    "my_mm": "my", "nb_no": "nb", "ne_np": "ne", "nl_nl": "nl", "om_et": "om", "or_in": "or",
    "pa_in": "pa", "pl_pl": "pl", "pt_br": "pt-br", "ro_ro": "ro", "ru_ru": "ru", "sd_in": "sd",
    "sk_sk": "sk", "sl_si": "sl", "sr_rs": "sr", "sv_se": "sv", "sw_ke": "sw", "ta_in": "ta",
    "te_in": "te", "th_th": "th", "tr_tr": "tr", "uk_ua": "uk", "ur_pk": "ur", "uz_uz": "uz",
    "vi_vn": "vi", "yue_hant_hk": "yue",
}
"""FLEURS code -> eSpeak NG voice (language) name."""

MAX_INPUT_CHARS: dict[str, int] = {"my_mm": 150}
"""Longest input per language: eSpeak's Burmese crashes on inputs over ~160 characters."""

# Languages eSpeak has a voice for but cannot read from their usual script.
_UNSPEAKABLE: dict[str, str] = {
    "yue_hant_hk": "eSpeak reads Cantonese only as Jyutping and no romaniser is available",
}


class TTSError(RuntimeError):
    """Synthesis that failed or produced no audio; the message names the utterance."""


# ---------------------------------------------------------------------------------------------
# Text preparation (romanisation for languages eSpeak reads only in Latin script)
# ---------------------------------------------------------------------------------------------

_CJK_PUNCT = str.maketrans({"，": ", ", "。": ". ", "！": "! ", "？": "? ", "：": ": ", "；": "; ", "、": ", "})


def _pinyin(text: str) -> str:
    from pypinyin import Style, lazy_pinyin

    syllables = lazy_pinyin(text.translate(_CJK_PUNCT), style=Style.TONE3, neutral_tone_with_five=True)
    return " ".join(" ".join(s.strip() for s in syllables).split())


@functools.lru_cache(maxsize=1)
def _kakasi() -> Any:
    import pykakasi

    return pykakasi.kakasi()


def _kana(text: str) -> str:
    # eSpeak's ja voice reads kana but calls every kanji "Chinese letter"; hiragana words separated by
    # spaces are read with the right prosody (joined kana runs words together).
    words = [w["hira"].strip() for w in _kakasi().convert(text.translate(_CJK_PUNCT))]
    return " ".join(" ".join(words).split())


ROMANISERS: dict[str, tuple[str, Callable[[str], str]]] = {"cmn_hans_cn": ("pypinyin", _pinyin), "ja_jp": ("pykakasi", _kana)}
"""FLEURS code -> (module it needs, function turning native text into what the eSpeak voice reads)."""


def unsupported_reason(lang: str) -> str | None:
    """Why `lang` cannot be spoken here, or None if it can."""
    lang = check_lang(lang)
    if lang not in ESPEAK_VOICES:
        return "eSpeak NG has no voice for it"
    if lang in _UNSPEAKABLE:
        return _UNSPEAKABLE[lang]
    if lang in ROMANISERS:
        module, _ = ROMANISERS[lang]
        if importlib.util.find_spec(module) is None:
            return f"its eSpeak voice reads romanised text only and {module} is not installed"
    return None


def supported_languages() -> list[str]:
    """FLEURS codes that can be spoken on this machine, sorted (the others are logged with a reason)."""
    out = []
    for code in sorted(ESPEAK_VOICES):
        why = unsupported_reason(code)
        if why is None:
            out.append(code)
        else:
            log.info("not speaking %s: %s", code, why)
    return out


def prepare_text(lang: str, text: str, where: str = "<text>") -> str:
    """The text eSpeak should read for `lang` (romanised where needed), or raise `TTSError`."""
    why = unsupported_reason(lang)
    if why is not None:
        raise TTSError(f"{where}: cannot speak {lang}: {why}")
    text = " ".join(text.split())
    if not text:
        raise TTSError(f"{where}: empty text")
    limit = MAX_INPUT_CHARS.get(lang)
    if limit is not None and len(text) > limit:
        raise TTSError(f"{where}: {lang} input has {len(text)} characters; eSpeak handles at most {limit}")
    if lang in ROMANISERS:
        text = ROMANISERS[lang][1](text)
    return text


# ---------------------------------------------------------------------------------------------
# Voices
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceSpec:
    """How one utterance is spoken."""

    voice: str
    """eSpeak voice with variant, e.g. ``fr+m3``."""
    rate: int
    """Speaking rate in words per minute."""
    pitch: int
    """Base pitch, 0-100."""
    seed: int
    """Seed of eSpeak's noise generator (breathy variants)."""


def voice_for(lang: str, key: str, seed: int = 0) -> VoiceSpec:
    """A deterministic, varied voice for one utterance.

    Args:
        lang: FLEURS code.
        key: stable id of the utterance (e.g. ``fr_fr/000123``); the same key gives the same voice.
        seed: global seed mixed into the choice.
    """
    lang = check_lang(lang)
    if lang not in ESPEAK_VOICES:
        raise TTSError(f"{key}: eSpeak NG has no voice for {lang}")
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    variant = rng.choice(VOICE_VARIANTS)
    return VoiceSpec(
        voice=f"{ESPEAK_VOICES[lang]}+{variant}",
        rate=rng.randint(*RATE_RANGE),
        pitch=rng.randint(*PITCH_RANGE),
        seed=rng.randrange(1, 2**31),
    )


# ---------------------------------------------------------------------------------------------
# eSpeak through ctypes
# ---------------------------------------------------------------------------------------------

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """Version of the installed ``espeakng-loader`` package (it pins the eSpeak NG build)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("espeakng-loader")
    except PackageNotFoundError:
        return "unknown"


class Synthesizer:
    """A private eSpeak NG instance that turns text into 16 kHz float32 audio.

    Each instance copies the shared library into a temporary folder so its state is its own, and
    reloads it per utterance (~5 ms) so earlier utterances cannot change later ones.
    Use as a context manager, or call `close`.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise ImportError("speech synthesis needs espeakng-loader: pip install 'polyvox[data]'") from None
        self._data_path = espeakng_loader.get_data_path().encode()
        src = Path(espeakng_loader.get_library_path())
        self._tmp = Path(tempfile.mkdtemp(prefix="polyvox-espeak-"))
        self._lib_path = self._tmp / src.name
        shutil.copyfile(src, self._lib_path)
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._on_audio)  # kept alive as long as the instance
        self.sample_rate = 22_050

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = go on synthesising

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self._lib_path))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data_path, 0)
        if rate <= 0:
            self._unload(lib)
            raise TTSError(f"eSpeak NG failed to initialise with data at {self._data_path.decode()}")
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    @staticmethod
    def _unload(lib: ctypes.CDLL) -> None:
        lib.espeak_Terminate()
        # Unloading resets eSpeak's internal statics; where dlclose is missing (not POSIX) the
        # library stays loaded and clips depend slightly on the ones spoken before.
        dlclose = getattr(_ctypes, "dlclose", None)
        if dlclose is not None:
            dlclose(lib._handle)

    def synthesize_raw(
        self, text: str, voice: str, rate: int = DEFAULT_RATE, pitch: int = DEFAULT_PITCH,
        seed: int = 0, where: str = "<text>",
    ) -> tuple[np.ndarray, int]:
        """Speak `text` exactly as given; returns (int16 samples, sample rate).

        Raises:
            TTSError: unknown voice, synthesis error, or silent output.
        """
        lib = self._load()
        try:
            status = lib.espeak_SetVoiceByName(voice.encode())
            if status != _EE_OK:
                # eSpeak would otherwise keep speaking with the previous voice.
                raise TTSError(f"{where}: unknown eSpeak voice {voice!r} (error {status})")
            lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
            lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
            if hasattr(lib, "espeak_ng_SetRandSeed"):
                lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != _EE_OK:
                raise TTSError(f"{where}: eSpeak synthesis failed (error {status})")
            wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        finally:
            self._chunks = []
            self._unload(lib)
        if wav.size == 0 or np.abs(wav).max() < 64:  # 64/32768 = -54 dBFS: nothing audible
            raise TTSError(f"{where}: eSpeak produced no audible audio for {text[:60]!r}")
        return wav, self.sample_rate

    def synthesize(
        self, lang: str, text: str, spec: VoiceSpec | None = None, where: str = "<text>",
    ) -> np.ndarray:
        """Speak `text` in `lang`; returns 16 kHz mono float32 audio, shape (T,).

        Args:
            lang: FLEURS code (text is romanised first where the voice needs it).
            text: the sentence.
            spec: voice, rate, pitch and seed; default: the plain voice at default settings.
            where: a name for error messages (an utterance id).
        """
        spoken = prepare_text(lang, text, where)
        spec = spec or VoiceSpec(ESPEAK_VOICES[lang], DEFAULT_RATE, DEFAULT_PITCH, 0)
        wav, sr = self.synthesize_raw(spoken, spec.voice, spec.rate, spec.pitch, spec.seed, where)
        return to_mono_16k(wav.astype(np.float32) / 32768.0, sr, where)

    def close(self) -> None:
        """Delete the private library copy."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may already be gone
            pass


# ---------------------------------------------------------------------------------------------
# Batch synthesis to files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthJob:
    """One utterance to speak into one FLAC file."""

    id: str
    """Utterance id, used in messages."""
    lang: str
    """FLEURS code."""
    text: str
    """The sentence in `lang`."""
    path: str
    """Output ``.flac`` path."""
    spec: VoiceSpec
    """How to speak it."""


@dataclass(frozen=True)
class SynthResult:
    """Outcome of a `SynthJob`."""

    id: str
    """Utterance id."""
    num_samples: int = 0
    """Length of the written audio at 16 kHz."""
    sha256: str = ""
    """Hash of the written file."""
    error: str | None = None
    """Why synthesis failed (None on success)."""


def run_job(job: SynthJob, synth: Synthesizer) -> SynthResult:
    """Speak one job into its file; failures come back as a result with `error` set."""
    try:
        wav = synth.synthesize(job.lang, job.text, job.spec, where=job.id)
    except (TTSError, AudioError) as e:
        return SynthResult(job.id, error=str(e))
    write_flac(job.path, wav, SAMPLE_RATE)
    return SynthResult(job.id, int(wav.shape[0]), sha256_file(job.path))


_WORKER: Synthesizer | None = None


def _init_worker() -> None:
    global _WORKER
    _WORKER = Synthesizer()  # each process has its own eSpeak instance
    # Pool workers leave through os._exit: only multiprocessing finalizers remove the library copy.
    multiprocessing.util.Finalize(_WORKER, _WORKER.close, exitpriority=10)


def _run_in_worker(job: SynthJob) -> SynthResult:
    assert _WORKER is not None
    return run_job(job, _WORKER)


_CHUNK = 16  # jobs a worker takes at a time


def _isolated(job: SynthJob, ctx: Any) -> SynthResult:
    """Speak one job in a fresh process; a result with `error` set if the process died."""
    try:
        with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker) as pool:
            return pool.submit(_run_in_worker, job).result()
    except BrokenProcessPool:
        return SynthResult(job.id, error=f"{job.id}: eSpeak crashed on this input ({job.lang}, {job.text[:60]!r})")


def _pooled(jobs: Sequence[SynthJob], num_workers: int, bar: Any) -> list[SynthResult]:
    """Speak `jobs` in worker processes, in order. eSpeak can crash its process on some inputs (a
    segfault, not an exception); then the jobs that were in flight are spoken one per fresh process,
    the one that crashes becomes a failed result, and the pool starts again after them. Returns fewer
    results than jobs only if no worker process can run (e.g. the main module cannot be re-imported)."""
    ctx = mp.get_context("spawn")  # fresh interpreters, no inherited threads or library state
    results: list[SynthResult] = []
    while len(results) < len(jobs):
        rest = jobs[len(results) :]
        try:
            with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init_worker) as pool:
                for res in pool.map(_run_in_worker, rest, chunksize=_CHUNK):
                    results.append(res)
                    bar.update()
        except BrokenProcessPool as e:
            log.warning("a speech worker process died (%s); finding the input that crashed it", e)
            suspects = jobs[len(results) : len(results) + num_workers * _CHUNK]
            retried = [_isolated(job, ctx) for job in suspects]
            if len(suspects) > 1 and all(r.error for r in retried):
                return results  # no worker can run at all: the caller speaks the rest in-process
            results += retried
            bar.update(len(retried))
    return results


def synthesize_batch(jobs: Sequence[SynthJob], num_workers: int = 2, progress: bool = True) -> list[SynthResult]:
    """Speak many jobs into files, in `num_workers` processes; results are in job order.

    Failed jobs (including inputs that crash eSpeak) are reported in their result and logged; the
    others go on.
    """
    if not jobs:
        return []
    bar = Progress(total=len(jobs), desc="speech", unit="utt", enabled=progress)
    results: list[SynthResult] = []
    if num_workers > 1 and len(jobs) >= 8:
        results = _pooled(jobs, num_workers, bar)
    if len(results) < len(jobs):
        if num_workers > 1 and len(jobs) >= 8:
            log.warning("speech worker processes cannot run; speaking the remaining jobs in this process")
        with Synthesizer() as synth:
            for job in jobs[len(results) :]:
                results.append(run_job(job, synth))
                bar.update()
    bar.close()
    for res in results:
        if res.error:
            log.warning("synthesis failed: %s", res.error)
    return results
