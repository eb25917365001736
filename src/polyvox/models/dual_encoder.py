"""LLM dual encoder: one causal-LM tower embeds audio-unit sequences and texts into one space."""

from __future__ import annotations

import functools
import logging
import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from polyvox.config import ModelConfig, config_from_dict
from polyvox.data.languages import language_name
from polyvox.models.adapter import build_adapter
from polyvox.models.export import load_trainable, read_meta, save_trainable, trainable_state
from polyvox.models.sources import fingerprint, load_llm
from polyvox.models.units import load_speech_tokenizer

log = logging.getLogger(__name__)

# Where a base model keeps its stack of transformer blocks (llama/gemma/qwen/mistral, gpt2/bloom, opt).
LAYER_PATHS = ("layers", "h", "decoder.layers")
POOLINGS = ("mean", "content")
DIRECT_INPUTS = ("inputs", "frames")
"""`ModelConfig.speech_direct`: statistics of the LLM's speech input vectors, or of the encoder frames."""
"""``mean``: over every non-pad position (the paper); ``content``: over the speech or text positions only,
leaving out the language/modality prefix, which is the same for every item of a language."""
ADAPTER_OPTIONS = {"conv-res": lambda c: {"blocks": c.adapter_blocks, "stride": c.adapter_stride,
                                          "dropout": c.adapter_dropout}}


def _layer_list(backbone: nn.Module) -> tuple[nn.Module, str]:
    for path in LAYER_PATHS:
        parent, *rest = path.split(".")
        node = getattr(backbone, parent, None)
        for part in rest:
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList):
            owner = backbone if not rest else getattr(backbone, parent)
            return owner, path.split(".")[-1]
    raise ValueError(f"cannot find the layer stack of {type(backbone).__name__} (looked for {LAYER_PATHS})")


def truncate_layers(backbone: nn.Module, n: int) -> None:
    """Keep only the first `n` transformer layers of a base model (in place)."""
    owner, name = _layer_list(backbone)
    layers = getattr(owner, name)
    if not 1 <= n <= len(layers):
        raise ValueError(f"num_layers must be in 1..{len(layers)}, got {n}")
    setattr(owner, name, layers[:n])
    cfg = backbone.config
    cfg.num_hidden_layers = n
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:n]


def load_backbone(cfg: ModelConfig, seed: int = 0):
    """The base model (no LM head) and tokenizer of `cfg.backbone`, truncated / randomised as configured."""
    from transformers import AutoModelForCausalLM

    lm, tok = load_llm(cfg.backbone)
    if cfg.random_init:
        torch.manual_seed(seed)
        lm = AutoModelForCausalLM.from_config(lm.config)
    backbone = lm.base_model  # the decoder stack; the LM head is never computed
    if cfg.num_layers is not None:
        truncate_layers(backbone, cfg.num_layers)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return backbone, tok


@functools.lru_cache(maxsize=1 << 16)
def char_ngram_ids(text: str, orders: int, buckets: int) -> tuple[int, ...]:
    """The distinct hash buckets of the character 1..`orders`-grams of lower-cased `text` (never empty)."""
    text = text.lower()
    grams = {text[i : i + n] for n in range(1, orders + 1) for i in range(len(text) - n + 1)}
    return tuple(sorted({zlib.crc32(g.encode()) % buckets for g in grams})) or (0,)


