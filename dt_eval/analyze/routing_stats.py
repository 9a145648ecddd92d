"""Streaming routing statistics: the per-token measures, the base's on-disk cache of router
distributions, and the two forward-hook handlers of the gating passes (base: record; tuned:
compare). Sums per (MoE layer, token segment) stay on the model's device; nothing holds more than
one layer of one item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dt_eval.analyze.inputs import SEGMENTS
from dt_eval.analyze.runs import AnalyzeError

# ------------------------------------------------------------------ per-token measures (pluggable)
# fn(p, q, sel_p, sel_q) -> one value per token. p, q: (tokens, experts) base / tuned router
# distributions (float32); sel_p, sel_q: boolean top-k masks.
TOKEN_MEASURES: dict[str, Callable[..., Any]] = {}


def register_measure(name: str, fn: Callable[..., Any]) -> None:
    """Add a per-token routing measure; gating.json reports its mean per layer and segment."""
    TOKEN_MEASURES[name] = fn


def jsd_bits(p: Any, q: Any) -> Any:
    import torch

    m = 0.5 * (p + q)

    def kl(a: Any) -> Any:  # m >= a / 2 > 0 wherever a > 0
        return torch.where(a > 0, a * (torch.log2(a) - torch.log2(m)), torch.zeros_like(a)).sum(-1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp_min(0.0)


register_measure("jsd", lambda p, q, sp, sq: jsd_bits(p, q))
register_measure("jaccard", lambda p, q, sp, sq: (sp & sq).sum(-1).float() / (sp | sq).sum(-1).float())
register_measure("top1_agreement", lambda p, q, sp, sq: (p.argmax(-1) == q.argmax(-1)).float())


def topk_mask(p: Any, k: int) -> Any:
    import torch

    return torch.zeros_like(p, dtype=torch.bool).scatter_(1, p.topk(k, dim=-1).indices, True)


def load_entropy_bits(counts: np.ndarray) -> float | None:
    total = counts.sum()
    if total <= 0:
        return None
    f = counts[counts > 0] / total
    return float(-(f * np.log2(f)).sum())


class Accumulator:
    """Per (layer, segment) sums on the device; a per-token measure adds up with index_add."""

    def __init__(self, n_layers: int, n_experts: int, device: Any, measures: Iterable[str]):
        import torch

        dt = torch.float32 if str(device).startswith("mps") else torch.float64
        s = len(SEGMENTS)
        self.tokens = torch.zeros(n_layers, s, dtype=dt, device=device)
        self.load = torch.zeros(n_layers, s, n_experts, dtype=dt, device=device)
        self.sums = {m: torch.zeros(n_layers, s, dtype=dt, device=device) for m in measures}

    def add_load(self, pos: int, seg: Any, sel: Any) -> None:
        self.load[pos].index_add_(0, seg, sel.to(self.load.dtype))
        self.tokens[pos].index_add_(0, seg, self.tokens.new_ones(seg.shape[0]))

    def add(self, pos: int, seg: Any, name: str, values: Any) -> None:
        self.sums[name][pos].index_add_(0, seg, values.to(self.sums[name].dtype))

    def numpy(self) -> dict[str, np.ndarray]:
        out = {"tokens": self.tokens.cpu().numpy(), "load": self.load.cpu().numpy()}
        out.update({k: v.cpu().numpy() for k, v in self.sums.items()})
        return out


class BaseCache:
    """The base's router distributions: one flat file, per item (layers, tokens, experts)."""

    def __init__(self, folder: Path, n_layers: int, n_experts: int, dtype: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "base_router_probs.bin"
        self.n_layers, self.n_experts, self.dtype = n_layers, n_experts, np.dtype(dtype)
        self.index: dict[str, tuple[int, int, str]] = {}  # key -> (offset in elements, tokens, digest)
        self._f = open(self.path, "wb")
        self._size = 0
        self._mm: np.ndarray | None = None

    def write(self, rows: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self._size += rows.size

    def start_item(self, key: str, tokens: int, dig: str) -> None:
        self.index[key] = (self._size, tokens, dig)

    def drop_item(self, key: str) -> None:
        """Forget an item whose forward failed part-way: its rows are cut off the file."""
        if key in self.index:
            off = self.index.pop(key)[0]
            self._f.flush()
            self._f.truncate(off * self.dtype.itemsize)
            self._f.seek(off * self.dtype.itemsize)
            self._size = off

    def finish(self) -> None:
        self._f.close()
        self._mm = np.memmap(self.path, dtype=self.dtype, mode="r") if self._size else np.zeros(0, self.dtype)

    def rows(self, key: str, pos: int) -> np.ndarray:
        off, t, _ = self.index[key]
        start = off + pos * t * self.n_experts
        return self._mm[start:start + t * self.n_experts].reshape(t, self.n_experts)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        self._mm = None


class BaseRecorder:
    """Base pass hook: each layer's router distribution goes to the cache, its top-k to the load."""

    def __init__(self, cache: BaseCache, acc: Accumulator, top_k: int, store_dtype: str, device: str):
        import torch

        self.cache, self.acc, self.k, self.device = cache, acc, top_k, device
        self.store = getattr(torch, store_dtype)
        self.seg: Any = None
        self._before: tuple[str, Any, Any] | None = None

    def start(self, key: str, segments: np.ndarray, dig: str) -> None:
        import torch

        self.seg = torch.from_numpy(segments.astype(np.int64)).to(self.device)
        self.cache.start_item(key, len(segments), dig)
        self._before = (key, self.acc.load.clone(), self.acc.tokens.clone())

    def drop(self, key: str) -> None:
        """Undo an item that failed part-way: its cache rows and its share of the expert load."""
        self.cache.drop_item(key)
        if self._before is not None and self._before[0] == key:
            self.acc.load.copy_(self._before[1])
            self.acc.tokens.copy_(self._before[2])

    def on_layer(self, pos: int, logits: Any) -> None:
        import torch

        p = torch.softmax(logits.float(), dim=-1).to(self.store)
        self.cache.write(p.cpu().numpy())
        self.acc.add_load(pos, self.seg, topk_mask(p.float(), self.k))


class TunedComparer:
    """Tuned pass hook: each layer's distribution (rounded like the base's) against the cached
    base rows of the same tokens; per-token measures and the load go into the accumulator."""

    def __init__(self, cache: BaseCache, acc: Accumulator, top_k: int, store_dtype: str, device: str,
                 measures: list[str]):
        import torch

        self.cache, self.acc, self.k, self.device, self.measures = cache, acc, top_k, device, measures
        self.store = getattr(torch, store_dtype)
        self.seg: Any = None
        self.key = ""
        self.digests: list[str] = []

    def start(self, key: str, segments: np.ndarray, dig: str) -> None:
        import torch

        if dig != self.cache.index[key][2]:
            raise AnalyzeError(f"{key}: the input tokens differ from the base pass's")
        self.digests.append(dig)
        self.seg = torch.from_numpy(segments.astype(np.int64)).to(self.device)
        self.key = key

    def drop(self, key: str) -> None:  # never called: a tuned pass stops on an item error
        raise AssertionError(key)

    def on_layer(self, pos: int, logits: Any) -> None:
        import torch

        q = torch.softmax(logits.float(), dim=-1).to(self.store).float()
        p = torch.from_numpy(np.array(self.cache.rows(self.key, pos))).to(self.device).float()
        sp, sq = topk_mask(p, self.k), topk_mask(q, self.k)
        self.acc.add_load(pos, self.seg, sq)
        for name in self.measures:
            self.acc.add(pos, self.seg, name, TOKEN_MEASURES[name](p, q, sp, sq))


