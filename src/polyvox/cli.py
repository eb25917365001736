"""The `polyvox` command. Each subcommand parses flags and calls one typed function."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import re
import sys
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from polyvox.audio import MIN_CLIP_S, load_audio
from polyvox.config import BLSPConfig, MITConfig, RetrievalConfig, ServeConfig, load_config, parse_yaml
from polyvox.fileio import atomic_write, atomic_write_text, check_writable
from polyvox.progress import setup_logging
from polyvox.sysmem import release_memory, stage_peak_mb

log = logging.getLogger("polyvox")


def _cfg(args, cls: type = RetrievalConfig):
    overrides = list(args.set or [])
    if getattr(args, "out", None):
        overrides.append(f"out_dir={args.out}")
    if getattr(args, "manifest", None):
        overrides.append(f"data.manifest={args.manifest}")
    return load_config(args.config, overrides, cls)


# -- typed entry points (tests call these) -----------------------------------------------------------
def corpus_config(preset: str = "demo", path: str | Path | None = None, overrides: list[str] | None = None):
    """A corpus preset, updated by a YAML file and ``key=value`` overrides."""
    from polyvox.data.corpus import CorpusConfig

    return load_config(path, overrides, CorpusConfig, base=CorpusConfig.from_preset(preset).to_dict())


def data_build(cfg, out: str | Path) -> Path:
    """Build an offline TTS corpus (a `CorpusConfig`) into `out`; returns the main manifest path."""
    from polyvox.data.corpus import build_corpus

    return build_corpus(cfg, out)


def data_report(corpus: str | Path, out: str | Path | None = None, samples: int = 3, asr: str = "whisper-base",
                tts_clips: int = 60) -> dict:
    """Report counts, hours, TTS speed and Whisper transcripts of a corpus into ``report.json`` / ``report.md``.

    Args:
        corpus: corpus folder (with manifest.jsonl).
        out: where report.json and report.md go (default: the corpus folder).
        samples: test clips per language transcribed (0: none).
        asr: Whisper model for the samples.
        tts_clips: sentences spoken again to time eSpeak (0: none).
    """
    import json

    from polyvox.eval.corpus_report import corpus_report, markdown

    report = corpus_report(corpus, samples, asr, tts_clips)
    out = Path(out) if out is not None else Path(corpus)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "report.md", markdown(report))
    print(markdown(report))
    return report


def data_import(kind: str, src: str, out: str, lang: str | None = None, langs: list[str] | None = None,
                splits: list[str] | None = None, limit: int | None = None, translation_lang: str = "en_us",
                workers: int = 2) -> Path:
    """Convert a real speech corpus (FLEURS, CoVoST 2, Common Voice, or a folder of audio with a table) into a
    manifest.

    Args:
        kind: the corpus layout, a key of `polyvox.data.sources.corpora.READERS`.
        src: corpus folder (released layout or Hugging Face arrow/parquet files).
        out: output folder (manifest.jsonl, import.json, audio/).
        lang: FLEURS code of every clip (overrides the corpus's own language names).
        langs: only these FLEURS codes.
        splits: only these splits (default: train dev test).
        limit: most clips per language and split.
        translation_lang: FLEURS code of the translation column.
        workers: processes converting audio.
    """
    from polyvox.data.sources.corpora import import_corpus

    path = import_corpus(kind, src, out, lang=lang, langs=langs, splits=splits, limit=limit,
                         translation_lang=translation_lang, num_workers=workers)
    print(path)
    return path


def units_fit(cfg: RetrievalConfig) -> Path:
    from polyvox.recipes.retrieval import run_units_fit, units_dir

    _, bad = run_units_fit(cfg)
    _report_bad(bad)
    return units_dir(cfg)


def units_encode(cfg: RetrievalConfig, split: str | None = None) -> dict[str, list[int]]:
    from polyvox.recipes.retrieval import run_units_encode

    units, bad = run_units_encode(cfg, split)
    _report_bad(bad)
    print(f"{len(units)} utterances encoded to units ({len(bad)} bad lines skipped)")
    return units


def units_probe(cfg: RetrievalConfig) -> dict:
    """Linear probe of the run's units (train split -> test split): speech -> transcript recall in seconds."""
    from polyvox.eval.report import markdown_table
    from polyvox.recipes.retrieval import run_units_probe

    result = run_units_probe(cfg)
    print(markdown_table(result, "linear probe of the units: speech → text retrieval (test split)"))
    return result


def train_retrieval(cfg: RetrievalConfig) -> Path:
    from polyvox.recipes.retrieval import run_train

    path = run_train(cfg)
    print(f"model saved to {path}")
    return path


def eval_retrieval(cfg: RetrievalConfig, checkpoint: str | None = None) -> dict:
    from polyvox.eval.report import markdown_table
    from polyvox.recipes.retrieval import run_eval

    result = run_eval(cfg, checkpoint)
    print(markdown_table(result))
    return result


def continuations(cfg: BLSPConfig) -> dict[str, str]:
    """BLSP step 1: the frozen LLM continues every training transcript (cached in the run folder)."""
    from polyvox.recipes.blsp import run_continuations

    out = run_continuations(cfg)
    print(f"{len(out)} continuations in {Path(cfg.out_dir) / 'continuations.jsonl'}")
    return out


def train_blsp(cfg: BLSPConfig) -> Path:
    """BLSP steps 1 and 2: continuations (cached), then behaviour-alignment training of the adapter."""
    from polyvox.recipes.blsp import run_train

    path = run_train(cfg)
    print(f"adapter saved to {path}")
    return path


def targets(cfg: MITConfig) -> list:
    """mit step 1: template-bank instructions for every training transcript, answered by the frozen LLM."""
    from polyvox.recipes.mit import run_targets

    examples = run_targets(cfg)
    print(f"{len(examples)} training examples; counts in {Path(cfg.out_dir) / 'targets.json'}")
    return examples


def train_mit(cfg: MITConfig) -> Path:
    """mit: targets (cached), the optional CTC stage, then cross-entropy training."""
    from polyvox.recipes.mit import run_train

    path = run_train(cfg)
    print(f"model saved to {path}")
    return path


def eval_generate(cfg: BLSPConfig | MITConfig, checkpoint: str | None = None) -> dict:
    """Zero-shot ASR, translation and intent classification by prompting (and held-out instructions for
    mit), with the baselines."""
    from polyvox.eval.report import generation_markdown
    from polyvox.recipes import blsp, mit

    run_eval = mit.run_eval if isinstance(cfg, MITConfig) else blsp.run_eval
    result = run_eval(cfg, checkpoint)
    print(generation_markdown(result))
    return result


SPEECH_LLM_RECIPES: dict[str, type] = {"blsp": BLSPConfig, "mit": MITConfig}
"""Recipe name -> config class, for commands shared by the speech-LLM recipes."""


def _recipe_cfg(args) -> BLSPConfig | MITConfig:
    """The config of ``--recipe``, else of the config file's ``recipe:`` field."""
    raw = parse_yaml(Path(args.config).read_text(), args.config) if args.config and Path(args.config).exists() else None
    named = raw.get("recipe") if isinstance(raw, dict) else None
    if args.recipe and named and args.recipe != named:
        raise ValueError(f"{args.config} is a {named} config (its recipe: field), not --recipe {args.recipe}")
    name = args.recipe or named
    if name not in SPEECH_LLM_RECIPES:
        raise ValueError(f"{args.config or 'the default config'}: say which recipe it is for, with a `recipe: blsp` or "
                         f"`recipe: mit` line or --recipe (got {name!r})")
    return _cfg(args, SPEECH_LLM_RECIPES[name])


def generate(model: str, audio: list[str], prompt: str = "transcribe", lang: str | None = None,
             target: str = "en_us", labels: list[str] | None = None, max_new_tokens: int = 64,
             sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, multiline: bool = False,
             batch_size: int = 8, examples: list[str] | None = None, ctc: bool = False, ctc_weight: float = 0.0,
             length_bonus: float | None = None, beam: int | None = None) -> list[str]:
    """Answer a prompt about each audio file with a trained speech LLM, prompted in the style it was trained with
    (an instruction, or an xP3 prefix/postfix pair); prints one tab-separated line per file.

    Args:
        model: trained speech-LLM folder.
        audio: audio files.
        prompt: transcribe, translate, intent, continue, or any other text (asked as is).
        lang: FLEURS code of the speech (named in the prompt).
        target: translate: FLEURS code of the target language.
        labels: intent: the labels to choose from.
        max_new_tokens: bound on the tokens of each answer.
        sample: sample instead of greedy decoding.
        temperature: sampling temperature.
        top_p: nucleus sampling mass.
        multiline: do not stop at the first line break.
        batch_size: clips per generation batch.
        examples: transcribe: sentences of the language, each written down word for word before the input (the
            few-shot prompt of ``eval.shots``, for a base LLM; needs --lang).
        ctc: transcribe with the model's CTC head (`SpeechLLM.transcribe_ctc`): a character head's best path in the
            scripts of --lang (its N-best list rescored by the LLM with any of the three options below); a token
            head by joint CTC/LLM decoding (--ctc-weight, 0.7 if not given).
        ctc_weight: transcribe: when > 0, by joint CTC/LLM decoding (`SpeechLLM.transcribe_ctc`): the CTC head hears
            the speech, and the frozen LLM, reading the --examples as sentences of --lang, scores each hypothesis
            as a language model; the CTC score's weight (``eval.joint_ctc_weight``).
        length_bonus: joint decoding: score added per token (default 4), per character for a character head.
        beam: joint decoding: hypotheses kept per step (default 4), the N-best list of a character head.
    """
    from polyvox.data.languages import check_lang
    from polyvox.models.ctc import CharCTCHead
    from polyvox.models.speech_llm import SpeechLLM, ask, few_shot_transcription, sentence_prior

    if lang is not None:
        check_lang(lang)
    if examples and (prompt != "transcribe" or lang is None or multiline):
        raise ValueError("--examples make a few-shot transcription prompt: use them with --prompt transcribe and "
                         "--lang, without --multiline")
    ctc = ctc or bool(ctc_weight)
    if ctc and (prompt != "transcribe" or lang is None or multiline or sample):
        raise ValueError("--ctc / --ctc-weight transcribe with the CTC head: use them with --prompt transcribe and "
                         "--lang, without --multiline or --sample")
    wavs = [load_audio(a, min_seconds=MIN_CLIP_S) for a in audio]  # a bad file fails here, before the model loads
    llm = SpeechLLM.load(model)
    instruction = (few_shot_transcription(lang, examples) if examples  # a raw pattern, in any prompt style
                   else ask(prompt, lang, target, labels, llm.cfg.prompt_style))  # asked as the model was trained
    answers: list[str] = []
    given = {k: v for k, v in {"ctc_weight": ctc_weight or None, "length_bonus": length_bonus, "beam": beam}.items()
             if v is not None}  # a character head: its best path when none is given
    options = given if isinstance(llm.ctc_head, CharCTCHead) else {
        "ctc_weight": 0.7, "length_bonus": 4.0, "beam": 4, **given, "max_new_tokens": max_new_tokens}
    for s in range(0, len(wavs), batch_size):
        part = wavs[s : s + batch_size]
        if ctc:
            answers += llm.transcribe_ctc(part, [lang] * len(part), [sentence_prior(lang, examples or [])] * len(part),
                                          **options)
        else:
            answers += llm.generate(part, instruction, max_new_tokens=max_new_tokens,
                                    do_sample=sample, temperature=temperature, top_p=top_p,
                                    stop_at_newline=not multiline)
    for a, text in zip(audio, answers):
        print(f"{a}\t{text}")
    return answers


def embed(model: str, out: str, lang: str | None = None, audio: list[str] | None = None,
          text: list[str] | None = None, manifest: str | None = None, split: str | None = None) -> np.ndarray:
    """Embed audio files or texts in one language, or a manifest's speech (each line in its own language), into an
    .npy file (a manifest's ids go beside it, in .ids.txt).

    Args:
        model: trained dual-encoder folder, or a text-only encoder preset (``me5-small``: --text only).
        out: output .npy file.
        lang: FLEURS code of --audio / --text (a manifest carries its own).
        audio: audio files to embed.
        text: texts to embed.
        manifest: a manifest whose speech to embed.
        split: only this split of the manifest.
    """
    from polyvox.data.languages import check_lang
    from polyvox.models.sources import MODEL_PRESETS, TEXT, load_text_encoder

    if sum(x is not None for x in (audio, text, manifest)) != 1:
        raise ValueError("give exactly one of --audio, --text or --manifest")
    if manifest is None:
        if lang is None:
            raise ValueError("--audio and --text need their language (--lang)")
        check_lang(lang)
    out = check_writable(Path(str(out) if str(out).endswith(".npy") else f"{out}.npy"))  # as numpy would name it
    if getattr(MODEL_PRESETS.get(model), "kind", None) == TEXT:
        if text is None:
            raise ValueError(f"{model} is a text-only encoder: it embeds --text, not speech")
        vecs = load_text_encoder(model).encode_text(text, lang)
    else:
        vecs = _dual_encoder_vectors(model, lang, audio, text, manifest, split, out)
    atomic_write(out, lambda tmp: np.save(tmp, vecs))
    print(f"{vecs.shape[0]} vectors of size {vecs.shape[1]} saved to {out}")
    return vecs


def _dual_encoder_vectors(model: str, lang: str | None, audio: list[str] | None, text: list[str] | None,
                          manifest: str | None, split: str | None, out: Path) -> np.ndarray:
    import torch

    from polyvox.index import embed_speech
    from polyvox.models.dual_encoder import DualEncoder

    dual = DualEncoder.load(model)
    with torch.no_grad():
        if text is not None:
            vecs = dual.encode_text(text, lang).numpy()
        elif audio is not None:
            vecs = embed_speech(dual, [load_audio(a, min_seconds=MIN_CLIP_S) for a in audio], lang)
        else:
            ok, vecs = _manifest_speech_vectors(dual, model, manifest, split)
            atomic_write_text(out.with_suffix(".ids.txt"), "".join(u.id + "\n" for u in ok))
    return vecs


def _manifest_speech_vectors(dual, model: str | Path, manifest: str | Path, split: str | None = None):
    """The utterances of a manifest whose audio could be encoded, and their (N, D) speech embeddings (each in
    its own language); bad lines are reported and left out."""
    import torch

    from polyvox.data.manifest import read_manifest
    from polyvox.models.units import encode_units, encoder_for_units

    tok = dual.unit_tokenizer
    if tok is None:
        raise ValueError(f"{model}: checkpoint has no unit tokenizer; cannot embed audio")
    utts = read_manifest(manifest, split=split)
    units, bad = encode_units(utts, Path(manifest).parent, encoder_for_units(tok), tok)
    _report_bad(bad)
    ok = [u for u in utts if u.id in units]
    with torch.no_grad():
        return ok, dual.encode_speech([units[u.id] for u in ok], [u.lang for u in ok]).numpy()


def mine(model: str, src: str, tgt: str, out: str, src_lang: str | None = None, tgt_lang: str | None = None,
         src_speech: bool = False, k: int = 4, threshold: float = 1.0) -> list:
    """Mine pairs between two collections by ratio margin: text<->text, or the speech of a manifest <->text. Writes a
    TSV (margin, cosine, source id, target id, source text, target text), best first.

    Args:
        model: trained dual-encoder folder.
        src: manifest (.jsonl) or text file.
        tgt: manifest (.jsonl) or text file.
        out: output TSV.
        src_lang: FLEURS code of a source text file.
        tgt_lang: FLEURS code of a target text file.
        src_speech: use the speech of the source manifest, not its text.
        k: neighbours in the margin's denominators.
        threshold: lowest margin kept.
    """
    from polyvox.index import IndexedText, embed_items, mine_pairs, read_texts
    from polyvox.models.dual_encoder import DualEncoder

    if k < 1:
        raise ValueError(f"-k must be at least 1, got {k}")
    out = check_writable(out)
    targets = read_texts(tgt, tgt_lang, flag="--tgt-lang")
    dual = DualEncoder.load(model).eval()
    if src_speech:
        utts, x = _manifest_speech_vectors(dual, model, src)
        sources = [IndexedText(u.id, u.text, u.lang) for u in utts]
    else:
        sources = read_texts(src, src_lang, flag="--src-lang")
        x = embed_items(dual, sources)
    pairs = mine_pairs(x, embed_items(dual, targets), k, threshold)
    rows = [f"{m:.4f}\t{c:.4f}\t{sources[i].id}\t{targets[j].id}\t{sources[i].text}\t{targets[j].text}\n"
            for i, j, m, c in pairs]
    atomic_write_text(out, "margin\tcosine\tsource_id\ttarget_id\tsource\ttarget\n" + "".join(rows))
    print(f"{len(pairs)} pairs (margin >= {threshold:g}) of {len(sources)} sources and {len(targets)} targets in {out}")
    return pairs


def index_build(model: str, texts: str, out: str, lang: str | None = None, kind: str | None = None,
                param: list[str] | None = None, batch_size: int = 64):
    """Embed a text collection (a manifest, or a text file in one language) into a FAISS index; an existing index
    gets the texts it does not hold yet.

    Args:
        model: trained dual-encoder folder.
        texts: manifest (.jsonl) or text file, one text a line.
        out: index folder.
        lang: FLEURS code of a text file's lines.
        kind: flat (exact; the default for a new index), hnsw or ivf (approximate); an existing index keeps its own.
        param: index parameters as key=value, e.g. m=32 ef_search=64 (hnsw) or nlist=256 nprobe=16 (ivf).
        batch_size: texts per embedding batch.
    """
    from polyvox.index import build_index, read_texts

    if any("=" not in item for item in param or []):
        raise ValueError("--param must look like key=value, e.g. --param nlist=256")
    params = dict(item.split("=", 1) for item in param or [])
    check_writable(out, folder=True)

    index = build_index(model, read_texts(texts, lang), out, kind, params, batch_size)
    print(f"{len(index)} texts in the {index.kind} index {out}")
    return index


def search(index: str, model: str | None = None, lang: str | None = None, audio: str | None = None,
           text: str | None = None, k: int = 10, margin: int = 0, result_langs: str | None = None) -> list:
    """Search an index with a clip (speech -> text) or a text (text -> text); prints rank, score, language, id and
    text of each hit.

    Args:
        index: index folder.
        model: the dual-encoder folder the index was built with (default: where it was then).
        lang: FLEURS code of the query (left out, a clip's language is detected).
        audio: a clip to search with.
        text: a text to search with.
        k: hits to return.
        margin: re-rank by ratio margin over this many neighbours, as in bitext mining (0: plain cosine).
        result_langs: only hits in these languages (FLEURS codes, comma-separated).
    """
    from polyvox.data.languages import check_lang, language_name
    from polyvox.serve.engine import SearchEngine, SearchRequest, SpeechQuery, TextQuery

    if lang is not None:
        check_lang(lang)
    if (audio is None) == (text is None):
        raise ValueError("give exactly one of --audio or --text")
    if k < 1 or margin < 0:
        raise ValueError(f"-k must be at least 1 and --margin at least 0, got {k} and {margin}")
    only = frozenset(check_lang(c.strip()) for c in (result_langs or "").split(",") if c.strip()) or None
    if result_langs is not None and only is None:
        raise ValueError(f"--result-langs {result_langs!r} names no language (FLEURS codes, comma-separated)")
    if text is not None and lang is None:
        raise ValueError("a text query needs its language (--lang)")
    query = (SpeechQuery(load_audio(audio, min_seconds=MIN_CLIP_S), lang) if audio is not None
             else TextQuery(text, lang))  # bad audio fails here, before the models load
    engine = SearchEngine(model, index)
    if not len(engine.index):
        raise ValueError(f"the index {index} holds no texts (add some with polyvox index build)")
    query, hits = engine.search([SearchRequest(query, k, margin, only)])[0]
    if lang is None:
        print(f"detected language: {language_name(query.lang)} ({query.lang}), p = {query.lang_probability:.2f}",
              file=sys.stderr)
    for rank, h in enumerate(hits, 1):
        print(f"{rank}\t{h.score:.4f}\t{h.lang}\t{h.id}\t{h.text}")
    return hits


def demo(cfg: RetrievalConfig, corpus_dir: str | Path | None = None) -> dict:
    """Build the offline corpus (the config's ``corpus`` preset, in `corpus_dir` or the folder of its
    ``data.manifest``, when it is not there yet), fit units, train, evaluate and print the table."""
    from polyvox.eval.report import markdown_table
    from polyvox.recipes.retrieval import run_eval, run_train, run_units_encode, run_units_fit

    t0 = time.perf_counter()
    stages, peaks = {}, {}

    def done(stage: str) -> None:
        stages[stage], peaks[stage] = time.perf_counter() - t0, stage_peak_mb()

    stage_peak_mb()
    if corpus_dir is not None:
        cfg.data.manifest = str(Path(corpus_dir) / "manifest.jsonl")
    manifest = Path(cfg.data.manifest)
    if cfg.corpus and not manifest.exists():
        log.info("building the %s corpus in %s", cfg.corpus, manifest.parent)
        data_build(corpus_config(cfg.corpus), manifest.parent)
        release_memory()
    run_units_fit(cfg)
    done("units_fit")
    units, bad = run_units_encode(cfg)
    done("units_encode")
    run_train(cfg, units)
    release_memory()  # the trained model is saved and gone
    done("train")
    result = run_eval(cfg, units=units)
    done("eval")
    print(markdown_table(result, "polyvox demo: speech → text retrieval (test split)"))
    print("stage end times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    if None not in peaks.values():
        print("peak memory per stage (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    return result


def _report_bad(bad) -> None:
    for b in bad:
        print(f"bad line skipped: {b.id}: {b.error}", file=sys.stderr)


# -- argument parsing --------------------------------------------------------------------------------
def _arg_docs(fn: Callable) -> dict[str, str]:
    """Parameter -> its description, from the ``Args:`` section of a Google-style docstring."""
    doc, out, name = inspect.getdoc(fn) or "", {}, None
    lines = doc.split("Args:", 1)[1].splitlines() if "Args:" in doc else []
    for line in lines:
        if line and not line.startswith(" "):  # the next section
            break
        m = re.match(r"\s{4}(\w+)(?: \(.*?\))?: (.*)", line)
        if m:
            name, out[m.group(1)] = m.group(1), m.group(2)
        elif name and line.strip():
            out[name] += " " + line.strip()
    return out


def _typed(sub, name: str, fn: Callable, help: str, positional: tuple[str, ...] = (),
           flags: dict[str, tuple[str, ...]] | None = None,
           choices: dict[str, list[str]] | None = None) -> argparse.ArgumentParser:
    """A subcommand whose flags come from `fn`'s typed signature: one flag per parameter (``--max-new-tokens`` for
    ``max_new_tokens``; `positional` ones bare), its type, default and help from the signature and docstring, so
    each is written once; the command calls ``fn(**flags)``. `flags` adds aliases (e.g. ``-k``), `choices` the
    allowed values of a parameter."""
    p = sub.add_parser(name, help=help, description=(inspect.getdoc(fn) or "").split("Args:")[0].strip())
    docs, hints = _arg_docs(fn), typing.get_type_hints(fn)
    for pname, param in inspect.signature(fn).parameters.items():
        kind, required = hints[pname], param.default is inspect.Parameter.empty
        args = typing.get_args(kind)
        if type(None) in args:  # X | None
            kind = next(a for a in args if a is not type(None))
        if kind is Path or (typing.get_origin(kind) in (typing.Union, types.UnionType) and Path in typing.get_args(kind)):
            kind = str
        opts: dict[str, Any] = {"help": docs.get(pname, ""), "choices": (choices or {}).get(pname)}
        if kind is bool:
            opts |= {"action": argparse.BooleanOptionalAction, "default": param.default}
        elif typing.get_origin(kind) is list:
            opts |= {"nargs": "+", "action": "extend", "type": typing.get_args(kind)[0]}
        else:
            opts["type"] = kind
        if pname in positional:
            p.add_argument(pname, **{k: v for k, v in opts.items() if k != "default"})
            continue
        if kind is not bool:
            opts |= {"required": True} if required else {"default": param.default}
        if not required and param.default is not None and kind is not bool:
            opts["help"] += " (default: %(default)s)"
        p.add_argument(*(flags or {}).get(pname, ()), "--" + pname.replace("_", "-"), dest=pname, **opts)
    p.set_defaults(call=lambda a: fn(**{k: getattr(a, k) for k in inspect.signature(fn).parameters}))
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. train.steps=10")
    p.add_argument("--manifest", help="manifest path (overrides data.manifest)")
    p.add_argument("--out", help="run folder (overrides out_dir)")


def build_parser() -> argparse.ArgumentParser:
    from polyvox.data.sources.corpora import READERS

    ap = argparse.ArgumentParser(prog="polyvox", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level, libraries' loader lines too")
    sub = ap.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="build datasets").add_subparsers(dest="sub", required=True)
    p = data.add_parser("build", help="build the offline multilingual benchmark (text + eSpeak NG speech)")
    p.add_argument("--preset", default="demo", help="tiny, demo or full (default: demo)")
    p.add_argument("--config", help="YAML file of corpus settings (see polyvox.data.corpus.CorpusConfig)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. test_per_lang=200")
    p.add_argument("--out", required=True, help="corpus folder (manifest.jsonl, audio/, corpus.json)")

    _typed(data, "import", data_import, "FLEURS, CoVoST 2, Common Voice or a folder + table -> manifest",
           positional=("kind", "src"), choices={"kind": sorted(READERS)})

    _typed(data, "report", data_report, "counts, hours, TTS speed and Whisper transcripts of a built corpus")

    p = data.add_parser("continuations", help="BLSP step 1: the LLM continues each training transcript")
    _common(p)
    p = data.add_parser("targets", help="mit step 1: the LLM answers template-bank instructions about each transcript")
    _common(p)

    units = sub.add_parser("units", help="audio units").add_subparsers(dest="sub", required=True)
    _common(units.add_parser("fit", help="fit the k-means unit tokenizer"))
    p = units.add_parser("encode", help="encode a manifest to unit sequences (cached)")
    _common(p)
    p.add_argument("--split", help="only this split (default: all)")
    _common(units.add_parser("probe", help="linear probe of the units: speech -> text recall, no training loop"))

    tr = sub.add_parser("train", help="train a system").add_subparsers(dest="sub", required=True)
    _common(tr.add_parser("retrieval", help="train the speech-text dual encoder"))
    _common(tr.add_parser("blsp", help="train a speech adapter for a frozen LLM by behaviour alignment"))
    _common(tr.add_parser("mit", help="multi-instruction training of the speech LLM (optional CTC stage first)"))

    ev = sub.add_parser("eval", help="evaluate a system").add_subparsers(dest="sub", required=True)
    p = ev.add_parser("retrieval", help="evaluate speech -> text retrieval")
    _common(p)
    p.add_argument("--checkpoint", help="model folder (default: <out_dir>/model)")
    p = ev.add_parser("generate", help="zero-shot ASR, translation and intents by prompting a speech LLM")
    _common(p)
    p.add_argument("--checkpoint", help="model folder (default: <out_dir>/model)")
    p.add_argument("--recipe", choices=sorted(SPEECH_LLM_RECIPES), help="the config's recipe (default: its recipe: field)")

    _typed(sub, "generate", generate, "prompt a trained speech LLM about audio files")
    _typed(sub, "embed", embed, "speech or text -> vectors (.npy)")

    ix = sub.add_parser("index", help="a searchable index of texts").add_subparsers(dest="sub", required=True)
    _typed(ix, "build", index_build, "embed texts into a FAISS index (an existing index gets the new texts)")
    _typed(sub, "search", search, "search an index with speech or text", flags={"k": ("-k",)})

    p = sub.add_parser("serve", help="HTTP API and web page: search (and generation with --speech-llm)")
    p.add_argument("--index", required=True, help="index folder (polyvox index build)")
    p.add_argument("--model", help="the dual-encoder folder the index was built with (default: where it was then)")
    p.add_argument("--speech-llm", help="a BLSP or mit checkpoint folder: enables POST /generate")
    for f in dataclasses.fields(ServeConfig):  # --host, --port and the limits (see ServeConfig)
        if f.name == "formats":
            p.add_argument("--formats", type=lambda v: tuple(v.upper().split(",")), default=f.default,
                           help="accepted audio containers, comma-separated (default: %(default)s)")
        else:
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                           help="default: %(default)s")

    _typed(sub, "mine", mine, "mine speech<->text or text<->text pairs between two collections by margin",
           flags={"k": ("-k",)})

    p = sub.add_parser("demo", help="offline end-to-end demo: corpus, units, training, evaluation")
    _common(p)
    p.set_defaults(config="configs/demo.yaml")
    p.add_argument("--corpus-dir", help="where the config's corpus preset is built if missing (default: the folder of "
                                        "the config's data.manifest)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if hasattr(args, "call"):  # a command wired from its function's signature
            args.call(args)
            return 0
        match (args.cmd, getattr(args, "sub", None)):
            case ("data", "build"):
                print(data_build(corpus_config(args.preset, args.config, args.set), args.out))
            case ("data", "continuations"):
                continuations(_cfg(args, BLSPConfig))
            case ("data", "targets"):
                targets(_cfg(args, MITConfig))
            case ("units", "fit"):
                print(units_fit(_cfg(args)))
            case ("units", "encode"):
                units_encode(_cfg(args), args.split)
            case ("units", "probe"):
                units_probe(_cfg(args))
            case ("train", "retrieval"):
                train_retrieval(_cfg(args))
            case ("train", "blsp"):
                train_blsp(_cfg(args, BLSPConfig))
            case ("train", "mit"):
                train_mit(_cfg(args, MITConfig))
            case ("eval", "retrieval"):
                eval_retrieval(_cfg(args), args.checkpoint)
            case ("eval", "generate"):
                eval_generate(_recipe_cfg(args), args.checkpoint)
            case ("serve", _):
                from polyvox.serve import serve

                fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)}
                serve(args.model, args.index, args.speech_llm, ServeConfig(**fields))
            case ("demo", _):
                if args.manifest and args.corpus_dir:
                    raise ValueError("give --corpus-dir (the demo corpus, built there if missing) or --manifest "
                                     "(a corpus of your own), not both")
                demo(_cfg(args), args.corpus_dir)
    except (ValueError, OSError, RuntimeError, ImportError) as e:  # OSError: missing, unwritable, disk full
        print(f"polyvox: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