class Spelling(nn.Module):
    """What a text token looks like: the sum of its hashed character 1..`orders`-grams (fastText-style), a
    low-rank embedding added to the token's own input embedding.

    Subword ids say nothing about how a token is spelled, and with little paired speech the tower cannot
    learn each token's sound on its own; spelling is shared by every token (and language) that contains
    the same letters. The output layer starts at zero, so training starts from the LLM as it was.
    """

    def __init__(self, buckets: int, dim: int, orders: int = 4, rank: int = 64):
        super().__init__()
        self.buckets, self.orders = buckets, orders
        self.table = nn.EmbeddingBag(buckets, rank, mode="sum")
        self.out = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.out.weight)

    def ngram_ids(self, token: str) -> tuple[int, ...]:
        # SentencePiece's word-start mark is a space
        return char_ngram_ids(token.replace("\u2581", " "), self.orders, self.buckets)

    def forward(self, ngrams: list[list[tuple[int, ...]]], t: int, device) -> torch.Tensor:
        """Per item and token, n-gram bucket ids -> (B, t, D), zero past each item's tokens."""
        flat = [g for item in ngrams for g in item]
        offsets = torch.tensor([0] + [len(g) for g in flat[:-1]], device=device).cumsum(0)
        vecs = self.out(self.table(torch.tensor([i for g in flat for i in g], device=device), offsets))  # (N, D)
        out = vecs.new_zeros(len(ngrams), t, vecs.shape[-1])
        rows = torch.tensor([b for b, item in enumerate(ngrams) for _ in item], device=device)
        cols = torch.tensor([j for item in ngrams for j in range(len(item))], device=device)
        out[rows, cols] = vecs
        return out


