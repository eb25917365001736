"""Dataclass configs. A YAML file is a serialised `RetrievalConfig` or `BLSPConfig`; `--set a.b=v` overrides one field."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _at_least(cfg: Any, minimum: float, *names: str) -> None:
    """Refuse a field below `minimum`, naming it (`_build` adds the section)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _above_zero(cfg: Any, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be above 0, got {getattr(cfg, name)}")


@dataclass
class DataConfig:
    manifest: str = "data/demo/manifest.jsonl"
    """Path of the JSONL manifest (audio paths are relative to its folder)."""
    train_split: str = "train"
    """Split used for k-means fitting and training."""
    test_split: str = "test"
    """Split used for evaluation."""
    pivot_lang: str = "en_us"
    """Language of the translations used for cross-lingual retrieval and text↔text training pairs."""


@dataclass
class UnitsConfig:
    encoder: str = "whisper-base"
    """Speech encoder preset, local directory or hub id."""
    layer: int = 6
    """Encoder layer whose output is quantised (1-based; the last includes the final LayerNorm). Whisper is
    trained for ASR, so its top layer carries the most linguistic content (a self-supervised encoder, as in
    the paper, is better read in the middle)."""
    pool: int = 2
    """Average-pool this many encoder frames into one (Whisper's 50 frames/s -> 25 frames/s)."""
    num_units: int = 1024
    """K, the number of k-means audio units (new rows in the LLM's embedding table)."""
    kmeans_iters: int = 25
    """k-means iterations."""
    max_fit_utterances: int = 2000
    """At most this many training utterances are encoded to fit k-means."""
    max_fit_frames: int = 300_000
    """At most this many frames (sampled with the seed) are clustered."""
    pad_to_30s: bool = False
    """Pad every clip to Whisper's 30 s window (how Whisper was trained; 5x slower on short clips)."""
    dedup: bool = False
    """Collapse runs of the same unit into one (shorter sequences, loses duration)."""
    kind: str = "kmeans"
    """``kmeans``: quantise frames into `num_units` discrete audio units (the paper); ``features``: keep the
    pooled frames as continuous inputs, fed to the LLM through `model.adapter` (no k-means to fit)."""
    batch_size: int = 16
    """Clips per encoder batch (clips are sorted by length so a batch pads little)."""
    seed: int = 0
    """Seed for frame sampling and k-means."""

    def __post_init__(self) -> None:
        _at_least(self, 1, "layer", "pool", "num_units", "kmeans_iters", "max_fit_utterances", "max_fit_frames",
                  "batch_size")


@dataclass
class ModelConfig:
    backbone: str = "gemma3-270m"
    """LLM preset, local directory or hub id (any Hugging Face causal LM)."""
    num_layers: int | None = None
    """Keep only the first N transformer layers of the backbone (None: all)."""
    proj_dim: int = 256
    """Output embedding size after the linear projection."""
    lora_rank: int = 0
    """LoRA rank on all linear layers of the backbone; 0 means full fine-tuning."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator."""
    train_text_embeddings: bool = False
    """Also train the LLM's original token-embedding rows (the new audio rows always train)."""
    max_speech_tokens: int = 256
    """LLM positions of speech kept per utterance: audio units, or adapter outputs (`adapter_stride` frames
    each); longer clips are truncated."""
    max_text_tokens: int = 64
    """Text tokens kept per text (after the language prefix)."""
    random_init: bool = False
    """Build the backbone from its config with random weights (the from-scratch baseline)."""
    pooling: str = "mean"
    """``mean`` over every non-pad position (the paper), or ``content``: over the speech/text positions only,
    leaving out the language/modality prefix."""
    spelling_buckets: int = 0
    """Add a learned embedding of each text token's hashed character n-grams to its input embedding (this many
    hash buckets; 0: off), so the text tower sees how tokens are spelled, which is what speech shares."""
    spelling_orders: int = 4
    """Character n-grams of length 1..this (`spelling_buckets` and `text_ngram_buckets`)."""
    text_ngram_buckets: int = 0
    """Add a bag of the whole text's hashed character n-grams (across word boundaries; this many hash buckets;
    0: off) to the projected text embedding, beside the LLM tower's pooled state: a direct path for how a text
    sounds, which mean-pooled LLM states keep poorly. It starts as a random sketch of the n-gram counts and
    trains with the rest (`polyvox.models.dual_encoder.TextNgrams`)."""
    speech_direct: str = ""
    """A direct path from the speech inputs to the output, added to the projected speech embedding beside the
    LLM tower's pooled state (the speech-side counterpart of `text_ngram_buckets`): ``inputs``, the mean and max
    over the clip's LLM input vectors (adapter outputs or audio rows); ``frames``, the mean and standard
    deviation of the encoder frames themselves (features models; what `polyvox units probe` reads); "": off.
    Standardised per dimension (running statistics) and projected."""
    direct_weight: float = 0.0
    """How the direct paths (`speech_direct`, `text_ngram_buckets`; both needed when > 0) join the LLM path. 0:
    added to the projected LLM state. w in (0, 1): each path is L2-normalised on its own and the two are
    concatenated (2 x `proj_dim` outputs), scaled so that a similarity is (1 - w) cos(LLM) + w cos(direct)
    whatever the paths' magnitudes: the LLM path cannot drown the direct one as it grows."""
    direct_dim: int = 0
    """Output size of the direct paths when concatenated (`direct_weight` > 0; 0: `proj_dim`), so embeddings
    have `proj_dim` + `direct_dim` dimensions; the text bag keeps as many truncated-SVD dimensions."""
    closed_form_init: float = 0.0
    """Before training, set the direct paths by closed form (needs `text_ngram_buckets` and `speech_direct`): the
    text n-gram bag becomes TF-IDF weighted with the truncated-SVD basis of the training texts, the speech path
    the ridge regression (this regularisation) from the clips onto their transcripts' bags, and (when the paths
    are added, `direct_weight` 0) the LLM path's projection starts at zero, so training starts from the linear
    probe instead of from chance. 0: off."""
    standardize: bool = False
    """Standardise pooled states per dimension (running mean and variance, one set per modality) before the
    projection: removes the few huge dimensions every LLM state shares, and the mean gap between modalities."""
    freeze_backbone: bool = False
    """Keep the LLM's layers frozen: only the speech inputs (audio rows or adapter), projection and temperature
    train, so text embeddings depend on the projection alone (locked-text tuning)."""
    adapter: str = "conv-res"
    """Adapter from continuous speech features to the LLM width (`units.kind: features`); see
    `polyvox.models.adapter.ADAPTERS`."""
    adapter_hidden: int = 256
    """Width of the adapter's convolutions."""
    adapter_blocks: int = 2
    """conv-res: residual convolution blocks."""
    adapter_stride: int = 1
    """conv-res: average-pool this many frames into one LLM position (shorter LLM sequences)."""
    adapter_dropout: float = 0.3
    """conv-res: dropout on each block's output."""

    def __post_init__(self) -> None:
        _at_least(self, 1, "num_layers", "proj_dim", "max_speech_tokens", "max_text_tokens", "adapter_hidden",
                  "adapter_stride")
        _at_least(self, 0, "lora_rank", "spelling_buckets", "text_ngram_buckets", "direct_dim")


@dataclass
class LossConfig:
    temperature: float = 0.05
    """Initial softmax temperature of the in-batch contrastive loss."""
    learn_temperature: bool = True
    """Learn the temperature (as a log-scale, clamped to [1, 100])."""
    spread_out: float = 0.1
    """Weight of the spread-out (global orthogonal) regulariser on speech and text embeddings."""
    translation_weight: float = 0.0
    """Weight of the text↔text translation-pair loss (0 disables mixing in translation pairs)."""
    translation_batch_size: int = 16
    """Translation pairs mixed into each step when `translation_weight` > 0."""
    speech_translation_weight: float = 0.0
    """Weight of a speech↔pivot-language loss: each clip also against the translation of its transcript
    (`data.pivot_lang`, where the manifest has one), in-batch negatives (0: off)."""

    def __post_init__(self) -> None:
        _above_zero(self, "temperature")
        _at_least(self, 1, "translation_batch_size")


@dataclass
class TrainConfig:
    steps: int = 1000
    """Optimiser steps."""
    batch_size: int = 32
    """Speech–text pairs per optimiser step (global, before accumulation is split)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (each of batch_size / grad_accum pairs)."""
    augment: list[str] = field(default_factory=list)
    """Extra training copies of every clip under recording conditions (`polyvox.data.degrade.AUGMENTATIONS`:
    telephone, noise10db, reverb, speed, mixed: a random chain per clip); each is written and encoded once, then
    cached like the originals."""
    augment_fraction: float = 1.0
    """Share of the training clips that get the `augment` copies (a subset drawn by `seed`): each copy costs an
    encoding pass over the clips it covers."""
    same_language_batches: bool = True
    """Draw each batch from one language, so negatives differ in content rather than language."""
    lr: float = 1e-4
    """Peak learning rate of the backbone."""
    new_params_lr: float = 1e-3
    """Learning rate of the new parameters (audio rows, projection, temperature)."""
    closed_form_lr: float = 0.0
    """Learning rate of the parameters `model.closed_form_init` sets (text n-gram bag, direct speech path): they
    start at a solution whose entries are far smaller than what `new_params_lr` would move them by. 0: frozen."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    decay_all: bool = False
    """Decay every parameter, as AdamW over ``model.parameters()`` does (an ablation); by default biases,
    norms, audio rows and the temperature are left undecayed."""
    warmup_steps: int = 50
    """Linear warm-up steps, then cosine decay to 10 %."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    save_every: int = 100
    """Checkpoint every N steps (and at the end)."""
    log_every: int = 1
    """Log line and metrics-file row every N steps."""
    mixed_precision: str = "no"
    """accelerate mixed precision: no, bf16 or fp16."""
    seed: int = 0
    """Seed for initialisation and data order."""

    def __post_init__(self) -> None:
        _at_least(self, 0, "steps")  # 0: a speech LLM recipe's earlier stage alone (each recipe checks its own)
        _at_least(self, 1, "batch_size", "grad_accum", "save_every", "log_every")
        _above_zero(self, "lr")
        _at_least(self, 0, "warmup_steps", "new_params_lr", "closed_form_lr", "weight_decay", "grad_clip")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.grad_accum > self.batch_size:
            raise ValueError(f"grad_accum ({self.grad_accum}) must not exceed batch_size ({self.batch_size}): "
                             "every micro-batch needs a pair")


@dataclass
class EvalConfig:
    batch_size: int = 64
    """Items per embedding batch."""
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    """Recall cut-offs."""

    def __post_init__(self) -> None:
        _at_least(self, 1, "batch_size")


@dataclass
class ServeConfig:
    """Limits and batching of `polyvox serve`."""

    host: str = "127.0.0.1"
    """Address to bind; the default keeps the server on this machine (0.0.0.0 opens it to the network)."""
    port: int = 8000
    max_upload_mb: float = 10.0
    """Largest request body; larger ones get 413 before they are read."""
    max_audio_s: float = 30.0
    """Longest query clip, read from the file's header before decoding."""
    min_audio_s: float = 0.1
    formats: tuple[str, ...] = ("WAV", "FLAC", "OGG", "MP3")
    """Accepted audio containers (as soundfile names them); OGG holds Vorbis or Opus."""
    max_text_chars: int = 2000
    max_k: int = 100
    max_batch: int = 16
    """Most requests answered by one model call."""
    max_wait_ms: float = 5.0
    """How long a batch waits to fill once its first request is in."""
    max_queue: int = 64
    """Requests of one kind waiting at once; more get 503 at once, so memory stays bounded."""
    timeout_s: float = 60.0
    """A request with no answer by then gets 408 if its upload had not finished, else 503 (queueing included)."""
    max_connections: int = 256
    """Open connections and requests uvicorn accepts; more get 503."""
    header_timeout_s: float = 5.0
    """A connection that has not sent a complete request head by then is closed (idle sockets and slow senders
    cannot hold `max_connections`)."""
    max_new_tokens: int = 64
    """The bound on each /generate answer."""

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"--port must be in 1..65535, got {self.port}")
        _above_zero(self, "max_upload_mb", "max_audio_s", "timeout_s", "max_wait_ms", "header_timeout_s")
        _at_least(self, 1, "max_text_chars", "max_k", "max_batch", "max_queue", "max_connections", "max_new_tokens")
        _at_least(self, 0, "min_audio_s")


