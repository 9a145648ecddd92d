"""The audio LM as a policy: loading (full or LoRA), prompt encoding WITH audio, sampling, and
per-token log-probabilities from a forward pass that receives the audio features.

The whole point of this module (and the reason the recipe does not use stock TRL): every forward
pass that produces log-probabilities -- policy (with gradient), old policy and reference --
receives the processor's multimodal tensors (``input_features`` + ``feature_attention_mask`` for
Qwen2-Audio; whatever the processor returns besides ``input_ids``/``attention_mask`` for other
models). :class:`AudioProbe` counts the audio encoder's calls and the trainer refuses to take a
step whose loss forward did not run the encoder.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from . import audio_window
from .algo import selective_log_softmax

TEXT_KEYS = ("input_ids", "attention_mask")


def _model_class(path: str) -> Any:
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise ValueError(f"{path}: cannot find a transformers class for architectures={arch!r}")
    return cls


def load_audio_array(path: str, rate: int, max_seconds: float | None) -> np.ndarray:
    from dt_eval.pipeline.audio import load_audio
    from dt_eval.types import AudioRef

    return load_audio(AudioRef(path=path), target_rate=rate, window_s=max_seconds).audio.array


class AudioProbe:
    """Counts forward calls of the audio encoder (and whether grad was on) while installed."""

    def __init__(self, model: Any):
        self.tower = audio_window.audio_tower(model) or _find_audio_module(model)
        self.calls = 0
        self.grad_calls = 0
        self._h = None

    def __enter__(self) -> AudioProbe:
        if self.tower is not None:
            self._h = self.tower.register_forward_hook(self._hook)
        return self

    def _hook(self, module: Any, args: Any, out: Any) -> None:
        self.calls += 1
        if torch.is_grad_enabled():
            self.grad_calls += 1

    def __exit__(self, *exc: Any) -> None:
        if self._h is not None:
            self._h.remove()
            self._h = None


def _find_audio_module(model: Any) -> Any:
    for name in ("audio_tower", "audio_encoder", "audio_model", "encoder"):
        for mod_name, mod in model.named_modules():
            if mod_name.endswith(name):
                return mod
    return None


@dataclass
class EncodedPrompts:
    input_ids: torch.Tensor  # [P, Lp], left padded
    attention_mask: torch.Tensor  # [P, Lp]
    mm: dict[str, torch.Tensor]  # multimodal tensors, one row per prompt

    def select(self, idx: Sequence[int]) -> EncodedPrompts:
        ix = torch.as_tensor(list(idx), dtype=torch.long)
        return EncodedPrompts(self.input_ids[ix], self.attention_mask[ix], {k: v[ix] for k, v in self.mm.items()})


@dataclass
class Rollout:
    """G completions per prompt, flattened: row r belongs to prompt `prompt_index[r]`."""

    prompt_ids: torch.Tensor  # [N, Lp]
    prompt_mask: torch.Tensor  # [N, Lp]
    completion_ids: torch.Tensor  # [N, Lc] (pad after EOS)
    completion_mask: torch.Tensor  # [N, Lc] 1 up to and including EOS
    mm: dict[str, torch.Tensor]  # [N, ...]
    prompt_index: list[int]
    texts: list[str]
    truncated: list[bool]  # no EOS within max_completion_length

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, idx: Sequence[int]) -> Rollout:
        ix = torch.as_tensor(list(idx), dtype=torch.long)
        return Rollout(self.prompt_ids[ix], self.prompt_mask[ix], self.completion_ids[ix], self.completion_mask[ix],
                       {k: v[ix] for k, v in self.mm.items()}, [self.prompt_index[i] for i in idx],
                       [self.texts[i] for i in idx], [self.truncated[i] for i in idx])


class Policy:
    def __init__(self, model_path: str, *, device: str = "auto", dtype: str = "float32", bf16: str = "auto",
                 lora: Any = None, freeze_audio_tower: bool = False, gradient_checkpointing: bool = False,
                 audio_window_mode: str = "auto", attn_implementation: str | None = None,
                 adapter_path: str | None = None, trainable: bool = True):
        from transformers import AutoProcessor

        self.model_path = str(model_path)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.autocast = (bf16 == "on") or (bf16 == "auto" and self.device.type == "cuda")
        kw: dict[str, Any] = {"dtype": getattr(torch, dtype)}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        self.processor = AutoProcessor.from_pretrained(self.model_path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"
        model = _model_class(self.model_path).from_pretrained(self.model_path, **kw)
        self.lora_enabled = bool(lora is not None and lora.enabled)
        if freeze_audio_tower:
            tower = audio_window.audio_tower(model) or _find_audio_module(model)
            if tower is not None:
                tower.requires_grad_(False)
        tower = audio_window.audio_tower(model)
        if tower is not None:
            tower.embed_positions.requires_grad_(False)  # fixed sinusoids in Qwen2-Audio
        if self.lora_enabled:
            try:
                from peft import LoraConfig, PeftModel, get_peft_model
            except ImportError as e:  # pragma: no cover - peft is in the [train] extra
                raise RuntimeError("LoRA needs peft: pip install 'dt-eval[train]'") from e
            if adapter_path:
                model = PeftModel.from_pretrained(model, adapter_path, is_trainable=trainable)
            else:
                model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                         target_modules=lora.target_modules, bias="none"))
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        self.model = model.to(self.device)
        self.model.eval()  # no dropout: sampling and scoring see the same function
        if not trainable:
            self.model.requires_grad_(False)
        self.audio_window_mode = audio_window_mode
        self.window_ok: bool | None = None if audio_window_mode == "auto" else False
        self.rate = int(getattr(getattr(self.processor, "feature_extractor", None), "sampling_rate", 16000))
        gc = self.base_model().generation_config
        eos = gc.eos_token_id if gc.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.eos_ids))
        self.suppress_ids = self._multimodal_token_ids()

    # -- helpers -------------------------------------------------------------------------------

    def base_model(self) -> Any:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _multimodal_token_ids(self) -> list[int]:
        """Audio/image placeholder tokens: never sampled (a completion holding one would break the
        placeholder-feature alignment of the scoring forward pass)."""
        names = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|audio_pad|>", "<|audio_start|>", "<|audio_end|>",
                 "<|IMAGE|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
        cfg = self.base_model().config
        ids = {getattr(cfg, k) for k in ("audio_token_index", "audio_token_id", "image_token_id") if
               isinstance(getattr(cfg, k, None), int)}
        vocab = self.tokenizer.get_vocab()
        ids |= {vocab[n] for n in names if n in vocab}
        return sorted(ids)

    def amp(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else nullcontext()

    @contextmanager
    def reference(self) -> Iterator[Any]:
        """The LoRA policy with its adapter disabled = the initial model (the KL reference)."""
        if not self.lora_enabled:
            raise RuntimeError("reference() is for LoRA policies; full fine-tuning keeps a separate model")
        with self.model.disable_adapter():
            yield self.model

    # -- prompts -------------------------------------------------------------------------------

    def encode(self, messages: Sequence[list[dict[str, Any]]], audios: Sequence[np.ndarray],
               chat_template_kwargs: dict[str, Any] | None = None) -> EncodedPrompts:
        texts = [self.processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False,
                                                    **(chat_template_kwargs or {})) for m in messages]
        enc = self.processor(text=texts, audio=list(audios), sampling_rate=self.rate, return_tensors="pt",
                             padding=True)
        mm = {k: v for k, v in enc.items() if k not in TEXT_KEYS and isinstance(v, torch.Tensor)}
        if not mm:
            raise RuntimeError("the processor returned no audio tensors: is this an audio model/processor?")
        return EncodedPrompts(enc["input_ids"], enc["attention_mask"], mm)

    def _maybe_verify_window(self, enc: EncodedPrompts) -> None:
        if self.window_ok is None:
            sub = enc.select(range(min(2, enc.input_ids.shape[0])))
            self.window_ok = audio_window.verify(self.model, sub.input_ids.to(self.device),
                                                 sub.attention_mask.to(self.device),
                                                 {k: v.to(self.device) for k, v in sub.mm.items()})

    # -- sampling ------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, enc: EncodedPrompts, group_size: int, *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, batch_size: int = 32, do_sample: bool = True) -> Rollout:
        """`group_size` samples per prompt, generated in chunks of `batch_size` sequences."""
        self._maybe_verify_window(enc)
        rows = [p for p in range(enc.input_ids.shape[0]) for _ in range(group_size)]
        pieces: list[torch.Tensor] = []
        for s in range(0, len(rows), batch_size):
            sub = enc.select(rows[s:s + batch_size])
            ids, am = sub.input_ids.to(self.device), sub.attention_mask.to(self.device)
            mm = {k: v.to(self.device) for k, v in sub.mm.items()}
            kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                                  "pad_token_id": self.pad_id, "eos_token_id": sorted(self.eos_ids)}
            if do_sample:
                kw |= {"temperature": temperature, "top_p": top_p, "top_k": top_k or None}
            if self.suppress_ids:
                kw["suppress_tokens"] = self.suppress_ids
            with self.amp(), audio_window.maybe_windowed(self.model, mm, bool(self.window_ok)) as mm_in:
                out = self.model.generate(input_ids=ids, attention_mask=am, **mm_in, **kw)
            pieces.append(out[:, ids.shape[1]:].cpu())
        width = max(p.shape[1] for p in pieces) if pieces else 0
        comp = torch.full((len(rows), max(1, width)), self.pad_id, dtype=torch.long)
        r = 0
        for p in pieces:
            comp[r:r + p.shape[0], :p.shape[1]] = p
            r += p.shape[0]
        return self._finish(enc.select(rows), comp, rows, max_new_tokens)

    def _finish(self, enc: EncodedPrompts, comp: torch.Tensor, rows: list[int], max_new: int) -> Rollout:
        n, width = comp.shape
        mask = torch.zeros_like(comp)
        texts, truncated = [], []
        for i in range(n):
            toks = comp[i].tolist()
            end = None
            for j, t in enumerate(toks):
                if t in self.eos_ids:
                    end = j + 1
                    break
            length = end if end is not None else min(width, max_new)
            # a sequence that stopped early without EOS was padded by generate (pad == eos handled above)
            mask[i, :length] = 1
            truncated.append(end is None)
            texts.append(self.tokenizer.decode(toks[:length], skip_special_tokens=True))
        # a row whose generation ended before the chunk's width is all pad after EOS: masked already
        return Rollout(enc.input_ids, enc.attention_mask, comp, mask, enc.mm, rows, texts, truncated)

    # -- scoring -------------------------------------------------------------------------------

    def token_logps(self, model: Any, ro: Rollout, with_grad: bool) -> torch.Tensor:
        """log pi(completion token | prompt incl. AUDIO, previous tokens), [N, Lc]; masked later."""
        ids = torch.cat([ro.prompt_ids, ro.completion_ids], dim=1).to(self.device)
        am = torch.cat([ro.prompt_mask, ro.completion_mask], dim=1).to(self.device)
        pos = (am.long().cumsum(-1) - 1).clamp(min=0)  # same positions as generate() (left padding)
        mm = {k: v.to(self.device) for k, v in ro.mm.items()}
        lp = ro.prompt_ids.shape[1]
        ctx = torch.enable_grad() if with_grad else torch.no_grad()
        mode = self._checkpointing_mode(model) if with_grad and self.gradient_checkpointing else nullcontext()
        with ctx, mode, self.amp(), audio_window.maybe_windowed(model, mm, bool(self.window_ok)) as mm_in:
            out = model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False, **mm_in)
            logits = out.logits[:, lp - 1:-1, :]
            target = ids[:, lp:]
            return selective_log_softmax(logits, target)

    @staticmethod
    @contextmanager
    def _checkpointing_mode(model: Any) -> Iterator[None]:
        """transformers checkpoints activations only in train mode: train mode, dropout kept off
        (the sampled and the scored policy must be the same function)."""
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()
        try:
            yield
        finally:
            model.eval()

    # -- saving --------------------------------------------------------------------------------

    def merged_state_dict(self) -> dict[str, torch.Tensor] | None:
        """For LoRA: the base model's state dict with the adapter merged in (None for full FT)."""
        if not self.lora_enabled:
            return None
        self.model.merge_adapter()
        try:
            sd = self.base_model().state_dict()
            out = {}
            for k, v in sd.items():
                if "lora_" in k or "modules_to_save" in k:
                    continue
                out[k.replace(".base_layer.", ".")] = v.detach().clone().cpu()
            return out
        finally:
            self.model.unmerge_adapter()

    def save_hf(self, out_dir: str | Path) -> None:
        """An HF-format model directory (merged weights) + processor, loadable by dt-eval."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        base = self.base_model()
        sd = self.merged_state_dict()
        if sd is not None:
            # save a plain copy of the architecture with merged weights (no peft wrappers)
            plain = _model_class(self.model_path).from_pretrained(self.model_path, dtype=next(iter(sd.values())).dtype)
            missing, unexpected = plain.load_state_dict(sd, strict=False)
            if unexpected or [m for m in missing if "embed_positions" not in m]:
                raise RuntimeError(f"merged LoRA state dict does not fit: missing={missing[:5]} unexpected={unexpected[:5]}")
            plain.generation_config = copy.deepcopy(base.generation_config)
            plain.save_pretrained(out)
            self.model.save_pretrained(out / "adapter")
        else:
            base.save_pretrained(out)
        self.processor.save_pretrained(out)
