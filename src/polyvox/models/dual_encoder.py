"""LLM dual encoder: one causal-LM tower embeds audio-unit sequences and texts into one space."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from polyvox.config import ModelConfig, config_from_dict
from polyvox.data.languages import language_name
from polyvox.models.export import load_trainable, read_meta, save_trainable, trainable_state

log = logging.getLogger(__name__)

# Where a base model keeps its stack of transformer blocks (llama/gemma/qwen/mistral, gpt2/bloom, opt).
LAYER_PATHS = ("layers", "h", "decoder.layers")


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

    from polyvox.models.sources import load_llm

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


class DualEncoder(nn.Module):
    """Shared LLM tower with K extra audio-token embedding rows, mean pooling and a projection.

    Token ids below the LLM's vocabulary size V are text tokens; id V + u is audio unit u.
    """

    def __init__(self, backbone: nn.Module, tokenizer, num_units: int, cfg: ModelConfig, seed: int = 0,
                 temperature: float = 0.05):
        super().__init__()
        self.cfg, self.tokenizer, self.num_units, self.seed = cfg, tokenizer, num_units, seed
        self.unit_tokenizer = None  # saved beside the weights when set, so one folder embeds raw audio
        torch.manual_seed(seed)
        emb = backbone.get_input_embeddings()
        self.vocab_size, dim = emb.weight.shape
        with torch.no_grad():  # new rows start from the statistics of the (scaled) text embeddings
            sample = emb(torch.arange(0, self.vocab_size, max(1, self.vocab_size // 4096)))
            init = sample.mean(0) + sample.std(0) * torch.randn(num_units, dim)
        self.audio_embed = nn.Parameter(init)  # (K, D)
        emb.weight.requires_grad_(cfg.train_text_embeddings)
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            backbone = get_peft_model(backbone, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                           target_modules="all-linear", lora_dropout=0.0))
        self.backbone = backbone
        self.proj = nn.Linear(dim, cfg.proj_dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))  # contrastive inverse temperature

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    # -- inputs ------------------------------------------------------------------------------------
    def _prefix(self, lang: str, modality: str) -> str:
        return f"{language_name(lang)} {modality}: "

    def tokenize_text(self, texts: list[str], langs: list[str]) -> list[list[int]]:
        enc = self.tokenizer([self._prefix(lg, "text") + t for t, lg in zip(texts, langs)],
                             truncation=True, max_length=self.cfg.max_text_tokens)
        return enc["input_ids"]

    def tokenize_speech(self, units: list[list[int]], langs: list[str]) -> list[list[int]]:
        prefixes = self.tokenizer([self._prefix(lg, "speech") for lg in langs])["input_ids"]
        return [p + [self.vocab_size + int(u) for u in us[: self.cfg.max_speech_tokens]]
                for p, us in zip(prefixes, units)]

    def _batch(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        t = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad] * (t - len(x)) for x in ids], device=self.device)  # (B, T)
        mask = torch.tensor([[1] * len(x) + [0] * (t - len(x)) for x in ids], device=self.device)
        return input_ids, mask

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) mixed text/audio ids -> (B, T, D) input embeddings."""
        is_audio = input_ids >= self.vocab_size
        text = self.backbone.get_input_embeddings()(input_ids.clamp(max=self.vocab_size - 1))
        audio = self.audio_embed[(input_ids - self.vocab_size).clamp(min=0)]
        return torch.where(is_audio[..., None], audio.to(text.dtype), text)

    # -- encoders ----------------------------------------------------------------------------------
    def forward(self, *groups: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """Groups of token-id sequences -> one (B_i, E) tensor of L2-normalised embeddings per group.

        Each group is padded on its own (speech runs much longer than text), in one forward call.
        """
        return tuple(self._embed(ids) for ids in groups)

    def _embed(self, ids: list[list[int]]) -> torch.Tensor:
        input_ids, mask = self._batch(ids)
        hidden = self.backbone(inputs_embeds=self.embed_tokens(input_ids), attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * m).sum(1) / m.sum(1)  # (B, D) mean over non-pad positions
        return F.normalize(self.proj(pooled.to(self.proj.weight.dtype)), dim=-1)

    def encode_text(self, texts: list[str], lang: str | list[str]) -> torch.Tensor:
        """Embed texts of one language (or one language per text); (B, E)."""
        langs = [lang] * len(texts) if isinstance(lang, str) else lang
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"empty text at position(s) {bad}")
        return self(self.tokenize_text(texts, langs))[0]

    def encode_speech(self, units: list[list[int]], lang: str | list[str]) -> torch.Tensor:
        """Embed audio-unit sequences of one language (or one per sequence); (B, E)."""
        langs = [lang] * len(units) if isinstance(lang, str) else lang
        for i, us in enumerate(units):
            if len(us) == 0:
                raise ValueError(f"empty unit sequence at position {i}")
            if min(us) < 0 or max(us) >= self.num_units:
                raise ValueError(f"unit ids at position {i} must be in 0..{self.num_units - 1}")
        return self(self.tokenize_speech(units, langs))[0]

    # -- checkpoints ---------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write trainable weights (safetensors) + config JSON; frozen weights are referenced by name."""
        from polyvox.models.sources import fingerprint

        meta = {"model": asdict(self.cfg), "num_units": self.num_units, "seed": self.seed,
                "backbone_fingerprint": fingerprint(self.cfg.backbone), **(extra or {})}
        if self.unit_tokenizer is not None:
            self.unit_tokenizer.save(folder)
        return save_trainable(self, folder, meta)

    @classmethod
    def load(cls, folder: str | Path) -> DualEncoder:
        from polyvox.models.sources import fingerprint

        folder = Path(folder)
        meta = read_meta(folder, "dual-encoder")
        cfg = config_from_dict(meta["model"], ModelConfig)
        if fingerprint(cfg.backbone) != meta["backbone_fingerprint"]:
            raise ValueError(f"{folder}: backbone {cfg.backbone!r} is not the one this checkpoint was trained on")
        seed = meta.get("seed", 0)
        backbone, tok = load_backbone(cfg, seed)
        model = cls(backbone, tok, meta["num_units"], cfg, seed)
        load_trainable(model, folder)
        if (folder / "units.json").exists():
            from polyvox.models.units import UnitTokenizer

            model.unit_tokenizer = UnitTokenizer.load(folder)
        return model.eval()
