"""Speech LLM: frozen speech encoder -> trainable adapter -> frozen causal LM (BLSP; the mit recipe reuses it).

A prompt is ``prefix + input + suffix`` where the input is either adapter outputs (speech) or the
tokens of a text (the same LLM reading a transcript: continuations, the cascade baseline, the KL teacher).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import StoppingCriteria

from polyvox.audio import SAMPLE_RATE
from polyvox.config import SpeechLLMConfig, config_from_dict
from polyvox.data.instructions import default_bank
from polyvox.data.languages import language_name, scripts
from polyvox.models.adapter import build_adapter
from polyvox.models.ctc import (
    CTC_READOUTS,
    CharCTCHead,
    CTCHead,
    EmbeddingCTCHead,
    ctc_compress,
    greedy_ctc_decode,
)
from polyvox.models.export import load_trainable, read_meta, save_trainable, trainable_state
from polyvox.models.joint_decode import ctc_beam_search, first_token_ids, joint_ctc_search, sentence_logprobs
from polyvox.models.layer_mix import WeightedLayerSum
from polyvox.models.sources import fingerprint, load_llm, load_speech_model
from polyvox.models.speech_encoder import SpeechEncoder
from polyvox.models.units import FeatureTokenizer, UnitSpec

log = logging.getLogger(__name__)

IGNORE = -100
_SLOT = "\x00INPUT\x00"  # stands for the input while a prompt template is split

STYLES = ("instruction", "pair")
"""How a model is prompted: an instruction placed by its prompt template, or a raw (prefix, postfix) pair."""


def preset_names() -> list[str]:
    """The prompt presets of the template bank (``transcribe``, ``translate``, ``intent``, ``continue``, ``chat``)."""
    return list(default_bank().presets)


def make_instruction(task: str, lang: str | None = None, target: str | None = None,
                     labels: list[str] | None = None, prompt: str | None = None,
                     style: str = "instruction") -> Prompt:
    """The prompt of a preset of the template bank (`polyvox.data.instructions.Preset`) in a style of `STYLES`;
    languages are FLEURS codes."""
    presets = default_bank().presets
    if task not in presets:
        raise ValueError(f"unknown prompt preset {task!r}; known: {', '.join(presets)}")
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(STYLES)}")
    need = {"translate": ("target", target), "intent": ("labels", labels), "chat": ("prompt", prompt)}
    if task in need and not need[task][1]:
        raise ValueError(f"prompt preset {task!r} needs {need[task][0]}")
    values = {"source": language_name(lang) if lang else "spoken", "target": language_name(target) if target else "",
              "labels": ", ".join(labels or []), "prompt": prompt or ""}
    p = presets[task]
    if style == "pair":
        return p.prefix.format(**values), p.postfix.format(**values)
    return p.instruction.format(**values)


def ask(prompt: str, lang: str | None = None, target: str | None = "en_us", labels: list[str] | None = None,
        style: str = "instruction") -> Prompt:
    """A user's prompt: a preset name (filled in with the language, target and labels) or any other text, asked
    as is."""
    if prompt in default_bank().presets:
        return make_instruction(prompt, lang, target, labels, style=style)
    return make_instruction("chat", prompt=prompt, style=style)


def few_shot_transcription(lang: str, examples: list[str]) -> tuple[str, str]:
    """A transcription prompt for a base LLM as a (prefix, postfix) pair: each of `examples` (sentences in `lang`)
    written down word for word, then the input. A base LLM continues this pattern far more faithfully than it
    follows an instruction (README, BLSP probes); answers end at the first line break."""
    shown = "".join(f"Input: {t}\nTranscript: {t}\n\n" for t in examples)
    return f"Each {language_name(lang)} input is written down word for word.\n\n{shown}Input: ", "\nTranscript:"


def sentence_prior(lang: str, examples: list[str]) -> str:
    """What the LLM reads before a transcript in joint CTC/LLM decoding (`SpeechLLM.transcribe_joint`): a list of
    sentences in `lang`, each on its own line (e.g. the same training sentences as `few_shot_transcription`), so it
    scores the next line as a sentence of that language."""
    return f"Some {language_name(lang)} sentences:\n\n" + "".join(f"{t}\n" for t in examples)


Part = list[int] | torch.Tensor  # token ids, or (L, D) input embeddings
Prompt = str | tuple[str, str]  # an instruction for the prompt template, or a raw (prefix, postfix) pair


def _check_readout(readout: str | None) -> None:
    if readout is not None and readout not in CTC_READOUTS:
        raise ValueError(f"model.ctc_readout must be one of {', '.join(CTC_READOUTS)} or null, got {readout!r}")


class SpeechLLM(nn.Module):
    """Frozen Whisper encoder + trainable adapter + frozen causal LM.

    Options of `cfg`: a learned weighted sum of the encoder's layers (``layer_mix``) in front of the adapter,
    CTC compression of the adapter's frames (``ctc_readout``, with the head of `add_ctc_head`) and LoRA on the LLM
    (``lora_rank``), trained with the adapter.

    Args:
        encoder: a `SpeechEncoder` (frozen) run on each clip's real length.
        lm: a Hugging Face causal LM (frozen).
        tokenizer: its tokenizer.
        cfg: the model config (adapter, prompt template, …).
        seed: seeds the adapter's initialisation.
    """

    def __init__(self, encoder: SpeechEncoder, lm: nn.Module, tokenizer, cfg: SpeechLLMConfig, seed: int = 0):
        super().__init__()
        if any("lora_" in n for n, _ in lm.named_parameters()):  # freezing or injecting would undo another's LoRA
            raise ValueError("this LLM already carries LoRA layers (of another SpeechLLM); load a fresh LLM for it")
        self.cfg, self.tokenizer, self.seed = cfg, tokenizer, seed
        self.encoder = encoder.requires_grad_(False).eval()
        self.lm = lm.requires_grad_(False).eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        emb = lm.get_input_embeddings()
        with torch.no_grad():  # adapter outputs start at the scale of the (possibly scaled) text embeddings
            sample = emb(torch.arange(0, emb.weight.shape[0], max(1, emb.weight.shape[0] // 4096)))
            rms = float(sample.pow(2).mean().sqrt())
        torch.manual_seed(seed)
        self.adapter = build_adapter(cfg.adapter, encoder.dim, emb.weight.shape[1], cfg.adapter_hidden,
                                     cfg.adapter_stack, out_scale=rms)
        self.layer_mix = WeightedLayerSum(encoder.layer + 1, norm=True) if cfg.layer_mix else None
        _check_readout(cfg.ctc_readout)
        self.ctc_head: CTCHead | None = None
        if cfg.lora_rank > 0:
            self._add_lora()

    def _add_lora(self) -> None:
        """Inject LoRA layers into the (frozen) LLM in place, so it keeps its Hugging Face interface."""
        from peft import LoraConfig, inject_adapter_in_model

        c = self.cfg
        try:
            inject_adapter_in_model(LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=0.0,
                                               target_modules=list(c.lora_targets)), self.lm)
        except ValueError as e:  # peft: "Target modules … not found in the base model"
            raise ValueError(f"model.lora_targets {c.lora_targets} match no module of {c.llm}: {e}") from None
        for n, p in self.lm.named_parameters():
            p.requires_grad_("lora_" in n)

    def add_ctc_head(self, vocab: list[int] | None) -> EmbeddingCTCHead:
        """A fresh CTC head over the LLM's frozen embedding rows of `vocab` (LLM token ids; None: the whole table),
        part of the model from now on: ``model.ctc_readout`` compresses the adapter's frames with it, and
        `save` records its vocabulary."""
        self.ctc_head = EmbeddingCTCHead(self.lm.get_input_embeddings(), vocab=vocab).to(self.device)
        return self.ctc_head

    def add_char_head(self, chars: list[str], split: int = 1) -> CharCTCHead:
        """A fresh CTC head over `chars` (`CharCTCHead`, `split` CTC frames per adapter frame), part of the model from
        now on: it transcribes (`transcribe_ctc`); it has no embedding rows, so no ``model.ctc_readout`` reads it."""
        if self.cfg.ctc_readout is not None:
            raise ValueError(f"model.ctc_readout {self.cfg.ctc_readout!r} reads the CTC head's token rows; a character "
                             "head has none: set model.ctc_readout to null")
        with torch.random.fork_rng():  # seeded like the adapter, without touching the global generator
            torch.manual_seed(self.seed)
            head = CharCTCHead(self.lm.get_input_embeddings().weight.shape[1], chars, split)
        self.ctc_head = head.to(self.device)
        return self.ctc_head

    def ctc_targets(self, text: str) -> list[int]:
        """A transcript as the CTC head's targets: its LLM token ids (`text_ids`), or a character head's classes."""
        return self.ctc_head.encode(text) if isinstance(self.ctc_head, CharCTCHead) else self.text_ids(text)

    @contextlib.contextmanager
    def frozen_llm(self) -> Iterator[nn.Module]:
        """The LLM with its LoRA layers switched off, as loaded: what reads a text (continuations, answers,
        the cascade, the oracle and the KL teacher), so a text's answer never depends on speech training."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.lm.modules() if isinstance(m, BaseTunerLayer)]
        grads = [(p, p.requires_grad) for m in layers for p in m.parameters()]
        for m in layers:
            m.enable_adapters(False)
        try:
            yield self.lm
        finally:
            for m in layers:
                m.enable_adapters(True)
            for p, g in grads:  # enabling marks every LoRA weight trainable: restore what the caller had
                p.requires_grad_(g)

    @property
    def device(self) -> torch.device:
        return next(self.adapter.parameters()).device

    def train(self, mode: bool = True) -> SpeechLLM:
        super().train(mode)
        self.encoder.eval()  # frozen parts never switch to training behaviour (dropout)
        self.lm.eval()
        return self

    # -- prompts ------------------------------------------------------------------------------------
    def prompt_ids(self, instruction: Prompt) -> tuple[list[int], list[int]]:
        """Token ids before and after the input for `instruction` (the prefix starts with BOS).

        A string is an instruction placed by `model.prompt_template`; a ``(prefix, postfix)`` pair is put
        around the input as is (xP3-style prompts such as ``("A text in French: ", " The same text in English:")``).
        """
        if isinstance(instruction, tuple):
            before, after = instruction
            return (self.tokenizer(before, add_special_tokens=True)["input_ids"],
                    self.tokenizer(after, add_special_tokens=False)["input_ids"])
        if self.cfg.prompt_template == "chat":
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError(f"{self.cfg.llm}: tokenizer has no chat template; set model.prompt_template")
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": f"{instruction}\n{_SLOT}"}],
                                                      tokenize=False, add_generation_prompt=True)
            add_bos = False  # chat templates write their own BOS
        else:
            if "{input}" not in self.cfg.prompt_template:
                raise ValueError("model.prompt_template must contain {input} (and may contain {instruction})")
            text = self.cfg.prompt_template.format(instruction=instruction, input=_SLOT)
            add_bos = True
        before, after = text.split(_SLOT)
        prefix = self.tokenizer(before, add_special_tokens=add_bos)["input_ids"]
        return prefix, self.tokenizer(after, add_special_tokens=False)["input_ids"]

    def text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- speech -------------------------------------------------------------------------------------
    def state_tokenizer(self) -> FeatureTokenizer:
        """What the frozen encoder gives the adapter, as a feature tokenizer: its (T, D) states of one clip are
        what `encode_units` caches (content-keyed, float16), so training can skip the encoder (`speech_frames`)."""
        spec = UnitSpec(self.cfg.encoder, fingerprint(self.cfg.encoder), self.encoder.layer, self.encoder.pool,
                        self.encoder.pad_to_30s, dedup=False, num_units=0, kind="features")
        return FeatureTokenizer(spec, self.encoder.dim)

    @torch.no_grad()
    def encode_states(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """16 kHz clips -> one (T_i, D) float16 array of encoder states per clip: what `speech_frames` reads
        in place of the audio, and what training caches (`state_tokenizer`)."""
        tok = self.state_tokenizer()
        return [tok(f.float().numpy()) for f in self.encoder.encode(wavs)]

    def adapter_frames(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """16 kHz clips -> (B, L, D_llm) adapter outputs (differentiable w.r.t. the adapter) and (B,) valid lengths:
        what the CTC stage trains, before any compression (`speech_frames`).

        Clips may instead all be (T, D) encoder states (`state_tokenizer`; the encoder then does not run), unless
        the model mixes encoder layers (``layer_mix``), which needs every layer's states.
        """
        if wavs and all(np.ndim(w) == 2 for w in wavs):
            if self.layer_mix is not None:
                raise ValueError("cached encoder states hold one layer; model.layer_mix needs the audio")
            frames = torch.tensor([len(w) for w in wavs])
            hidden = pad_sequence([torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in wavs], batch_first=True)
            return self.adapter(hidden.to(self.device), frames.to(self.device))  # hidden: (B, T, D_enc)
        limit = self.cfg.max_speech_seconds
        for i, w in enumerate(wavs):
            if len(w) == 0:
                raise ValueError(f"clip {i} is empty")
            if len(w) > limit * SAMPLE_RATE:
                raise ValueError(f"clip {i} is {len(w) / SAMPLE_RATE:.1f} s long; at most {limit:g} s is supported")
        mel, lengths = self.encoder.features(wavs)
        mel, lengths = mel.to(self.device), lengths.to(self.device)
        if self.layer_mix is None:
            hidden, frames = self.encoder(mel, lengths)  # (B, T, D_enc)
        else:
            states, frames = self.encoder.hidden_states(mel, lengths)  # layer + 1 tensors (B, T, D_enc)
            hidden = self.layer_mix(states)  # (B, T, D_enc)
        return self.adapter(hidden, frames)  # (B, T/8, D_llm), (B,)

    def with_ctc_readout(self, readout: str) -> SpeechLLM:
        """The same model (shared modules and weights) reading its CTC-compressed positions another way
        (`ctc_compress`'s readouts); its config, and so the `fingerprint` that keys cached answers, says which."""
        if self.ctc_head is None:
            raise ValueError(f"a CTC readout ({readout!r}) needs the model's CTC head: this model has none")
        if isinstance(self.ctc_head, CharCTCHead):
            raise ValueError(f"a CTC readout ({readout!r}) reads token rows; this model's CTC head is over characters")
        _check_readout(readout)
        other = copy.copy(self)  # a new attribute dict over the same submodules
        other.cfg = replace(self.cfg, ctc_readout=readout)
        return other

    def speech_frames(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """16 kHz clips (or their encoder states) -> (B, L, D_llm) positions the LLM reads and (B,) valid lengths:
        the adapter's frames, compressed by the CTC head with ``model.ctc_readout``."""
        x, n = self.adapter_frames(wavs)
        if self.cfg.ctc_readout is None:
            return x, n
        if self.ctc_head is None:
            raise ValueError("model.ctc_readout needs the CTC head: train the CTC stage first (ctc.steps > 0)")
        return ctc_compress(self.ctc_head, x, n, self.cfg.ctc_readout)

    def speech_embeds(self, wavs: list[np.ndarray]) -> list[torch.Tensor]:
        """16 kHz clips -> one (L_i, D_llm) tensor of adapter outputs per clip (differentiable w.r.t. the adapter)."""
        out, n = self.speech_frames(wavs)
        return [o[:k] for o, k in zip(out, n.tolist())]

    # -- batches ------------------------------------------------------------------------------------
    def assemble(self, rows: list[list[Part]], targets: list[list[int]] | None = None,
                 left_pad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Concatenate each row's parts (+ its target ids) into padded LLM inputs.

        Returns:
            embeds: (B, T, D) input embeddings.
            mask: (B, T) 1 on real positions.
            labels: (B, T) the target token ids where targets sit, IGNORE on prompt, speech and padding
                (position t is predicted from position t-1, as in Hugging Face's `labels`).
        """
        emb = self.lm.get_input_embeddings()
        dtype = emb.weight.dtype
        seqs, labs = [], []
        for i, parts in enumerate(rows):
            tgt = list(targets[i]) if targets is not None else []
            pieces = [p.to(dtype) if isinstance(p, torch.Tensor) else emb(torch.tensor(p, dtype=torch.long,
                      device=self.device)) for p in [*parts, tgt] if len(p)]
            seqs.append(torch.cat(pieces))
            labs.append([IGNORE] * sum(len(p) for p in parts) + tgt)
        t = max(len(s) for s in seqs)
        d = seqs[0].shape[-1]
        embeds = seqs[0].new_zeros(len(seqs), t, d)
        mask = torch.zeros(len(seqs), t, dtype=torch.long, device=self.device)
        labels = torch.full((len(seqs), t), IGNORE, dtype=torch.long, device=self.device)
        for i, (s, lab) in enumerate(zip(seqs, labs)):
            sl = slice(t - len(s), t) if left_pad else slice(0, len(s))
            embeds[i, sl], mask[i, sl] = s, 1
            labels[i, sl] = torch.tensor(lab, device=self.device)
        return embeds, mask, labels

    def speech_rows(self, wavs: list[np.ndarray], instructions: list[Prompt]) -> list[list[Part]]:
        """``[prefix, adapter outputs, suffix]`` per clip."""
        prompts = [self._prompt(ins) for ins in instructions]
        return [[pre, s, post] for s, (pre, post) in zip(self.speech_embeds(wavs), prompts)]

    def text_rows(self, texts: list[str], instructions: list[Prompt]) -> list[list[Part]]:
        """``[prefix, text tokens, suffix]`` per text."""
        prompts = [self._prompt(ins) for ins in instructions]
        return [[pre, self.text_ids(t), post] for t, (pre, post) in zip(texts, prompts)]

    def _prompt(self, instruction: Prompt) -> tuple[list[int], list[int]]:
        cache = self.__dict__.setdefault("_prompt_cache", {})
        if instruction not in cache:
            cache[instruction] = self.prompt_ids(instruction)
        return cache[instruction]

    def target_logits(self, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits only where a target token is predicted (the LM head over 262k words is the costly part).

        Returns (N, V) logits and the (N,) target ids, row-major over the batch.
        """
        hidden = self.lm.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # (B, T, D)
        predict = labels[:, 1:] != IGNORE  # (B, T-1): position t predicts token t+1
        logits = self.lm.get_output_embeddings()(hidden[:, :-1][predict])  # (N, V)
        cap = getattr(self.lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits.float(), labels[:, 1:][predict]

    def forward(self, wavs: list[np.ndarray], instructions: list[Prompt], targets: list[list[int]],
                teacher_texts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Teacher-forced pass on ``prefix + speech + suffix + target``.

        Returns:
            logits: (N, V) at the N target positions (row-major over the batch).
            target_ids: (N,).
            teacher: (N, V) logits of the frozen LLM (`frozen_llm`) reading `teacher_texts` in place of the
                speech, with the same targets (no gradient), or None.
        """
        logits, ids = self.target_logits(*self.assemble(self.speech_rows(wavs, instructions), targets))
        teacher = None
        if teacher_texts is not None:
            with torch.no_grad(), self.frozen_llm():
                teacher, _ = self.target_logits(*self.assemble(self.text_rows(teacher_texts, instructions), targets))
        return logits, ids, teacher

    # -- generation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, rows: list[list[Part]], max_new_tokens: int = 64, do_sample: bool = False,
               temperature: float = 1.0, top_p: float = 1.0, stop_at_newline: bool = False,
               no_repeat_ngram: int = 0) -> list[str]:
        """Generate an answer for each prompt row (batched, left-padded); stops at EOS, or with `stop_at_newline`
        at the first line break after some text (base LLMs rarely emit EOS, and often open with a blank line).
        `no_repeat_ngram` > 0 forbids any n-gram of that many tokens twice in an answer (a guard against loops)."""
        embeds, mask, _ = self.assemble(rows, left_pad=True)
        eos = self.lm.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        stop = [_LineEnd(*_vocab_classes(self.tokenizer))] if stop_at_newline else []
        with warnings.catch_warnings():  # the n-gram guard is meant for the answer alone, not the prompt
            warnings.filterwarnings("ignore", message="Passing `no_repeat_ngram_size` with `inputs_embeds`")
            out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                   eos_token_id=eos, pad_token_id=self.tokenizer.pad_token_id, stopping_criteria=stop,
                                   no_repeat_ngram_size=no_repeat_ngram, **sampling)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [t.strip().split("\n")[0].strip() if stop_at_newline else t.strip() for t in texts]

    def generate(self, wavs: list[np.ndarray], instructions: Prompt | list[Prompt], **kwargs) -> list[str]:
        """Answer `instructions` (one for all, or one per clip) about 16 kHz clips; see `decode` for options."""
        instructions = instructions if isinstance(instructions, list) else [instructions] * len(wavs)
        with torch.no_grad():
            return self.decode(self.speech_rows(wavs, instructions), **kwargs)

    @torch.no_grad()
    def transcribe_joint(self, wavs: list[np.ndarray], priors: str | list[str], ctc_weight: float = 0.7,
                         length_bonus: float = 4.0, beam: int = 4, max_new_tokens: int = 48) -> list[str]:
        """Transcripts by joint CTC/LLM beam search (`polyvox.models.joint_decode`): the CTC head reads the speech,
        and the frozen LLM, reading only the text `priors` (one for all, or one per clip; e.g. `sentence_prior`),
        scores each hypothesis as a language model of what is said. A hypothesis is grown over the CTC head's
        tokens and scored ``(1 - ctc_weight) * LLM + ctc_weight * CTC + length_bonus * tokens``; an answer ends at
        a line break. Needs the CTC head. The defaults were chosen on held-out sentences (README, BLSP probes)."""
        head = self.ctc_head
        if head is None:
            raise ValueError("joint CTC/LLM decoding needs the model's CTC head: train the CTC stage (ctc.steps > 0)")
        if not 0 < ctc_weight <= 1 or beam < 1 or max_new_tokens < 1:
            raise ValueError("joint decoding needs 0 < ctc_weight <= 1, beam >= 1 and max_new_tokens >= 1, got "
                             f"{ctc_weight}, {beam}, {max_new_tokens}")
        priors = priors if isinstance(priors, list) else [priors] * len(wavs)
        x, n = self.adapter_frames(wavs)
        log_probs = head(x).log_softmax(-1)  # (B, T, C + 1)
        ids = (head.token_ids if head.token_ids is not None else torch.arange(head.vocab_size)).cpu()
        end = _vocab_classes(self.tokenizer)[0].clone()  # a line break ends the answer, as does EOS
        eos = self.lm.generation_config.eos_token_id
        end[[eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])] = True
        emb = self.lm.get_input_embeddings()
        out = [""] * len(wavs)
        with self.frozen_llm():
            for prior in dict.fromkeys(priors):  # the clips that share a prior are searched together
                idx = [i for i, p in enumerate(priors) if p == prior]
                first = first_token_ids(self.tokenizer, tuple(ids.tolist()), bool(prior) and not prior[-1].isspace())
                prompt = emb(torch.tensor(self.tokenizer(prior, add_special_tokens=True)["input_ids"], device=self.device))
                answers = joint_ctc_search(self.lm, prompt, [log_probs[i, : n[i]] for i in idx], ids, first, end, beam,
                                           ctc_weight, max_new_tokens, length_bonus=length_bonus)
                for i, a in zip(idx, answers):
                    out[i] = self.tokenizer.decode(a, skip_special_tokens=True).strip()
        return out

    @torch.no_grad()
    def transcribe_ctc(self, wavs: list[np.ndarray], langs: list[str], priors: list[str], **options) -> list[str]:
        """Transcripts read by the CTC head of the clips in languages `langs` (FLEURS codes): a token head's by joint
        CTC/LLM decoding (`transcribe_joint` with `priors` and its `options`); a character head's, each clip's
        characters restricted to its language's scripts (`CharCTCHead.allowed`), by its best path, or with
        `options` (``ctc_weight``, ``length_bonus``, ``beam``) the best of its N-best list (`ctc_nbest`) under
        ``ctc_weight * CTC + (1 - ctc_weight) * LLM + length_bonus * characters``, the LLM reading `priors`."""
        if not isinstance(self.ctc_head, CharCTCHead):
            return self.transcribe_joint(wavs, priors, **options)
        if unknown := set(options) - {"ctc_weight", "length_bonus", "beam"}:
            raise ValueError(f"a character CTC head takes ctc_weight, length_bonus and beam, not {sorted(unknown)}")
        if not options:
            log_probs, n = self._char_log_probs(wavs, langs)
            return [self.ctc_head.decode(p).strip() for p in greedy_ctc_decode(log_probs, n)]
        w, bonus = options.get("ctc_weight", 0.5), options.get("length_bonus", 1.0)  # chosen on held-out sentences
        if not 0 < w <= 1:
            raise ValueError(f"ctc_weight must be in (0, 1], got {w}")
        return [max(hyps, key=lambda h: w * h[1] + (1 - w) * h[2] + bonus * len(h[0]))[0]
                for hyps in self.ctc_nbest(wavs, langs, priors, options.get("beam", 16), with_llm=w < 1)]

    def _char_log_probs(self, wavs: list[np.ndarray], langs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T * split, C + 1) a character head's log-posteriors, each clip's outside its language's scripts at
        -inf, and (B,) the valid frames."""
        head = self.ctc_head
        x, n = self.adapter_frames(wavs)
        masks = {lang: head.allowed(scripts(lang)) for lang in set(langs)}  # once per language, not per clip
        allowed = torch.stack([masks[lang] for lang in langs]).to(x.device)  # (B, C + 1)
        return head(x).masked_fill(~allowed[:, None, :], -torch.inf).log_softmax(-1), n * head.split

    @torch.no_grad()
    def ctc_nbest(self, wavs: list[np.ndarray], langs: list[str], priors: list[str], beam: int = 16,
                  with_llm: bool = True) -> list[list[tuple[str, float, float]]]:
        """Per clip, a character head's N best transcripts by CTC prefix beam search (`ctc_beam_search`, in its
        language's scripts) as (text, log P_ctc, log P_llm(text + line break | prior)), the frozen LLM reading the
        clip's prior (`sentence_prior`) before it (0 without `with_llm`). Texts that differ only in outer white
        space are one, with their summed probability."""
        if not isinstance(self.ctc_head, CharCTCHead) or beam < 1:
            raise ValueError("ctc_nbest needs a character CTC head and beam >= 1")
        log_probs, n = self._char_log_probs(wavs, langs)
        out = []
        for i in range(len(wavs)):
            texts: dict[str, float] = {}
            for classes, score in ctc_beam_search(log_probs[i, : n[i]], beam):
                t = self.ctc_head.decode(classes).strip()
                texts[t] = float(np.logaddexp(texts.get(t, -np.inf), score))
            out.append([(t, c, 0.0) for t, c in texts.items()])
        if with_llm:
            with self.frozen_llm():
                for prior in dict.fromkeys(priors):  # the clips that share a prior are scored together
                    idx = [i for i, p in enumerate(priors) if p == prior]
                    hyps = [h[0] + "\n" for i in idx for h in out[i]]
                    lm = sentence_logprobs(self.lm, self.tokenizer(prior, add_special_tokens=True)["input_ids"],
                                           self.tokenizer(hyps, add_special_tokens=False)["input_ids"]).tolist()
                    for i in idx:
                        out[i], lm = [(t, c, s) for (t, c, _), s in zip(out[i], lm)], lm[len(out[i]) :]
        return out

    def generate_text(self, texts: list[str], instructions: Prompt | list[Prompt], **kwargs) -> list[str]:
        """The frozen LLM (`frozen_llm`: LoRA off) and the same prompt with a text in place of the speech
        (continuations, answers, the cascade baseline)."""
        instructions = instructions if isinstance(instructions, list) else [instructions] * len(texts)
        with self.frozen_llm():
            return self.decode(self.text_rows(texts, instructions), **kwargs)

    # -- checkpoints ---------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)

    def fingerprint(self) -> str:
        """A hash of everything this model's answers depend on: its config, the frozen encoder's and LLM's
        fingerprints and its trained weights (and CTC head). Keys the cached answers of evaluations."""
        cfg = {k: v for k, v in asdict(self.cfg).items() if k != "prompt_style"}  # systems key the style themselves
        h = hashlib.sha256(repr((sorted(cfg.items()), fingerprint(self.cfg.encoder),
                                 fingerprint(self.cfg.llm))).encode())
        for name, t in sorted(self.trainable_state().items()):
            h.update(name.encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        """Write the adapter (safetensors) + JSON; the frozen encoder and LLM are referenced by name and fingerprint."""
        meta = {"kind": "speech_llm", "model": asdict(self.cfg), "seed": self.seed,
                "encoder_fingerprint": fingerprint(self.cfg.encoder), "llm_fingerprint": fingerprint(self.cfg.llm),
                **(extra or {})}
        if isinstance(self.ctc_head, CharCTCHead):
            meta["ctc_chars"], meta["ctc_split"] = self.ctc_head.chars, self.ctc_head.split
        elif self.ctc_head is not None:
            ids = self.ctc_head.token_ids
            meta["ctc_vocab"] = None if ids is None else ids.tolist()
        return save_trainable(self, folder, meta)

    @classmethod
    def load(cls, folder: str | Path) -> SpeechLLM:
        """Rebuild the model from a saved folder, refusing an encoder or LLM that is not the one it was trained with."""
        meta = read_meta(folder, "speech_llm")
        raw = {"prompt_style": meta.get("prompt_style", "instruction"), **meta["model"]}  # older exports: top level
        model = build_speech_llm(config_from_dict(raw, SpeechLLMConfig), meta.get("seed", 0))
        model.load_weights(folder)
        return model.eval()

    def load_weights(self, folder: str | Path) -> None:
        """Load the trained adapter (and CTC head) of a saved speech LLM whose model config is this one's, refusing
        another config, encoder or LLM."""
        meta = read_meta(folder, "speech_llm")
        for part in ("encoder", "llm"):
            if fingerprint(getattr(self.cfg, part)) != meta[f"{part}_fingerprint"]:
                raise ValueError(f"{folder}: {part} {getattr(self.cfg, part)!r} is not the one this adapter was trained with")
        theirs = asdict(config_from_dict(meta["model"], SpeechLLMConfig))
        differ = {k: (v, theirs[k]) for k, v in asdict(self.cfg).items()
                  if theirs[k] != v and k != "prompt_style"}  # the style is how it is asked, not what it computes
        if differ:
            raise ValueError(f"{folder}: saved with another model config: "
                             + ", ".join(f"{k} {b!r} (here {a!r})" for k, (a, b) in differ.items()))
        if "ctc_vocab" in meta:
            self.add_ctc_head(meta["ctc_vocab"])
        if "ctc_chars" in meta:
            self.add_char_head(meta["ctc_chars"], meta["ctc_split"])
        load_trainable(self, folder)


@functools.lru_cache(maxsize=4)
def _vocab_classes(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(V,) masks of the vocabulary entries whose text holds a line break, and of those that are all blank
    (decoded once per tokenizer: models sharing an LLM share the work)."""
    words = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor(["\n" in w for w in words]), torch.tensor([not w.strip() for w in words])


class _LineEnd(StoppingCriteria):
    """Ends a row at its first line break that follows some text: leading blank lines do not end an answer.

    Args:
        newline: (V,) True for vocabulary entries holding a line break.
        blank: (V,) True for entries that are only white space.
    """

    def __init__(self, newline: torch.Tensor, blank: torch.Tensor):
        self.newline, self.blank = newline, blank
        self.seen_text: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1].cpu()  # the token just generated, per row
        text = ~self.blank[last]
        if self.seen_text is None:
            self.seen_text = torch.zeros_like(text)
        done = self.newline[last] & (self.seen_text | text)  # a break after text, or text + break in one token
        self.seen_text = self.seen_text | text
        return done.to(input_ids.device)


def build_speech_llm(cfg: SpeechLLMConfig, seed: int = 0) -> SpeechLLM:
    """Load the frozen encoder and LLM named by `cfg` (presets resolve offline) and add a fresh adapter."""
    whisper, fe = load_speech_model(cfg.encoder)
    layer = cfg.encoder_layer or whisper.config.encoder_layers
    encoder = SpeechEncoder(whisper, fe, layer=layer, pool=1)
    lm, tok = load_llm(cfg.llm)
    return SpeechLLM(encoder, lm, tok, cfg, seed)
