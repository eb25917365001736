"""Retrieval recipe (LLM dual encoder): fit units -> encode units -> train -> evaluate.

Run folder (`cfg.out_dir`): ``units/`` (tokenizer), ``cache/`` (unit sequences), ``checkpoints/``,
``model/`` (final weights + units), ``metrics.jsonl``, ``eval.{json,md,png}``, ``config.yaml``.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path

import numpy as np
import torch

from polyvox.config import RetrievalConfig, UnitsConfig, config_to_dict, save_config
from polyvox.data.degrade import augmentation_subset, write_degraded
from polyvox.data.manifest import Utterance, read_manifest
from polyvox.eval.probe import linear_probe
from polyvox.eval.report import write_report
from polyvox.eval.retrieval import evaluate_retrieval
from polyvox.losses import contrastive_loss, gather_with_grad, spread_out
from polyvox.models.dual_encoder import DualEncoder, load_backbone
from polyvox.models.export import read_meta
from polyvox.models.sources import fingerprint
from polyvox.models.speech_encoder import SpeechEncoder
from polyvox.models.units import (
    BadLine,
    FeatureTokenizer,
    SpeechTokenizer,
    UnitSpec,
    encode_units,
    encoder_for_units,
    fit_units,
    load_speech_tokenizer,
)
from polyvox.sysmem import release_memory
from polyvox.train.loop import train

log = logging.getLogger(__name__)


def build_speech_encoder(cfg: UnitsConfig) -> SpeechEncoder:
    return SpeechEncoder.load(cfg.encoder, cfg.layer, cfg.pool, cfg.pad_to_30s)


def _manifest(cfg: RetrievalConfig, split: str | None) -> tuple[list[Utterance], Path]:
    path = Path(cfg.data.manifest)
    return read_manifest(path, split=split), path.parent


def units_dir(cfg: RetrievalConfig) -> Path:
    return Path(cfg.out_dir) / "units"


def run_units_fit(cfg: RetrievalConfig) -> tuple[SpeechTokenizer, list[BadLine]]:
    """Fit the k-means unit tokenizer on (a seeded sample of) the training split and save it; with
    ``units.kind: features`` there is nothing to fit, and the feature tokenizer is saved at once."""
    u = cfg.units
    if u.kind not in ("kmeans", "features"):
        raise ValueError(f"units.kind must be kmeans or features, got {u.kind!r}")
    if u.kind == "features":
        spec = UnitSpec(encoder=u.encoder, encoder_fingerprint=fingerprint(u.encoder), layer=u.layer, pool=u.pool,
                        pad_to_30s=u.pad_to_30s, dedup=False, num_units=0, kind="features")
        tok = FeatureTokenizer(spec, build_speech_encoder(u).dim)
        tok.save(units_dir(cfg))
        return tok, []
    utts, root = _manifest(cfg, cfg.data.train_split)
    if not utts:
        raise ValueError(f"{cfg.data.manifest}: no utterances in split {cfg.data.train_split!r}")
    rng = np.random.default_rng(u.seed)
    if len(utts) > u.max_fit_utterances:
        utts = [utts[i] for i in sorted(rng.choice(len(utts), u.max_fit_utterances, replace=False))]
    spec = UnitSpec(encoder=u.encoder, encoder_fingerprint=fingerprint(u.encoder), layer=u.layer, pool=u.pool,
                    pad_to_30s=u.pad_to_30s, dedup=u.dedup, num_units=u.num_units)
    tok, bad = fit_units(utts, root, build_speech_encoder(u), spec, u.kmeans_iters, u.max_fit_frames, u.seed,
                         u.batch_size)
    tok.save(units_dir(cfg))
    log.info("unit tokenizer saved to %s (fingerprint %s)", units_dir(cfg), tok.fingerprint)
    return tok, bad


def run_units_encode(cfg: RetrievalConfig, split: str | None = None, encoder: SpeechEncoder | None = None,
                     tok: SpeechTokenizer | None = None) -> tuple[dict, list[BadLine]]:
    """Unit sequences (or features) of a split (all splits when None), cached in the run folder; bad lines
    reported. `tok` defaults to the run's own tokenizer (``out_dir/units``)."""
    tok = tok or load_speech_tokenizer(units_dir(cfg))
    utts, root = _manifest(cfg, split)
    encoder = encoder or encoder_for_units(tok)
    units, bad = encode_units(utts, root, encoder, tok, Path(cfg.out_dir) / "cache", cfg.units.batch_size)
    for b in bad:
        log.warning("bad line %s: %s", b.id, b.error)
    del encoder
    release_memory()  # the encoder and the decoded audio are gone: give their heap back
    return units, bad


