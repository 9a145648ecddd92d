"""Run Qwen2-Audio's encoder on the clip's own frames instead of the padded 30 s window.

Qwen2-Audio's feature extractor pads every clip to 3000 mel frames and the encoder masks the
padding; for short clips almost all encoder work is wasted. Cutting the features to the longest
valid length in the batch (+2 frames of the conv's reach, rounded up to a multiple of 4) gives the
same output at every valid position. The encoder insists on ``max_source_positions * 2`` frames
and adds all of ``embed_positions``, so both are swapped for the duration of the call. The
positional table is a *slice* of the real parameter (gradients, if it is trainable, flow into it).

The trainer checks once, at start-up, that windowed and full logits agree (``verify``); if not, or
for a model that is not Qwen2-Audio-shaped, it runs the full window. It is used identically for
generation and for the log-prob forward passes.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn


class _SlicedPositions(nn.Module):
    """Stands in for ``embed_positions``: ``.weight`` is the first ``n`` rows of the real table."""

    def __init__(self, base: nn.Module, n: int):
        super().__init__()
        object.__setattr__(self, "_base", base)  # not registered: no second copy in state_dict
        self.n = n

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self._base.weight[: self.n]


def audio_tower(model: Any) -> Any:
    """The Qwen2-Audio-style encoder of `model` (unwrapping PEFT), or None."""
    m = model
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    inner = getattr(m, "model", None)
    tower = getattr(inner, "audio_tower", None) or getattr(m, "audio_tower", None)
    if tower is None or not hasattr(tower, "embed_positions") or not hasattr(tower, "config"):
        return None
    if not hasattr(tower.config, "max_source_positions"):
        return None
    return tower


def window_frames(feature_attention_mask: torch.Tensor, total: int) -> int:
    n = int(feature_attention_mask.sum(-1).max()) + 2
    return min(-(-n // 4) * 4, total)


@contextmanager
def short_window(model: Any, n_frames: int | None) -> Iterator[None]:
    tower = audio_tower(model) if n_frames is not None else None
    if tower is None:
        yield
        return
    cfg, emb = tower.config, tower.embed_positions
    old = cfg.max_source_positions
    cfg.max_source_positions = n_frames // 2
    tower.embed_positions = _SlicedPositions(emb, n_frames // 2)
    try:
        yield
    finally:
        cfg.max_source_positions = old
        tower.embed_positions = emb


def cut(mm: dict[str, torch.Tensor], n_frames: int) -> dict[str, torch.Tensor]:
    out = dict(mm)
    out["input_features"] = mm["input_features"][..., :n_frames]
    out["feature_attention_mask"] = mm["feature_attention_mask"][..., :n_frames]
    return out


def applicable(model: Any, mm: dict[str, torch.Tensor]) -> bool:
    return audio_tower(model) is not None and "input_features" in mm and "feature_attention_mask" in mm


@contextmanager
def maybe_windowed(model: Any, mm: dict[str, torch.Tensor], enabled: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Yields the multimodal kwargs to pass (cut or not) with the encoder patched accordingly."""
    if not enabled or not applicable(model, mm):
        yield mm
        return
    n = window_frames(mm["feature_attention_mask"], mm["input_features"].shape[-1])
    if n >= mm["input_features"].shape[-1]:
        yield mm
        return
    with short_window(model, n):
        yield cut(mm, n)


@torch.no_grad()
def verify(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, mm: dict[str, torch.Tensor],
           atol: float = 1e-4) -> bool:
    """True when windowed and full-window logits agree on this batch."""
    if not applicable(model, mm):
        return False
    was_training = model.training
    model.eval()
    try:
        full = model(input_ids=input_ids, attention_mask=attention_mask, **mm).logits.float()
        with maybe_windowed(model, mm, True) as cut_mm:
            short = model(input_ids=input_ids, attention_mask=attention_mask, **cut_mm).logits.float()
        return bool(torch.allclose(full, short, atol=atol, rtol=1e-4))
    except Exception:  # noqa: BLE001 - internals differ in this transformers version: use the full window
        return False
    finally:
        model.train(was_training)