class TextNgrams(nn.Module):
    """A whole text's character n-grams, spaces included, as a bag of learned vectors mapped to the output
    space, beside the LLM's pooled state. Each n-gram is weighted by its `idf` (ones until `fit_tfidf`) and the
    weights are L2-normalised, as in TF-IDF. The rows start random Gaussian and the map orthogonal, so from the
    first step texts that share n-grams are close (a random sketch of their n-gram counts) and the speech tower
    has a fixed-looking target to align to while both learn; `fit_tfidf` makes the rows the truncated-SVD basis
    of the training texts' TF-IDF matrix instead (the linear probe's text side)."""

    def __init__(self, buckets: int, dim: int, orders: int = 4, rank: int = 256):
        super().__init__()
        self.buckets, self.orders = buckets, orders
        self.table = nn.EmbeddingBag(buckets, rank, mode="sum")  # rows ~ N(0, 1)
        self.out = nn.Linear(rank, dim, bias=False)
        nn.init.orthogonal_(self.out.weight)
        self.register_buffer("idf", torch.ones(buckets))

    def ngram_ids(self, text: str) -> tuple[int, ...]:
        return char_ngram_ids(f" {' '.join(text.split())} ", self.orders, self.buckets)

    def _bags(self, bags: list[tuple[int, ...]], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat ids, bag offsets and L2-normalised idf weights."""
        sizes = torch.tensor([len(b) for b in bags], device=device)
        offsets = torch.cat([sizes.new_zeros(1), sizes[:-1].cumsum(0)])
        ids = torch.tensor([i for b in bags for i in b], device=device)
        w = self.idf[ids]
        norms = torch.zeros(len(bags), device=device).index_add_(0, torch.arange(len(bags), device=device)
                                                                 .repeat_interleave(sizes), w * w).sqrt()
        return ids, offsets, w / norms.repeat_interleave(sizes)

    def forward(self, bags: list[tuple[int, ...]], device) -> torch.Tensor:
        """Per item, n-gram bucket ids -> (B, dim)."""
        ids, offsets, weights = self._bags(bags, device)
        return self.out(self.table(ids, offsets, per_sample_weights=weights))

    @torch.no_grad()
    def fit_tfidf(self, bags: list[tuple[int, ...]]) -> None:
        """Smoothed idf from these texts' bags, and the table's rows from the top right-singular vectors of
        their TF-IDF matrix, so a text's bag is its TF-IDF vector's truncated-SVD projection."""
        dev = self.idf.device
        df = torch.zeros(self.buckets, device=dev).index_add_(
            0, torch.tensor([i for b in bags for i in b], device=dev), torch.ones(sum(len(b) for b in bags), device=dev))
        self.idf.copy_(torch.log((1 + len(bags)) / (1 + df)) + 1)
        ids, _, w = self._bags(bags, dev)
        rows = torch.arange(len(bags), device=dev).repeat_interleave(torch.tensor([len(b) for b in bags], device=dev))
        tfidf = torch.sparse_coo_tensor(torch.stack([rows, ids]), w, (len(bags), self.buckets),
                                        check_invariants=True).coalesce()
        rank = self.table.weight.shape[1]
        _, _, v = torch.svd_lowrank(tfidf, q=min(rank + 16, *tfidf.shape), niter=4)  # (buckets, q)
        self.table.weight.zero_()[:, : min(rank, v.shape[1])] = v[:, :rank]


def _standardize(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """`norm(x)`, except that a single item in training mode uses the running statistics."""
    if len(x) > 1 or not norm.training:
        return norm(x)
    return F.batch_norm(x, norm.running_mean, norm.running_var, training=False)


@dataclass
class Inputs:
    """A batch of one kind, before padding: each item is a language/modality prefix (token ids) plus its
    content: text token ids (``text``), audio-unit ids (``units``) or (T, D) encoder features (``features``)."""

    kind: str
    prefix: list[list[int]]
    content: list
    spelling: list[list[tuple[int, ...]]] | None = None
    """Text only, with `ModelConfig.spelling_buckets`: per item and token, the hashed character n-grams."""
    ngrams: list[tuple[int, ...]] | None = None
    """Text only, with `ModelConfig.text_ngram_buckets`: per item, the whole text's hashed character n-grams."""

    def __len__(self) -> int:
        return len(self.prefix)


class DualEncoder(nn.Module):
    """Shared LLM tower over texts and speech, pooled and projected into one space.

    Speech enters as discrete audio units (K new rows beside the input-embedding table) or, when
    `feature_dim` is given, as continuous encoder frames through a trainable adapter
    (`cfg.adapter`). Every input is ``[prefix ; content]``, with the prefix naming language and modality.
    """

    def __init__(self, backbone: nn.Module, tokenizer, num_units: int, cfg: ModelConfig, seed: int = 0,
                 temperature: float = 0.05, feature_dim: int | None = None):
        super().__init__()
        self.cfg, self.tokenizer, self.num_units, self.seed = cfg, tokenizer, num_units, seed
        self.feature_dim = feature_dim
        self.unit_tokenizer = None  # saved beside the weights when set, so one folder embeds raw audio
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {cfg.pooling!r}; known: {', '.join(POOLINGS)}")
        torch.manual_seed(seed)
        emb = backbone.get_input_embeddings()
        self.vocab_size, dim = emb.weight.shape
        with torch.no_grad():  # new inputs start from the statistics of the (scaled) text embeddings
            sample = emb(torch.arange(0, self.vocab_size, max(1, self.vocab_size // 4096)))
            init = sample.mean(0) + sample.std(0) * torch.randn(num_units, dim)
            rms = float(sample.pow(2).mean().sqrt())
        if feature_dim:
            self.audio_embed = None
            self.adapter = build_adapter(cfg.adapter, feature_dim, dim, hidden=cfg.adapter_hidden, out_scale=rms,
                                         **ADAPTER_OPTIONS.get(cfg.adapter, lambda c: {})(cfg))
        else:
            self.audio_embed = nn.Parameter(init)  # (K, D)
            self.adapter = None
        emb.weight.requires_grad_(cfg.train_text_embeddings)
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            backbone = get_peft_model(backbone, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                           target_modules="all-linear", lora_dropout=0.0))
        if cfg.freeze_backbone:  # the LLM stays as it is: only the speech side, projection and temperature train
            backbone.requires_grad_(False)
        self.backbone = backbone
        self.spelling = Spelling(cfg.spelling_buckets, dim, cfg.spelling_orders) if cfg.spelling_buckets else None
        direct_out = (cfg.direct_dim or cfg.proj_dim) if cfg.direct_weight else cfg.proj_dim  # direct paths' size
        self.text_ngrams = (TextNgrams(cfg.text_ngram_buckets, direct_out, cfg.spelling_orders,
                                       **({"rank": direct_out} if cfg.direct_weight else {}))
                            if cfg.text_ngram_buckets else None)
        if cfg.speech_direct not in ("", *DIRECT_INPUTS):
            raise ValueError(f"unknown speech_direct {cfg.speech_direct!r}; known: {', '.join(DIRECT_INPUTS)}")
        if cfg.speech_direct == "frames" and not feature_dim:
            raise ValueError("speech_direct: frames needs continuous features (units.kind: features)")
        if cfg.direct_weight and not (0 < cfg.direct_weight < 1 and cfg.speech_direct and cfg.text_ngram_buckets):
            raise ValueError("direct_weight must be in (0, 1), with speech_direct and text_ngram_buckets set")
        width = 2 * (feature_dim if cfg.speech_direct == "frames" else dim)
        self.speech_direct = (nn.Sequential(nn.BatchNorm1d(width, affine=False), nn.Linear(width, direct_out))
                              if cfg.speech_direct else None)
        # An LLM's hidden states share a few huge dimensions (mean cosine of two pooled texts > 0.99 in
        # gemma3's early layers), so each modality is standardised per dimension before the projection.
        self.pool_norm = nn.ModuleDict({m: nn.BatchNorm1d(dim, affine=False, momentum=0.1)
                                        for m in ("speech", "text")}) if cfg.standardize else None
        self.proj = nn.Linear(dim, cfg.proj_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))  # contrastive inverse temperature

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    # -- inputs ------------------------------------------------------------------------------------
    def _prefixes(self, langs: list[str], modality: str) -> list[list[int]]:
        return self.tokenizer([f"{language_name(lg)} {modality}: " for lg in langs])["input_ids"]

    def tokenize_text(self, texts: list[str], langs: list[str]) -> Inputs:
        body = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                              max_length=self.cfg.max_text_tokens)["input_ids"]
        spelling = ([[self.spelling.ngram_ids(t) for t in self.tokenizer.convert_ids_to_tokens(ids)] for ids in body]
                    if self.spelling is not None else None)
        bags = [self.text_ngrams.ngram_ids(t) for t in texts] if self.text_ngrams is not None else None
        return Inputs("text", self._prefixes(langs, "text"), body, spelling, bags)

    def tokenize_speech(self, units: list, langs: list[str]) -> Inputs:
        """Unit-id sequences, or (T, D) feature arrays for a continuous-input model, with their prefixes."""
        n = self.cfg.max_speech_tokens
        if self.feature_dim:
            content = [torch.as_tensor(np.asarray(x, dtype=np.float32)[: n * self._stride]) for x in units]
            return Inputs("features", self._prefixes(langs, "speech"), content)
        return Inputs("units", self._prefixes(langs, "speech"), [[int(u) for u in us[:n]] for us in units])

    @property
    def _stride(self) -> int:
        return getattr(self.adapter, "stride", 1)

    def _content(self, x: Inputs) -> tuple[torch.Tensor, list[int]]:
        """(B, T, D) content embeddings of a batch (right-padded) and each item's length."""
        dev = self.device
        if x.kind == "features":
            lengths = torch.tensor([len(c) for c in x.content], device=dev)
            feats = nn.utils.rnn.pad_sequence(list(x.content), batch_first=True).to(dev)  # (B, T, D_enc)
            out, lengths = self.adapter(feats, lengths)
            return out, lengths.tolist()
        lengths = [len(c) for c in x.content]
        ids = torch.tensor([c + [0] * (max(lengths) - len(c)) for c in x.content], device=dev)  # (B, T)
        if x.kind == "units":
            return self.audio_embed[ids], lengths
        emb = self.backbone.get_input_embeddings()(ids)  # (B, T, D)
        if self.spelling is not None:
            emb = emb + self.spelling(x.spelling, ids.shape[1], dev).to(emb.dtype)
        return emb, lengths

    def _embed(self, x: Inputs) -> torch.Tensor:
        content, lengths = self._content(x)
        prefix_len = [len(p) for p in x.prefix]
        t = max(len(p) + n for p, n in zip(x.prefix, lengths))
        width = max(prefix_len)
        pre_ids = torch.tensor([p + [0] * (width - len(p)) for p in x.prefix], device=self.device)
        pre = self.backbone.get_input_embeddings()(pre_ids).to(content.dtype)  # (B, P, D)
        rows = [torch.cat([pre[b, : len(p)], content[b, :n]]) for b, (p, n) in enumerate(zip(x.prefix, lengths))]
        embeds = nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, T, D)
        pos = torch.arange(t, device=self.device)[None, :]
        total = torch.tensor([len(r) for r in rows], device=self.device)[:, None]
        mask = (pos < total).long()  # (B, T)
        hidden = self.backbone(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        keep = mask if self.cfg.pooling == "mean" else mask * (pos >= torch.tensor(prefix_len, device=self.device)[:, None])
        m = keep.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # (B, D) mean over pooled positions
        pooled = pooled.to(self.proj.weight.dtype)
        if self.pool_norm is not None:
            pooled = _standardize(self.pool_norm["text" if x.kind == "text" else "speech"], pooled)
        out = self.proj(pooled)  # (B, E)
        side = None  # the direct path: statistics of the speech inputs, or the text's n-gram bag
        if x.kind != "text" and self.speech_direct is not None:
            norm, lin = self.speech_direct
            side = lin(_standardize(norm, self._direct_stats(x, content, lengths)))
        if x.ngrams is not None:
            side = self.text_ngrams(x.ngrams, self.device)
        if side is not None and self.cfg.direct_weight:
            w = self.cfg.direct_weight
            out = torch.cat([math.sqrt(1 - w) * F.normalize(out, dim=-1), math.sqrt(w) * F.normalize(side, dim=-1)], -1)
        elif side is not None:
            out = out + side.to(out.dtype)
        return F.normalize(out, dim=-1)

    @property
    def embed_dim(self) -> int:
        """Size of the output embeddings."""
        return self.cfg.proj_dim + ((self.cfg.direct_dim or self.cfg.proj_dim) if self.cfg.direct_weight else 0)

    def _direct_stats(self, x: Inputs, content: torch.Tensor | None = None, lengths: list[int] | None = None
                      ) -> torch.Tensor:
        """The direct path's input, (B, 2 * width): mean and max of the LLM input vectors (`content`, with
        `lengths`), or mean and standard deviation of the encoder frames (`x.content`)."""
        if self.cfg.speech_direct == "frames":
            lengths = [len(c) for c in x.content]
            content = nn.utils.rnn.pad_sequence(list(x.content), batch_first=True).to(self.device)  # (B, T, D_enc)
        valid = torch.arange(content.shape[1], device=self.device)[None, :, None] < torch.tensor(
            lengths, device=self.device)[:, None, None]  # (B, T, 1)
        mean = (content * valid).sum(1) / valid.sum(1)
        if self.cfg.speech_direct == "frames":
            spread = (((content - mean[:, None]) * valid).pow(2).sum(1) / valid.sum(1)).sqrt()
        else:
            spread = content.masked_fill(~valid, float("-inf")).amax(1)
        return torch.cat([mean, spread], -1).float()

    @torch.no_grad()
    def closed_form_init(self, speech: list, texts: list[str], extra_texts: list[str] = (), alpha: float = 100.0,
                         batch_size: int = 64) -> None:
        """Start the direct paths at the linear probe's solution: the text bag at the TF-IDF / truncated-SVD
        basis of `texts` + `extra_texts`, the speech path at the ridge regression (`alpha`) from each clip's
        direct-path statistics onto its transcript's bag, and, when the paths are summed, the LLM path's
        projection at zero.

        Args:
            speech: training clips (unit ids or (T, D) features), one per text of `texts`.
            texts: their transcripts.
            extra_texts: further texts the bag sees in training (translations), for the idf and the basis.
        """
        if self.text_ngrams is None or self.speech_direct is None:
            raise ValueError("closed_form_init needs model.text_ngram_buckets and model.speech_direct")
        self.text_ngrams.fit_tfidf([self.text_ngrams.ngram_ids(t) for t in dict.fromkeys([*texts, *extra_texts])])
        was_training = self.training
        self.eval()  # no adapter dropout in the statistics
        stats, targets = [], []
        for i in range(0, len(texts), batch_size):
            x = self.tokenize_speech(speech[i : i + batch_size], ["en_us"] * len(speech[i : i + batch_size]))
            stats.append(self._direct_stats(x, *(self._content(x) if self.cfg.speech_direct == "inputs" else ())))
            targets.append(self.text_ngrams([self.text_ngrams.ngram_ids(t) for t in texts[i : i + batch_size]],
                                            self.device))
        self.train(was_training)
        x, y = torch.cat(stats).double(), torch.cat(targets).double()  # (N, F), (N, E)
        norm, lin = self.speech_direct
        mean, var = x.mean(0), x.var(0)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        xs = (x - mean) / (var + norm.eps).sqrt()
        w = torch.linalg.solve(xs.T @ xs + alpha * torch.eye(xs.shape[1], dtype=xs.dtype), xs.T @ (y - y.mean(0)))
        lin.weight.copy_(w.T)
        lin.bias.copy_(y.mean(0))
        if not self.cfg.direct_weight:  # summed paths: the LLM's random projection would drown the probe
            self.proj.weight.zero_()
            self.proj.bias.zero_()

    exported_state = ("pool_norm.", "speech_direct.", "text_ngrams.")  # running statistics, closed-form paths

    # -- encoders ----------------------------------------------------------------------------------
    def forward(self, *groups: Inputs) -> tuple[torch.Tensor, ...]:
        """Batches of inputs -> one (B_i, E) tensor of L2-normalised embeddings per batch.

        Each batch is padded on its own (speech runs much longer than text).
        """
        return tuple(self._embed(x) for x in groups)

    def encode_text(self, texts: list[str], lang: str | list[str]) -> torch.Tensor:
        """Embed texts of one language (or one language per text); (B, E)."""
        langs = [lang] * len(texts) if isinstance(lang, str) else lang
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"empty text at position(s) {bad}")
        return self(self.tokenize_text(texts, langs))[0]

    def encode_speech(self, units: list, lang: str | list[str]) -> torch.Tensor:
        """Embed audio-unit sequences (or (T, D) feature arrays for a continuous-input model) of one
        language (or one per item); (B, E)."""
        langs = [lang] * len(units) if isinstance(lang, str) else lang
        for i, us in enumerate(units):
            if len(us) == 0:
                raise ValueError(f"empty unit sequence at position {i}")
            if self.feature_dim:
                shape = np.shape(us)
                if len(shape) != 2 or shape[1] != self.feature_dim:
                    raise ValueError(f"features at position {i} must be (T, {self.feature_dim}), got {shape}")
                if not np.isfinite(np.asarray(us, dtype=np.float32)).all():
                    raise ValueError(f"features at position {i} are not finite")
            elif min(us) < 0 or max(us) >= self.num_units:
                raise ValueError(f"unit ids at position {i} must be in 0..{self.num_units - 1}")
        return self(self.tokenize_speech(units, langs))[0]

    # -- checkpoints ---------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write trainable weights (safetensors) + config JSON; frozen weights are referenced by name."""
        meta = {"kind": "dual_encoder", "model": asdict(self.cfg), "num_units": self.num_units, "feature_dim": self.feature_dim,
                "seed": self.seed,
                "backbone_fingerprint": fingerprint(self.cfg.backbone), **(extra or {})}
        if self.unit_tokenizer is not None:
            self.unit_tokenizer.save(folder)
        return save_trainable(self, folder, meta)

    @classmethod
    def load(cls, folder: str | Path) -> DualEncoder:
        folder = Path(folder)
        meta = read_meta(folder, "dual_encoder")
        cfg = config_from_dict(meta["model"], ModelConfig)
        if fingerprint(cfg.backbone) != meta["backbone_fingerprint"]:
            raise ValueError(f"{folder}: backbone {cfg.backbone!r} is not the one this checkpoint was trained on")
        seed = meta.get("seed", 0)
        backbone, tok = load_backbone(cfg, seed)
        model = cls(backbone, tok, meta["num_units"], cfg, seed, feature_dim=meta.get("feature_dim"))
        load_trainable(model, folder)
        if (folder / "units.json").exists():
            model.unit_tokenizer = load_speech_tokenizer(folder)
        return model.eval()