def run_degraded_encode(cfg: RetrievalConfig, utts: list[Utterance], name: str, tok: SpeechTokenizer,
                        under: str = "degraded") -> dict:
    """Speech inputs of copies of `utts` under a recording condition (`polyvox.data.degrade`), written once
    to ``out_dir/<under>/<name>`` and cached like the originals; keyed by the original utterance id."""
    folder = Path(cfg.out_dir) / under / name
    copies = write_degraded(utts, Path(cfg.data.manifest).parent, folder, name)
    units, _ = encode_units(copies, folder, encoder_for_units(tok), tok, Path(cfg.out_dir) / "cache",
                            cfg.units.batch_size)
    release_memory()
    return {k.split("#")[0]: v for k, v in units.items()}


def run_units_probe(cfg: RetrievalConfig, name: str = "probe") -> dict:
    """The linear probe (`polyvox.eval.probe`) of the run's units, fitted on the training split and scored on
    the test split; writes ``<out_dir>/<name>.{json,md,png}``."""
    units, _ = run_units_encode(cfg)
    train_utts, _ = _manifest(cfg, cfg.data.train_split)
    test_utts, _ = _manifest(cfg, cfg.data.test_split)
    result = linear_probe(train_utts, test_utts, units)
    write_report(result, cfg.out_dir, name, config_to_dict(cfg))
    return result


