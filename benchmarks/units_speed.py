"""Unit-extraction speed of a speech encoder: variable-length vs padded-to-30 s, on 3–10 s speech clips.

    python benchmarks/units_speed.py [--encoder whisper-base] [--layer 6] [--repeats 5]

Clips are eSpeak NG speech in several languages, cut or chained to 3, 5, 7 and 10 s. Reports the
median real-time factor (audio seconds per compute second) of each mode and their ratio.
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import median_time, peak_rss_mb, write_result

from polyvox.audio import SAMPLE_RATE
from polyvox.data.tts import Synthesizer, voice_for
from polyvox.models.sources import load_speech_model
from polyvox.models.speech_encoder import SpeechEncoder

SENTENCES = {
    "en_us": "The file could not be opened because it is being used by another program on this computer.",
    "fr_fr": "Le fichier ne peut pas être ouvert car il est utilisé par un autre programme sur cet ordinateur.",
    "de_de": "Die Datei kann nicht geöffnet werden, weil sie von einem anderen Programm verwendet wird.",
    "ru_ru": "Файл не может быть открыт, потому что он используется другой программой на этом компьютере.",
}


def clips(durations: list[float]) -> list[np.ndarray]:
    with Synthesizer() as synth:
        speech = [synth.synthesize(lang, text, voice_for(lang, lang)) for lang, text in SENTENCES.items()]
    pool = np.concatenate(speech)
    return [np.resize(pool[i * SAMPLE_RATE:], int(d * SAMPLE_RATE)) for i, d in enumerate(durations)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="whisper-base")
    ap.add_argument("--layer", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1, help="clips per forward (1 = one clip at a time)")
    args = ap.parse_args()

    whisper, fe = load_speech_model(args.encoder)
    durations = [3.0, 5.0, 7.0, 10.0]
    wavs = clips(durations)
    audio_s = sum(durations)
    out = {"encoder": args.encoder, "layer": args.layer, "clip_seconds": durations, "repeats": args.repeats,
           "batch_size": args.batch_size}
    for mode, pad in (("variable", False), ("padded_30s", True)):
        enc = SpeechEncoder(whisper, fe, layer=args.layer, pool=2, pad_to_30s=pad)

        def run(enc=enc):
            for i in range(0, len(wavs), args.batch_size):
                enc.encode(wavs[i : i + args.batch_size])

        med, times = median_time(run, args.repeats)
        out[mode] = {"median_s": med, "times_s": times, "realtime_factor": audio_s / med}
    out["speedup_variable_vs_padded"] = out["padded_30s"]["median_s"] / out["variable"]["median_s"]
    out["targets"] = {"speedup>=4": out["speedup_variable_vs_padded"] >= 4,
                      "variable_realtime>=40": out["variable"]["realtime_factor"] >= 40}
    out["peak_rss_mb"] = peak_rss_mb()
    write_result("units_speed", out)


if __name__ == "__main__":
    main()