@dataclass
class RetrievalConfig:
    """Everything the retrieval system needs, from manifest to evaluation."""

    data: DataConfig = field(default_factory=DataConfig)
    units: UnitsConfig = field(default_factory=UnitsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "runs/retrieval"
    """Run folder: unit tokenizer, unit cache, checkpoints, metrics and reports."""
    corpus: str | None = None
    """Offline corpus preset that `polyvox demo` builds first (demo, tiny), or None."""

    def __post_init__(self) -> None:
        if self.train.steps < 1:
            raise ValueError(f"train.steps must be at least 1, got {self.train.steps}")


def _check_speech_llm_run(cfg: Any, recipe: str) -> None:
    """What the BLSP and mit configs both check: their `recipe` field, and that some stage trains."""
    if cfg.recipe != recipe:
        raise ValueError(f"recipe: this is a {recipe} config, not {cfg.recipe!r}")
    if cfg.train.steps == 0 and cfg.ctc.steps == 0 and not cfg.init_from:
        raise ValueError("train.steps and ctc.steps are both 0 and there is no init_from: nothing to train")
    if cfg.ctc.classes == "chars" and cfg.model.ctc_readout is not None:
        raise ValueError("ctc.classes chars: a character head has no token rows for model.ctc_readout: set it null")


# ------------------------------------------------------------------------------ speech LLM (BLSP)
@dataclass
class SpeechLLMConfig:
    encoder: str = "whisper-base"
    """Frozen speech encoder (Whisper preset, local directory or hub id); run on each clip's real length."""
    encoder_layer: int | None = None
    """1-based encoder layer fed to the adapter (None: the last, with Whisper's final LayerNorm)."""
    llm: str = "gemma3-270m"
    """Frozen LLM: preset, local directory or hub id (any Hugging Face causal LM)."""
    adapter: str = "conv-glu"
    """Modality adapter (see `polyvox.models.adapter.ADAPTERS`): conv-glu (the paper's) or stack-mlp."""
    adapter_hidden: int = 512
    """Width of the adapter's bottleneck (conv-glu) or hidden layer (stack-mlp)."""
    adapter_stack: int = 8
    """stack-mlp: encoder frames concatenated into one LLM position (conv-glu always downsamples 8x)."""
    prompt_template: str = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    """How an instruction and its input (speech or text) become the LLM's prompt; the answer follows.
    ``chat`` uses the tokenizer's chat template (instruction-tuned LLMs)."""
    prompt_style: str = "instruction"
    """How the model is prompted: ``instruction`` (an instruction placed by `prompt_template`, as BLSP trains) or
    ``pair`` (an xP3 prefix / postfix around the speech, as the mit recipe trains; a mit config sets it)."""
    max_speech_seconds: float = 30.0
    """Longer clips are refused with a clear error (Whisper's window)."""
    layer_mix: bool = False
    """Feed the adapter a learned softmax-weighted sum of every encoder layer up to `encoder_layer` (and the
    conv stem), each LayerNorm-ed first, instead of that one layer (the multilayer feature of the mit paper)."""
    ctc_readout: str | None = None
    """Compress the adapter's frames with its CTC head before the LLM (`polyvox.models.ctc.ctc_compress`): about
    one position per token said, holding ``soft`` (posterior-weighted token embeddings), ``hard`` (the best token's
    embedding) or ``mean`` (the merged frames); None: every adapter frame goes to the LLM. Needs the CTC stage
    (``ctc.steps`` > 0), which trains the head."""
    lora_rank: int = 0
    """LoRA rank on the LLM's attention projections (trained with the adapter); 0: the LLM stays fully frozen."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module names LoRA is put on (Hugging Face names; these fit Gemma, Llama, Qwen, Mistral …)."""

    def __post_init__(self) -> None:
        if self.prompt_style not in ("instruction", "pair"):
            raise ValueError(f"model.prompt_style must be instruction or pair, got {self.prompt_style!r}")


@dataclass
class ContinuationConfig:
    instruction: str = "Continue the following text in a coherent and engaging style with less than 40 words."
    """Step 1: the instruction under which the frozen LLM continues each transcript (the paper's)."""
    max_new_tokens: int = 48
    """Bound on generated tokens per continuation."""
    max_input_tokens: int = 160
    """Prompts longer than this (in LLM tokens) are skipped and counted."""
    batch_size: int = 16
    """Transcripts per generation batch."""
    stop_at_newline: bool = True
    """End a continuation at its first line break (base LLMs rarely emit EOS)."""
    max_utterances: int | None = None
    """Use at most this many training utterances (a seeded sample; None: all)."""

    def __post_init__(self) -> None:
        _at_least(self, 1, "max_new_tokens", "max_input_tokens", "batch_size", "max_utterances")


@dataclass
class AlignConfig:
    max_target_tokens: int = 48
    """Continuation tokens kept as the training target (EOS is appended)."""
    kl_weight: float = 0.0
    """Weight of the text-teacher KL term (the LLM's next-token distribution on the text input); 0: off."""
    kl_temperature: float = 1.0
    """Softmax temperature of the KL term."""
    ctc_weight: float = 0.0
    """Weight of the CTC loss of each clip's transcript on the adapter's frames (the model's CTC head, with
    ``model.ctc_readout``), added in the stages through the LLM: it keeps the compressor's alignment while the
    LLM's loss trains through it; 0: off."""

    def __post_init__(self) -> None:
        _at_least(self, 1, "max_target_tokens")
        _at_least(self, 0, "kl_weight", "ctc_weight")


@dataclass
class GenerationEvalConfig:
    tasks: list[str] = field(default_factory=lambda: ["asr", "translation", "intent"])
    """Zero-shot tasks to evaluate: asr, translation (X -> pivot language), intent, continuation (BLSP's training
    prompt, scored by agreement with the oracle-text system) and, for the mit recipe, heldout."""
    conditions: list[str] = field(default_factory=list)
    """ASR again on degraded copies of its clips, one task ``asr:<condition>`` each (conditions of
    `polyvox.data.degrade.CONDITIONS`: telephone, noise10db, reverb), written once under the run folder."""
    per_lang: int = 20
    """Test utterances per language and task (a seeded sample; 0: all)."""
    intents_manifest: str | None = None
    """Manifest of labelled spoken commands (default: ``intents.jsonl`` beside the data manifest, if any)."""
    intent_choices: int = 5
    """Labels offered per intent question: the right one and seeded distractors (chance = 1/n)."""
    shots: int = 0
    """ASR (and its degraded copies) for every system: this many gold sentences of the item's language, each
    written down word for word, before the input (`polyvox.models.speech_llm.few_shot_transcription`): a pattern a
    base LLM continues far better than an instruction. The sentences are a seeded sample of the training split
    (20-60 characters, never a test sentence or its group); a language with fewer (one unseen in training) is
    asked zero-shot, and the report's ``languages[lang].shots`` says which. 0: the instruction alone."""
    baselines: list[str] = field(default_factory=lambda: ["cascade", "untrained", "oracle"])
    """Systems run beside the trained model on the same items: cascade (Whisper ASR -> the same LLM and
    prompt), untrained (the adapter at initialisation) and oracle (the frozen LLM reading the gold transcript
    with the same prompt; every system's ``agreement`` is the chrF of its answers against the oracle's)."""
    asr_model: str = "whisper-base"
    """Whisper model of the cascade baseline."""
    answer_cache: str | None = None
    """JSONL file of the systems' answers (`polyvox.eval.systems.AnswerCache`; default ``answers.jsonl`` in the
    report's folder): a killed evaluation resumes there, and evaluations that share the file ask the baselines,
    which do not depend on the trained adapter, once."""
    max_new_tokens: int = 48
    """Bound on generated tokens per answer."""
    no_repeat_ngram: int = 0
    """When > 0, no n-gram of this many tokens twice in an answer, for every system (a guard against the loops a
    greedy LLM falls into); 0 decodes plainly."""
    ctc_readout: str | None = None
    """What the LLM reads at each CTC-compressed position when the model answers (``model.ctc_readout``: soft,
    hard or mean; needs the model's CTC head); None: the readout it was trained with. The stages through the LLM
    need the differentiable soft readout; generation may still read the best token's embedding (hard)."""
    compare_readouts: list[str] = field(default_factory=list)
    """Other CTC readouts the trained model also answers through, on the same items: one more system each,
    ``<name> [<readout>]``, with the paired difference of the model minus it (e.g. ``[soft]`` beside ``hard``)."""
    joint_ctc_weight: float = 0.0
    """When > 0, the trained model (it needs a CTC head) also transcribes the ASR items, clean and degraded, by joint
    CTC/LLM beam search (`polyvox.models.speech_llm.SpeechLLM.transcribe_joint`), as one more system
    ``<name> [ctc+llm]``: its CTC head reads the speech, and the frozen LLM, reading the language's example
    sentences of `shots` as text (`sentence_prior`), scores each hypothesis as a language model. This is the CTC
    score's weight (the LLM's is 1 minus it); 0: off."""
    joint_length_bonus: float = 4.0
    """Joint decoding: score added per token, per character for a character head (the LLM charges for each word)."""
    joint_beam: int = 4
    """Joint decoding: hypotheses kept per step; a character head's N-best list, which the LLM rescores."""
    joint_cascade: bool = False
    """With joint decoding on, also a cascade on its transcripts, system ``<name> [ctc+llm cascade]``: the same LLM
    answers every task but ASR (translation, intent, continuation, heldout) from the joint decoder's transcript of
    the clip, as the cascade does from Whisper's."""
    speech_positions: bool = True
    """Also answer from the speech positions (the system itself); off for a model whose LLM never read its adapter
    (the CTC stage alone, ``train.steps: 0``): it answers through its CTC head only (``[ctc]``, ``[ctc cascade]``)."""
    batch_size: int = 16
    """Clips per generation batch."""
    seed: int = 0
    """Seed of the per-language sample and the intent distractors."""

    def __post_init__(self) -> None:
        _at_least(self, 0, "per_lang", "no_repeat_ngram", "shots")
        _at_least(self, 1, "max_new_tokens", "batch_size", "intent_choices", "joint_beam")
        if not 0 <= self.joint_ctc_weight <= 1:
            raise ValueError(f"eval.joint_ctc_weight must be in [0, 1], got {self.joint_ctc_weight}")


@dataclass
class ASRWarmupConfig:
    """An optional ASR-style stage before behaviour alignment: the adapter learns to make the frozen LLM repeat
    each clip's transcript under the transcription prompt (cross-entropy), so speech first lands where the LLM
    reads words; then continuation training goes on from that adapter."""

    steps: int = 0
    """Optimiser steps of the warm-up; 0 skips it."""
    lr: float = 1e-3
    """Peak learning rate."""
    warmup_steps: int = 10
    """Linear warm-up of the learning rate, then cosine decay."""

    def __post_init__(self) -> None:
        _at_least(self, 0, "steps", "warmup_steps")
        _above_zero(self, "lr")


@dataclass
class CTCStageConfig:
    """The optional first stage (both speech-LLM recipes): CTC over the LLM's frozen input-embedding table trains the
    adapter side (and the CTC head of ``model.ctc_readout``) on every transcript of the training split."""

    steps: int = 0
    """Optimiser steps of the CTC stage; 0 skips it."""
    lr: float = 1e-3
    """Peak learning rate."""
    warmup_steps: int = 10
    """Linear warm-up, then cosine decay."""
    batch_size: int | None = None
    """Clips per step (None: ``train.batch_size``); a CTC step is cheap next to one through the LLM."""
    classes: str = "tokens"
    """The CTC head's classes: ``tokens``, rows of the LLM's frozen embedding table (what ``model.ctc_readout``
    reads), or ``chars``, the training transcripts' characters (a linear head kept as the model's transcriber)."""
    char_split: int = 1
    """With ``classes: chars``: CTC frames per adapter frame (2: a 12.5 Hz adapter spells at 25 Hz)."""
    full_vocab: bool = False
    """Classes over the LLM's whole embedding table (the paper); by default only the tokens that occur in the
    training transcripts (still the table's frozen rows), a few percent of the cost per frame."""
    time_mask: float = 0.0
    """Share of each clip's encoder frames masked (set to zero) in every step, in spans of `mask_span` frames
    (SpecAugment's time masking, on the cached states): a regulariser against memorising the transcripts."""
    mask_span: int = 5
    """Frames per masked span (whisper: 50 frames/s, so 5 is 100 ms)."""

    def __post_init__(self) -> None:
        _at_least(self, 0, "steps", "warmup_steps")
        _at_least(self, 1, "batch_size", "mask_span", "char_split")
        _above_zero(self, "lr")
        if self.classes not in ("tokens", "chars"):
            raise ValueError(f"classes must be tokens or chars, got {self.classes!r}")


@dataclass
class BLSPConfig:
    """The BLSP recipe: continuations (step 1), an optional ASR warm-up, behaviour-alignment training (step 2),
    evaluation."""

    data: DataConfig = field(default_factory=DataConfig)
    model: SpeechLLMConfig = field(default_factory=SpeechLLMConfig)
    continuation: ContinuationConfig = field(default_factory=ContinuationConfig)
    loss: AlignConfig = field(default_factory=AlignConfig)
    ctc: CTCStageConfig = field(default_factory=CTCStageConfig)
    asr_warmup: ASRWarmupConfig = field(default_factory=ASRWarmupConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: GenerationEvalConfig = field(default_factory=GenerationEvalConfig)
    init_from: str | None = None
    """A saved speech LLM (another run's ``ctc/model`` or ``model``) whose trained adapter (and CTC head) this run
    starts from instead of initialisation; its model section must be this one's. Runs sharing a CTC stage
    set it to that stage's export and ``ctc.steps`` to 0."""
    out_dir: str = "runs/blsp"
    """Run folder: continuations, checkpoints, the exported adapter, metrics and reports."""
    recipe: str = "blsp"
    """The recipe this config is for (``blsp``); `polyvox eval generate` reads it from the file."""

    def __post_init__(self) -> None:
        _check_speech_llm_run(self, "blsp")


# ------------------------------------------------------------------------ multi-instruction training
@dataclass
class TargetConfig:
    """Step 1 of the mit recipe: instructions drawn from the template bank, answered by the frozen LLM."""

    variant: str = "TMI"
    """T (repeat / transcribe only), MI (other instructions only) or TMI (both)."""
    per_kind: int = 1
    """Instructions drawn per utterance and template kind (TMI draws this many T and this many MI)."""
    banks: list[str] = field(default_factory=list)
    """Extra template files (YAML / JSON, the schema of the default bank); a template id replaces the bank's."""
    default_bank: bool = True
    """Start from the bank shipped with polyvox (``polyvox/data/templates/bank.yaml``)."""
    balance: str = "task"
    """How templates are drawn: ``task`` (tasks equally often) or ``template`` (templates equally often)."""
    other_langs: list[str] = field(default_factory=lambda: ["en_us", "de_de", "fr_fr", "es_419", "ru_ru"])
    """Targets of ``target: other`` translation templates (the source language is left out)."""
    repeat_target: str = "transcript"
    """Target of repeat (T) instructions: ``transcript`` (the reference text) or ``llm`` (the LLM's answer)."""
    max_new_tokens: int = 40
    """Bound on generated tokens per answer."""
    max_input_tokens: int = 192
    """Prompts longer than this (in LLM tokens) are skipped and counted."""
    batch_size: int = 16
    """Prompts per generation batch."""
    stop_at_newline: bool = True
    """End an answer at its first line break (base LLMs rarely emit EOS)."""
    max_utterances: int | None = None
    """Use at most this many training utterances (a seeded sample; None: all)."""
    cache: str | None = None
    """Answer cache (JSONL, keyed by LLM, prompt, transcript and decoding bounds; runs may share one);
    None: ``targets.jsonl`` in the run folder."""

    def __post_init__(self) -> None:
        _at_least(self, 1, "per_kind", "max_new_tokens", "max_input_tokens", "batch_size", "max_utterances")


@dataclass
class MITConfig:
    """The mit recipe: LLM answers to template-bank instructions (step 1), optional CTC stage, cross-entropy
    training on ``[prefix; speech; postfix] -> answer``, evaluation (zero-shot tasks + held-out instructions)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: SpeechLLMConfig = field(default_factory=lambda: SpeechLLMConfig(layer_mix=True))
    targets: TargetConfig = field(default_factory=TargetConfig)
    ctc: CTCStageConfig = field(default_factory=CTCStageConfig)
    loss: AlignConfig = field(default_factory=AlignConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: GenerationEvalConfig = field(
        default_factory=lambda: GenerationEvalConfig(tasks=["asr", "translation", "intent", "heldout"]))
    init_from: str | None = None
    """A saved speech LLM (another run's ``ctc/model`` or ``model``) whose trained adapter (and CTC head) this run
    starts from instead of initialisation; its model section must be this one's. Runs sharing a CTC stage
    set it to that stage's export and ``ctc.steps`` to 0."""
    out_dir: str = "runs/mit"
    """Run folder: answer cache, the CTC stage (``ctc/``), checkpoints, the exported model, metrics, reports."""
    recipe: str = "mit"
    """The recipe this config is for (``mit``); `polyvox eval generate` reads it from the file."""

    def __post_init__(self) -> None:
        _check_speech_llm_run(self, "mit")
        self.model.prompt_style = "pair"  # the recipe trains on xP3 pairs: its models are prompted with them


def _build(cls: Any, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in raw.items():
        hint = hints[k]
        if dataclasses.is_dataclass(hint):
            v = _build(hint, v, f"{where}.{k}")
        kwargs[k] = _coerce(v, hint, f"{where}.{k}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a field's check (__post_init__): name its section
        raise ValueError(f"{where}: {e}") from None


def _coerce(v: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in typing.get_args(hint):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if hint is float and isinstance(v, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
        try:
            return float(v)
        except ValueError:
            pass
    base = typing.get_origin(hint) or hint
    if isinstance(base, type) and not dataclasses.is_dataclass(base) and not isinstance(v, base):
        raise ValueError(f"{where}: expected {getattr(base, '__name__', base)}, got {v!r}")
    return v


def config_from_dict(raw: dict[str, Any], cls: type = RetrievalConfig) -> Any:
    """Build a config dataclass from a nested dict, rejecting unknown keys and wrong types."""
    return _build(cls, raw, cls.__name__)


def parse_yaml(text: str, where: str) -> Any:
    """YAML (safe: no ``!!python`` tags), with a parse error named by `where`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, cls: type = RetrievalConfig,
    base: dict[str, Any] | None = None,
) -> Any:
    """Load a YAML config (or defaults when `path` is None) and apply ``a.b=value`` overrides.

    Args:
        path: YAML file; its keys replace those of `base`.
        overrides: ``a.b=value`` strings (values parsed as YAML), applied last.
        cls: the config dataclass.
        base: starting values (e.g. a preset's dict); the dataclass defaults fill what is missing.
    """
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file not found: {p}")
        loaded = parse_yaml(p.read_text(), str(p))
        if not isinstance(loaded, dict | None):
            raise ValueError(f"{p}: a config file is a mapping of sections, got {type(loaded).__name__}")
        raw.update(loaded or {})
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.field=value")
        node = raw
        *parents, leaf = key.strip().split(".")
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {'.'.join(parents[: i + 1])} is a value, not a section")
        node[leaf] = parse_yaml(value, f"override {item!r}")
    return config_from_dict(raw, cls)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))