def _batches(cfg: RetrievalConfig, model: DualEncoder, train_set: list[tuple[list[int], str, str, str | None]],
             pairs: list[tuple[str, str, str]], versions: dict[int, list[int]] | None = None):
    """The step -> micro-batches function: a pure function of (seed, step), so a resumed run sees the same data.

    `train_set` items are (speech, lang, transcript, pivot-language translation or None).

    `versions` maps an item of `train_set` to its other versions (augmented copies, later in `train_set`):
    each epoch draws one version of every item, so a batch never holds two recordings of one text.
    """
    t, pivot = cfg.train, cfg.data.pivot_lang
    versions = versions or {}
    copies = {j for v in versions.values() for j in v}

    by_lang: dict[str, list[int]] = {}
    for i, (_, lang, *_) in enumerate(train_set):
        if i not in copies:
            by_lang.setdefault(lang, []).append(i)

    @functools.lru_cache(maxsize=2)
    def epoch_batches(epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([t.seed, epoch])
        # one language per batch: in-batch negatives then differ in content, not just in language,
        # which is what per-language evaluation asks of the model
        pools = [np.array(v) for _, v in sorted(by_lang.items())]
        pools = pools if t.same_language_batches else [np.concatenate(pools)]
        out = []
        for pool in pools:
            pool = rng.permutation(pool)
            if versions:
                pool = np.array([rng.choice([i, *versions.get(i, [])]) for i in pool])
            out += [pool[i : i + t.batch_size] for i in range(0, max(1, len(pool) - t.batch_size + 1), t.batch_size)]
        return [out[i] for i in rng.permutation(len(out))]

    per_epoch = len(epoch_batches(0))

    def global_indices(step: int) -> list[int]:
        epoch, i = divmod(step, per_epoch)
        return [int(x) for x in epoch_batches(epoch)[i]]

    def batches(step: int, rank: int, world: int) -> list[dict]:
        """Micro-batch m of the step is the same set of pairs for any number of processes (each holds every
        world-th); the losses gather the processes' embeddings, so its negatives are the whole micro-batch. An
        extra loss (translation pairs, speech translation) runs on a micro-batch only where every process holds
        its items: every process then makes the same collective calls."""
        g = global_indices(step)
        extra = []
        if cfg.loss.translation_weight > 0 and pairs:
            rng = np.random.default_rng([t.seed, step, 1])
            extra = [pairs[i] for i in rng.choice(len(pairs), min(len(pairs), cfg.loss.translation_batch_size), replace=False)]
        micros = []
        for m in range(t.grad_accum):
            shares = [[train_set[i] for i in g[m :: t.grad_accum][r::world]] for r in range(world)]
            sel = shares[rank]
            mp = extra[m :: t.grad_accum]
            mp = mp[rank::world] if len(mp) >= world else []
            has = [[j for j, s in enumerate(share) if s[3]] for share in shares]
            xl = has[rank] if (cfg.loss.speech_translation_weight > 0 and sum(map(len, has)) > 1
                               and all(has)) else []
            micros.append({
                "speech": model.tokenize_speech([s[0] for s in sel], [s[1] for s in sel]),
                "text": model.tokenize_text([s[2] for s in sel], [s[1] for s in sel]),
                "src": model.tokenize_text([p[0] for p in mp], [p[1] for p in mp]) if mp else None,
                "tgt": model.tokenize_text([p[2] for p in mp], [pivot] * len(mp)) if mp else None,
                "xl_index": xl,  # items whose translation is in "xl"
                "xl": model.tokenize_text([sel[j][3] for j in xl], [pivot] * len(xl)) if xl else None,
            })
        return micros

    return batches


def _loss_fn(cfg: RetrievalConfig):
    lc = cfg.loss

    def loss_fn(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        groups = [batch["speech"], batch["text"]] + ([batch["src"], batch["tgt"]] if batch["src"] is not None else [])
        xl = batch.get("xl")
        embs = model(*groups, *([xl] if xl is not None else []))
        scale = getattr(model, "module", model).log_scale.clamp(0.0, math.log(100.0)).exp()
        local = embs[0]
        s, t = gather_with_grad(local), gather_with_grad(embs[1])  # (B, E) each: every process's pairs
        main = contrastive_loss(s, t, scale)
        reg = spread_out(s) + spread_out(t)
        loss = main + lc.spread_out * reg
        m = {"contrastive": main.item(), "spread_out": reg.item(), "scale": scale.item(),
             "batch_acc": (s @ t.T).argmax(1).eq(torch.arange(len(s), device=s.device)).float().mean().item()}
        if batch["src"] is not None:
            tr = contrastive_loss(gather_with_grad(embs[2]), gather_with_grad(embs[3]), scale)
            loss = loss + lc.translation_weight * tr
            m["translation"] = tr.item()
        if xl is not None:
            st = contrastive_loss(gather_with_grad(local[batch["xl_index"]]), gather_with_grad(embs[-1]), scale)
            loss = loss + lc.speech_translation_weight * st
            m["speech_translation"] = st.item()
        return loss, m

    return loss_fn


CLOSED_FORM = ("text_ngrams.", "speech_direct.")
"""Parameters `DualEncoder.closed_form_init` sets: with it, they train at `train.closed_form_lr` (0: frozen)."""


def build_model(cfg: RetrievalConfig, units: SpeechTokenizer) -> DualEncoder:
    backbone, tok = load_backbone(cfg.model, cfg.train.seed)
    model = DualEncoder(backbone, tok, units.num_units, cfg.model, cfg.train.seed, cfg.loss.temperature,
                        feature_dim=getattr(units, "dim", None))
    model.log_scale.requires_grad_(cfg.loss.learn_temperature)
    if cfg.model.closed_form_init:  # what the closed form sets trains at its own rate, or not at all
        for name, p in model.named_parameters():
            if name.startswith(CLOSED_FORM):
                p.requires_grad_(cfg.train.closed_form_lr > 0)
    model.unit_tokenizer = units
    return model


def closed_form_init(cfg: RetrievalConfig, model: DualEncoder, train_set: list[tuple], pairs: list[tuple]) -> None:
    """`model.closed_form_init` from the training clips, transcripts and translations, when configured."""
    if cfg.model.closed_form_init:
        extra = [t for s in train_set if (t := s[3])] + [p[2] for p in pairs]
        model.closed_form_init([s[0] for s in train_set], [s[2] for s in train_set], extra, cfg.model.closed_form_init)
        log.info("closed-form start of the direct paths from %d clips", len(train_set))


NEW_PARAMS = ("audio_embed", "adapter.", "spelling.", "text_ngrams.", "speech_direct.", "proj.", "log_scale")
"""Parameters the LLM did not have: they train at `train.new_params_lr`."""


def param_groups(model: DualEncoder, t) -> list[dict]:
    """AdamW groups: new vs backbone parameters (two learning rates), each split into decayed matrices and
    undecayed vectors (biases, norms), audio rows and temperature, which weight decay would only pull to 0.
    After a closed-form start, the parameters it set form their own group at `closed_form_lr`."""
    groups: dict[tuple[float, bool], list] = {}
    closed_form = CLOSED_FORM if model.cfg.closed_form_init else ()
    for name, p in model.named_parameters():
        if p.requires_grad:
            lr = (t.closed_form_lr if closed_form and name.startswith(closed_form)
                  else t.new_params_lr if name.startswith(NEW_PARAMS) else t.lr)
            decay = t.decay_all or (p.ndim >= 2 and not name.startswith(("audio_embed", "log_scale")))
            groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": t.weight_decay if decay else 0.0}
            for (lr, decay), ps in sorted(groups.items())]


def training_set(cfg: RetrievalConfig, usable: list[Utterance], units: dict, tok: SpeechTokenizer
                 ) -> tuple[list[tuple], dict[int, list[int]]]:
    """(speech, language, transcript, pivot translation) per utterance, then its `train.augment` copies
    (encoded once; of a seeded `train.augment_fraction` of the utterances), and which copies each original
    has (item -> indices of its copies)."""
    train_set = [(units[u.id], u.lang, u.text, u.translations.get(cfg.data.pivot_lang)) for u in usable]
    versions: dict[int, list[int]] = {}
    picked = augmentation_subset(usable, cfg.train.augment_fraction, cfg.train.seed)
    for name in cfg.train.augment:
        aug = run_degraded_encode(cfg, picked, name, tok, under="augmented")
        for i, u in enumerate(usable):
            if len(aug.get(u.id, ())):
                versions.setdefault(i, []).append(len(train_set))
                train_set.append((aug[u.id], *train_set[i][1:]))
        log.info("augmentation %s: %d training copies", name, len(aug))
    return train_set, versions


def run_train(cfg: RetrievalConfig, units: dict[str, list[int]] | None = None) -> Path:
    """Train the dual encoder on the training split; returns the exported model folder (``out_dir/model``)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tok = load_speech_tokenizer(units_dir(cfg))
    if units is None:
        units, _ = run_units_encode(cfg, cfg.data.train_split)
    utts, _ = _manifest(cfg, cfg.data.train_split)
    train_set, versions = training_set(cfg, [u for u in utts if u.id in units and len(units[u.id])], units, tok)
    if len(train_set) < 2:
        raise ValueError(f"need at least 2 usable training utterances, found {len(train_set)}")
    pairs = sorted({u.group or u.id: (u.text, u.lang, u.translations[cfg.data.pivot_lang]) for u in utts
                    if cfg.data.pivot_lang in u.translations}.values())
    model = build_model(cfg, tok)
    closed_form_init(cfg, model, train_set, pairs)
    release_memory()  # the LLM's dropped layers and loading buffers
    groups = param_groups(model, cfg.train)
    log.info("training on %d utterances in %d languages; %.1fM trainable parameters", len(train_set),
             len({s[1] for s in train_set}), sum(p.numel() for g in groups for p in g["params"]) / 1e6)
    train(model, groups, _batches(cfg, model, train_set, pairs, versions), _loss_fn(cfg), cfg.train, out)
    return model.save(out / "model", extra={"train_languages": sorted({s[1] for s in train_set})})


def run_eval(cfg: RetrievalConfig, checkpoint: str | Path | None = None, name: str = "eval",
             units: dict[str, list[int]] | None = None) -> dict:
    """Evaluate a trained model (default ``out_dir/model``) on the test split; writes JSON, Markdown and PNG.

    `units` (utterance id -> unit ids) skips re-encoding when the caller already has them; otherwise the
    test split is encoded with the checkpoint's own unit tokenizer (cached in ``out_dir/cache``).
    """
    folder = Path(checkpoint or Path(cfg.out_dir) / "model")
    model = DualEncoder.load(folder)
    seen = set(read_meta(folder, "dual_encoder").get("train_languages", []))
    bad = []
    if units is None:
        units, bad = run_units_encode(cfg, cfg.data.test_split, tok=model.unit_tokenizer)
    utts, _ = _manifest(cfg, cfg.data.test_split)
    result = evaluate_retrieval(model, utts, units, seen, cfg.data.pivot_lang, tuple(cfg.eval.ks), cfg.eval.batch_size)
    result["bad_lines"] = [b.__dict__ for b in bad]
    paths = write_report(result, cfg.out_dir, name, config_to_dict(cfg))
    log.info("report: %s", ", ".join(str(p) for p in paths.values()))
    return result
