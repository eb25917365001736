"""Bad input through the real command line, as a new user would give it: every case ends in ``polyvox: error: …``
naming the file, key or flag (exit code 2), or works, and never prints a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


@dataclass
class Case:
    name: str
    args: Callable[[dict], list[str]]  # the fixture's paths -> the command's arguments
    says: str  # a fragment of the error (or, with rc 0, of the output)
    rc: int = 2


def _wav(path: Path, seconds: float, amplitude: float = 0.1, subtype: str = "FLOAT") -> str:
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(str(path), (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float64), 16000, subtype=subtype)
    return str(path)


@pytest.fixture(scope="module")
def files(tiny_search, tmp_path_factory) -> dict:
    """A trained tiny dual encoder, its index and manifest, and bad copies of each."""
    root = tmp_path_factory.mktemp("bad")
    model, manifest = tiny_search.model, tiny_search.manifest
    f = {"model": str(model), "index": str(tiny_search.index), "manifest": str(manifest), "tmp": root}
    for name, keep in (("truncated-model", 100), ("truncated-units", 50)):
        bad = root / name
        shutil.copytree(model, bad)
        target = bad / ("model.safetensors" if "model" in name else "units.safetensors")
        target.write_bytes(target.read_bytes()[:keep])
        f[name] = str(bad)
    lines = manifest.read_text().splitlines()
    for name, body in {
        "empty.jsonl": "",
        "all-bad.jsonl": "not json\n{\"id\": 1}\n",
        "numeric-id.jsonl": "\n".join([json.dumps({**json.loads(lines[0]), "id": 7}), *lines[1:]]) + "\n",
        "numeric-text.jsonl": "\n".join([json.dumps({**json.loads(lines[0]), "text": 12}), *lines[1:]]) + "\n",
        "list-lang.jsonl": "\n".join([json.dumps({**json.loads(lines[0]), "lang": ["fr_fr"]}), *lines[1:]]) + "\n",
    }.items():
        (manifest.parent / name).write_text(body)
        f[name] = str(manifest.parent / name)
    f["tiny-clip"] = _wav(root / "tiny.wav", 0.01)
    f["short-clip"] = _wav(root / "short.wav", 0.02)
    f["loud-clip"] = _wav(root / "loud.wav", 1.0, amplitude=1e18, subtype="DOUBLE")
    f["clip"] = _wav(root / "ok.wav", 1.0)
    f["not-a-dir"] = str(root / "ok.wav")
    (root / "bad.yaml").write_text("train:\n  steps: [1\n")
    (root / "tag.yaml").write_text("train: !!python/object/apply:os.system ['echo hi']\n")
    f["bad.yaml"], f["tag.yaml"] = str(root / "bad.yaml"), str(root / "tag.yaml")
    from polyvox.index import TextIndex, model_fingerprint

    empty = TextIndex(32, model_fingerprint(model))
    empty.model_path = str(model)
    empty.save(root / "empty-index")
    f["empty-index"] = str(root / "empty-index")
    (root / "texts.txt").write_text("un chat\nun chien\n")
    f["texts"] = str(root / "texts.txt")
    return f


CASES = [
    # configs and overrides
    Case("yaml syntax", lambda f: ["train", "retrieval", "--config", f["bad.yaml"]], "bad.yaml: not valid YAML"),
    Case("python tag", lambda f: ["train", "retrieval", "--config", f["tag.yaml"]], "tag.yaml: not valid YAML"),
    Case("set yaml", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.steps=[1"],
         "override 'train.steps=[1': not valid YAML"),
    Case("set through a value", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.steps.x=1"],
         "train.steps is a value, not a section"),
    Case("set without =", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.steps"],
         "must look like section.field=value"),
    Case("unknown key", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.stepz=3"],
         "unknown key(s) stepz"),
    Case("batch size 0", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.batch_size=0"],
         "RetrievalConfig.train: batch_size must be at least 1, got 0"),
    Case("steps 0", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.steps=0"],
         "steps must be at least 1"),
    Case("lr 0", lambda f: ["train", "blsp", "--config", str(ROOT / "configs/blsp-tiny.yaml"), "--set", "train.lr=0"],
         "BLSPConfig.train: lr must be above 0"),
    Case("grad_accum > batch", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.grad_accum=99"],
         "grad_accum (99) must not exceed batch_size"),
    Case("num_units 0", lambda f: ["units", "fit", "--config", str(TINY), "--set", "units.num_units=0"],
         "units: num_units must be at least 1"),
    Case("proj_dim 0", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "model.proj_dim=0"],
         "proj_dim must be at least 1"),
    Case("save_every 0", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.save_every=0"],
         "save_every must be at least 1"),
    Case("lr as string", lambda f: ["train", "retrieval", "--config", str(TINY), "--set", "train.lr=fast"],
         "train.lr: expected float"),
    Case("missing config", lambda f: ["train", "retrieval", "--config", "nowhere.yaml"], "config file not found"),
    Case("eval generate, yaml syntax", lambda f: ["eval", "generate", "--config", f["bad.yaml"]],
         "bad.yaml: not valid YAML"),
    Case("eval generate without recipe", lambda f: ["eval", "generate", "--config", str(TINY)],
         "say which recipe it is for"),
    # models
    Case("truncated model", lambda f: ["embed", "--model", f["truncated-model"], "--lang", "fr_fr", "--text", "a",
                                       "--out", str(f["tmp"] / "x.npy")], "model.safetensors"),
    Case("truncated units", lambda f: ["embed", "--model", f["truncated-units"], "--lang", "fr_fr", "--text", "a",
                                       "--out", str(f["tmp"] / "x.npy")], "units.safetensors"),
    Case("model folder missing", lambda f: ["embed", "--model", str(f["tmp"] / "none"), "--lang", "fr_fr", "--text",
                                            "a", "--out", str(f["tmp"] / "x.npy")], "model.json missing"),
    Case("speech LLM as dual encoder", lambda f: ["generate", "--model", f["model"], "--audio", f["clip"]],
         "holds a dual encoder checkpoint, not a speech LLM"),
    # audio
    Case("clip of 0.01 s", lambda f: ["embed", "--model", f["model"], "--lang", "fr_fr", "--audio", f["tiny-clip"],
                                      "--out", str(f["tmp"] / "x.npy")], "tiny.wav: the clip is 0.01 s long"),
    Case("clip of 0.02 s", lambda f: ["search", "--index", f["index"], "--lang", "fr_fr", "--audio", f["short-clip"]],
         "short.wav: the clip is 0.02 s long"),
    Case("missing audio", lambda f: ["search", "--index", f["index"], "--lang", "fr_fr", "--audio", "nope.wav"],
         "audio file not found"),
    Case("not audio", lambda f: ["search", "--index", f["index"], "--lang", "fr_fr", "--audio", f["texts"]],
         "cannot decode audio file"),
    Case("absurd amplitude is normalised", lambda f: ["search", "--index", f["index"], "--lang", "fr_fr",
                                                      "--audio", f["loud-clip"], "-k", "2"], "fr_fr", rc=0),
    # manifests
    Case("empty manifest (embed)", lambda f: ["embed", "--model", f["model"], "--manifest", f["empty.jsonl"],
                                              "--out", str(f["tmp"] / "x.npy")], "empty.jsonl: no utterances"),
    Case("empty manifest (index)", lambda f: ["index", "build", "--model", f["model"], "--texts", f["empty.jsonl"],
                                              "--out", str(f["tmp"] / "ix")], "empty.jsonl: no utterances"),
    Case("empty manifest (units)", lambda f: ["units", "fit", "--config", str(TINY), "--manifest",
                                              f["empty.jsonl"], "--out", str(f["tmp"] / "run")], "no utterances"),
    Case("every line bad", lambda f: ["embed", "--model", f["model"], "--manifest", f["all-bad.jsonl"],
                                      "--out", str(f["tmp"] / "x.npy")], "all-bad.jsonl:1"),
    Case("no such split", lambda f: ["embed", "--model", f["model"], "--manifest", f["manifest"], "--split",
                                     "nosuchsplit", "--out", str(f["tmp"] / "x.npy")], "no utterances in split"),
    Case("numeric id", lambda f: ["embed", "--model", f["model"], "--manifest", f["numeric-id.jsonl"],
                                  "--out", str(f["tmp"] / "x.npy")], "numeric-id.jsonl:1: id must be a string"),
    Case("numeric text", lambda f: ["index", "build", "--model", f["model"], "--texts", f["numeric-text.jsonl"],
                                    "--out", str(f["tmp"] / "ix2")], "numeric-text.jsonl:1: text must be a string"),
    Case("list lang", lambda f: ["mine", "--model", f["model"], "--src", f["list-lang.jsonl"], "--tgt",
                                 f["manifest"], "--out", str(f["tmp"] / "m.tsv")], "list-lang.jsonl:1: lang must be"),
    Case("embed manifest without --lang", lambda f: ["embed", "--model", f["model"], "--manifest", f["manifest"],
                                                     "--out", str(f["tmp"] / "m.npy")], "saved to", rc=0),
    # output folders
    Case("index out is a file", lambda f: ["index", "build", "--model", f["model"], "--texts", f["manifest"],
                                           "--out", f["not-a-dir"]], "ok.wav"),
    Case("index out under a file", lambda f: ["index", "build", "--model", f["model"], "--texts", f["manifest"],
                                              "--out", f["not-a-dir"] + "/ix"], "cannot write"),
    Case("embed out under a file", lambda f: ["embed", "--model", f["model"], "--lang", "fr_fr", "--text", "a",
                                              "--out", f["not-a-dir"] + "/x.npy"], "cannot write"),
    Case("mine out under a file", lambda f: ["mine", "--model", f["model"], "--src", f["manifest"], "--tgt",
                                             f["manifest"], "--out", f["not-a-dir"] + "/m.tsv"], "cannot write"),
    Case("embed names the file it wrote", lambda f: ["embed", "--model", f["model"], "--lang", "fr_fr", "--text",
                                                     "a", "--out", str(f["tmp"] / "vectors")], "vectors.npy", rc=0),
    Case("text encoder given audio", lambda f: ["embed", "--model", "me5-small", "--lang", "fr_fr", "--audio",
                                                f["clip"], "--out", str(f["tmp"] / "x.npy")],
         "me5-small is a text-only encoder: it embeds --text, not speech"),
    # flags
    Case("mine -k 0", lambda f: ["mine", "--model", f["model"], "--src", f["manifest"], "--tgt", f["manifest"],
                                 "--out", str(f["tmp"] / "m.tsv"), "-k", "0"], "-k must be at least 1"),
    Case("mine text file without language", lambda f: ["mine", "--model", f["model"], "--src", f["texts"], "--tgt",
                                                       f["manifest"], "--out", str(f["tmp"] / "m.tsv")], "--src-lang"),
    Case("search -k 0", lambda f: ["search", "--index", f["index"], "--lang", "fr_fr", "--text", "chat", "-k", "0"],
         "-k must be at least 1"),
    Case("search --margin -1", lambda f: ["search", "--index", f["index"], "--lang", "fr_fr", "--text", "chat",
                                          "--margin", "-1"], "--margin at least 0"),
    Case("search a missing index", lambda f: ["search", "--index", str(f["tmp"] / "none"), "--lang", "fr_fr",
                                              "--text", "a"], "no index in"),
    Case("index a missing text file", lambda f: ["index", "build", "--model", f["model"], "--texts", "none.txt",
                                                 "--lang", "fr_fr", "--out", str(f["tmp"] / "ix5")],
         "text file not found: none.txt"),
    Case("eval a missing checkpoint", lambda f: ["eval", "retrieval", "--config", str(TINY), "--checkpoint",
                                                 str(f["tmp"] / "none")], "model.json missing"),
    Case("unknown units kind", lambda f: ["units", "fit", "--config", str(TINY), "--set", "units.kind=bogus",
                                          "--manifest", f["manifest"], "--out", str(f["tmp"] / "run2")],
         "units.kind must be kmeans or features"),
    Case("mixed precision fp8", lambda f: ["train", "retrieval", "--config", str(TINY), "--set",
                                           "train.mixed_precision=fp8"], "mixed_precision must be no, bf16 or fp16"),
    Case("unknown corpus preset", lambda f: ["data", "build", "--preset", "huge", "--out", str(f["tmp"] / "c")],
         "unknown corpus preset 'huge'"),
    Case("import a missing folder", lambda f: ["data", "import", "fleurs", str(f["tmp"] / "none"), "--out",
                                               str(f["tmp"] / "imp")], "none"),
    Case("search unknown language", lambda f: ["search", "--index", f["index"], "--lang", "xx_xx", "--text", "a"],
         "unknown language code 'xx_xx'"),
    Case("search result langs empty", lambda f: ["search", "--index", f["index"], "--lang", "fr_fr", "--text", "a",
                                                 "--result-langs", ",,,"], "--result-langs"),
    Case("search an empty index", lambda f: ["search", "--index", f["empty-index"], "--lang", "fr_fr", "--text", "a"],
         "holds no texts"),
    Case("search text without language", lambda f: ["search", "--index", f["index"], "--text", "a"],
         "needs its language (--lang)"),
    Case("index kind of another index", lambda f: ["index", "build", "--model", f["model"], "--texts",
                                                   f["manifest"], "--out", f["index"], "--kind", "hnsw"],
         "is a flat index"),
    Case("index unknown kind", lambda f: ["index", "build", "--model", f["model"], "--texts", f["manifest"],
                                          "--out", str(f["tmp"] / "ix3"), "--kind", "lsh"], "unknown index kind"),
    Case("index bad param", lambda f: ["index", "build", "--model", f["model"], "--texts", f["manifest"],
                                       "--out", str(f["tmp"] / "ix4"), "--param", "m"], "key=value"),
    Case("serve port 99999", lambda f: ["serve", "--index", f["index"], "--port", "99999"],
         "--port must be in 1..65535, got 99999"),
    Case("embed both text and audio", lambda f: ["embed", "--model", f["model"], "--lang", "fr_fr", "--text", "a",
                                                 "--audio", f["clip"], "--out", str(f["tmp"] / "x.npy")],
         "exactly one of --audio, --text or --manifest"),
    Case("generate missing model", lambda f: ["generate", "--model", str(f["tmp"] / "none"), "--audio", f["clip"]],
         "model.json missing"),
    Case("data report missing corpus", lambda f: ["data", "report", "--corpus", str(f["tmp"] / "none")],
         "no manifest"),
    Case("data import unknown layout", lambda f: ["data", "import", "nope", str(f["tmp"]), "--out", "x"],
         "invalid choice: 'nope'"),
    Case("missing required flag", lambda f: ["embed", "--lang", "fr_fr"], "the following arguments are required"),
]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "polyvox", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_clear_error(case: Case, files: dict) -> None:
    done = _run(case.args(files))
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out[-3000:]
    assert done.returncode == case.rc, out[-2000:]
    if case.rc == 2 and "arguments are required" not in case.says and "invalid choice" not in case.says:
        assert "polyvox: error: " in done.stderr
    assert case.says in out, out[-2000:]


def test_every_flag_has_help() -> None:
    from polyvox.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if action.choices and hasattr(action, "_name_parser_map"):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif action.option_strings and not action.help and action.dest != "help":
                missing.append(f"{path} {action.option_strings[-1]}")
    walk(build_parser(), "polyvox")
    assert missing == []
    assert len(CASES) >= 60
